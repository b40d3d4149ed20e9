package failover

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/failover-go/failover/internal/quote"
)

// ErrNoEnvConfig is returned (possibly joined with other errors) by
// [ConfigFromEnv] and [ConfigFromEnviron] when the environment describes no
// endpoint at all.
var ErrNoEnvConfig = errors.New("failover: no endpoint in the environment; " +
	"set OPENAI_API_KEY and/or OPENAI_BASE_URL for one endpoint, " +
	"or numbered endpoints OPENAI_BASE_URL_1 and OPENAI_API_KEY_1, OPENAI_BASE_URL_2 and OPENAI_API_KEY_2, and so on")

// Names of the global environment variables.
const (
	envAPIKey          = "OPENAI_API_KEY"
	envBaseURL         = "OPENAI_BASE_URL"
	envFallbackEnabled = "OPENAI_FALLBACK_ENABLED"
	envMaxRetries      = "OPENAI_MAX_RETRIES"
	envBackoffMS       = "OPENAI_BACKOFF_MS"
	envFirstToken      = "OPENAI_FIRST_TOKEN_TIMEOUT"
	envStreamIdle      = "OPENAI_STREAM_IDLE_TIMEOUT"
	envProbeInterval   = "OPENAI_PROBE_INTERVAL"
	envSlowStart       = "OPENAI_SLOW_START"
	envBalancer        = "OPENAI_BALANCER"
	envAffinity        = "OPENAI_AFFINITY"
)

// ConfigFromEnv returns the Config described by the process environment
// (os.Environ()). It is [ConfigFromEnviron] over os.Environ(); see there
// for the variables it reads.
func ConfigFromEnv() (Config, error) {
	return ConfigFromEnviron(os.Environ())
}

// ConfigFromEnviron is [ConfigFromEnv] over a list of "KEY=VALUE" strings,
// as os.Environ returns. It returns the Config those variables describe,
// whose fields not listed below are left zero (their defaults), or an error
// and a zero Config. It never panics.
//
// Every value is trimmed of surrounding white space, and an empty value
// counts as unset. When a variable appears more than once, the first
// occurrence counts, as with os.Getenv; entries without "=" are ignored.
// Variable names are case-sensitive.
//
// Endpoints are numbered: N is any positive integer, written without sign
// or leading zeros, and endpoints are listed in the Config in increasing
// numerical order of N (2 before 10). Endpoint N exists when any of these
// variables is set for it:
//
//	OPENAI_BASE_URL_N   Endpoint.BaseURL, an absolute http or https URL.
//	                    Default: OPENAI_BASE_URL, else https://api.openai.com/v1.
//	OPENAI_API_KEY_N    Endpoint.APIKey. Default: OPENAI_API_KEY, else none
//	                    (the caller's Authorization header is kept).
//	OPENAI_PRIORITY_N   Endpoint.Priority, an integer; lower is preferred.
//	                    Default: N, so endpoints fail over in their numbered order.
//	OPENAI_WEIGHT_N     Endpoint.Weight, a non-negative integer. Default: 1.
//	OPENAI_MAX_RPS_N    Endpoint.MaxRPS, a non-negative finite number.
//	                    Default: 0, unlimited.
//	OPENAI_BURST_N      Endpoint.Burst, a non-negative integer.
//	                    Default: max(1, ceil(MaxRPS)).
//	OPENAI_TIMEOUT_N    Endpoint.Timeout, a Go duration such as 30s or plain
//	                    milliseconds such as 1500; not negative.
//	                    Default: 0, no per-attempt timeout.
//	OPENAI_FIRST_TOKEN_TIMEOUT_N  Endpoint.FirstTokenTimeout, a duration as for
//	                    OPENAI_TIMEOUT_N. Default: OPENAI_FIRST_TOKEN_TIMEOUT.
//	OPENAI_STREAM_IDLE_TIMEOUT_N  Endpoint.StreamIdleTimeout, likewise. Default:
//	                    OPENAI_STREAM_IDLE_TIMEOUT.
//	OPENAI_ENABLED_N    A boolean; false sets Endpoint.Disabled (not on every
//	                    endpoint). Default: true.
//	OPENAI_FORWARD_AUTH_N  A boolean; true sets Endpoint.ForwardCallerAuth: a
//	                    keyless endpoint receives the caller's credentials.
//	                    Default: false.
//	OPENAI_NAME_N       Endpoint.Name, unique. Default: the host of the base URL.
//	OPENAI_PROBE_MODEL_N  A model name: recovery probes of the endpoint send a
//	                    chat completion of one token to it (Endpoint.Probe =
//	                    ChatProbe(model)), for a server without /models; each
//	                    probe is then a billed request. Default: GET /models.
//	OPENAI_MODELS_N     Endpoint.Models: the models the endpoint serves, comma-
//	                    separated, each name or name=upstream-name (the name
//	                    sent there): gpt-4o-mini=openai/gpt-4o-mini,gpt-4o.
//	                    Default: every model, under the caller's names.
//	OPENAI_API_TYPE_N   Endpoint.APIType: openai or azure. Default: openai.
//	OPENAI_API_VERSION_N  Endpoint.APIVersion, for azure: the api-version of
//	                    the classic deployments API, such as 2024-10-21.
//	                    Default: none, Azure's v1 API.
//	OPENAI_MAX_TPM_N    Endpoint.MaxTPM, tokens per minute, a non-negative
//	                    finite number. Default: 0, unlimited.
//	OPENAI_TOKEN_BURST_N  Endpoint.TokenBurst, a non-negative integer.
//	                    Default: ceil(MAX_TPM).
//
// A boolean is one of 1, t, true, yes, on, 0, f, false, no, off, in any case.
//
// Without numbered endpoints, OPENAI_API_KEY and OPENAI_BASE_URL describe a
// single endpoint; either one alone suffices (a base URL without a key is a
// keyless local server; a key alone goes to https://api.openai.com/v1). With
// numbered endpoints, they are only the defaults above, so several keys for
// one URL need only OPENAI_API_KEY_1, OPENAI_API_KEY_2, ...; and where
// OPENAI_BASE_URL is set, Config.ClientBaseURLs is set to
// [DefaultClientBaseURL] and OPENAI_BASE_URL, so that the requests sent
// under OPENAI_BASE_URL (as openai-go does when it reads that variable) are
// routed too. Otherwise ClientBaseURLs is left nil, its default.
//
// These variables set the failover itself:
//
//	OPENAI_FALLBACK_ENABLED  A boolean; false means exactly one attempt per
//	                         request (Config.MaxRetries = -1). Default: true.
//	OPENAI_MAX_RETRIES       An integer from 0 to 1000, the extra attempts per
//	                         request (Config.MaxRetries); 0 means none.
//	                         Default: 3.
//	OPENAI_BACKOFF_MS        A non-negative integer, milliseconds
//	                         (Config.BackoffMin); 0 means the default, 200ms.
//	OPENAI_FIRST_TOKEN_TIMEOUT  Config.FirstTokenTimeout, a Go duration or
//	                         milliseconds. Default: none.
//	OPENAI_STREAM_IDLE_TIMEOUT  Config.StreamIdleTimeout, likewise. Default:
//	                         none.
//	OPENAI_PROBE_INTERVAL    Config.Probe.Interval, a duration as above, at
//	                         least 100ms: recovery probes. Default: none.
//	OPENAI_SLOW_START        Config.SlowStart, a duration as above. Default:
//	                         none.
//	OPENAI_BALANCER          Config.Balancer: round_robin or least_latency.
//	                         Default: round_robin.
//	OPENAI_AFFINITY          Config.Affinity: prompt_cache_key, or none.
//	                         Default: none.
//
// Other OPENAI_* variables are ignored, except that a variable above written
// with an ambiguous N (OPENAI_API_KEY_01, OPENAI_API_KEY_+1, OPENAI_API_KEY_0)
// is an error.
//
// The error reports every problem at once (errors.Join), one per line, each
// beginning "failover: " and the name of the variable. It never quotes an
// API key or a base URL, which may carry a secret in its query. When no
// endpoint is described, the error matches [ErrNoEnvConfig] with errors.Is.
func ConfigFromEnviron(environ []string) (Config, error) {
	vars := envVars(environ)
	var cfg Config
	numbered, sawNumbered, errs := numberedVars(vars)
	errs = append(errs, setGlobals(&cfg, vars)...)
	key, base, lerrs := legacyVars(vars)
	errs = append(errs, lerrs...)
	switch {
	case len(numbered) > 0:
		eps, eerrs := envEndpoints(numbered, key, base)
		errs = append(errs, eerrs...)
		cfg.Endpoints = eps
		if base != "" && len(lerrs) == 0 {
			cfg.ClientBaseURLs = []string{DefaultClientBaseURL}
			if !sameBaseURL(base, DefaultClientBaseURL) {
				cfg.ClientBaseURLs = append(cfg.ClientBaseURLs, base)
			}
		}
	case key != "" || base != "":
		if len(lerrs) == 0 {
			cfg.Endpoints = []Endpoint{{BaseURL: cmp.Or(base, DefaultClientBaseURL), APIKey: key}}
		}
	case !sawNumbered:
		errs = append(errs, ErrNoEnvConfig)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// envVars returns the OPENAI_ variables of environ, trimmed; the first
// occurrence of a name counts, as with os.Getenv.
func envVars(environ []string) map[string]string {
	vars := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "OPENAI_") {
			continue
		}
		if _, seen := vars[k]; !seen {
			vars[k] = strings.TrimSpace(v)
		}
	}
	return vars
}

// envProblem is a problem with the variable name, as an error.
func envProblem(name, format string, args ...any) error {
	return fmt.Errorf("failover: %s: %s", name, fmt.Sprintf(format, args...))
}

// globalVar is a variable that sets a field of the Config itself; set
// applies a non-empty value and returns what is wrong with it, if
// anything.
type globalVar struct {
	name string
	set  func(cfg *Config, v string) string
}

// globalVars are applied in this order: OPENAI_MAX_RETRIES reads what
// OPENAI_FALLBACK_ENABLED set.
var globalVars = []globalVar{
	{envFallbackEnabled, func(cfg *Config, v string) string {
		b, problem := parseEnvBool(v)
		if problem == "" && !b {
			cfg.MaxRetries = -1
		}
		return problem
	}},
	{envMaxRetries, func(cfg *Config, v string) string {
		n, problem := parseEnvNonNegative(v)
		switch {
		case problem != "":
			return problem
		case n > maxRetriesLimit:
			return fmt.Sprintf("%s is above %d", quoteEnv(v), maxRetriesLimit)
		case cfg.MaxRetries < 0:
			// OPENAI_FALLBACK_ENABLED=false: one attempt, whatever this says.
		case n == 0:
			cfg.MaxRetries = -1
		default:
			cfg.MaxRetries = n
		}
		return ""
	}},
	{envBackoffMS, func(cfg *Config, v string) string {
		n, problem := parseEnvNonNegative(v)
		switch {
		case problem != "":
			return problem
		case int64(n) > math.MaxInt64/int64(time.Millisecond):
			return quoteEnv(v) + " is out of range"
		}
		cfg.BackoffMin = time.Duration(n) * time.Millisecond
		return ""
	}},
	{envFirstToken, func(cfg *Config, v string) (problem string) {
		cfg.FirstTokenTimeout, problem = parseEnvDuration(v)
		return problem
	}},
	{envStreamIdle, func(cfg *Config, v string) (problem string) {
		cfg.StreamIdleTimeout, problem = parseEnvDuration(v)
		return problem
	}},
	{envProbeInterval, func(cfg *Config, v string) (problem string) {
		cfg.Probe.Interval, problem = parseEnvDuration(v)
		if problem == "" && cfg.Probe.Interval > 0 && cfg.Probe.Interval < minProbeInterval {
			return quoteEnv(v) + " is below " + minProbeInterval.String()
		}
		return problem
	}},
	{envSlowStart, func(cfg *Config, v string) (problem string) {
		cfg.SlowStart, problem = parseEnvDuration(v)
		return problem
	}},
	{envBalancer, func(cfg *Config, v string) string {
		cfg.Balancer = Balancer(strings.ToLower(v))
		if cfg.Balancer.check() != nil {
			return quoteEnv(v) + " is not round_robin or least_latency"
		}
		return ""
	}},
	{envAffinity, func(cfg *Config, v string) string {
		switch strings.ToLower(v) {
		case "none":
			cfg.Affinity = AffinityNone
		case string(AffinityPromptCacheKey):
			cfg.Affinity = AffinityPromptCacheKey
		default:
			return quoteEnv(v) + " is not prompt_cache_key or none"
		}
		return ""
	}},
}

// setGlobals applies the global variables set in vars to cfg.
func setGlobals(cfg *Config, vars map[string]string) []error {
	var errs []error
	for _, g := range globalVars {
		if v := vars[g.name]; v != "" {
			if problem := g.set(cfg, v); problem != "" {
				errs = append(errs, envProblem(g.name, "%s", problem))
			}
		}
	}
	return errs
}

// legacyVars returns OPENAI_API_KEY and OPENAI_BASE_URL, with their
// problems.
func legacyVars(vars map[string]string) (key, base string, errs []error) {
	key, base = vars[envAPIKey], vars[envBaseURL]
	if key != "" {
		if err := checkEnvKey(envAPIKey, key); err != nil {
			errs = append(errs, err)
		}
	}
	if base != "" {
		if err := checkEnvURL(envBaseURL, base); err != nil {
			errs = append(errs, err)
		}
	}
	return key, base, errs
}

// endpointVar is a per-endpoint variable: its name is prefix followed by
// the endpoint number N. set applies a non-empty value to the endpoint
// and returns what is wrong with it, if anything; it is given the
// variable's name for errors that must not quote the value.
type endpointVar struct {
	prefix string
	set    func(e *Endpoint, name, v string) error
}

// endpointVars are the per-endpoint variables. No prefix is a prefix of
// another.
var endpointVars = []endpointVar{
	{"OPENAI_BASE_URL_", func(e *Endpoint, name, v string) error {
		e.BaseURL = v
		return checkEnvURL(name, v)
	}},
	{"OPENAI_API_KEY_", func(e *Endpoint, name, v string) error {
		e.APIKey = v
		return checkEnvKey(name, v)
	}},
	{"OPENAI_PRIORITY_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.Priority, problem = parseEnvInt(v)
		return problem
	})},
	{"OPENAI_WEIGHT_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.Weight, problem = parseEnvNonNegative(v)
		return problem
	})},
	{"OPENAI_MAX_RPS_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.MaxRPS, problem = parseEnvRate(v)
		if problem == "" && e.MaxRPS > 0 && e.MaxRPS < minRPS {
			return fmt.Sprintf("%s is below one request an hour (%.6g); to take no traffic, set OPENAI_ENABLED_N=false", quoteEnv(v), minRPS)
		}
		return problem
	})},
	{"OPENAI_BURST_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.Burst, problem = parseEnvNonNegative(v)
		return problem
	})},
	{"OPENAI_TIMEOUT_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.Timeout, problem = parseEnvDuration(v)
		return problem
	})},
	{"OPENAI_FIRST_TOKEN_TIMEOUT_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.FirstTokenTimeout, problem = parseEnvDuration(v)
		return problem
	})},
	{"OPENAI_STREAM_IDLE_TIMEOUT_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.StreamIdleTimeout, problem = parseEnvDuration(v)
		return problem
	})},
	{"OPENAI_ENABLED_", problemOf(func(e *Endpoint, v string) string {
		b, problem := parseEnvBool(v)
		e.Disabled = problem == "" && !b
		return problem
	})},
	{"OPENAI_FORWARD_AUTH_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.ForwardCallerAuth, problem = parseEnvBool(v)
		return problem
	})},
	{"OPENAI_NAME_", problemOf(func(e *Endpoint, v string) string {
		e.Name = v
		if !utf8.ValidString(v) {
			return quoteEnv(v) + " is not valid UTF-8"
		}
		return ""
	})},
	{"OPENAI_PROBE_MODEL_", problemOf(func(e *Endpoint, v string) string {
		if !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
			return quoteEnv(v) + " is not a model name (valid UTF-8, no control characters)"
		}
		e.Probe = ChatProbe(v)
		return ""
	})},
	{"OPENAI_MODELS_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.Models, problem = parseEnvModels(v)
		return problem
	})},
	{"OPENAI_API_TYPE_", problemOf(func(e *Endpoint, v string) string {
		e.APIType = strings.ToLower(v)
		if e.APIType != APITypeOpenAI && e.APIType != APITypeAzure {
			return quoteEnv(v) + " is not openai or azure"
		}
		return ""
	})},
	{"OPENAI_API_VERSION_", problemOf(func(e *Endpoint, v string) string {
		e.APIVersion = v
		if !validDeployment(v) {
			return quoteEnv(v) + " is not an api-version such as 2024-10-21 (letters, digits, '.', '_' and '-')"
		}
		return ""
	})},
	{"OPENAI_MAX_TPM_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.MaxTPM, problem = parseEnvRate(v)
		if problem == "" && e.MaxTPM > math.MaxInt32 {
			return fmt.Sprintf("%s is above %d", quoteEnv(v), math.MaxInt32)
		}
		return problem
	})},
	{"OPENAI_TOKEN_BURST_", problemOf(func(e *Endpoint, v string) (problem string) {
		e.TokenBurst, problem = parseEnvNonNegative(v)
		if problem == "" && e.TokenBurst > math.MaxInt32 {
			return fmt.Sprintf("%s is above %d", quoteEnv(v), math.MaxInt32)
		}
		return problem
	})},
}

// problemOf adapts a setter that returns a problem to endpointVar.set.
func problemOf(set func(e *Endpoint, v string) string) func(e *Endpoint, name, v string) error {
	return func(e *Endpoint, name, v string) error {
		if problem := set(e, v); problem != "" {
			return envProblem(name, "%s", problem)
		}
		return nil
	}
}

// envVarOf returns the per-endpoint variable name is one of, and the
// suffix after its prefix.
func envVarOf(name string) (*endpointVar, string, bool) {
	for i := range endpointVars {
		if s, ok := strings.CutPrefix(name, endpointVars[i].prefix); ok {
			return &endpointVars[i], s, true
		}
	}
	return nil, "", false
}

// numberedVars groups the set per-endpoint variables of vars by endpoint
// number: variable name to value. sawNumbered reports any such variable,
// even one with a bad number.
func numberedVars(vars map[string]string) (numbered map[int]map[string]string, sawNumbered bool, errs []error) {
	numbered = make(map[int]map[string]string)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		v := vars[k]
		if v == "" {
			continue
		}
		_, suffix, ok := envVarOf(k)
		if !ok {
			continue
		}
		n, problem, ok := parseEndpointNumber(suffix)
		if !ok {
			continue // not a number: not ours
		}
		sawNumbered = true
		if problem != "" {
			errs = append(errs, envProblem(k, "%s", problem))
			continue
		}
		if numbered[n] == nil {
			numbered[n] = make(map[string]string)
		}
		numbered[n][k] = v
	}
	return numbered, sawNumbered, errs
}

// envEndpoints builds the numbered endpoints in increasing order of N,
// with key and base (OPENAI_API_KEY and OPENAI_BASE_URL) as defaults, and
// reports names used twice.
func envEndpoints(numbered map[int]map[string]string, key, base string) ([]Endpoint, []error) {
	var (
		eps     []Endpoint
		errs    []error
		nameVar = make(map[string]string) // Endpoint.Name -> its variable
	)
	for _, n := range slices.Sorted(maps.Keys(numbered)) {
		e := Endpoint{Priority: n, BaseURL: cmp.Or(base, DefaultClientBaseURL), APIKey: key}
		suffix := strconv.Itoa(n)
		for _, ev := range endpointVars {
			name := ev.prefix + suffix
			if v := numbered[n][name]; v != "" {
				if err := ev.set(&e, name, v); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if e.Name != "" {
			v := "OPENAI_NAME_" + strconv.Itoa(n)
			if first, dup := nameVar[e.Name]; dup {
				errs = append(errs, envProblem(v, "name %s is already used by %s", quoteEnv(e.Name), first))
			} else {
				nameVar[e.Name] = v
			}
		}
		eps = append(eps, e)
	}
	if len(eps) > 0 && !slices.ContainsFunc(eps, func(e Endpoint) bool { return !e.Disabled }) {
		errs = append(errs, errors.New("failover: every endpoint has OPENAI_ENABLED_N=false; at least one must take requests"))
	}
	return eps, errs
}

// parseEndpointNumber parses the N of a per-endpoint variable. ok is false
// when s is not an optionally signed run of ASCII digits (the variable is
// then not ours); problem is set when it is one but not a valid N.
func parseEndpointNumber(s string) (n int, problem string, ok bool) {
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, "", false
	}
	if len(digits) != len(s) || digits[0] == '0' {
		return 0, "ambiguous endpoint number; write N as a positive integer without sign or leading zeros (_1, _2, ..., _10)", true
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		return 0, "endpoint number is out of range", true
	}
	return n, "", true
}

// parseEnvInt parses a decimal integer, saying what is wrong if it cannot.
func parseEnvInt(v string) (int, string) {
	n, err := strconv.Atoi(v)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, quoteEnv(v) + " is out of range"
	case err != nil:
		return 0, quoteEnv(v) + " is not an integer"
	}
	return n, ""
}

// parseEnvNonNegative is parseEnvInt for values that must not be negative.
func parseEnvNonNegative(v string) (int, string) {
	n, problem := parseEnvInt(v)
	if problem == "" && n < 0 {
		return 0, quoteEnv(v) + " is negative"
	}
	return n, problem
}

// parseEnvDuration parses a Go duration ("30s") or plain milliseconds
// ("1500"), not negative.
func parseEnvDuration(v string) (time.Duration, string) {
	ms, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err == nil && ms < 0:
		return 0, quoteEnv(v) + " is negative"
	case err == nil && ms > math.MaxInt64/int64(time.Millisecond),
		errors.Is(err, strconv.ErrRange):
		return 0, quoteEnv(v) + " is out of range"
	case err == nil:
		return time.Duration(ms) * time.Millisecond, ""
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, quoteEnv(v) + " is not a duration (such as 30s) or a number of milliseconds"
	case d < 0:
		return 0, quoteEnv(v) + " is negative"
	}
	return d, ""
}

// parseEnvBool parses the values of strconv.ParseBool and yes, no, on and
// off, in any case, saying what is wrong if it cannot.
func parseEnvBool(v string) (bool, string) {
	switch strings.ToLower(v) {
	case "yes", "on":
		return true, ""
	case "no", "off":
		return false, ""
	}
	b, err := strconv.ParseBool(strings.ToLower(v))
	if err != nil {
		return false, quoteEnv(v) + " is not a boolean (want true/false, yes/no, on/off or 1/0)"
	}
	return b, ""
}

// parseEnvRate parses a non-negative finite number of requests per second.
func parseEnvRate(v string) (float64, string) {
	r, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, quoteEnv(v) + " is not a number"
	case err != nil || math.IsNaN(r) || math.IsInf(r, 0):
		return 0, quoteEnv(v) + " is not a finite number"
	case r < 0:
		return 0, quoteEnv(v) + " is negative"
	}
	return r, ""
}

// checkEnvKey checks an API key, never quoting it.
func checkEnvKey(name, key string) error {
	for _, r := range key {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("failover: %s: contains a control character (such as a line break)", name)
		}
	}
	return nil
}

// checkEnvURL checks a base URL with parseBaseURL, never quoting any part
// of it.
func checkEnvURL(name, s string) error {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		// parseBaseURL would quote the scheme, which may be a
		// mistyped secret ("sk-abc:...").
		return fmt.Errorf("failover: %s: scheme is not http or https", name)
	}
	if _, err := parseBaseURL(s); err != nil {
		return fmt.Errorf("failover: %s: %w", name, err)
	}
	return nil
}

// sameBaseURL reports whether a and b, both valid, route the same
// requests: same scheme, host and path but for a trailing slash.
func sameBaseURL(a, b string) bool {
	ua, erra := parseBaseURL(a)
	ub, errb := parseBaseURL(b)
	if erra != nil || errb != nil {
		return a == b
	}
	return ua.Scheme == ub.Scheme && ua.Host == ub.Host &&
		strings.TrimSuffix(ua.Path, "/") == strings.TrimSuffix(ub.Path, "/")
}

// quoteEnv quotes a value for an error message without echoing a secret
// pasted into the wrong variable: a value of up to 8 bytes whole, a longer
// one as its first 3 characters and its length (see [quote.Value]).
func quoteEnv(v string) string { return quote.Value(v) }

// EnvVariables returns the names of the variables [ConfigFromEnviron]
// reads, sorted: the global ones as they are, and the per-endpoint ones
// ending in "_N", where N stands for the endpoint's number
// (OPENAI_BASE_URL_N). A tool can spot with it a variable that looks like
// one of these and is not read.
func EnvVariables() []string {
	names := []string{envAPIKey, envBaseURL}
	for _, g := range globalVars {
		names = append(names, g.name)
	}
	for _, v := range endpointVars {
		names = append(names, v.prefix+"N")
	}
	slices.Sort(names)
	return names
}
