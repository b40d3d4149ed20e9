package failover

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Distinctive secrets: no error may contain them, nor "secret" in any case
// (url.Parse lowercases a scheme).
const (
	envTestKey    = "sk-SECRET-xyz"
	envTestKey2   = "sk-SECRET-abc"
	envTestURL    = "https://proxy.example/v1?key=sk-SECRET-url"
	envTestURLKey = "sk-SECRET-url"
)

// envSecrets is appended to the environ of each error case, so that every
// error is produced beside keys and a URL with a secret. Appended last, it
// never overrides a case's own variables (the first occurrence counts).
var envSecrets = []string{
	"OPENAI_API_KEY=" + envTestKey,
	"OPENAI_API_KEY_7=" + envTestKey2,
	"OPENAI_BASE_URL_7=" + envTestURL,
}

func mustConfigFromEnviron(t *testing.T, environ ...string) Config {
	t.Helper()
	cfg, err := ConfigFromEnviron(environ)
	if err != nil {
		t.Fatalf("ConfigFromEnviron(%q): %v", environ, err)
	}
	return cfg
}

func mustEnvironError(t *testing.T, environ ...string) error {
	t.Helper()
	cfg, err := ConfigFromEnviron(environ)
	if err == nil {
		t.Fatalf("ConfigFromEnviron(%q) = %+v, want an error", environ, cfg)
	}
	if !reflect.DeepEqual(cfg, Config{}) {
		t.Errorf("ConfigFromEnviron(%q) returned %+v beside its error, want a zero Config", environ, cfg)
	}
	assertNoEnvSecrets(t, err, environ)
	return err
}

// assertNoEnvSecrets fails unless err's text is free of the test secrets
// and of every key and base URL value in environ.
func assertNoEnvSecrets(t *testing.T, err error, environ []string) {
	t.Helper()
	msg := err.Error()
	for _, s := range []string{envTestKey, envTestKey2, envTestURL, envTestURLKey} {
		if strings.Contains(msg, s) {
			t.Errorf("error contains the secret %q:\n%s", s, msg)
		}
	}
	if strings.Contains(strings.ToLower(msg), "secret") {
		t.Errorf("error contains a secret:\n%s", msg)
	}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		v = strings.TrimSpace(v)
		if len(v) < 4 || !(strings.HasPrefix(k, "OPENAI_API_KEY") || strings.HasPrefix(k, "OPENAI_BASE_URL")) {
			continue
		}
		if strings.Contains(msg, v) {
			t.Errorf("error contains the value of %s:\n%s", k, msg)
		}
	}
}

func TestConfigFromEnvironLegacy(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    Endpoint
	}{
		{"key only", []string{"OPENAI_API_KEY=sk-1"},
			Endpoint{BaseURL: DefaultClientBaseURL, APIKey: "sk-1"}},
		{"url only", []string{"OPENAI_BASE_URL=http://localhost:8080/v1"},
			Endpoint{BaseURL: "http://localhost:8080/v1"}},
		{"both", []string{"OPENAI_API_KEY=sk-1", "OPENAI_BASE_URL=https://proxy.example/openai/v1"},
			Endpoint{BaseURL: "https://proxy.example/openai/v1", APIKey: "sk-1"}},
		{"trimmed", []string{"OPENAI_API_KEY= sk-1\n", "OPENAI_BASE_URL=\thttps://proxy.example/v1 \r\n"},
			Endpoint{BaseURL: "https://proxy.example/v1", APIKey: "sk-1"}},
		{"first occurrence wins", []string{"OPENAI_API_KEY=sk-1", "OPENAI_API_KEY=sk-2"},
			Endpoint{BaseURL: DefaultClientBaseURL, APIKey: "sk-1"}},
		{"malformed and unrelated entries", []string{"garbage", "=", "OPENAI_API_KEY", "HOME=/root", "OPENAI_API_KEY=sk-1", "OPENAI_MODEL=gpt-4o", "OPENAI_API_KEY_X=sk-x"},
			Endpoint{BaseURL: DefaultClientBaseURL, APIKey: "sk-1"}},
		{"globals do not make endpoints", []string{"OPENAI_MAX_RETRIES=2", "OPENAI_API_KEY=sk-1"},
			Endpoint{BaseURL: DefaultClientBaseURL, APIKey: "sk-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, tt.environ...)
			if want := []Endpoint{tt.want}; !reflect.DeepEqual(cfg.Endpoints, want) {
				t.Errorf("Endpoints = %+v, want %+v", cfg.Endpoints, want)
			}
			if cfg.ClientBaseURLs != nil {
				t.Errorf("ClientBaseURLs = %q, want nil", cfg.ClientBaseURLs)
			}
		})
	}
}

func TestConfigFromEnvironNumberedOrder(t *testing.T) {
	cfg := mustConfigFromEnviron(t,
		"OPENAI_API_KEY_10=sk-10",
		"OPENAI_API_KEY_2=sk-2",
		"OPENAI_NAME_1=one",
		"OPENAI_API_KEY_1=sk-1",
		"OPENAI_API_KEY_3=", // empty: unset, endpoint 3 does not exist
		"OPENAI_API_KEY_4= \t",
	)
	var got []string
	for _, e := range cfg.Endpoints {
		got = append(got, fmt.Sprintf("%s/%d", e.APIKey, e.Priority))
	}
	if want := []string{"sk-1/1", "sk-2/2", "sk-10/10"}; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints (key/priority) = %q, want %q", got, want)
	}
}

func TestConfigFromEnvironDefaults(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []Endpoint
	}{
		{"keys for the default URL", []string{"OPENAI_API_KEY_1=sk-1", "OPENAI_API_KEY_2=sk-2"}, []Endpoint{
			{BaseURL: DefaultClientBaseURL, APIKey: "sk-1", Priority: 1},
			{BaseURL: DefaultClientBaseURL, APIKey: "sk-2", Priority: 2},
		}},
		{"keys for OPENAI_BASE_URL", []string{"OPENAI_BASE_URL=http://localhost:8080/v1", "OPENAI_API_KEY_1=sk-1", "OPENAI_API_KEY_2=sk-2"}, []Endpoint{
			{BaseURL: "http://localhost:8080/v1", APIKey: "sk-1", Priority: 1},
			{BaseURL: "http://localhost:8080/v1", APIKey: "sk-2", Priority: 2},
		}},
		{"urls inherit OPENAI_API_KEY", []string{"OPENAI_API_KEY=sk-0", "OPENAI_BASE_URL_1=https://a.example/v1", "OPENAI_BASE_URL_2=https://b.example/v1", "OPENAI_API_KEY_2=sk-2"}, []Endpoint{
			{BaseURL: "https://a.example/v1", APIKey: "sk-0", Priority: 1},
			{BaseURL: "https://b.example/v1", APIKey: "sk-2", Priority: 2},
		}},
		{"keyless local servers", []string{"OPENAI_BASE_URL_1=http://localhost:8080/v1", "OPENAI_BASE_URL_2=http://localhost:8081/v1"}, []Endpoint{
			{BaseURL: "http://localhost:8080/v1", Priority: 1},
			{BaseURL: "http://localhost:8081/v1", Priority: 2},
		}},
		{"any variable makes an endpoint", []string{"OPENAI_API_KEY=sk-0", "OPENAI_WEIGHT_5=3"}, []Endpoint{
			{BaseURL: DefaultClientBaseURL, APIKey: "sk-0", Priority: 5, Weight: 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, tt.environ...)
			if !reflect.DeepEqual(cfg.Endpoints, tt.want) {
				t.Errorf("Endpoints = %+v,\nwant %+v", cfg.Endpoints, tt.want)
			}
			if cfg.MaxRetries != 0 || cfg.BackoffMin != 0 {
				t.Errorf("MaxRetries, BackoffMin = %d, %v; want zero", cfg.MaxRetries, cfg.BackoffMin)
			}
		})
	}
}

func TestConfigFromEnvironEndpointFields(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    Endpoint // endpoint 1
	}{
		{"all", []string{
			"OPENAI_BASE_URL_1=https://proxy.example/v1?api-version=2024",
			"OPENAI_API_KEY_1=sk-1",
			"OPENAI_PRIORITY_1=-3",
			"OPENAI_WEIGHT_1=4",
			"OPENAI_MAX_RPS_1=2.5",
			"OPENAI_BURST_1=7",
			"OPENAI_TIMEOUT_1=30s",
			"OPENAI_ENABLED_1=true",
			"OPENAI_FORWARD_AUTH_1=true",
			"OPENAI_NAME_1=primary",
		}, Endpoint{
			Name: "primary", BaseURL: "https://proxy.example/v1?api-version=2024", APIKey: "sk-1",
			Priority: -3, Weight: 4, MaxRPS: 2.5, Burst: 7, Timeout: 30 * time.Second, ForwardCallerAuth: true,
		}},
		{"timeout in milliseconds", []string{"OPENAI_TIMEOUT_1=1500"},
			Endpoint{BaseURL: DefaultClientBaseURL, Priority: 1, Timeout: 1500 * time.Millisecond}},
		{"timeout composite duration", []string{"OPENAI_TIMEOUT_1=1m30s"},
			Endpoint{BaseURL: DefaultClientBaseURL, Priority: 1, Timeout: 90 * time.Second}},
		{"timeout zero", []string{"OPENAI_TIMEOUT_1=0"},
			Endpoint{BaseURL: DefaultClientBaseURL, Priority: 1}},
		{"priority zero", []string{"OPENAI_PRIORITY_1=0"},
			Endpoint{BaseURL: DefaultClientBaseURL, Priority: 0}},
		{"rps integer", []string{"OPENAI_MAX_RPS_1=10"},
			Endpoint{BaseURL: DefaultClientBaseURL, Priority: 1, MaxRPS: 10}},
		{"values trimmed", []string{"OPENAI_WEIGHT_1= 2\n", "OPENAI_NAME_1=\tmain \n"},
			Endpoint{Name: "main", BaseURL: DefaultClientBaseURL, Priority: 1, Weight: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, tt.environ...)
			if want := []Endpoint{tt.want}; !reflect.DeepEqual(cfg.Endpoints, want) {
				t.Errorf("Endpoints = %+v,\nwant %+v", cfg.Endpoints, want)
			}
		})
	}
	// Booleans, on endpoint 1 beside an enabled endpoint 2 (all disabled
	// is an error).
	for _, b := range []struct {
		v        string
		disabled bool
	}{
		{"false", true}, {"FALSE", true}, {"0", true}, {"f", true}, {"no", true}, {"No", true}, {"off", true}, {"OFF", true},
		{"true", false}, {"True", false}, {"1", false}, {"T", false}, {"yes", false}, {"YES", false}, {"on", false}, {"On", false},
	} {
		t.Run("enabled "+b.v, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, "OPENAI_ENABLED_1="+b.v, "OPENAI_PRIORITY_2=2", "OPENAI_FORWARD_AUTH_2="+b.v)
			want := []Endpoint{
				{BaseURL: DefaultClientBaseURL, Priority: 1, Disabled: b.disabled},
				{BaseURL: DefaultClientBaseURL, Priority: 2, ForwardCallerAuth: !b.disabled},
			}
			if !reflect.DeepEqual(cfg.Endpoints, want) {
				t.Errorf("Endpoints = %+v,\nwant %+v", cfg.Endpoints, want)
			}
		})
	}
}

func TestConfigFromEnvironAllDisabled(t *testing.T) {
	err := mustEnvironError(t, "OPENAI_ENABLED_1=false", "OPENAI_API_KEY_2=sk-SECRET-two", "OPENAI_ENABLED_2=off")
	if !strings.Contains(err.Error(), "OPENAI_ENABLED_N=false") {
		t.Errorf("error %q, want it to say every endpoint is disabled", err)
	}
}

func TestConfigFromEnvironGlobals(t *testing.T) {
	tests := []struct {
		name           string
		environ        []string
		wantMaxRetries int
		wantBackoffMin time.Duration
	}{
		{"none", nil, 0, 0},
		{"fallback disabled", []string{"OPENAI_FALLBACK_ENABLED=false"}, -1, 0},
		{"fallback disabled, off", []string{"OPENAI_FALLBACK_ENABLED=Off"}, -1, 0},
		{"fallback enabled", []string{"OPENAI_FALLBACK_ENABLED=true"}, 0, 0},
		{"fallback disabled beats max retries", []string{"OPENAI_FALLBACK_ENABLED=no", "OPENAI_MAX_RETRIES=4"}, -1, 0},
		{"max retries zero", []string{"OPENAI_MAX_RETRIES=0"}, -1, 0},
		{"max retries two", []string{"OPENAI_MAX_RETRIES=2"}, 2, 0},
		{"max retries at the limit", []string{"OPENAI_MAX_RETRIES=1000"}, 1000, 0},
		{"backoff", []string{"OPENAI_BACKOFF_MS=250"}, 0, 250 * time.Millisecond},
		{"backoff zero", []string{"OPENAI_BACKOFF_MS=0"}, 0, 0},
		{"all", []string{"OPENAI_FALLBACK_ENABLED=yes", "OPENAI_MAX_RETRIES=5 ", "OPENAI_BACKOFF_MS=1000"}, 5, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, append(tt.environ, "OPENAI_API_KEY=sk-1")...)
			if cfg.MaxRetries != tt.wantMaxRetries {
				t.Errorf("MaxRetries = %d, want %d", cfg.MaxRetries, tt.wantMaxRetries)
			}
			if cfg.BackoffMin != tt.wantBackoffMin {
				t.Errorf("BackoffMin = %v, want %v", cfg.BackoffMin, tt.wantBackoffMin)
			}
		})
	}
}

func TestConfigFromEnvironClientBaseURLs(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"legacy key", []string{"OPENAI_API_KEY=sk-1"}, nil},
		{"legacy url", []string{"OPENAI_BASE_URL=http://localhost:8080/v1"}, nil},
		{"numbered without OPENAI_BASE_URL", []string{"OPENAI_API_KEY=sk-0", "OPENAI_BASE_URL_1=https://a.example/v1"}, nil},
		{"numbered beside OPENAI_BASE_URL", []string{"OPENAI_BASE_URL=https://gw.example/v1", "OPENAI_BASE_URL_1=https://a.example/v1"},
			[]string{DefaultClientBaseURL, "https://gw.example/v1"}},
		{"inherited OPENAI_BASE_URL", []string{"OPENAI_BASE_URL=http://localhost:8080/v1", "OPENAI_API_KEY_1=sk-1", "OPENAI_API_KEY_2=sk-2"},
			[]string{DefaultClientBaseURL, "http://localhost:8080/v1"}},
		{"deduplicated", []string{"OPENAI_BASE_URL=https://API.openai.com:443/v1/", "OPENAI_API_KEY_1=sk-1"},
			[]string{DefaultClientBaseURL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, tt.environ...)
			if !reflect.DeepEqual(cfg.ClientBaseURLs, tt.want) {
				t.Errorf("ClientBaseURLs = %q, want %q", cfg.ClientBaseURLs, tt.want)
			}
		})
	}
}

func TestConfigFromEnvironNoConfig(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
	}{
		{"nil", nil},
		{"unrelated", []string{"HOME=/root", "PATH=/bin", "OPENAI_MODEL=gpt-4o", "OPENAI_ORG_ID=org-1"}},
		{"empty values", []string{"OPENAI_API_KEY=", "OPENAI_BASE_URL=", "OPENAI_API_KEY_1="}},
		{"white space values", []string{"OPENAI_API_KEY= \n", "OPENAI_BASE_URL_1=\t"}},
		{"globals only", []string{"OPENAI_MAX_RETRIES=2", "OPENAI_FALLBACK_ENABLED=true"}},
		{"not numbered", []string{"OPENAI_API_KEY_X=sk-x", "OPENAI_API_KEY_1a=sk-x", "OPENAI_API_KEY_=sk-x", "OPENAI_API_KEYS=sk-x"}},
		{"malformed", []string{"OPENAI_API_KEY", "", "="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mustEnvironError(t, tt.environ...)
			if !errors.Is(err, ErrNoEnvConfig) {
				t.Fatalf("error = %v, want ErrNoEnvConfig", err)
			}
			for _, v := range []string{"OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_BASE_URL_1", "OPENAI_API_KEY_1"} {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("error %q does not name %s", err, v)
				}
			}
		})
	}
	t.Run("with a bad global", func(t *testing.T) {
		err := mustEnvironError(t, "OPENAI_MAX_RETRIES=many")
		if !errors.Is(err, ErrNoEnvConfig) || !strings.Contains(err.Error(), "OPENAI_MAX_RETRIES") {
			t.Errorf("error = %v, want ErrNoEnvConfig and OPENAI_MAX_RETRIES", err)
		}
	})
}

// envErrorCases are bad environments, each with the variables its error
// must name. envSecrets is added to each.
var envErrorCases = []struct {
	name     string
	environ  []string
	wantVars []string
}{
	{"url scheme", []string{"OPENAI_BASE_URL_1=ftp://sk-SECRET-url.example/v1"}, []string{"OPENAI_BASE_URL_1"}},
	{"url scheme is a secret", []string{"OPENAI_BASE_URL_1=sk-SECRET-url:x"}, []string{"OPENAI_BASE_URL_1"}},
	{"url without scheme", []string{"OPENAI_BASE_URL_1=proxy.example/v1?key=sk-SECRET-url"}, []string{"OPENAI_BASE_URL_1"}},
	{"url does not parse", []string{"OPENAI_BASE_URL_1=https://proxy example/v1?key=sk-SECRET-url"}, []string{"OPENAI_BASE_URL_1"}},
	{"url with user", []string{"OPENAI_BASE_URL_1=https://user:sk-SECRET-url@proxy.example/v1"}, []string{"OPENAI_BASE_URL_1"}},
	{"url with fragment", []string{"OPENAI_BASE_URL_1=https://proxy.example/v1#sk-SECRET-url"}, []string{"OPENAI_BASE_URL_1"}},
	{"url without host", []string{"OPENAI_BASE_URL_1=https:///v1?key=sk-SECRET-url"}, []string{"OPENAI_BASE_URL_1"}},
	{"legacy url", []string{"OPENAI_BASE_URL=ftp://proxy.example/v1?key=sk-SECRET-url"}, []string{"OPENAI_BASE_URL"}},
	{"legacy url alone", []string{"OPENAI_BASE_URL=mailto:sk-SECRET-url@example.com"}, []string{"OPENAI_BASE_URL"}},
	{"key with a line break", []string{"OPENAI_API_KEY_1=sk-SECRET\nxyz"}, []string{"OPENAI_API_KEY_1"}},
	{"legacy key with a control character", []string{"OPENAI_API_KEY=sk-SECRET\x01xyz"}, []string{"OPENAI_API_KEY"}},
	{"priority", []string{"OPENAI_PRIORITY_2=high"}, []string{"OPENAI_PRIORITY_2"}},
	{"priority out of range", []string{"OPENAI_PRIORITY_2=99999999999999999999"}, []string{"OPENAI_PRIORITY_2"}},
	{"priority float", []string{"OPENAI_PRIORITY_2=1.5"}, []string{"OPENAI_PRIORITY_2"}},
	{"weight negative", []string{"OPENAI_WEIGHT_1=-1"}, []string{"OPENAI_WEIGHT_1"}},
	{"weight not a number", []string{"OPENAI_WEIGHT_1=heavy"}, []string{"OPENAI_WEIGHT_1"}},
	{"rps negative", []string{"OPENAI_MAX_RPS_1=-0.5"}, []string{"OPENAI_MAX_RPS_1"}},
	{"rps NaN", []string{"OPENAI_MAX_RPS_1=NaN"}, []string{"OPENAI_MAX_RPS_1"}},
	{"rps Inf", []string{"OPENAI_MAX_RPS_1=+Inf"}, []string{"OPENAI_MAX_RPS_1"}},
	{"rps overflow", []string{"OPENAI_MAX_RPS_1=1e400"}, []string{"OPENAI_MAX_RPS_1"}},
	{"rps not a number", []string{"OPENAI_MAX_RPS_1=fast"}, []string{"OPENAI_MAX_RPS_1"}},
	{"burst negative", []string{"OPENAI_BURST_1=-2"}, []string{"OPENAI_BURST_1"}},
	{"timeout not a duration", []string{"OPENAI_TIMEOUT_1=soon"}, []string{"OPENAI_TIMEOUT_1"}},
	{"timeout without unit", []string{"OPENAI_TIMEOUT_1=1.5"}, []string{"OPENAI_TIMEOUT_1"}},
	{"timeout negative duration", []string{"OPENAI_TIMEOUT_1=-1s"}, []string{"OPENAI_TIMEOUT_1"}},
	{"timeout negative milliseconds", []string{"OPENAI_TIMEOUT_1=-5"}, []string{"OPENAI_TIMEOUT_1"}},
	{"timeout out of range", []string{"OPENAI_TIMEOUT_1=99999999999999999"}, []string{"OPENAI_TIMEOUT_1"}},
	{"enabled", []string{"OPENAI_ENABLED_3=maybe"}, []string{"OPENAI_ENABLED_3"}},
	{"duplicate names", []string{"OPENAI_NAME_1=main", "OPENAI_NAME_3=main"}, []string{"OPENAI_NAME_3", "OPENAI_NAME_1"}},
	{"leading zero", []string{"OPENAI_API_KEY_01=sk-SECRET-zero"}, []string{"OPENAI_API_KEY_01"}},
	{"plus sign", []string{"OPENAI_BASE_URL_+1=https://a.example/v1"}, []string{"OPENAI_BASE_URL_+1"}},
	{"minus sign", []string{"OPENAI_WEIGHT_-1=2"}, []string{"OPENAI_WEIGHT_-1"}},
	{"zero", []string{"OPENAI_NAME_0=zero"}, []string{"OPENAI_NAME_0"}},
	{"number out of range", []string{"OPENAI_API_KEY_99999999999999999999999=sk-SECRET-big"}, []string{"OPENAI_API_KEY_99999999999999999999999"}},
	{"fallback", []string{"OPENAI_FALLBACK_ENABLED=perhaps"}, []string{"OPENAI_FALLBACK_ENABLED"}},
	{"max retries negative", []string{"OPENAI_MAX_RETRIES=-1"}, []string{"OPENAI_MAX_RETRIES"}},
	{"max retries not a number", []string{"OPENAI_MAX_RETRIES=three"}, []string{"OPENAI_MAX_RETRIES"}},
	{"max retries above the limit", []string{"OPENAI_MAX_RETRIES=1001"}, []string{"OPENAI_MAX_RETRIES"}},
	{"max retries that would overflow", []string{"OPENAI_MAX_RETRIES=9223372036854775807"}, []string{"OPENAI_MAX_RETRIES"}},
	{"name not UTF-8", []string{"OPENAI_NAME_1=caf\xe9"}, []string{"OPENAI_NAME_1"}},
	{"base URL query does not parse", []string{"OPENAI_BASE_URL_1=https://a.example/v1?key=sk-SECRET-q;x"}, []string{"OPENAI_BASE_URL_1"}},
	{"backoff negative", []string{"OPENAI_BACKOFF_MS=-5"}, []string{"OPENAI_BACKOFF_MS"}},
	{"backoff not a number", []string{"OPENAI_BACKOFF_MS=1s"}, []string{"OPENAI_BACKOFF_MS"}},
	{"backoff out of range", []string{"OPENAI_BACKOFF_MS=99999999999999"}, []string{"OPENAI_BACKOFF_MS"}},
}

func TestConfigFromEnvironErrors(t *testing.T) {
	for _, tt := range envErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			environ := append(append([]string(nil), tt.environ...), envSecrets...)
			err := mustEnvironError(t, environ...)
			msg := err.Error()
			if errors.Is(err, ErrNoEnvConfig) {
				t.Errorf("error matches ErrNoEnvConfig: %v", err)
			}
			lines := strings.Split(msg, "\n")
			if len(lines) != 1 {
				t.Errorf("error has %d lines, want 1:\n%s", len(lines), msg)
			}
			if want := "failover: " + tt.wantVars[0] + ": "; !strings.HasPrefix(msg, want) {
				t.Errorf("error %q does not begin with %q", msg, want)
			}
			for _, v := range tt.wantVars[1:] {
				if !strings.Contains(msg, v) {
					t.Errorf("error %q does not name %s", msg, v)
				}
			}
		})
	}
}

func TestConfigFromEnvironErrorText(t *testing.T) {
	tests := []struct {
		environ []string
		want    string
	}{
		{[]string{"OPENAI_PRIORITY_2=high"}, `failover: OPENAI_PRIORITY_2: "high" is not an integer`},
		{[]string{"OPENAI_ENABLED_1=maybe"}, `failover: OPENAI_ENABLED_1: "maybe" is not a boolean (want true/false, yes/no, on/off or 1/0)`},
		{[]string{"OPENAI_WEIGHT_1=-1"}, `failover: OPENAI_WEIGHT_1: "-1" is negative`},
		{[]string{"OPENAI_NAME_1=a", "OPENAI_NAME_2=a"}, `failover: OPENAI_NAME_2: name "a" is already used by OPENAI_NAME_1`},
		{[]string{"OPENAI_BASE_URL_1=ftp://x.example"}, `failover: OPENAI_BASE_URL_1: scheme is not http or https`},
		{[]string{"OPENAI_API_KEY_01=k"}, `failover: OPENAI_API_KEY_01: ambiguous endpoint number; write N as a positive integer without sign or leading zeros (_1, _2, ..., _10)`},
		{[]string{"OPENAI_BURST_1=" + strings.Repeat("é", 40)}, `failover: OPENAI_BURST_1: "ééé"... (80 bytes) is not an integer`},
		{[]string{"OPENAI_WEIGHT_1=sk-proj-SECRET0123456789"}, `failover: OPENAI_WEIGHT_1: "sk-"... (24 bytes) is not an integer`},
		{[]string{"OPENAI_NAME_1=sk-proj-\xffSECRET0123456789"}, `failover: OPENAI_NAME_1: "sk-"... (25 bytes) is not valid UTF-8`},
		{[]string{"OPENAI_WEIGHT_1=1.5"}, `failover: OPENAI_WEIGHT_1: "1.5" is not an integer`},
		{[]string{"OPENAI_NAME_1=" + pastedKey, "OPENAI_MAX_RPS_1=0.0001"},
			`failover: OPENAI_MAX_RPS_1: "0.0001" is below one request an hour (0.000277778); to take no traffic, set OPENAI_ENABLED_N=false`},
		{[]string{"OPENAI_MAX_TPM_1=3e9"}, `failover: OPENAI_MAX_TPM_1: "3e9" is above 2147483647`},
		{[]string{"OPENAI_TOKEN_BURST_1=3000000000"}, `failover: OPENAI_TOKEN_BURST_1: "300"... (10 bytes) is above 2147483647`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			err := mustEnvironError(t, tt.environ...)
			if err.Error() != tt.want {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
		})
	}
}

// TestConfigFromEnvironNoSecretsInErrors checks every error case, and every
// error case at once, for secrets: keys and base URLs, valid or not.
func TestConfigFromEnvironNoSecretsInErrors(t *testing.T) {
	all := append([]string(nil), envSecrets...)
	for _, tt := range envErrorCases {
		environ := append(append([]string(nil), tt.environ...), envSecrets...)
		err := mustEnvironError(t, environ...)
		assertNoEnvSecrets(t, err, environ)
		all = append(all, tt.environ...)
	}
	err := mustEnvironError(t, all...)
	assertNoEnvSecrets(t, err, all)
	// The secrets went into the Config where nothing failed.
	cfg := mustConfigFromEnviron(t, envSecrets...)
	if got := cfg.Endpoints[0]; got.APIKey != envTestKey2 || got.BaseURL != envTestURL {
		t.Errorf("endpoint 7 = %+v, want the secret key and URL", got)
	}
}

func TestConfigFromEnvironReportsAllProblems(t *testing.T) {
	err := mustEnvironError(t,
		"OPENAI_NAME_2=b",
		"OPENAI_PRIORITY_2=high",
		"OPENAI_BASE_URL_10=nope",
		"OPENAI_MAX_RETRIES=-1",
		"OPENAI_NAME_10=b",
		"OPENAI_API_KEY_01=sk-SECRET-zero",
		"OPENAI_WEIGHT_1=-3",
	)
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		"OPENAI_API_KEY_01", "OPENAI_MAX_RETRIES", "OPENAI_WEIGHT_1",
		"OPENAI_PRIORITY_2", "OPENAI_BASE_URL_10", "OPENAI_NAME_10",
	}
	if len(lines) != len(want) {
		t.Fatalf("error has %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, v := range want {
		if p := "failover: " + v + ": "; !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d = %q, want it to begin with %q", i, lines[i], p)
		}
	}
}

// TestConfigFromEnvironAcceptedByNew checks that New accepts what
// ConfigFromEnviron returns.
func TestConfigFromEnvironAcceptedByNew(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
	}{
		{"legacy", []string{"OPENAI_API_KEY=sk-1"}},
		{"one host, several keys", []string{"OPENAI_API_KEY_1=sk-1", "OPENAI_API_KEY_2=sk-2", "OPENAI_API_KEY_3=sk-3"}},
		{"everything", []string{
			"OPENAI_BASE_URL=http://localhost:8080/v1",
			"OPENAI_API_KEY=sk-0",
			"OPENAI_BASE_URL_1=https://a.example/v1", "OPENAI_NAME_1=a", "OPENAI_MAX_RPS_1=0.5",
			"OPENAI_API_KEY_2=sk-2", "OPENAI_TIMEOUT_2=1500", "OPENAI_ENABLED_2=off", "OPENAI_WEIGHT_2=3",
			"OPENAI_NAME_3=localhost", "OPENAI_BURST_3=4",
			"OPENAI_FALLBACK_ENABLED=true", "OPENAI_MAX_RETRIES=2", "OPENAI_BACKOFF_MS=250",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, tt.environ...)
			if _, err := New(cfg); err != nil {
				t.Errorf("New(ConfigFromEnviron(%q)): %v", tt.environ, err)
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	// Unset (empty counts as unset) whatever OPENAI_* the machine has.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OPENAI_") {
			t.Setenv(k, "")
		}
	}
	if _, err := ConfigFromEnv(); !errors.Is(err, ErrNoEnvConfig) {
		t.Fatalf("ConfigFromEnv() without variables: error = %v, want ErrNoEnvConfig", err)
	}
	t.Setenv("OPENAI_API_KEY_2", "sk-2")
	t.Setenv("OPENAI_API_KEY_1", "sk-1")
	t.Setenv("OPENAI_MAX_RETRIES", "1")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatalf("ConfigFromEnv(): %v", err)
	}
	want := Config{
		Endpoints: []Endpoint{
			{BaseURL: DefaultClientBaseURL, APIKey: "sk-1", Priority: 1},
			{BaseURL: DefaultClientBaseURL, APIKey: "sk-2", Priority: 2},
		},
		MaxRetries: 1,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("ConfigFromEnv() = %+v, want %+v", cfg, want)
	}
}

// FuzzConfigFromEnviron feeds environs, as entries separated by NUL (which
// no environment variable can contain). ConfigFromEnviron must not panic;
// what it returns must be accepted by New; and its error must not depend
// on, nor contain, the value of any OPENAI_API_KEY* variable.
//
// The check is exact rather than heuristic: the same environ with every key
// value replaced by a placeholder of the same kind (unset, valid, or
// holding a control character) must give the very same error text, so no
// part of a key can reach it. A key value that the error nonetheless
// contains is reported as such unless it is shorter than 4 bytes or the
// placeholder run's error contains it too (it is then part of a variable
// name, of another variable's value, or of the fixed message text).
func FuzzConfigFromEnviron(f *testing.F) {
	seeds := [][]string{
		{"OPENAI_API_KEY=sk-1"},
		{"OPENAI_BASE_URL=http://localhost:8080/v1"},
		{"OPENAI_API_KEY= sk-1\n", "OPENAI_BASE_URL=https://proxy.example/v1"},
		{"OPENAI_API_KEY_10=sk-10", "OPENAI_API_KEY_2=sk-2", "OPENAI_API_KEY_1=sk-1"},
		{"OPENAI_API_KEY=sk-0", "OPENAI_BASE_URL=http://localhost:1/v1", "OPENAI_WEIGHT_5=3", "OPENAI_BASE_URL_2=https://b.example"},
		{"OPENAI_BASE_URL_1=https://proxy.example/v1?api-version=2024", "OPENAI_API_KEY_1=sk-1", "OPENAI_PRIORITY_1=-3",
			"OPENAI_WEIGHT_1=4", "OPENAI_MAX_RPS_1=2.5", "OPENAI_BURST_1=7", "OPENAI_TIMEOUT_1=30s", "OPENAI_ENABLED_1=false", "OPENAI_NAME_1=primary"},
		{"OPENAI_TIMEOUT_1=1500", "OPENAI_ENABLED_2=Off", "OPENAI_ENABLED_3=yes"},
		{"OPENAI_FALLBACK_ENABLED=false", "OPENAI_MAX_RETRIES=0", "OPENAI_BACKOFF_MS=250", "OPENAI_API_KEY=k"},
		{"OPENAI_MAX_RETRIES=2", "OPENAI_BASE_URL=https://gw.example/v1", "OPENAI_BASE_URL_1=https://a.example/v1"},
		{"OPENAI_BASE_URL=https://API.openai.com:443/v1/", "OPENAI_API_KEY_1=sk-1"},
		nil,
		{"garbage", "=", "OPENAI_API_KEY", "OPENAI_MODEL=gpt-4o", "OPENAI_API_KEY_X=sk-x"},
		{"OPENAI_NAME_1=sk-SECRET-xyz", "OPENAI_NAME_3=sk-SECRET-xyz", "OPENAI_API_KEY_3=sk-SECRET-xyz"},
		{"OPENAI_API_KEY_1=sk-SECRET\nxyz", "OPENAI_API_KEY=sk-SECRET\x01xyz"},
		{"OPENAI_BASE_URL_1=sk-secret-url:x", "OPENAI_API_KEY_1=sk-secret-url"},
		{"OPENAI_API_KEY_01=sk-SECRET-zero", "OPENAI_API_KEY_+1=x", "OPENAI_API_KEY_0=x", "OPENAI_API_KEY_99999999999999999999999=sk-big"},
		{"OPENAI_PRIORITY_2=high", "OPENAI_MAX_RPS_1=NaN", "OPENAI_MAX_RPS_2=1e400", "OPENAI_BURST_1=-2", "OPENAI_TIMEOUT_1=-1s",
			"OPENAI_ENABLED_3=maybe", "OPENAI_WEIGHT_1=-1", "OPENAI_MAX_RETRIES=-1", "OPENAI_BACKOFF_MS=99999999999999", "OPENAI_FALLBACK_ENABLED=perhaps"},
		{"OPENAI_PRIORITY_1=sk-SECRET-xyz-priority", "OPENAI_API_KEY_1=SECRET-xyz", "OPENAI_NAME_1=ü\u2028\xff"},
	}
	for _, s := range seeds {
		f.Add(strings.Join(s, "\x00"))
	}
	f.Fuzz(func(t *testing.T, in string) {
		var environ []string
		if in != "" {
			environ = strings.Split(in, "\x00")
		}
		cfg, err := ConfigFromEnviron(environ)
		if err == nil {
			if len(cfg.Endpoints) == 0 {
				t.Fatalf("no error and no endpoint")
			}
			if _, err := New(cfg); err != nil {
				t.Fatalf("New rejects the Config: %v", err)
			}
			return
		}
		if !reflect.DeepEqual(cfg, Config{}) {
			t.Fatalf("Config %+v returned beside the error %v", cfg, err)
		}
		msg := err.Error()
		for _, line := range strings.Split(msg, "\n") {
			if !strings.HasPrefix(line, "failover: ") {
				t.Fatalf("error line %q lacks the prefix", line)
			}
		}

		blind, keys := blindEnvKeys(environ)
		_, blindErr := ConfigFromEnviron(blind)
		blindMsg := ""
		if blindErr != nil {
			blindMsg = blindErr.Error()
		}
		for _, k := range keys {
			if len(k) >= 4 && strings.Contains(msg, k) && !strings.Contains(blindMsg, k) {
				t.Fatalf("error contains the key %q:\n%s", k, msg)
			}
		}
		if msg != blindMsg {
			t.Fatalf("error depends on the key values:\n%s\nwith placeholders:\n%s", msg, blindMsg)
		}
	})
}

// blindEnvKeys returns environ with the value of every OPENAI_API_KEY*
// variable replaced by a placeholder that ConfigFromEnviron treats alike
// (unset if blank, holding a control character if it does), and the
// trimmed values replaced.
func blindEnvKeys(environ []string) (blind, keys []string) {
	blind = make([]string, len(environ))
	for i, kv := range environ {
		blind[i] = kv
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "OPENAI_API_KEY") {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		keys = append(keys, v)
		p := fmt.Sprintf("blind-key-%d", i)
		if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			p += "\x01"
		}
		blind[i] = k + "=" + p
	}
	return blind, keys
}

// TestConfigFromEnvironAttemptsThroughTransport: the failover variables
// bound the attempts of a Transport built from them, not just the parsed
// Config. OPENAI_FALLBACK_ENABLED=false and OPENAI_MAX_RETRIES=0 make one
// attempt (the caller gets the first endpoint's failure);
// OPENAI_MAX_RETRIES=2 makes three, one on each endpoint.
func TestConfigFromEnvironAttemptsThroughTransport(t *testing.T) {
	endpoints := []string{
		"OPENAI_BASE_URL_1=https://a.test/v1", "OPENAI_API_KEY_1=key-a",
		"OPENAI_BASE_URL_2=https://b.test/v1", "OPENAI_API_KEY_2=key-b",
		"OPENAI_BASE_URL_3=https://c.test/v1", "OPENAI_API_KEY_3=key-c",
	}
	for _, tc := range []struct {
		name       string
		globals    []string
		codes      map[string][]int // statuses by host, without .test
		wantHosts  []string         // the attempts, in order
		wantStatus int
	}{
		{"fallback disabled", []string{"OPENAI_FALLBACK_ENABLED=false"},
			map[string][]int{"a": {500}, "b": {200}, "c": {200}}, []string{"a.test"}, 500},
		{"fallback disabled beats max retries", []string{"OPENAI_FALLBACK_ENABLED=false", "OPENAI_MAX_RETRIES=4"},
			map[string][]int{"a": {500}, "b": {200}, "c": {200}}, []string{"a.test"}, 500},
		{"max retries zero", []string{"OPENAI_MAX_RETRIES=0"},
			map[string][]int{"a": {500}, "b": {200}, "c": {200}}, []string{"a.test"}, 500},
		{"max retries two, all failing", []string{"OPENAI_MAX_RETRIES=2"},
			map[string][]int{"a": {500}, "b": {502}, "c": {503}}, []string{"a.test", "b.test", "c.test"}, 503},
		{"max retries one, all failing", []string{"OPENAI_MAX_RETRIES=1"},
			map[string][]int{"a": {500}, "b": {502}, "c": {503}}, []string{"a.test", "b.test"}, 502},
		{"defaults fail over", nil,
			map[string][]int{"a": {500}, "b": {200}, "c": {200}}, []string{"a.test", "b.test"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustConfigFromEnviron(t, append(append([]string(nil), endpoints...), tc.globals...)...)
			base := newScriptedBase(statusScript(tc.codes))
			cfg.Base = base
			cfg.Breaker = BreakerConfig{FailureThreshold: 100} // the breakers stay out of it
			tr, clk := newTestTransport(t, cfg)
			if code, _ := chat(t, tr); code != tc.wantStatus {
				t.Errorf("status %d, want %d", code, tc.wantStatus)
			}
			var hosts []string
			for _, s := range base.Seen() {
				hosts = append(hosts, s.host)
			}
			if fmt.Sprint(hosts) != fmt.Sprint(tc.wantHosts) {
				t.Errorf("attempts on %v, want %v", hosts, tc.wantHosts)
			}
			if s := clk.Sleeps(); len(s) != 0 {
				t.Errorf("slept %v; every attempt went to an untried endpoint", s)
			}
		})
	}
}

// TestConfigFromEnvironStreamTimeouts: the global stream timeouts set the
// Config's defaults, the numbered ones each endpoint's, in a Go duration or
// milliseconds; a bad one names its variable.
func TestConfigFromEnvironStreamTimeouts(t *testing.T) {
	cfg := mustConfigFromEnviron(t,
		"OPENAI_FIRST_TOKEN_TIMEOUT=45s", "OPENAI_STREAM_IDLE_TIMEOUT=30000",
		"OPENAI_API_KEY_1=sk-1", "OPENAI_FIRST_TOKEN_TIMEOUT_2=5m", "OPENAI_STREAM_IDLE_TIMEOUT_2=1500")
	if cfg.FirstTokenTimeout != 45*time.Second || cfg.StreamIdleTimeout != 30*time.Second {
		t.Errorf("Config timeouts %v, %v; want 45s, 30s", cfg.FirstTokenTimeout, cfg.StreamIdleTimeout)
	}
	if e := cfg.Endpoints[0]; e.FirstTokenTimeout != 0 || e.StreamIdleTimeout != 0 {
		t.Errorf("endpoint 1 timeouts %v, %v; want none of its own", e.FirstTokenTimeout, e.StreamIdleTimeout)
	}
	if e := cfg.Endpoints[1]; e.FirstTokenTimeout != 5*time.Minute || e.StreamIdleTimeout != 1500*time.Millisecond {
		t.Errorf("endpoint 2 timeouts %v, %v; want 5m, 1.5s", e.FirstTokenTimeout, e.StreamIdleTimeout)
	}
	for _, v := range []string{"OPENAI_FIRST_TOKEN_TIMEOUT=soon", "OPENAI_STREAM_IDLE_TIMEOUT_1=-5s"} {
		err := mustEnvironError(t, "OPENAI_API_KEY_1=sk-1", v)
		if name, _, _ := strings.Cut(v, "="); !strings.Contains(err.Error(), "failover: "+name+": ") {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

// TestEnvVariablesAreRead: every name EnvVariables lists is one that
// ConfigFromEnviron reads: a value it cannot take is an error naming it.
func TestEnvVariablesAreRead(t *testing.T) {
	names := EnvVariables()
	if !slices.Contains(names, "OPENAI_BASE_URL_N") || !slices.Contains(names, "OPENAI_MAX_RETRIES") || !slices.IsSorted(names) {
		t.Fatalf("EnvVariables() = %q, want sorted, with OPENAI_BASE_URL_N and OPENAI_MAX_RETRIES", names)
	}
	for _, n := range names {
		name := n
		if stem, ok := strings.CutSuffix(n, "_N"); ok {
			name = stem + "_1"
		}
		bad := "\x00bad"
		if name == "OPENAI_NAME_1" {
			bad = "\xff"
		}
		_, err := ConfigFromEnviron([]string{"OPENAI_API_KEY_9=k", name + "=" + bad})
		if err == nil || !strings.Contains(err.Error(), "failover: "+name+": ") {
			t.Errorf("%s=%q: error %v, want one naming it", name, bad, err)
		}
	}
}

// TestConfigFromEnvironModels: OPENAI_MODELS_N lists the endpoint's models
// (name or name=upstream-name, comma-separated, spaces trimmed),
// OPENAI_API_TYPE_N and OPENAI_API_VERSION_N make it an Azure endpoint;
// a bad value names its variable.
func TestConfigFromEnvironModels(t *testing.T) {
	cfg := mustConfigFromEnviron(t,
		"OPENAI_API_KEY_1=sk-1",
		"OPENAI_BASE_URL_2=https://res.openai.azure.com", "OPENAI_API_KEY_2=az", "OPENAI_API_TYPE_2=Azure",
		"OPENAI_API_VERSION_2=2024-10-21", "OPENAI_MODELS_2= gpt-4o-mini = prod-4o-mini , text-embedding-3-small=prod-embed",
		"OPENAI_BASE_URL_3=https://openrouter.ai/api/v1", "OPENAI_MODELS_3=gpt-4o-mini=openai/gpt-4o-mini,gpt-4o")
	if e := cfg.Endpoints[0]; e.Models != nil || e.APIType != "" || e.APIVersion != "" {
		t.Errorf("endpoint 1: Models %v, APIType %q, APIVersion %q; want none", e.Models, e.APIType, e.APIVersion)
	}
	az := cfg.Endpoints[1]
	if az.APIType != APITypeAzure || az.APIVersion != "2024-10-21" ||
		!maps.Equal(az.Models, map[string]string{"gpt-4o-mini": "prod-4o-mini", "text-embedding-3-small": "prod-embed"}) {
		t.Errorf("endpoint 2: APIType %q, APIVersion %q, Models %v", az.APIType, az.APIVersion, az.Models)
	}
	if m := cfg.Endpoints[2].Models; !maps.Equal(m, map[string]string{"gpt-4o-mini": "openai/gpt-4o-mini", "gpt-4o": ""}) {
		t.Errorf("endpoint 3: Models %v", m)
	}
	if _, err := New(cfg); err != nil {
		t.Errorf("New: %v", err)
	}
	for _, tc := range []struct{ kv, want string }{
		{"OPENAI_MODELS_1=a,,b", "has an empty entry"},
		{"OPENAI_MODELS_1=a,", "has an empty entry"},
		{"OPENAI_MODELS_1==b", "has no model name"},
		{"OPENAI_MODELS_1=a=", "has no upstream name"},
		{"OPENAI_MODELS_1=a,b=c,a", "is listed twice"},
		{"OPENAI_MODELS_1=a\x01b", "control character"},
		{"OPENAI_API_TYPE_1=bedrock", "is not openai or azure"},
		{"OPENAI_API_VERSION_1=2024/10", "is not an api-version"},
	} {
		err := mustEnvironError(t, append([]string{"OPENAI_API_KEY_1=sk-1", tc.kv}, envSecrets...)...)
		name, _, _ := strings.Cut(tc.kv, "=")
		if !strings.Contains(err.Error(), "failover: "+name+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want it to name the variable and say %q", tc.kv, err, tc.want)
		}
	}
}

// TestConfigFromEnvironHealing: the variables of recovery probes, slow
// start, the balancer and affinity set their Config fields, and
// OPENAI_PROBE_MODEL_N an endpoint's chat probe; bad values name their
// variable.
func TestConfigFromEnvironHealing(t *testing.T) {
	cfg := mustConfigFromEnviron(t,
		"OPENAI_PROBE_INTERVAL=15s", "OPENAI_SLOW_START=60000", "OPENAI_BALANCER=Least_Latency",
		"OPENAI_AFFINITY=prompt_cache_key", "OPENAI_API_KEY_1=sk-1", "OPENAI_PROBE_MODEL_2=llama-3")
	if cfg.Probe.Interval != 15*time.Second || cfg.SlowStart != time.Minute ||
		cfg.Balancer != BalancerLeastLatency || cfg.Affinity != AffinityPromptCacheKey {
		t.Errorf("Config %v, %v, %q, %q; want 15s, 1m, least_latency, prompt_cache_key",
			cfg.Probe.Interval, cfg.SlowStart, cfg.Balancer, cfg.Affinity)
	}
	if p := cfg.Endpoints[0].Probe; p != (ProbeRequest{}) {
		t.Errorf("endpoint 1 probe %+v, want the default", p)
	}
	if p := cfg.Endpoints[1].Probe; p != ChatProbe("llama-3") {
		t.Errorf("endpoint 2 probe %+v, want ChatProbe(llama-3)", p)
	}
	if cfg := mustConfigFromEnviron(t, "OPENAI_API_KEY=k", "OPENAI_AFFINITY=none", "OPENAI_BALANCER=round_robin"); cfg.Affinity != AffinityNone || cfg.Balancer != BalancerRoundRobin {
		t.Errorf("none and round_robin: %q, %q", cfg.Affinity, cfg.Balancer)
	}
	for _, v := range []string{"OPENAI_PROBE_INTERVAL=50ms", "OPENAI_PROBE_INTERVAL=often", "OPENAI_SLOW_START=-1s",
		"OPENAI_BALANCER=random", "OPENAI_AFFINITY=session", "OPENAI_PROBE_MODEL_1=a\tb"} {
		err := mustEnvironError(t, "OPENAI_API_KEY_1=sk-1", v)
		if name, _, _ := strings.Cut(v, "="); !strings.Contains(err.Error(), "failover: "+name+": ") {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

// TestEnvErrorsShowNoSecretOfNewVariables: a key pasted by mistake
// into one of the variables the models feature added (OPENAI_MODELS_N,
// OPENAI_API_VERSION_N) is not echoed in the error: as for every other
// variable, at most a short prefix and the length (issue 11).
func TestEnvErrorsShowNoSecretOfNewVariables(t *testing.T) {
	const secret = "SECRET0123456789abcdef"
	for _, tc := range []struct{ name, v string }{
		{"OPENAI_API_VERSION_1", "Zk9vYmFy+" + secret + "/=="},                 // a base64 key: not an api-version
		{"OPENAI_MODELS_1", "sk-proj-" + secret + "\x01"},                      // a key with a stray control character
		{"OPENAI_MODELS_1", "gpt-4o=sk-proj-" + secret + "\x01"},               // the same as an upstream name
		{"OPENAI_MODELS_1", "gpt-4o, sk-proj-" + secret + "\x7f, gpt-4o-mini"}, // among others
	} {
		t.Run(tc.name+"="+strings.ToValidUTF8(tc.v[:10], "?"), func(t *testing.T) {
			_, err := ConfigFromEnviron([]string{"OPENAI_BASE_URL_1=https://a.example/v1", "OPENAI_API_TYPE_1=azure", tc.name + "=" + tc.v})
			if err == nil {
				t.Fatalf("%s=%q accepted, want an error", tc.name, tc.v)
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Errorf("error %q does not name %s", err, tc.name)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error echoes the value: %v", err)
			}
		})
	}
}
