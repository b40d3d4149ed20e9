package failover

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestChooseMaxWaitIsTotalAcrossWaits: MaxWait bounds the sum of all the
// waits of one request (backoff, rate limiter, cooldown), not each wait on
// its own. Every case makes waits that each fit MaxWait alone; the request
// makes those whose running total fits and ends at the first that does
// not.
func TestChooseMaxWaitIsTotalAcrossWaits(t *testing.T) {
	refused := errors.New("connection refused")
	const step = 60 * time.Millisecond // each backoff, and each cooldown
	for _, tc := range []struct {
		name    string
		maxWait time.Duration
		limited bool // a has MaxRPS 10, Burst 1, and one request spends its token first
		script  func(*http.Request, int) (*http.Response, error)
		// What the request under test does.
		wantSleeps   []time.Duration
		wantAttempts int
		wantStatus   int // the last response returned; 0: the request ends with an *Error
	}{
		{
			name:    "two backoffs, the second over the total",
			maxWait: 100 * time.Millisecond,
			script:  func(*http.Request, int) (*http.Response, error) { return nil, refused },
			// 60ms fits; 60+60 = 120ms does not.
			wantSleeps:   []time.Duration{step},
			wantAttempts: 2,
		},
		{
			name:    "backoffs up to the total exactly",
			maxWait: 2 * step,
			script:  func(*http.Request, int) (*http.Response, error) { return nil, refused },
			// 60ms, then 120ms in all (fits exactly); 180ms does not.
			wantSleeps:   []time.Duration{step, step},
			wantAttempts: 3,
		},
		{
			name:    "rate limiter then backoff",
			maxWait: 150 * time.Millisecond,
			limited: true,
			script: func(_ *http.Request, n int) (*http.Response, error) {
				if n == 1 {
					return reply(200, "ok"), nil // the request that spends the token
				}
				return nil, refused
			},
			// 100ms for the limiter's next token fits; after the
			// attempt it allowed, a backoff (100+60 = 160ms) does not.
			wantSleeps:   []time.Duration{100 * time.Millisecond},
			wantAttempts: 1,
		},
		{
			name:    "two cooldowns, the second over the total",
			maxWait: 100 * time.Millisecond,
			script: func(*http.Request, int) (*http.Response, error) {
				return reply(429, "busy", "Retry-After-Ms", fmt.Sprint(step.Milliseconds())), nil
			},
			// The cooldown of 60ms fits; a second one (120ms in all)
			// does not, and the last 429 is the answer.
			wantSleeps:   []time.Duration{step},
			wantAttempts: 2,
			wantStatus:   429,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(tc.script)
			a := hostEndpoint("a", 0)
			if tc.limited {
				a.MaxRPS, a.Burst = 10, 1
			}
			tr, clk := newTestTransport(t, Config{
				Base:       base,
				Endpoints:  []Endpoint{a},
				MaxWait:    tc.maxWait,
				MaxRetries: 20, // never the bound here
				Breaker:    BreakerConfig{FailureThreshold: 100},
				Backoff:    func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return step },
			})
			before := 0
			if tc.limited {
				if code, _ := chat(t, tr); code != 200 {
					t.Fatalf("first request: status %d, want 200", code)
				}
				before = base.Hits("a.test")
				if s := clk.Sleeps(); len(s) != 0 {
					t.Fatalf("first request slept %v, want no wait", s)
				}
			}

			resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
			if resp != nil {
				resp.Body.Close()
			}
			if tc.wantStatus != 0 {
				if err != nil || resp.StatusCode != tc.wantStatus {
					t.Fatalf("got %v, %v; want the last %d", resp, err, tc.wantStatus)
				}
			} else {
				var fe *Error
				if !errors.As(err, &fe) || !errors.Is(fe.Err, ErrNoEndpointAvailable) {
					t.Fatalf("err = %v, want an *Error whose Err is ErrNoEndpointAvailable", err)
				}
				if len(fe.Attempts) != tc.wantAttempts {
					t.Errorf("Error lists %d attempts, want %d", len(fe.Attempts), tc.wantAttempts)
				}
			}
			if got := base.Hits("a.test") - before; got != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", got, tc.wantAttempts)
			}
			if got := clk.Sleeps(); fmt.Sprint(got) != fmt.Sprint(tc.wantSleeps) {
				t.Errorf("sleeps %v, want %v (MaxWait %v in all)", got, tc.wantSleeps, tc.maxWait)
			}
		})
	}
}
