package failover

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
)

// envField is one per-endpoint variable; its name is its prefix followed by
// the endpoint number N.
type envField int

const (
	fieldBaseURL envField = iota
	fieldAPIKey
	fieldPriority
	fieldWeight
	fieldMaxRPS
	fieldBurst
	fieldTimeout
	fieldEnabled
	fieldName
	numEnvFields
)

// envFieldPrefix is indexed by envField. No prefix is a prefix of another.
var envFieldPrefix = [numEnvFields]string{
	fieldBaseURL:  "OPENAI_BASE_URL_",
	fieldAPIKey:   "OPENAI_API_KEY_",
	fieldPriority: "OPENAI_PRIORITY_",
	fieldWeight:   "OPENAI_WEIGHT_",
	fieldMaxRPS:   "OPENAI_MAX_RPS_",
	fieldBurst:    "OPENAI_BURST_",
	fieldTimeout:  "OPENAI_TIMEOUT_",
	fieldEnabled:  "OPENAI_ENABLED_",
	fieldName:     "OPENAI_NAME_",
}

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
//	OPENAI_ENABLED_N    A boolean; false sets Endpoint.Disabled. Default: true.
//	OPENAI_NAME_N       Endpoint.Name, unique. Default: the host of the base URL.
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
// Three variables set the failover itself:
//
//	OPENAI_FALLBACK_ENABLED  A boolean; false means exactly one attempt per
//	                         request (Config.MaxRetries = -1). Default: true.
//	OPENAI_MAX_RETRIES       An integer from 0 to 1000, the extra attempts per
//	                         request (Config.MaxRetries); 0 means none.
//	                         Default: 3.
//	OPENAI_BACKOFF_MS        A non-negative integer, milliseconds
//	                         (Config.BackoffMin); 0 means the default, 200ms.
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
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	slices.Sort(names)

	var errs []error
	fail := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("failover: %s: %s", name, fmt.Sprintf(format, args...)))
	}

	// Numbered endpoints.
	numbered := make(map[int]*[numEnvFields]string)
	sawNumbered := false
	for _, k := range names {
		v := vars[k]
		if v == "" {
			continue
		}
		f, suffix, ok := envFieldOf(k)
		if !ok {
			continue
		}
		n, problem, ok := parseEndpointNumber(suffix)
		if !ok {
			continue // not a number: not ours
		}
		sawNumbered = true
		if problem != "" {
			fail(k, "%s", problem)
			continue
		}
		vals := numbered[n]
		if vals == nil {
			vals = new([numEnvFields]string)
			numbered[n] = vals
		}
		vals[f] = v
	}

	var cfg Config

	// Globals.
	if v := vars[envFallbackEnabled]; v != "" {
		if b, ok := parseEnvBool(v); !ok {
			fail(envFallbackEnabled, "%s is not a boolean (want true/false, yes/no, on/off or 1/0)", quoteEnv(v))
		} else if !b {
			cfg.MaxRetries = -1
		}
	}
	if v := vars[envMaxRetries]; v != "" {
		n, problem := parseEnvNonNegative(v)
		switch {
		case problem != "":
			fail(envMaxRetries, "%s", problem)
		case n > maxRetriesLimit:
			fail(envMaxRetries, "%s is above %d", quoteEnv(v), maxRetriesLimit)
		case cfg.MaxRetries < 0:
			// OPENAI_FALLBACK_ENABLED=false: one attempt, whatever this says.
		case n == 0:
			cfg.MaxRetries = -1
		default:
			cfg.MaxRetries = n
		}
	}
	if v := vars[envBackoffMS]; v != "" {
		n, problem := parseEnvNonNegative(v)
		switch {
		case problem != "":
			fail(envBackoffMS, "%s", problem)
		case int64(n) > math.MaxInt64/int64(time.Millisecond):
			fail(envBackoffMS, "%s is out of range", quoteEnv(v))
		default:
			cfg.BackoffMin = time.Duration(n) * time.Millisecond
		}
	}

	// Legacy single endpoint, or defaults for the numbered ones.
	key, base := vars[envAPIKey], vars[envBaseURL]
	keyOK, baseOK := true, true
	if key != "" {
		if err := checkEnvKey(envAPIKey, key); err != nil {
			errs = append(errs, err)
			keyOK = false
		}
	}
	if base != "" {
		if err := checkEnvURL(envBaseURL, base); err != nil {
			errs = append(errs, err)
			baseOK = false
		}
	}

	switch {
	case len(numbered) > 0:
		ns := make([]int, 0, len(numbered))
		for n := range numbered {
			ns = append(ns, n)
		}
		slices.Sort(ns)
		nameVar := make(map[string]string) // Endpoint.Name -> its variable
		for _, n := range ns {
			e, eerrs := envEndpoint(n, numbered[n], key, base)
			errs = append(errs, eerrs...)
			if e.Name != "" {
				v := envFieldPrefix[fieldName] + strconv.Itoa(n)
				if first, dup := nameVar[e.Name]; dup {
					fail(v, "name %s is already used by %s", quoteEnv(e.Name), first)
				} else {
					nameVar[e.Name] = v
				}
			}
			cfg.Endpoints = append(cfg.Endpoints, e)
		}
		if base != "" && baseOK {
			cfg.ClientBaseURLs = []string{DefaultClientBaseURL}
			if !sameBaseURL(base, DefaultClientBaseURL) {
				cfg.ClientBaseURLs = append(cfg.ClientBaseURLs, base)
			}
		}
	case key != "" || base != "":
		if keyOK && baseOK {
			e := Endpoint{BaseURL: base, APIKey: key}
			if e.BaseURL == "" {
				e.BaseURL = DefaultClientBaseURL
			}
			cfg.Endpoints = []Endpoint{e}
		}
	case !sawNumbered:
		errs = append(errs, ErrNoEnvConfig)
	}

	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// envEndpoint builds endpoint n from its variables' values, with key and
// base (OPENAI_API_KEY and OPENAI_BASE_URL, already checked) as defaults.
func envEndpoint(n int, vals *[numEnvFields]string, key, base string) (Endpoint, []error) {
	var errs []error
	suffix := strconv.Itoa(n)
	fail := func(f envField, format string, args ...any) {
		errs = append(errs, fmt.Errorf("failover: %s%s: %s", envFieldPrefix[f], suffix, fmt.Sprintf(format, args...)))
	}
	e := Endpoint{Priority: n, BaseURL: base, APIKey: key, Name: vals[fieldName]}
	if !utf8.ValidString(e.Name) {
		fail(fieldName, "%s is not valid UTF-8", quoteEnv(e.Name))
	}
	if e.BaseURL == "" {
		e.BaseURL = DefaultClientBaseURL
	}
	if v := vals[fieldBaseURL]; v != "" {
		if err := checkEnvURL(envFieldPrefix[fieldBaseURL]+suffix, v); err != nil {
			errs = append(errs, err)
		}
		e.BaseURL = v
	}
	if v := vals[fieldAPIKey]; v != "" {
		if err := checkEnvKey(envFieldPrefix[fieldAPIKey]+suffix, v); err != nil {
			errs = append(errs, err)
		}
		e.APIKey = v
	}
	if v := vals[fieldPriority]; v != "" {
		if p, problem := parseEnvInt(v); problem != "" {
			fail(fieldPriority, "%s", problem)
		} else {
			e.Priority = p
		}
	}
	nonNegative := func(f envField, dst *int) {
		v := vals[f]
		if v == "" {
			return
		}
		if n, problem := parseEnvNonNegative(v); problem != "" {
			fail(f, "%s", problem)
		} else {
			*dst = n
		}
	}
	nonNegative(fieldWeight, &e.Weight)
	if v := vals[fieldMaxRPS]; v != "" {
		r, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil && !errors.Is(err, strconv.ErrRange):
			fail(fieldMaxRPS, "%s is not a number", quoteEnv(v))
		case err != nil || math.IsNaN(r) || math.IsInf(r, 0):
			fail(fieldMaxRPS, "%s is not a finite number", quoteEnv(v))
		case r < 0:
			fail(fieldMaxRPS, "%s is negative", quoteEnv(v))
		default:
			e.MaxRPS = r
		}
	}
	nonNegative(fieldBurst, &e.Burst)
	if v := vals[fieldTimeout]; v != "" {
		if d, problem := parseEnvDuration(v); problem != "" {
			fail(fieldTimeout, "%s", problem)
		} else {
			e.Timeout = d
		}
	}
	if v := vals[fieldEnabled]; v != "" {
		if b, ok := parseEnvBool(v); !ok {
			fail(fieldEnabled, "%s is not a boolean (want true/false, yes/no, on/off or 1/0)", quoteEnv(v))
		} else {
			e.Disabled = !b
		}
	}
	return e, errs
}

// envFieldOf reports which per-endpoint variable name is, and the suffix
// after its prefix.
func envFieldOf(name string) (envField, string, bool) {
	for f, p := range envFieldPrefix {
		if s, ok := strings.CutPrefix(name, p); ok {
			return envField(f), s, true
		}
	}
	return 0, "", false
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
// off, in any case.
func parseEnvBool(v string) (b, ok bool) {
	switch v = strings.ToLower(v); v {
	case "yes", "on":
		return true, true
	case "no", "off":
		return false, true
	}
	b, err := strconv.ParseBool(v)
	return b, err == nil
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

// quoteEnv quotes a non-secret value for an error message, cut to a
// readable length.
func quoteEnv(v string) string {
	const maxLen = 64
	if len(v) <= maxLen {
		return strconv.Quote(v)
	}
	cut := maxLen
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strconv.Quote(v[:cut]) + "..."
}
