package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// endpointLabels returns the endpoint label values of every series reg
// gathers.
func endpointLabels(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

func TestUpdateRejectsBadConfigAndChangesNothing(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	err := tr.Update(Config{
		Endpoints: []Endpoint{
			{Name: "b", BaseURL: "ftp://b.test", APIKey: "sk-SECRET-b"},
			{Name: "c", BaseURL: "https://c.test/v1", Weight: -2, APIKey: "sk-SECRET-c"},
		},
		MaxRetries: 5000,
	})
	if err == nil {
		t.Fatal("Update accepted a bad config")
	}
	for _, want := range []string{`endpoint 0 ("b"): BaseURL`, `endpoint 1 ("c"): Weight`, "MaxRetries"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("the error quotes a key: %v", err)
	}
	chat(t, tr)
	if got := base.Hits("a.test"); got != 1 {
		t.Errorf("a got %d requests after the refused Update, want 1: the old configuration stays", got)
	}
	if h := tr.Health(); len(h) != 1 || h[0].Name != "a" {
		t.Errorf("Health after the refused Update = %+v, want endpoint a alone", h)
	}
}

func TestUpdateFixedFields(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	cfg := Config{Base: base, Registerer: reg, Logger: logger, Endpoints: []Endpoint{hostEndpoint("a", 0)}}
	tr, _ := newTestTransport(t, cfg)
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // "" for no error
	}{
		{"same values", func(*Config) {}, ""},
		{"nil keeps them", func(c *Config) { c.Base, c.Registerer, c.Logger = nil, nil, nil }, ""},
		{"another Base", func(c *Config) { c.Base = newScriptedBase(alwaysOK) }, "Base cannot change"},
		{"another Registerer", func(c *Config) { c.Registerer = prometheus.NewRegistry() }, "Registerer cannot change"},
		{"another Logger", func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) }, "Logger cannot change"},
		{"a function Base", func(c *Config) { c.Base = roundTripFunc(alwaysOKFunc) }, "Base cannot change"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.change(&c)
			err := tr.Update(c)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Update: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Update error = %v, want one saying %q", err, tc.want)
			}
		})
	}
	// A function Base compares as itself.
	f := roundTripFunc(alwaysOKFunc)
	tr2, _ := newTestTransport(t, Config{Base: f, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if err := tr2.Update(Config{Base: f, Endpoints: []Endpoint{hostEndpoint("b", 0)}}); err != nil {
		t.Errorf("Update with the same function Base: %v", err)
	}
}

func alwaysOKFunc(*http.Request) (*http.Response, error) { return reply(200, "ok"), nil }

// TestUpdateKeepsStateByName: an endpoint whose Name is kept keeps its
// open breaker, cooldown, statistics, limiter tokens and metric series
// under its new settings; a removed endpoint's series go; a new endpoint
// starts closed; the new priorities apply from the next request.
func TestUpdateKeepsStateByName(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{"open": {500}, "cool": {429, 200}}))
	reg := prometheus.NewRegistry()
	eps := func() []Endpoint {
		open, cool, lim, gone := hostEndpoint("open", 0), hostEndpoint("cool", 1), hostEndpoint("lim", 2), hostEndpoint("gone", 3)
		lim.MaxRPS, lim.Burst = 1, 3
		return []Endpoint{open, cool, lim, gone}
	}
	tr, clk := newTestTransport(t, Config{Base: base, Registerer: reg, MaxRetries: 4, MaxWait: -1,
		Breaker: BreakerConfig{FailureThreshold: 1}, Endpoints: eps()})
	// open fails once (opens), cool answers 429 (cools for 1s), lim takes
	// the request and spends one of its three tokens.
	if code, body := chat(t, tr); code != 200 || body != "ok" {
		t.Fatalf("got %d %q, want 200 from lim", code, body)
	}
	if got := base.Hits("lim.test"); got != 1 {
		t.Fatalf("setup: lim got %d requests, want 1", got)
	}
	before := map[string]EndpointHealth{}
	for _, h := range tr.Health() {
		before[h.Name] = h
	}
	if before["open"].State != StateOpen || before["cool"].State != StateCoolingDown {
		t.Fatalf("setup: open is %v, cool is %v; want open and cooling-down", before["open"].State, before["cool"].State)
	}

	// New order: lim first, then a new endpoint, then open and cool; gone
	// is removed; lim's rate changes.
	next := eps()[:3]
	next[2].Priority = -1
	next[2].MaxRPS = 2
	next = append(next, hostEndpoint("new", 0))
	if err := tr.Update(Config{Base: base, Registerer: reg, MaxRetries: 4, MaxWait: -1,
		Breaker: BreakerConfig{FailureThreshold: 1}, Endpoints: next}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	after := map[string]EndpointHealth{}
	for _, h := range tr.Health() {
		after[h.Name] = h
	}
	if len(after) != 4 || after["gone"].Name != "" {
		t.Fatalf("Health after Update has %v, want open, cool, lim and new", after)
	}
	for _, name := range []string{"open", "cool", "lim"} {
		b, a := before[name], after[name]
		if a.State != b.State || !a.StateSince.Equal(b.StateSince) || a.Requests != b.Requests ||
			a.Failures != b.Failures || !a.CooldownUntil.Equal(b.CooldownUntil) {
			t.Errorf("%s: health %+v after Update, want the state of %+v kept", name, a, b)
		}
	}
	if got := after["lim"].Tokens; got != 2 {
		t.Errorf("lim has %v tokens after Update, want the 2 it had left", got)
	}
	if h := after["new"]; h.State != StateClosed || h.Requests != 0 {
		t.Errorf("new endpoint: %+v, want closed and unused", h)
	}
	labels := endpointLabels(t, reg)
	if labels["gone"] {
		t.Error("the removed endpoint's metric series are still gathered")
	}
	if got := metricValue(t, reg, "failover_attempts_total", map[string]string{"endpoint": "open", "outcome": "500"}); got != 1 {
		t.Errorf("open's attempt counter = %v after Update, want its 1 kept", got)
	}

	// lim is now preferred and refills at 2/s: two requests take its two
	// tokens, the third finds it empty and goes to new.
	for range 2 {
		chat(t, tr)
	}
	if got := base.Hits("lim.test"); got != 3 {
		t.Errorf("lim got %d requests in all, want 3 (its priority -1 applies)", got)
	}
	chat(t, tr)
	if got := base.Hits("new.test"); got != 1 {
		t.Errorf("new got %d requests, want the one lim had no token for", got)
	}
	clk.Advance(500 * time.Millisecond) // one token at the new rate
	chat(t, tr)
	if got := base.Hits("lim.test"); got != 4 {
		t.Errorf("lim got %d requests after half a second at 2/s, want 4", got)
	}
	// open is still open, with its open period kept.
	if got := base.Hits("open.test"); got != 1 {
		t.Errorf("open got %d requests, want only the one that opened it", got)
	}
}

// TestUpdateInFlightKeepsItsConfiguration: a request that started before an
// Update fails over within the configuration it started on; the next one
// uses the new configuration.
func TestUpdateInFlightKeepsItsConfiguration(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" && n == 1 {
			once.Do(func() { close(entered) })
			<-release
			return reply(500, "a down"), nil
		}
		return reply(200, strings.TrimSuffix(req.URL.Host, ".test")), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if err != nil {
			done <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b)}
	}()
	<-entered
	if err := tr.Update(Config{Base: base, Endpoints: []Endpoint{hostEndpoint("c", 0)}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	close(release)
	if r := <-done; r.code != 200 || r.body != "b" {
		t.Errorf("the request in flight got %d %q, want 200 from b, its own configuration's backup", r.code, r.body)
	}
	if code, body := chat(t, tr); code != 200 || body != "c" {
		t.Errorf("the next request got %d %q, want 200 from c", code, body)
	}
	if got := base.Hits("b.test") + base.Hits("c.test"); got != 2 {
		t.Errorf("b and c got %d requests, want 2", got)
	}
}

// TestUpdateHalfOpenRequestsKeepsOpenBreakerOpen: a new number of half-open
// trials needs a new gobreaker breaker; an open one stays open for the rest
// of its open period, then lets the new number of trials through.
func TestUpdateHalfOpenRequestsKeepsOpenBreakerOpen(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{"a": {500, 200}}))
	cfg := Config{Base: base, MaxRetries: -1, MaxWait: -1,
		Breaker:   BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Minute},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}}
	tr, clk := newTestTransport(t, cfg)
	chat(t, tr) // opens a
	clk.Advance(30 * time.Second)
	cfg.Breaker.HalfOpenRequests = 2
	if err := tr.Update(cfg); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if _, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false)); !errors.Is(err, ErrNoEndpointAvailable) {
		t.Fatalf("err = %v halfway through the open period, want ErrNoEndpointAvailable", err)
	}
	passOpenTimeout(t, tr, clk, "a", 30*time.Second)
	chatOK200(t, tr)
	if st := healthOf(t, tr, "a").State; st != StateHalfOpen {
		t.Fatalf("a is %v after one of two trials, want half-open", st)
	}
	chatOK200(t, tr)
	if st := healthOf(t, tr, "a").State; st != StateClosed {
		t.Fatalf("a is %v after two good trials, want closed", st)
	}
}

// chatOK200 sends one chat completion and fails unless it is answered 200.
func chatOK200(t *testing.T, tr *Transport) {
	t.Helper()
	if code, body := chat(t, tr); code != 200 {
		t.Fatalf("got %d %q, want 200", code, body)
	}
}

// TestUpdateConcurrentWithRoundTrip runs requests and Updates at once, for
// the race detector: every request is answered by an endpoint of one of
// the configurations.
func TestUpdateConcurrentWithRoundTrip(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	reg := prometheus.NewRegistry()
	configs := [][]Endpoint{
		{hostEndpoint("a", 0), hostEndpoint("b", 1)},
		{hostEndpoint("b", 0), hostEndpoint("c", 0)},
		{hostEndpoint("a", 1), hostEndpoint("c", 0), hostEndpoint("d", 2)},
	}
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: configs[0]})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Go(func() {
			for range 200 {
				resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
				if err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("worker %d: status %d", w, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			if err := tr.Update(Config{Base: base, Endpoints: configs[i%len(configs)]}); err != nil {
				errs <- err
				return
			}
			_ = tr.Health()
			_, _ = reg.Gather()
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for _, h := range []string{"a.test", "b.test", "c.test", "d.test"} {
		total += base.Hits(h)
	}
	if total != 800 {
		t.Errorf("%d requests reached the endpoints, want 800", total)
	}
}

// TestUpdatePoliciesApplyToTheNextRequest changes one timeout or policy
// per case with Update and checks that the next request follows the new
// value: each endpoint's Timeout and FirstTokenTimeout, and the
// Classifier, Backoff, MaxWait, MaxRetries and an endpoint's Weight.
func TestUpdatePoliciesApplyToTheNextRequest(t *testing.T) {
	// blockUntilDone answers a request only when it is cut.
	blockUntilDone := func(req *http.Request, _ int) (*http.Response, error) {
		select {
		case <-req.Context().Done():
			return nil, context.Cause(req.Context())
		case <-time.After(10 * time.Second): // generous: the test fails without hanging
			return nil, errors.New("never cut")
		}
	}
	// silentStream answers a stream that sends no content until closed.
	silentStream := func(req *http.Request, _ int) (*http.Response, error) {
		resp := reply(200, "", "Content-Type", "text/event-stream")
		resp.Body, resp.ContentLength = silentBody{req.Context()}, -1
		return resp, nil
	}
	// send sends one chat, returning its error or the status and body. (No
	// deadline: the waits run on the fake clock, which a real deadline
	// would not fit.)
	send := func(t *testing.T, tr *Transport) (int, string, error) {
		t.Helper()
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	one := func(f func(e *Endpoint)) []Endpoint {
		e := hostEndpoint("a", 0)
		if f != nil {
			f(&e)
		}
		return []Endpoint{e}
	}
	backoff := func(d time.Duration) func(_, _ time.Duration, _ int, _ *http.Response) time.Duration {
		return func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return d }
	}
	for _, tc := range []struct {
		name   string
		script func(req *http.Request, n int) (*http.Response, error)
		cfg    func(updated bool) Config // before and after Update
		check  func(t *testing.T, tr *Transport, clk *fakeClock, base *scriptedBase)
	}{
		{"Timeout", blockUntilDone, func(updated bool) Config {
			return Config{MaxRetries: -1, Endpoints: one(func(e *Endpoint) {
				if updated {
					e.Timeout = 50 * time.Millisecond
				}
			})}
		}, func(t *testing.T, tr *Transport, _ *fakeClock, _ *scriptedBase) {
			if _, _, err := send(t, tr); !errors.Is(err, ErrAttemptTimeout) {
				t.Errorf("error %v, want the new Timeout's ErrAttemptTimeout", err)
			}
		}},
		{"FirstTokenTimeout", silentStream, func(updated bool) Config {
			return Config{MaxRetries: -1, Endpoints: one(func(e *Endpoint) {
				if updated {
					e.FirstTokenTimeout = 50 * time.Millisecond
				}
			})}
		}, func(t *testing.T, tr *Transport, _ *fakeClock, _ *scriptedBase) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // generous: fails without hanging
			defer cancel()
			resp, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, true))
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, ErrFirstTokenTimeout) {
				t.Errorf("error %v, want the new FirstTokenTimeout's ErrFirstTokenTimeout", err)
			}
		}},
		{"Classifier", statusScript(map[string][]int{"a": {418}, "b": {200}}), func(updated bool) Config {
			cfg := Config{Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}}
			if updated {
				cfg.Classifier = func(resp *http.Response, body []byte, err error) Verdict {
					if resp != nil && resp.StatusCode == http.StatusTeapot {
						return Verdict{Outcome: OutcomeFailure}
					}
					return DefaultClassifier(resp, body, err)
				}
			}
			return cfg
		}, func(t *testing.T, tr *Transport, _ *fakeClock, base *scriptedBase) {
			if code, _, err := send(t, tr); err != nil || code != 200 || base.Hits("b.test") != 1 {
				t.Errorf("status %d, error %v, %d hits on b; want a's 418 failed over to b by the new Classifier", code, err, base.Hits("b.test"))
			}
		}},
		{"Backoff", statusScript(map[string][]int{"a": {500, 200}}), func(updated bool) Config {
			cfg := Config{MaxRetries: 1, Backoff: backoff(time.Second), Endpoints: one(nil)}
			if updated {
				cfg.Backoff = backoff(3 * time.Second)
			}
			return cfg
		}, func(t *testing.T, tr *Transport, clk *fakeClock, _ *scriptedBase) {
			if code, _, err := send(t, tr); err != nil || code != 200 {
				t.Fatalf("status %d, error %v; want 200 on the second attempt", code, err)
			}
			if got := clk.Sleeps(); len(got) != 1 || got[0] != 3*time.Second {
				t.Errorf("pauses %v, want the new Backoff's [3s]", got)
			}
		}},
		{"MaxWait", func(req *http.Request, n int) (*http.Response, error) {
			if n == 1 {
				return reply(429, `{"error":{"message":"slow down"}}`, "Retry-After", "2"), nil
			}
			return reply(200, "ok"), nil
		}, func(updated bool) Config {
			cfg := Config{MaxWait: -1, Endpoints: one(nil)}
			if updated {
				cfg.MaxWait = 10 * time.Second
			}
			return cfg
		}, func(t *testing.T, tr *Transport, clk *fakeClock, _ *scriptedBase) {
			if code, _, err := send(t, tr); err != nil || code != 200 {
				t.Errorf("status %d, error %v; want 200 after waiting out the cooldown within the new MaxWait", code, err)
			}
		}},
		{"MaxRetries", statusScript(map[string][]int{"a": {500, 500, 500, 500}}), func(updated bool) Config {
			cfg := Config{MaxRetries: -1, Breaker: BreakerConfig{FailureThreshold: 10}, Endpoints: one(nil)}
			if updated {
				cfg.MaxRetries = 2
			}
			return cfg
		}, func(t *testing.T, tr *Transport, _ *fakeClock, base *scriptedBase) {
			_, _, _ = send(t, tr)
			if got := base.Hits("a.test"); got != 3 {
				t.Errorf("%d attempts, want the new MaxRetries' 3", got)
			}
		}},
		{"Weight", alwaysOK, func(updated bool) Config {
			a, b := hostEndpoint("a", 0), hostEndpoint("b", 0)
			if updated {
				a.Weight = 3
			}
			return Config{Endpoints: []Endpoint{a, b}}
		}, func(t *testing.T, tr *Transport, _ *fakeClock, base *scriptedBase) {
			for range 4 {
				if code, _, err := send(t, tr); err != nil || code != 200 {
					t.Fatalf("status %d, error %v", code, err)
				}
			}
			if a, b := base.Hits("a.test"), base.Hits("b.test"); a != 3 || b != 1 {
				t.Errorf("a got %d and b %d of 4 requests, want 3 and 1 (the new weights 3:1)", a, b)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(tc.script)
			before := tc.cfg(false)
			before.Base = base
			tr, clk := newTestTransport(t, before)
			if err := tr.Update(tc.cfg(true)); err != nil {
				t.Fatalf("Update: %v", err)
			}
			tc.check(t, tr, clk, base)
		})
	}
}

// silentBody is a response body that sends nothing until its request's
// context ends, as a connection's body would.
type silentBody struct{ ctx context.Context }

func (b silentBody) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, context.Cause(b.ctx)
}

func (silentBody) Close() error { return nil }

// TestUpdateLiveStateChangesInFlight: what Update documents as a kept
// endpoint's live state (its breaker's FailureThreshold, its rate
// limiter's MaxRPS) changes at the Update for every request, those in
// flight included, while the rest of their configuration stays theirs.
// Each case: a fails a first request over to b (a's first failure, b's
// first token), a second request is in flight on a during the Update,
// then fails over.
func TestUpdateLiveStateChangesInFlight(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after []Endpoint
		breaker       [2]int // FailureThreshold before and after
		check         func(t *testing.T, tr *Transport, base *scriptedBase, code int, body string)
	}{
		{"FailureThreshold", []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
			[]Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}, [2]int{5, 2},
			func(t *testing.T, tr *Transport, _ *scriptedBase, code int, body string) {
				if code != 200 || body != "b" {
					t.Errorf("the request in flight got %d %q, want 200 from b", code, body)
				}
				if st := healthOf(t, tr, "a").State; st != StateOpen {
					t.Errorf("a is %v after its second failure, want open: the new FailureThreshold 2 applies to the attempt in flight", st)
				}
			}},
		{"MaxRPS", []Endpoint{hostEndpoint("a", 0), withRate(hostEndpoint("b", 1), 1, 1)},
			[]Endpoint{hostEndpoint("a", 0), withRate(hostEndpoint("b", 1), minRPS, 1)}, [2]int{5, 5},
			func(t *testing.T, _ *Transport, base *scriptedBase, code int, body string) {
				if code == 200 || base.Hits("b.test") != 1 {
					t.Errorf("the request in flight got %d %q and b %d requests in all, want no second request on b: its new rate, one an hour, applies to the request in flight", code, body, base.Hits("b.test"))
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				if req.URL.Host != "a.test" {
					return reply(200, strings.TrimSuffix(req.URL.Host, ".test")), nil
				}
				if n == 2 {
					once.Do(func() { close(entered) })
					<-release
				}
				return reply(500, "a down"), nil
			})
			cfg := func(eps []Endpoint, threshold int) Config {
				return Config{Base: base, MaxWait: -1, MaxRetries: 1, Breaker: BreakerConfig{FailureThreshold: threshold}, Endpoints: eps}
			}
			tr, clk := newTestTransport(t, cfg(tc.before, tc.breaker[0]))
			if code, body := chat(t, tr); code != 200 || body != "b" {
				t.Fatalf("first request: %d %q, want 200 from b", code, body)
			}
			done := make(chan [2]any, 1)
			go func() {
				resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
				if err != nil {
					done <- [2]any{0, err.Error()}
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				done <- [2]any{resp.StatusCode, string(b)}
			}()
			<-entered
			if err := tr.Update(cfg(tc.after, tc.breaker[1])); err != nil {
				t.Fatalf("Update: %v", err)
			}
			clk.Advance(time.Second) // b's old rate would give it a token again
			close(release)
			r := <-done
			tc.check(t, tr, base, r[0].(int), r[1].(string))
		})
	}
}

// withRate returns e with MaxRPS and Burst set.
func withRate(e Endpoint, rps float64, burst int) Endpoint {
	e.MaxRPS, e.Burst = rps, burst
	return e
}
