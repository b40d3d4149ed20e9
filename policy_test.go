package failover

import (
	"net/http"
	"testing"
)

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
