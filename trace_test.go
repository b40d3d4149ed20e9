package failover

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestOnAttemptReportsEachAttempt: Config.OnAttempt is called once per
// attempt, in order, with the endpoint tried, the attempt's number, the
// classifier's outcome, the status or error and the time the attempt
// took (on the Transport's clock), and with the request's context; a
// failover shows both attempts.
func TestOnAttemptReportsEachAttempt(t *testing.T) {
	errRefused := errors.New("connection refused")
	type ctxKey struct{}
	for _, tc := range []struct {
		name   string
		script map[string]func() (*http.Response, error) // by host; b answers 200 by default
		want   []AttemptInfo                             // Err compared by errors.Is
	}{
		{"one attempt", nil, []AttemptInfo{
			{Endpoint: "a", Attempt: 1, Outcome: OutcomeSuccess, StatusCode: 200, Duration: 2 * time.Second},
		}},
		{"failover after a 503", map[string]func() (*http.Response, error){
			"a.test": func() (*http.Response, error) { return reply(503, "down"), nil },
		}, []AttemptInfo{
			{Endpoint: "a", Attempt: 1, Outcome: OutcomeFailure, StatusCode: 503, Duration: 2 * time.Second},
			{Endpoint: "b", Attempt: 2, Outcome: OutcomeSuccess, StatusCode: 200, Duration: 300 * time.Millisecond},
		}},
		{"failover after a transport error", map[string]func() (*http.Response, error){
			"a.test": func() (*http.Response, error) { return nil, errRefused },
		}, []AttemptInfo{
			{Endpoint: "a", Attempt: 1, Outcome: OutcomeFailure, Err: errRefused, Duration: 2 * time.Second},
			{Endpoint: "b", Attempt: 2, Outcome: OutcomeSuccess, StatusCode: 200, Duration: 300 * time.Millisecond},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu  sync.Mutex
				got []AttemptInfo
				clk *fakeClock
			)
			took := map[string]time.Duration{"a.test": 2 * time.Second, "b.test": 300 * time.Millisecond}
			base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
				clk.Advance(took[req.URL.Host])
				if f := tc.script[req.URL.Host]; f != nil {
					return f()
				}
				return reply(200, "ok"), nil
			})
			var tr *Transport
			tr, clk = newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
				OnAttempt: func(ctx context.Context, a AttemptInfo) {
					if ctx.Value(ctxKey{}) != "caller" {
						t.Errorf("attempt %d: the context lacks the caller's value", a.Attempt)
					}
					mu.Lock()
					defer mu.Unlock()
					got = append(got, a)
				}})
			ctx := context.WithValue(context.Background(), ctxKey{}, "caller")
			if code, _ := roundTrip(t, tr, chatRequest(t, ctx, clientBase, false)); code != 200 {
				t.Fatalf("status %d, want 200", code)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != len(tc.want) {
				t.Fatalf("OnAttempt got %d attempts %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if !errors.Is(g.Err, w.Err) || (w.Err == nil) != (g.Err == nil) {
					t.Errorf("attempt %d: Err %v, want %v", i+1, g.Err, w.Err)
				}
				g.Err, w.Err = nil, nil
				if g != w {
					t.Errorf("attempt %d: %+v, want %+v", i+1, g, w)
				}
			}
		})
	}
}
