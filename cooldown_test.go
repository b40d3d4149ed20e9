package failover

import (
	"net/http"
	"testing"
	"time"
)

// TestCooldownLaterOfTwoResets: a 429 carrying both
// x-ratelimit-reset-requests and x-ratelimit-reset-tokens cools the
// endpoint until the later of the two resets: it is skipped past the
// earlier one and until just before the later, and chosen again at it.
func TestCooldownLaterOfTwoResets(t *testing.T) {
	for _, tc := range []struct {
		name             string
		requests, tokens string
		earlier, later   time.Duration
	}{
		{"tokens later", "2s", "6s", 2 * time.Second, 6 * time.Second},
		{"requests later", "6s", "2s", 2 * time.Second, 6 * time.Second},
		{"plain seconds later", "3", "250ms", 250 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				switch {
				case req.URL.Host != "a.test":
					return reply(200, "b"), nil
				case n == 1:
					return reply(429, "busy", "X-Ratelimit-Reset-Requests", tc.requests, "X-Ratelimit-Reset-Tokens", tc.tokens), nil
				}
				return reply(200, "a"), nil
			})
			tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			start := clk.Now()
			want := func(step, from string, aHits int) {
				t.Helper()
				if code, body := chat(t, tr); code != 200 || body != from {
					t.Fatalf("%s: got %d %q, want 200 from %s", step, code, body, from)
				}
				if got := base.Hits("a.test"); got != aHits {
					t.Fatalf("%s: a hits %d, want %d", step, got, aHits)
				}
			}
			want("the 429", "b", 1)
			h := healthOf(t, tr, "a")
			if got := h.CooldownUntil.Sub(start); got != tc.later || h.State != StateCoolingDown {
				t.Errorf("a: %v, cooling down for %v; want cooling-down for %v (the later reset)", h.State, got, tc.later)
			}
			clk.Advance(tc.earlier)
			want("at the earlier reset", "b", 1)
			clk.Advance(tc.later - tc.earlier - time.Millisecond)
			want("just before the later reset", "b", 1)
			clk.Advance(time.Millisecond)
			want("at the later reset", "a", 2)
			if s := clk.Sleeps(); len(s) != 0 {
				t.Errorf("slept %v; b could take every request at once", s)
			}
		})
	}
}
