package failover

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/prometheus/client_golang/prometheus"
)

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold int
		wantHits  int
	}{
		{"default threshold", 0, 5},
		{"threshold 2", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := newHostReplies()
			hosts.set("a", 500, "down")
			base := newScriptedBase(hosts.script)
			reg := prometheus.NewRegistry()
			tr, _ := newTestTransport(t, Config{
				Base:       base,
				Endpoints:  []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
				Breaker:    BreakerConfig{FailureThreshold: tc.threshold},
				Registerer: reg,
			})
			for range 10 {
				answeredBy(t, tr, "b")
			}
			for name, want := range map[string]float64{"a": 2, "b": 0} {
				if got := metricValue(t, reg, "failover_breaker_state", map[string]string{"endpoint": name}); got != want {
					t.Errorf(`failover_breaker_state{endpoint=%q} = %v, want %v`, name, got, want)
				}
			}
			if a, b := base.Hits("a.test"), base.Hits("b.test"); a != tc.wantHits || b != 10 {
				t.Errorf("hits a=%d b=%d, want a=%d b=10", a, b, tc.wantHits)
			}
			if h := healthOf(t, tr, "a"); h.State != StateOpen {
				t.Errorf("a is %v, want open", h.State)
			}
			if h := healthOf(t, tr, "b"); h.State != StateClosed {
				t.Errorf("b is %v, want closed", h.State)
			}
		})
	}
}

// TestBreakerKeyRejectionOpensAtOnce: a rejected key (a 401, or a 429 whose
// error says insufficient_quota) opens the endpoint's breaker at the first
// rejection, without a cooldown, and the endpoint gets no more requests; a
// plain 429 cools the endpoint down and leaves its breaker alone.
func TestBreakerKeyRejectionOpensAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		body string
	}{
		{"401", 401, `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`},
		{"429 insufficient_quota", 429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := newHostReplies()
			hosts.set("a", tc.code, tc.body)
			base := newScriptedBase(hosts.script)
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			takenOut := func(after string) {
				t.Helper()
				if h := healthOf(t, tr, "a"); h.State != StateOpen || !h.CooldownUntil.IsZero() {
					t.Fatalf("after %s a is %v, cooling down until %v; want open and no cooldown", after, h.State, h.CooldownUntil)
				}
			}
			answeredBy(t, tr, "b")
			takenOut("one rejection")
			for range 3 {
				answeredBy(t, tr, "b")
			}
			takenOut("four requests")
			if got := base.Hits("a.test"); got != 1 {
				t.Errorf("a got %d hits, want 1: a rejected key is taken out at once", got)
			}
		})
	}

	t.Run("plain 429 cools down, breaker untouched", func(t *testing.T) {
		hosts := newHostReplies()
		hosts.set("a", 429, `{"error":{"type":"requests","code":"rate_limit_exceeded"}}`, "Retry-After", "1")
		base := newScriptedBase(hosts.script)
		// A threshold of 1 would open the breaker at the first failure it
		// counted.
		tr, clk := newTestTransport(t, Config{
			Base:      base,
			Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
			Breaker:   BreakerConfig{FailureThreshold: 1},
		})
		for i := range 6 {
			answeredBy(t, tr, "b")
			if s := healthOf(t, tr, "a").State; s != StateCoolingDown {
				t.Fatalf("after 429 #%d a is %v, want cooling-down", i+1, s)
			}
			answeredBy(t, tr, "b")
			if got := base.Hits("a.test"); got != i+1 {
				t.Fatalf("a got %d hits while cooling down, want %d", got, i+1)
			}
			clk.Advance(2 * time.Second)
			if s := healthOf(t, tr, "a").State; s != StateClosed {
				t.Fatalf("after its cooldown a is %v, want closed", s)
			}
		}
	})
}

func TestBreakerCallerErrorsCountAsSuccess(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{
		"a": {500, 500, 500, 500, 400, 500, 500, 500, 500, 500},
	}))
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	for i := 1; i <= 9; i++ {
		code, _ := chat(t, tr)
		want := 200
		if i == 5 {
			want = 400
		}
		if code != want {
			t.Fatalf("request %d: status %d, want %d", i, code, want)
		}
	}
	h := healthOf(t, tr, "a")
	if h.State != StateClosed {
		t.Fatalf("a is %v after 4 failures, a 400 and 4 failures, want closed", h.State)
	}
	if h.ConsecutiveFailures != 4 || h.Failures != 8 || h.Requests != 9 {
		t.Errorf("a: consecutive %d, failures %d, requests %d; want 4, 8, 9", h.ConsecutiveFailures, h.Failures, h.Requests)
	}
	// The fifth failure in a row opens it: the 400 did reset the count.
	chat(t, tr)
	if s := healthOf(t, tr, "a").State; s != StateOpen {
		t.Errorf("a is %v after a fifth consecutive failure, want open", s)
	}
	if base.Hits("a.test") != 10 || base.Hits("b.test") != 9 {
		t.Errorf("hits a=%d b=%d, want 10 and 9", base.Hits("a.test"), base.Hits("b.test"))
	}
}

func TestBreakerHalfOpenTrial(t *testing.T) {
	for _, tc := range []struct {
		name       string
		halfOpen   int
		trialFails bool
	}{
		{"success closes", 0, false},
		{"two successes close", 2, false},
		{"failure reopens", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := newHostReplies()
			hosts.set("a", 500, "down")
			base := newScriptedBase(hosts.script)
			tr, clk := newTestTransport(t, Config{
				Base:      base,
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
				Breaker:   BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Minute, HalfOpenRequests: tc.halfOpen},
			})
			answeredBy(t, tr, "b") // a fails once: open
			for range 3 {
				answeredBy(t, tr, "b")
			}
			if got := base.Hits("a.test"); got != 1 {
				t.Fatalf("open endpoint a got %d hits, want only the one that opened it", got)
			}

			passOpenTimeout(t, tr, clk, "a", time.Minute)
			if tc.trialFails {
				// a still answers 500: its trial fails.
				answeredBy(t, tr, "b")
				if got := base.Hits("a.test"); got != 2 {
					t.Fatalf("a got %d hits, want 2 (one trial)", got)
				}
				if s := healthOf(t, tr, "a").State; s == StateClosed {
					t.Fatalf("a is %v after a failed trial, want open again", s)
				}
				answeredBy(t, tr, "b")
				if got := base.Hits("a.test"); got != 2 {
					t.Fatalf("a got %d hits after its failed trial, want none more", got)
				}
				// It opened again for a new OpenTimeout: it turns
				// half-open again, and a good trial then closes it.
				clk.Advance(time.Minute - time.Nanosecond)
				if s := healthOf(t, tr, "a").State; s != StateOpen {
					t.Fatalf("a is %v before its new open timeout passed, want open", s)
				}
				clk.Advance(time.Nanosecond)
				if s := healthOf(t, tr, "a").State; s != StateHalfOpen {
					t.Fatalf("a is %v once its new open timeout passed, want half-open", s)
				}
			}
			hosts.healthy("a")
			trials := max(1, tc.halfOpen)
			for i := range trials {
				if s := healthOf(t, tr, "a").State; s != StateHalfOpen {
					t.Fatalf("before trial %d a is %v, want half-open", i+1, s)
				}
				answeredBy(t, tr, "a")
			}
			if s := healthOf(t, tr, "a").State; s != StateClosed {
				t.Fatalf("a is %v after %d good trial(s), want closed", s, trials)
			}
			bHits := base.Hits("b.test")
			for range 3 {
				answeredBy(t, tr, "a")
			}
			if got := base.Hits("b.test"); got != bHits {
				t.Errorf("b got %d more hits after a closed, want traffic back on a", got-bHits)
			}
		})
	}
}

// TestBreakerStaleSuccessOwesNothing: an attempt admitted before the
// breaker opened, went half-open and closed again succeeds only after
// failures were counted in the new generation. gobreaker ignores its
// stale done, so it must not settle what the breaker owes either: a later
// success does, and one more failure then does not open the breaker.
func TestBreakerStaleSuccessOwesNothing(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		switch req.Header.Get("X-Mode") {
		case "fail":
			return reply(500, "down"), nil
		case "block":
			close(entered)
			<-release
		}
		return reply(200, "ok"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, MaxRetries: -1, MaxWait: -1,
		Breaker:   BreakerConfig{FailureThreshold: 5, OpenTimeout: time.Minute},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	send := func(mode string) int {
		req := chatRequest(t, context.Background(), clientBase, false)
		req.Header.Set("X-Mode", mode)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Errorf("%s: %v", mode, err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	send("fail") // the breaker counts 1: the next attempt takes the slow path
	slow := make(chan int)
	go func() { slow <- send("block") }()
	<-entered
	for range 4 {
		send("fail") // the breaker opens: a new generation
	}
	clk.Advance(time.Minute)
	if st := healthOf(t, tr, "a").State; st != StateHalfOpen {
		t.Fatalf("a is %v after its open timeout, want half-open", st)
	}
	if code := send("ok"); code != 200 {
		t.Fatalf("trial: status %d, want 200", code)
	}
	for range 4 {
		send("fail") // counted in the closed breaker's new generation
	}
	close(release)
	if code := <-slow; code != 200 {
		t.Fatalf("the slow attempt: status %d, want 200", code)
	}
	for range 3 {
		send("ok")
	}
	if got := endpointsOf(tr)[0].breaker.cb.Load().Counts().ConsecutiveFailures; got != 0 {
		t.Errorf("after fresh successes the breaker counts %d consecutive failures", got)
	}
	send("fail")
	if h := healthOf(t, tr, "a"); h.State != StateClosed {
		t.Errorf("a is %v after one failure following successes (threshold 5), want closed", h.State)
	}
}

// TestBreakerTrialFreedAfterPanic: a panic in user code (here the
// Classifier) during a half-open breaker's trial must not leave the trial
// outstanding forever, which would shut the endpoint out for good.
func TestBreakerTrialFreedAfterPanic(t *testing.T) {
	var panicking atomic.Bool
	base := newScriptedBase(func(_ *http.Request, n int) (*http.Response, error) {
		if n == 1 {
			return reply(500, "down"), nil
		}
		return reply(200, "ok"), nil
	})
	classify := func(resp *http.Response, body []byte, err error) Verdict {
		if panicking.Load() {
			panic("classifier bug")
		}
		return DefaultClassifier(resp, body, err)
	}
	tr, clk := newTestTransport(t, Config{Base: base, Classifier: classify, MaxRetries: -1, MaxWait: -1,
		Breaker:   BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Minute},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if status, _ := chat(t, tr); status != 500 {
		t.Fatalf("status %d, want 500", status)
	}
	passOpenTimeout(t, tr, clk, "a", time.Minute)

	panicking.Store(true)
	func() {
		defer func() {
			if r := recover(); r != "classifier bug" {
				t.Fatalf("recovered %v, want the classifier's panic", r)
			}
		}()
		_, _ = tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	}()
	panicking.Store(false)

	if status, _ := chat(t, tr); status != 200 {
		t.Fatalf("after the panic: status %d, want a new trial answered 200", status)
	}
	if got := base.Hits("a.test"); got != 3 {
		t.Errorf("a got %d requests, want 3", got)
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
