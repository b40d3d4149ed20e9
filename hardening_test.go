package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestClassifierRequestScopedRefusals: the default classifier tells a
// refusal of the request from a refusal of the key, by status and the
// error body's code, type and message.
func TestClassifierRequestScopedRefusals(t *testing.T) {
	body := func(code, typ, msg string) string {
		e := map[string]any{"message": msg, "type": typ, "code": nil}
		if code != "" {
			e["code"] = code
		}
		b, _ := json.Marshal(map[string]any{"error": e})
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   Outcome
	}{
		{"401 invalid key", 401, body("invalid_api_key", "invalid_request_error", "Incorrect API key provided"), OutcomeKeyRejected},
		{"401 no body", 401, "", OutcomeKeyRejected},
		{"401 plain text", 401, "Unauthorized", OutcomeKeyRejected},
		{"401 missing scope by message", 401, body("", "invalid_request_error",
			"You have insufficient permissions for this operation. Missing scopes: api.model.read."), OutcomeRequestRefused},
		{"401 missing_scope code", 401, body("missing_scope", "invalid_request_error", "nope"), OutcomeRequestRefused},
		{"401 string error", 401, `{"error":"insufficient permissions for this route"}`, OutcomeRequestRefused},
		{"403 plain", 403, body("", "permission_error", "You are not allowed to sample from this model"), OutcomeRequestRefused},
		{"403 no body", 403, "", OutcomeRequestRefused},
		{"403 region", 403, body("unsupported_country_region_territory", "request_forbidden", "Country, region, or territory not supported"), OutcomeKeyRejected},
		{"403 account deactivated", 403, body("account_deactivated", "invalid_request_error", "Your account is not active"), OutcomeKeyRejected},
		{"429 quota", 429, body("insufficient_quota", "insufficient_quota", "You exceeded your current quota"), OutcomeKeyRejected},
		{"429 too large", 429, body("rate_limit_exceeded", "tokens",
			"Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested 50000."), OutcomeRequestRefused},
		{"429 rate", 429, body("rate_limit_exceeded", "requests", "Rate limit reached for requests"), OutcomeThrottled},
		{"429 top-level fields", 429, `{"code":"insufficient_quota","message":"out of credit"}`, OutcomeKeyRejected},
		{"429 numeric code", 429, `{"error":{"code":429,"message":"slow down"}}`, OutcomeThrottled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := DefaultClassifier(reply(tc.status, tc.body), []byte(tc.body), nil)
			if v.Outcome != tc.want {
				t.Errorf("outcome %v, want %v", v.Outcome, tc.want)
			}
		})
	}
}

// TestRequestScopedRefusalsOpenNoBreaker: a request every endpoint
// refuses (a scope, a permission, a size over the token limit) fails over
// through them all, opens no breaker and cools nothing; other requests are
// served as before.
func TestRequestScopedRefusalsOpenNoBreaker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakeopenai.Fault
		code  int
	}{
		{"401 missing scope", fakeopenai.MissingScope(), 401},
		{"403 forbidden", fakeopenai.StatusFault(403), 403},
		{"429 too large", fakeopenai.RequestTooLarge(), 429},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var eps []Endpoint
			var ups []*fakeopenai.Server
			for i, name := range []string{"a", "b", "c"} {
				s := upstream(t, name)
				s.SetFault(tc.fault)
				ups = append(ups, s)
				eps = append(eps, ep(s, i))
			}
			tr, _ := newTestTransport(t, Config{Endpoints: eps, Breaker: BreakerConfig{FailureThreshold: 3}})
			for range 5 {
				code, _ := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+"/models"))
				if code != tc.code {
					t.Fatalf("status %d, want the last endpoint's %d", code, tc.code)
				}
			}
			for _, s := range ups {
				if s.Hits() != 5 {
					t.Errorf("%s got %d requests, want 5: every request fails over through every endpoint", s.Name(), s.Hits())
				}
				s.SetFault(fakeopenai.Healthy())
			}
			for _, h := range tr.Health() {
				if h.State != StateClosed || !h.CooldownUntil.IsZero() {
					t.Errorf("%s is %v (cooldown until %v) after request-scoped refusals, want closed and not cooling", h.Name, h.State, h.CooldownUntil)
				}
			}
			chatOK(t, tr, "a")
		})
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestRegionRefusalOpensAtOnce: a 403 that names the key's account opens
// the breaker at once, as a revoked key does.
func TestRegionRefusalOpensAtOnce(t *testing.T) {
	a, b := upstream(t, "a"), upstream(t, "b")
	a.SetFault(fakeopenai.RegionRefused())
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{ep(a, 0), ep(b, 1)}})
	chatOK(t, tr, "b")
	if st := healthOf(t, tr, "a").State; st != StateOpen {
		t.Fatalf("a is %v after a region refusal, want open", st)
	}
}

// TestOneRequestOpensAtMostOneBreaker: every key refused, yet one request
// opens only the first endpoint's breaker at once; the others count an
// ordinary failure each.
func TestOneRequestOpensAtMostOneBreaker(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{"a": {401}, "b": {401}, "c": {401}}))
	tr, _ := newTestTransport(t, Config{Base: base, MaxWait: -1, Breaker: BreakerConfig{FailureThreshold: 5},
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1), hostEndpoint("c", 2)}})
	if code, _ := chat(t, tr); code != 401 {
		t.Fatalf("status %d, want the last 401", code)
	}
	want := map[string]State{"a": StateOpen, "b": StateClosed, "c": StateClosed}
	for _, h := range tr.Health() {
		if h.State != want[h.Name] || h.Failures != 1 {
			t.Errorf("%s: %v with %d failures, want %v with 1", h.Name, h.State, h.Failures, want[h.Name])
		}
	}
}

// TestErrorsNeverCarrySecrets: a base whose errors quote the request URL
// (as go-retryablehttp's does) cannot carry an endpoint's key, header
// value or BaseURL query value into the returned error, Health or
// /healthz, whatever wraps it; errors.Is still sees the base's error.
func TestErrorsNeverCarrySecrets(t *testing.T) {
	sentinel := errors.New("dial refused")
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return nil, fmt.Errorf("giving up on %s %s with %s and %s: %w", req.Method, req.URL.String(),
			req.Header.Get("Authorization"), req.Header.Get("X-Secret"), sentinel)
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: -1, Endpoints: []Endpoint{{
		Name: "azure", BaseURL: "https://az.test/openai?api-key=QUERY-SECRET-1&api-version=2024",
		APIKey: "sk-KEY-SECRET-2", Header: http.Header{"X-Secret": {"HEADER-SECRET-3"}},
	}}})
	_, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err == nil {
		t.Fatal("RoundTrip succeeded")
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("errors.Is(err, the base's error) = false: %v", err)
	}
	rec := httptest.NewRecorder()
	tr.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	for what, text := range map[string]string{"error": err.Error(), "Health": fmt.Sprint(tr.Health()), "/healthz": rec.Body.String()} {
		if strings.Contains(text, "SECRET") {
			t.Errorf("%s carries a secret: %s", what, text)
		}
		if what != "/healthz" && !strings.Contains(text, "[REDACTED]") {
			t.Errorf("%s shows no [REDACTED] in place of the secrets: %s", what, text)
		}
	}
}

// TestPrintingNeverShowsSecrets: no fmt verb, no encoder and no slog
// handler shows an Endpoint's, a Config's or a Transport's secrets.
func TestPrintingNeverShowsSecrets(t *testing.T) {
	e := Endpoint{Name: "azure", BaseURL: "https://az.test/openai?api-key=QUERY-SECRET-1", APIKey: "sk-KEY-SECRET-2",
		Header: http.Header{"X-Secret": {"HEADER-SECRET-3"}}, Priority: 2}
	cfg := Config{Endpoints: []Endpoint{e}, Base: newScriptedBase(alwaysOK)}
	tr, _ := newTestTransport(t, cfg)
	bare := e
	bare.Header = nil // encoding/xml cannot encode a header map at all
	values := map[string]any{"Endpoint": e, "*Endpoint": &e, "Endpoint without Header": bare, "Config": cfg, "*Config": &cfg,
		"*Transport": tr, "[]Endpoint": []Endpoint{e}, "struct": struct{ E Endpoint }{e}}
	var outputs []string
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%t", "%10.3v", "%-20s"} {
			outputs = append(outputs, name+" "+verb+": "+fmt.Sprintf(verb, v))
		}
		if b, err := json.Marshal(v); err == nil {
			outputs = append(outputs, name+" json: "+string(b))
		}
		if b, err := xml.Marshal(v); err == nil {
			outputs = append(outputs, name+" xml: "+string(b))
		}
		for _, h := range []func(io.Writer) slog.Handler{
			func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
			func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("value", "v", v)
			outputs = append(outputs, name+" slog: "+buf.String())
		}
	}
	for _, out := range outputs {
		if strings.Contains(out, "SECRET") {
			t.Errorf("%s", out)
		}
	}
	// What is printed is still useful.
	if got := fmt.Sprintf("%+v", e); !strings.Contains(got, "azure") || !strings.Contains(got, "Priority:2") || !strings.Contains(got, "[REDACTED]") {
		t.Errorf("%%+v = %s, want the name, the priority and [REDACTED] in place of the key", got)
	}
	if b, _ := json.Marshal(e); !strings.Contains(string(b), `"APIKey":"[REDACTED]"`) || !strings.Contains(string(b), `"Name":"azure"`) {
		t.Errorf("json = %s, want the fields with the key redacted", b)
	}
	if b, err := xml.Marshal(e); err != nil || !strings.Contains(string(b), `<APIKey>[REDACTED]</APIKey>`) ||
		!strings.Contains(string(b), `<Header name="X-Secret"><Value>[REDACTED]</Value></Header>`) {
		t.Errorf("xml = %s, %v; want the fields with the key and header values redacted", b, err)
	}
}

// TestUnsafePathsRefused: routed paths an upstream could resolve outside
// the endpoint's base path are refused before any attempt; ordinary API
// paths pass.
func TestUnsafePathsRefused(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("p", 0)}})
	for _, path := range []string{
		"/%252e%252e/admin", "/files/%252E%252e", "/..%252fadmin", "/files\\..\\admin", "/files%5c..%5cadmin",
		"/files;/../admin", "/models%3b.json", "/files/%00", "/files/%c0%ae%c0%ae/admin", "/files/%25c0%25ae",
		"/files/a%0d%0ab",
	} {
		t.Run(path, func(t *testing.T) {
			req := mustRequest(t, http.MethodGet, clientBase+path)
			_, err := tr.RoundTrip(req)
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("error %v, want ErrUnsafePath", err)
			}
		})
	}
	if n := len(base.Seen()); n != 0 {
		t.Fatalf("%d unsafe request(s) sent", n)
	}
	for _, path := range []string{"/chat/completions", "/files/file-abc123/content", "/models/ft:gpt-4o:org:x:1", "/files/a.b.c", "/responses/resp_1?include=x"} {
		if code, _ := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+path)); code != 200 {
			t.Errorf("%s: status %d, want 200", path, code)
		}
	}
}

// TestOpaqueURLRefused: an opaque URL would bypass the base path rewrite
// and the path checks; a routed one is refused, an unrouted one passes.
func TestOpaqueURLRefused(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("p", 0)}})
	req := mustRequest(t, http.MethodGet, clientBase+"/models")
	req.URL.Opaque = "//api.openai.com/admin/keys"
	if _, err := tr.RoundTrip(req); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("error %v, want ErrUnsafePath", err)
	}
	other := mustRequest(t, http.MethodGet, "https://elsewhere.test/x")
	other.URL.Opaque = "//elsewhere.test/x"
	if code, _ := roundTrip(t, tr, other); code != 200 {
		t.Fatalf("an unrouted opaque request: status %d, want 200 from the base", code)
	}
	if seen := base.Seen(); len(seen) != 1 || seen[0].host != "elsewhere.test" || seen[0].auth != "" {
		t.Fatalf("base saw %+v, want only the unrouted request, without a key", seen)
	}
}

// TestPanickingBaseLeavesNothingInFlight: a panic in the base ends the
// attempt's in-flight count.
func TestPanickingBaseLeavesNothingInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { panic("base bug") })
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	func() {
		defer func() {
			if r := recover(); r != "base bug" {
				t.Fatalf("recovered %v, want the base's panic", r)
			}
		}()
		_, _ = tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	}()
	if h := healthOf(t, tr, "a"); h.InFlight != 0 {
		t.Errorf("in flight %d after the panic, want 0", h.InFlight)
	}
	if got := metricValue(t, reg, "failover_attempts_in_flight", map[string]string{"endpoint": "a"}); got != 0 {
		t.Errorf("failover_attempts_in_flight = %v after the panic, want 0", got)
	}
}

// TestNewRejectsUnusableConfigs: every endpoint disabled, or a rate below
// one request an hour.
func TestNewRejectsUnusableConfigs(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		want string
	}{
		{"all disabled", []Endpoint{{BaseURL: "https://a.test/v1", Disabled: true}, {BaseURL: "https://b.test/v1", Disabled: true}}, "every endpoint is Disabled"},
		{"rate below one an hour", []Endpoint{{BaseURL: "https://a.test/v1", MaxRPS: 1e-9}}, "below one request an hour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Endpoints: tc.eps})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{Endpoints: []Endpoint{{BaseURL: "https://a.test/v1", MaxRPS: minRPS}}}); err != nil {
		t.Errorf("New with one request an hour: %v", err)
	}
}

// TestNewIsNotQuadratic: New over many endpoints (same host, distinct
// paths, default names, equal weights) takes time about linear in their
// number: 16 times the endpoints must not take 64 times as long (a
// quadratic New takes 256 times).
func TestNewIsNotQuadratic(t *testing.T) {
	if testing.Short() {
		t.Skip("times New over 16,384 endpoints; skipped in -short mode")
	}
	build := func(n int) time.Duration {
		eps := make([]Endpoint, n)
		for i := range eps {
			eps[i] = Endpoint{BaseURL: fmt.Sprintf("https://api.test/p%d/v1", i)}
		}
		best := time.Duration(1<<63 - 1)
		for range 3 {
			start := time.Now()
			if _, err := New(Config{Endpoints: eps}); err != nil {
				t.Fatal(err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	small, large := build(1024), build(16384)
	if large > 64*small && large > 200*time.Millisecond {
		t.Fatalf("New: %v for 1,024 endpoints, %v for 16,384: %.0fx for 16x the endpoints", small, large, float64(large)/float64(small))
	}
}

// TestUnroutedAPIRequestWarnsOncePerHost: a request to an OpenAI API route
// under a base URL that is not routed (openai-go sends to OPENAI_BASE_URL)
// passes untouched, and the logger hears of it once per host.
func TestUnroutedAPIRequestWarnsOncePerHost(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Logger: logger, Endpoints: []Endpoint{hostEndpoint("p", 0)}})
	for range 2 {
		roundTrip(t, tr, chatRequest(t, context.Background(), "https://gateway.test/v1", false))
	}
	roundTrip(t, tr, mustRequest(t, http.MethodGet, "https://static.test/logo.png"))
	roundTrip(t, tr, chatRequest(t, context.Background(), "https://other.test/openai", false))
	out := buf.String()
	if n := strings.Count(out, "not routed"); n != 2 {
		t.Errorf("%d warnings, want one for gateway.test and one for other.test:\n%s", n, out)
	}
	for _, want := range []string{"host=gateway.test", "host=other.test", "client_base_urls=[https://api.openai.com/v1]"} {
		if !strings.Contains(out, want) {
			t.Errorf("the warnings do not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "static.test") {
		t.Errorf("a request outside the API warned:\n%s", out)
	}
	if got := base.Hits("gateway.test"); got != 2 {
		t.Errorf("gateway.test got %d requests, want both, untouched", got)
	}
}
