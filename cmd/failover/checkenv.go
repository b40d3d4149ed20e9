package main

import (
	"regexp"
	"slices"
	"strings"

	"github.com/agnivade/levenshtein"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/redisshare"
)

// The variables failover reads (failover.EnvVariables, and the proxy's
// own), for spotting the ones that look like them and are not.
var (
	envGlobals, envPerEndpoint = splitEnvVariables(failover.EnvVariables(), envProxyKey, redisshare.EnvURL, redisshare.EnvPrefix)
	// envAliases are names people reach for, from other tools or by
	// guess, normalised as normEnv does, and what failover reads instead.
	envAliases = map[string]string{
		"OPENAIAPIBASE":  "OPENAI_BASE_URL", // the Python SDK before 1.0
		"OPENAIAPIURL":   "OPENAI_BASE_URL",
		"OPENAIURL":      "OPENAI_BASE_URL",
		"OPENAIKEY":      "OPENAI_API_KEY",
		"OPENAIRPS":      "OPENAI_MAX_RPS",
		"OPENAIRETRIES":  "OPENAI_MAX_RETRIES",
		"OPENAIDISABLED": "OPENAI_ENABLED",
	}
)

// envNumberRE splits a name into its stem and a trailing number, with or
// without a separator before it.
var envNumberRE = regexp.MustCompile(`^(.*?)[_-]?([0-9]+)$`)

// lookAlike is a variable that looks like one of failover's and is not
// read.
type lookAlike struct {
	Variable   string `json:"variable"`
	Suggestion string `json:"suggestion,omitempty"`
	Message    string `json:"message"`
}

// lookAlikes lists the variables of environ, in order, that look like
// failover's but are not read by it: misspelt, in the wrong case, without
// the endpoint number or with one they do not take. Only names are
// looked at, never values.
func lookAlikes(environ []string) []lookAlike {
	out := []lookAlike{} // [] in JSON when there is none
	seen := make(map[string]bool)
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || seen[name] {
			continue
		}
		seen[name] = true
		if w, ok := checkEnvName(name); ok {
			out = append(out, w)
		}
	}
	return out
}

// checkEnvName reports whether name looks like one of failover's variables
// without being read, and what to write instead.
func checkEnvName(name string) (lookAlike, bool) {
	upper := strings.ToUpper(name)
	if !strings.HasPrefix(upper, "OPENAI") && !strings.HasPrefix(upper, "FAILOVER") {
		return lookAlike{}, false
	}
	if slices.Contains(envGlobals, name) {
		return lookAlike{}, false
	}
	// A per-endpoint name with something after its "_" other than a
	// number (a number without sign or leading zeros is read; any other
	// run of digits is an error of ConfigFromEnviron, reported there).
	for _, p := range envPerEndpoint {
		rest, ok := strings.CutPrefix(name, p+"_")
		if !ok {
			continue
		}
		if strings.Trim(rest, "+-0123456789") == "" {
			return lookAlike{}, false
		}
		return lookAlike{Variable: name, Suggestion: p + "_1",
			Message: name + " is not read: the N of " + p + "_N is a positive integer (" + p + "_1, " + p + "_2, ...)"}, true
	}

	stem, number := name, ""
	if m := envNumberRE.FindStringSubmatch(name); m != nil {
		stem, number = m[1], m[2]
	}
	norm := normEnv(stem)
	if number != "" {
		if p, ok := closestEnv(norm, envPerEndpoint); ok {
			suggestion := p + "_" + strings.TrimLeft(number, "0")
			return lookAlike{Variable: name, Suggestion: suggestion,
				Message: name + " is not read; did you mean " + suggestion + "?"}, true
		}
		if g, ok := closestEnv(norm, envGlobals); ok {
			return lookAlike{Variable: name, Suggestion: g,
				Message: name + " is not read: " + g + " is one setting for every endpoint, without a number"}, true
		}
		return lookAlike{}, false
	}
	if g, ok := closestEnv(norm, envGlobals); ok {
		return lookAlike{Variable: name, Suggestion: g,
			Message: name + " is not read; did you mean " + g + "?"}, true
	}
	if p, ok := closestEnv(norm, envPerEndpoint); ok {
		return lookAlike{Variable: name, Suggestion: p + "_1",
			Message: name + " is not read: it is set per endpoint, as " + p + "_1, " + p + "_2, ..."}, true
	}
	return lookAlike{}, false
}

// closestEnv returns the name of names that norm (normalised) looks like:
// the same but for case and separators, an alias, or within two edits.
func closestEnv(norm string, names []string) (string, bool) {
	if alias, ok := envAliases[norm]; ok && slices.Contains(names, alias) {
		return alias, true
	}
	best, bestDist := "", 3
	for _, n := range names {
		if d := levenshtein.ComputeDistance(norm, normEnv(n)); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best, best != ""
}

// normEnv upper-cases name and drops everything but letters and digits.
func normEnv(name string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(name) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// splitEnvVariables splits names as failover.EnvVariables gives them into
// the global ones, read as they are (with extra, the proxy's own, added),
// and the stems of the per-endpoint ones, read with "_N" after them.
func splitEnvVariables(names []string, extra ...string) (globals, perEndpoint []string) {
	for _, n := range names {
		if stem, ok := strings.CutSuffix(n, "_N"); ok {
			perEndpoint = append(perEndpoint, stem)
		} else {
			globals = append(globals, n)
		}
	}
	return append(globals, extra...), perEndpoint
}
