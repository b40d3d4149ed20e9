package failover

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestPolicyDefaultClassification(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fault      fakeopenai.Fault
		timeout    time.Duration
		wantFailed bool // true: b answers; false: a's response returned at once
	}{
		{"500", fakeopenai.StatusFault(500), 0, true},
		{"502", fakeopenai.StatusFault(502), 0, true},
		{"503", fakeopenai.StatusFault(503), 0, true},
		{"504", fakeopenai.StatusFault(504), 0, true},
		{"408", fakeopenai.StatusFault(408), 0, true},
		{"409", fakeopenai.StatusFault(409), 0, true},
		{"429", fakeopenai.RateLimited("5"), 0, true},
		{"401", fakeopenai.StatusFault(401), 0, true},
		{"403", fakeopenai.StatusFault(403), 0, true},
		{"connection refused", fakeopenai.Refuse(), 0, true},
		{"connection reset", fakeopenai.Reset(), 0, true},
		{"per-attempt timeout", fakeopenai.Hang(), 100 * time.Millisecond, true},
		{"400", fakeopenai.StatusFault(400), 0, false},
		{"404", fakeopenai.StatusFault(404), 0, false},
		{"422", fakeopenai.StatusFault(422), 0, false},
		{"400 with x-should-retry true", fakeopenai.StatusFault(400).WithHeader("X-Should-Retry", "true"), 0, true},
		{"500 with x-should-retry false", fakeopenai.StatusFault(500).WithHeader("X-Should-Retry", "false"), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := upstream(t, "a")
			b := upstream(t, "b")
			a.SetFault(tc.fault)
			ea := ep(a, 0)
			ea.Timeout = tc.timeout
			tr, clk := newTestTransport(t, Config{Endpoints: []Endpoint{ea, ep(b, 1)}})
			status, body := chat(t, tr)
			if tc.wantFailed {
				if status != 200 || !strings.Contains(body, fakeopenai.Reply("b")) {
					t.Fatalf("got %d %q, want b's answer after failing over", status, body)
				}
				if s := clk.Sleeps(); len(s) != 0 {
					t.Fatalf("slept %v before failing over to an untried endpoint", s)
				}
				return
			}
			if b.Hits() != 0 {
				t.Fatalf("b got %d requests; a caller error must not fail over", b.Hits())
			}
			if want, _ := strconv.Atoi(tc.name); status != want {
				t.Fatalf("status %d, want a's %s returned", status, tc.name)
			}
			if a.Hits() != 1 {
				t.Fatalf("a hits %d, want 1", a.Hits())
			}
		})
	}
}

// TestPolicyClassificationEndToEnd: through a Transport, a 408 and a
// non-2xx response marked "x-should-retry: true" (a 400, a 3xx) fail over
// at once and count as failures in the endpoint's breaker (two open it at
// threshold 2), while the same statuses without the header, and a 2xx
// with it, are returned to the caller and count as successes.
func TestPolicyClassificationEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		shouldRetry string // the X-Should-Retry header, "" for none
		failover    bool
	}{
		{"408", 408, "", true},
		{"400 with x-should-retry true", 400, "true", true},
		{"302 with x-should-retry true", 302, "true", true},
		{"307 with x-should-retry true", 307, "true", true},
		{"400", 400, "", false},
		{"302", 302, "", false},
		{"200 with x-should-retry true", 200, "true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				if req.URL.Host != "a.test" {
					return reply(200, "b"), nil
				}
				var kv []string
				if tc.shouldRetry != "" {
					kv = []string{"X-Should-Retry", tc.shouldRetry}
				}
				return reply(tc.status, "a", kv...), nil
			})
			tr, clk := newTestTransport(t, Config{Base: base, Breaker: BreakerConfig{FailureThreshold: 2},
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			wantCode, wantBody, wantState := tc.status, "a", StateClosed
			if tc.failover {
				wantCode, wantBody = 200, "b"
			}
			for i := range 2 {
				if code, body := chat(t, tr); code != wantCode || body != wantBody {
					t.Fatalf("request %d: got %d %q, want %d %q", i+1, code, body, wantCode, wantBody)
				}
				if i == 0 {
					// One failure counted, the breaker still closed.
					if h := healthOf(t, tr, "a"); h.State != StateClosed {
						t.Fatalf("a's state %v after one response, want closed", h.State)
					}
				}
			}
			var wantFailures uint64
			wantB := 0
			if tc.failover {
				wantFailures, wantB, wantState = 2, 2, StateOpen
			}
			h := healthOf(t, tr, "a")
			if h.State != wantState || h.Failures != wantFailures {
				t.Errorf("a: state %v, %d failures; want %v, %d", h.State, h.Failures, wantState, wantFailures)
			}
			if base.Hits("a.test") != 2 || base.Hits("b.test") != wantB {
				t.Errorf("hits a=%d b=%d, want 2 and %d", base.Hits("a.test"), base.Hits("b.test"), wantB)
			}
			if s := clk.Sleeps(); len(s) != 0 {
				t.Errorf("slept %v; a failover to an untried endpoint never waits", s)
			}
		})
	}
}

func TestPolicyClassifierReplaceable(t *testing.T) {
	notFoundFails := func(resp *http.Response, body []byte, err error) Verdict {
		v := DefaultClassifier(resp, body, err)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			v.Outcome = OutcomeFailure
		}
		return v
	}
	for _, tc := range []struct {
		name       string
		classifier Classifier
		wantCode   int
		wantBHits  int
	}{
		{"default returns 404", nil, 404, 0},
		{"custom fails over on 404", notFoundFails, 200, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(statusScript(map[string][]int{"a": {404}}))
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}, Classifier: tc.classifier})
			code, _ := chat(t, tr)
			if a, b := base.Hits("a.test"), base.Hits("b.test"); code != tc.wantCode || a != 1 || b != tc.wantBHits {
				t.Errorf("status %d, hits a=%d b=%d; want %d, 1, %d", code, a, b, tc.wantCode, tc.wantBHits)
			}
		})
	}
}

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
