package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestChoosePrefersLowestEligiblePriority(t *testing.T) {
	eps := []Endpoint{hostEndpoint("p0", 0), hostEndpoint("p1", 1), hostEndpoint("p2", 2)}

	t.Run("all healthy", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 20 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 20 || base.Hits("p1.test")+base.Hits("p2.test") != 0 {
			t.Fatalf("hits %v, want all 20 on p0", base.hits)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		eps := append([]Endpoint(nil), eps...)
		eps[0].Disabled = true
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 0 || base.Hits("p1.test") != 5 {
			t.Fatalf("hits %v, want all 5 on p1", base.hits)
		}
	})
	t.Run("breaker open", func(t *testing.T) {
		base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
			if req.URL.Host == "p0.test" {
				return reply(401, `{"error":{"code":"invalid_api_key"}}`), nil
			}
			return reply(200, "ok"), nil
		})
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 1 || base.Hits("p1.test") != 5 {
			t.Fatalf("hits %v, want p0 once (then open), p1 all 5", base.hits)
		}
	})
	t.Run("cooling down", func(t *testing.T) {
		base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
			if req.URL.Host == "p0.test" && n == 1 {
				return reply(429, "slow down", "Retry-After", "30"), nil
			}
			return reply(200, "ok"), nil
		})
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 1 || base.Hits("p1.test") != 5 {
			t.Fatalf("hits %v, want p0 once then cooling, p1 all 5", base.hits)
		}
		clk.Advance(31 * time.Second)
		chat(t, tr)
		if base.Hits("p0.test") != 2 {
			t.Fatalf("p0 hits %d after its cooldown, want traffic back", base.Hits("p0.test"))
		}
	})
	t.Run("rate capacity", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		eps := append([]Endpoint(nil), eps...)
		eps[0].MaxRPS, eps[0].Burst = 1, 1
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 1 || base.Hits("p1.test") != 4 {
			t.Fatalf("hits %v, want p0 once (its burst), p1 the other 4", base.hits)
		}
	})
}

func TestChooseRateLimitSpillsOverWithoutWaiting(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxRPS, a.Burst = 2, 3
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, hostEndpoint("b", 5)}})
	for range 10 {
		chat(t, tr)
	}
	if base.Hits("a.test") != 3 || base.Hits("b.test") != 7 {
		t.Fatalf("hits %v, want a its burst of 3 and b the other 7", base.hits)
	}
	if len(clk.Sleeps()) != 0 {
		t.Fatalf("slept %v while another endpoint could take the request", clk.Sleeps())
	}
	clk.Advance(time.Second) // two tokens back
	for range 4 {
		chat(t, tr)
	}
	if base.Hits("a.test") != 5 {
		t.Fatalf("a hits %d after one second at 2 rps, want 5", base.Hits("a.test"))
	}
}

func TestChooseRateLimitNeverExceeded(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxRPS, a.Burst = 10, 4
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, hostEndpoint("b", 1)}})
	// 50 steps of 100ms, 5 requests each: 25 rps offered for 5 s.
	for range 50 {
		for range 5 {
			chat(t, tr)
		}
		clk.Advance(100 * time.Millisecond)
	}
	if got, limit := base.Hits("a.test"), 4+10*5; got > limit {
		t.Fatalf("a got %d requests in 5s, more than its burst plus rate allow (%d)", got, limit)
	} else if got < limit-2 {
		t.Fatalf("a got %d requests in 5s, want close to its capacity %d", got, limit)
	}
}

// TestChooseRateLimitHoldsForStalledPick: a request that reads the clock to choose
// an endpoint and only then reaches the endpoint's rate limiter, after
// other requests took tokens at later readings (a goroutine descheduled in
// between, as happens under load), must not let the endpoint receive more
// than its burst plus its rate allows over the time the clock covered.
func TestChooseRateLimitHoldsForStalledPick(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxRPS, a.Burst = 10, 10
	clk := newFakeClock()
	start := clk.Now()

	// The clock stalls the first reading taken while armed: the reading
	// is made, then its goroutine waits before using it.
	var armed atomic.Bool
	stalled := make(chan struct{})
	release := make(chan struct{})
	tr := newTestTransportOn(t, Config{Base: base, Endpoints: []Endpoint{a, hostEndpoint("b", 1)}}, &funcClock{
		nowFn: func() time.Time {
			now := clk.Now()
			if armed.CompareAndSwap(true, false) {
				close(stalled)
				<-release
			}
			return now
		},
		sleepFn: clk.Sleep,
		epoch:   start,
	})
	send := func() error {
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	sendN := func(n int) {
		t.Helper()
		for range n {
			if err := send(); err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
		}
	}

	sendN(10) // a's whole burst, at start
	clk.Advance(500 * time.Millisecond)
	armed.Store(true)
	stalledDone := make(chan error, 1)
	go func() { stalledDone <- send() }() // reads start+500ms, then stalls
	select {
	case <-stalled:
	case <-time.After(waitBound):
		t.Fatal("the request never read the clock")
	}
	clk.Advance(500 * time.Millisecond)
	// Meanwhile, at start+1s, others take 9 of the 10 tokens a has
	// regained. (A transport that holds a lock across its reading makes
	// them wait for the stalled one instead: then give up waiting.)
	othersDone := make(chan error, 1)
	go func() {
		var err error
		for range 9 {
			if err = send(); err != nil {
				break
			}
		}
		othersDone <- err
	}()
	select {
	case err := <-othersDone:
		othersDone <- err
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	for _, ch := range []chan error{stalledDone, othersDone} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
		case <-time.After(waitBound):
			t.Fatal("a request never ended")
		}
	}
	sendN(10) // still at start+1s: a has at most what remains, b the rest

	// Every reading of the clock lies in [start, start+1s]: a may have
	// received at most its burst plus one second at its rate.
	if elapsed := clk.Now().Sub(start); elapsed != time.Second {
		t.Fatalf("clock moved %v, want 1s", elapsed)
	}
	limit := a.Burst + int(a.MaxRPS)
	if got := base.Hits("a.test"); got > limit {
		t.Errorf("a received %d requests within 1s of the transport's clock, more than burst %d + %v rps allow (%d)",
			got, a.Burst, a.MaxRPS, limit)
	}
	if got := base.Hits("a.test") + base.Hits("b.test"); got != 30 {
		t.Errorf("%d attempts in all, want 30", got)
	}
}

func TestChooseWaitsWhenAllAtRateLimit(t *testing.T) {
	t.Run("waits for the soonest", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		a, b := hostEndpoint("a", 0), hostEndpoint("b", 1)
		a.MaxRPS, a.Burst = 1, 1
		b.MaxRPS, b.Burst = 4, 1
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, b}})
		chat(t, tr)
		chat(t, tr)
		chat(t, tr) // both empty: waits about 250ms for b's next token
		s := clk.Sleeps()
		if len(s) != 1 || s[0] < 200*time.Millisecond || s[0] > 300*time.Millisecond {
			t.Fatalf("sleeps %v, want one wait of about 250ms for b", s)
		}
		if base.Hits("b.test") != 2 {
			t.Fatalf("b hits %d, want 2", base.Hits("b.test"))
		}
	})
	t.Run("bounded by MaxWait", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		a := hostEndpoint("a", 0)
		a.MaxRPS, a.Burst = 1, 1
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}, MaxWait: 100 * time.Millisecond})
		chat(t, tr)
		_, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if !errors.Is(err, ErrNoEndpointAvailable) {
			t.Fatalf("err = %v, want ErrNoEndpointAvailable", err)
		}
		if len(clk.Sleeps()) != 0 {
			t.Fatalf("slept %v beyond MaxWait", clk.Sleeps())
		}
	})
	t.Run("bounded by the context", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		a := hostEndpoint("a", 0)
		a.MaxRPS, a.Burst = 1, 1
		clk := &fakeClock{}
		// The deadline is on the real clock; sleeps are recorded.
		tr := newTestTransportOn(t, Config{Base: base, Endpoints: []Endpoint{a}}, &funcClock{sleepFn: clk.Sleep})
		chat(t, tr)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, false))
		if !errors.Is(err, ErrNoEndpointAvailable) {
			t.Fatalf("err = %v, want ErrNoEndpointAvailable without waiting past the deadline", err)
		}
		if len(clk.Sleeps()) != 0 {
			t.Fatalf("slept %v past the context's deadline", clk.Sleeps())
		}
	})
}

func TestChooseWaitsWhenAllCoolingDown(t *testing.T) {
	script := func(req *http.Request, n int) (*http.Response, error) {
		if n == 1 {
			ra := map[string]string{"a.test": "2", "b.test": "3"}[req.URL.Host]
			return reply(429, "busy "+req.URL.Host, "Retry-After", ra), nil
		}
		return reply(200, "ok "+req.URL.Host), nil
	}
	t.Run("waits for the earliest", func(t *testing.T) {
		base := newScriptedBase(script)
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
		status, body := chat(t, tr)
		if status != 200 || body != "ok a.test" {
			t.Fatalf("got %d %q, want a's answer after its cooldown", status, body)
		}
		if s := clk.Sleeps(); len(s) != 1 || s[0] != 2*time.Second {
			t.Fatalf("sleeps %v, want one wait of 2s for a's cooldown", s)
		}
	})
	t.Run("returns the last 429 when the wait does not fit", func(t *testing.T) {
		base := newScriptedBase(script)
		tr, clk := newTestTransport(t, Config{Base: base, MaxWait: time.Second,
			Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || string(body) != "busy b.test" || resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("got %d %q %v, want b's 429 itself", resp.StatusCode, body, resp.Header)
		}
		if len(clk.Sleeps()) != 0 {
			t.Fatalf("slept %v though no wait fits MaxWait", clk.Sleeps())
		}
	})
}

func TestChooseWaitsForTrialWhenAllOpen(t *testing.T) {
	// A 100ms open timeout, well inside MaxWait: the request waits it on
	// the fake clock.
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if n == 1 {
			return reply(401, "revoked"), nil
		}
		return reply(200, "ok"), nil
	})
	reg := prometheus.NewRegistry()
	tr, clk := newTestTransport(t, Config{Base: base, Registerer: reg, MaxRetries: -1,
		Breaker:   BreakerConfig{OpenTimeout: 100 * time.Millisecond},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if code, _ := chat(t, tr); code != 401 {
		t.Fatalf("status %d, want the 401 that opens the breaker", code)
	}
	if code, body := chat(t, tr); code != 200 || body != "ok" {
		t.Fatalf("got %d %q, want the trial request to succeed after the open timeout", code, body)
	}
	if got := metricValue(t, reg, "failover_wait_seconds", map[string]string{"reason": "breaker_open"}); got != 1 {
		t.Fatalf("breaker_open waits = %v, want 1", got)
	}
	if got := clk.Sleeps(); len(got) != 1 || got[0] != 100*time.Millisecond {
		t.Fatalf("slept %v, want the open timeout, 100ms", got)
	}
	if st := healthOf(t, tr, "a").State; st != StateClosed {
		t.Fatalf("state %v after a successful trial, want closed", st)
	}

	// With MaxWait shorter than the open timeout, no wait: the request
	// ends at once.
	tr2, _ := newTestTransport(t, Config{Base: newScriptedBase(func(*http.Request, int) (*http.Response, error) {
		return reply(401, "revoked"), nil
	}), MaxRetries: -1, MaxWait: 10 * time.Millisecond, Breaker: BreakerConfig{OpenTimeout: time.Hour},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	chat(t, tr2)
	_, err := tr2.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if !errors.Is(err, ErrNoEndpointAvailable) || !strings.Contains(err.Error(), "breaker open") {
		t.Fatalf("err = %v, want ErrNoEndpointAvailable naming the open breaker", err)
	}
}

func TestChooseBackoffOnlyWhenRetryingSameEndpoint(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if n <= 2 {
			return reply(500, "down"), nil
		}
		return reply(200, "ok"), nil
	})
	var rounds []int
	tr, clk := newTestTransport(t, Config{
		Base:      base,
		Endpoints: []Endpoint{hostEndpoint("only", 0)},
		Backoff: func(min, max time.Duration, n int, _ *http.Response) time.Duration {
			rounds = append(rounds, n)
			return DefaultBackoff(min, max, n, nil)
		},
		BackoffMin: 100 * time.Millisecond,
		BackoffMax: time.Second,
	})
	if status, _ := chat(t, tr); status != 200 {
		t.Fatalf("status %d, want 200 on the third attempt", status)
	}
	sleeps := clk.Sleeps()
	if len(sleeps) != 2 || fmt.Sprint(rounds) != "[0 1]" {
		t.Fatalf("sleeps %v for rounds %v, want two backoffs for rounds 0 and 1", sleeps, rounds)
	}
	if sleeps[0] < 50*time.Millisecond || sleeps[0] > 100*time.Millisecond ||
		sleeps[1] < 100*time.Millisecond || sleeps[1] > 200*time.Millisecond {
		t.Fatalf("sleeps %v, want exponential with equal jitter: [50ms,100ms] then [100ms,200ms]", sleeps)
	}
}

func TestChooseShouldRetryFalseAvoidsSameEndpoint(t *testing.T) {
	base := newScriptedBase(func(*http.Request, int) (*http.Response, error) {
		return reply(500, "no", "X-Should-Retry", "false"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("only", 0)}})
	if status, _ := chat(t, tr); status != 500 {
		t.Fatalf("status %d, want the 500 back", status)
	}
	if base.Hits("only.test") != 1 || len(clk.Sleeps()) != 0 {
		t.Fatalf("%d attempts and sleeps %v, want exactly one attempt", base.Hits("only.test"), clk.Sleeps())
	}
}

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
