package failover

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// latencies is the script of a scripted base whose hosts answer after the
// latency the test sets for each, on the fake clock: each request advances
// it by its host's latency (requests are sent one at a time).
type latencies struct {
	clk *fakeClock
	mu  sync.Mutex
	of  map[string]time.Duration
}

func (l *latencies) set(name string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.of[name] = d
}

func (l *latencies) script(req *http.Request, _ int) (*http.Response, error) {
	name := strings.TrimSuffix(req.URL.Host, ".test")
	l.mu.Lock()
	d := l.of[name]
	l.mu.Unlock()
	l.clk.Advance(d)
	return reply(200, name), nil
}

// TestLeastLatencyBalancer: beside a 300 ms endpoint of the same weight, a
// 10 ms one takes nearly all requests; once the slow one speeds up, the
// decay of its estimate has it tried again, and the two share the load.
func TestLeastLatencyBalancer(t *testing.T) {
	lat := &latencies{of: map[string]time.Duration{"fast": 10 * time.Millisecond, "slow": 300 * time.Millisecond}}
	base := newScriptedBase(lat.script)
	tr, clk := newTestTransport(t, Config{Base: base, Balancer: BalancerLeastLatency,
		Endpoints: []Endpoint{hostEndpoint("fast", 0), hostEndpoint("slow", 0)}})
	lat.clk = clk
	if got := shareOf(t, tr, base, "fast", 1000); got < 0.95 {
		t.Fatalf("fast took %.3f of the requests beside a 300ms endpoint, want nearly all", got)
	}
	est := healthOf(t, tr, "fast").LatencyEstimate
	if est < 5*time.Millisecond || est > 11*time.Millisecond {
		t.Fatalf("fast's latency estimate %v, want about 10ms", est)
	}

	lat.set("slow", 10*time.Millisecond)
	shareOf(t, tr, base, "slow", 1500) // about 15 s: the slow one's estimate decays and it is tried again
	if got := shareOf(t, tr, base, "slow", 1000); got < 0.3 {
		t.Fatalf("after it sped up, slow took %.3f of the requests, want a fair share", got)
	}
}

// TestLeastLatencyWeighted: of two endpoints as fast as each other, the
// one of weight 3 takes most of the traffic.
func TestLeastLatencyWeighted(t *testing.T) {
	lat := &latencies{of: map[string]time.Duration{"a": 10 * time.Millisecond, "b": 10 * time.Millisecond}}
	base := newScriptedBase(lat.script)
	eps := []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)}
	eps[1].Weight = 3
	tr, clk := newTestTransport(t, Config{Base: base, Balancer: BalancerLeastLatency, Endpoints: eps})
	lat.clk = clk
	if got := shareOf(t, tr, base, "b", 2000); got < 0.6 {
		t.Fatalf("b, of weight 3, took %.3f beside a of weight 1, want most", got)
	}
}

// TestLeastLatencyUnsampledFirst: an endpoint with no sample and nothing in
// flight is tried first.
func TestLeastLatencyUnsampledFirst(t *testing.T) {
	lat := &latencies{of: map[string]time.Duration{"a": time.Millisecond, "b": time.Second}}
	base := newScriptedBase(lat.script)
	cfg := Config{Base: base, Balancer: BalancerLeastLatency, Endpoints: []Endpoint{hostEndpoint("a", 0)}}
	tr, clk := newTestTransport(t, cfg)
	lat.clk = clk
	shareOf(t, tr, base, "a", 10)
	cfg.Endpoints = append(cfg.Endpoints, hostEndpoint("b", 0))
	if err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	answeredBy(t, tr, "b")
}

// TestPeakEWMA: a sample above the estimate replaces it at once, one below
// pulls it down gradually, and the estimate decays with time: to under 4%
// of itself in ten seconds.
func TestPeakEWMA(t *testing.T) {
	var p peakEWMA
	if v := p.value(0); v != 0 {
		t.Fatalf("no sample: %v, want 0", v)
	}
	p.observe(100*time.Millisecond, time.Second)
	p.observe(300*time.Millisecond, time.Second)
	if v := p.value(time.Second); math.Abs(v-0.3) > 1e-9 {
		t.Fatalf("after a peak: %v, want 0.3", v)
	}
	p.observe(10*time.Millisecond, time.Second+100*time.Millisecond)
	if v := p.value(time.Second + 100*time.Millisecond); v < 0.25 || v > 0.3 {
		t.Fatalf("a low sample soon after the peak: %v, want it still near 0.3", v)
	}
	start := p.value(2 * time.Second)
	if v := p.value(12 * time.Second); v > start*0.04 {
		t.Fatalf("ten seconds on: %v of %v, want under 4%%", v, start)
	}
	var z peakEWMA
	z.observe(0, 0)
	if z.bits.Load() == 0 {
		t.Fatal("a zero sample left no sample")
	}
}

// TestDecayWeight: the weight an estimate keeps after an age is e^(-age/
// latencyDecay), computed without math.Exp for recent ages, within a
// relative 1e-6 on both sides of where each approximation ends.
func TestDecayWeight(t *testing.T) {
	for _, age := range []time.Duration{0, time.Microsecond, time.Millisecond, latencyDecay / 1000, latencyDecay/1000 + 1,
		10 * time.Millisecond, 100 * time.Millisecond, latencyDecay/8 - 1, latencyDecay / 8, time.Second, 10 * time.Second, -time.Second} {
		want := math.Exp(-max(age, 0).Seconds() / latencyDecay.Seconds())
		if got := decayWeight(age); math.Abs(got-want) > 1e-6*want {
			t.Errorf("decayWeight(%v) = %.12f, want %.12f", age, got, want)
		}
	}
}

// TestLeastLatencyCost: attempts in flight raise an endpoint's cost, Weight
// lowers it, and an endpoint with no sample costs nothing only while idle.
func TestLeastLatencyCost(t *testing.T) {
	tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Balancer: BalancerLeastLatency,
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	e := endpointsOf(tr)[0]
	if c := e.cost(0, 1); c != 0 {
		t.Fatalf("idle, no sample: cost %v, want 0", c)
	}
	e.hot.started.Add(2)
	if c := e.cost(0, 1); c != 2*unsampledCost {
		t.Fatalf("two in flight, no sample: cost %v, want %v", c, 2*unsampledCost)
	}
	e.hot.peak.observe(100*time.Millisecond, 0)
	if c := e.cost(0, 1); math.Abs(c-0.3) > 1e-9 {
		t.Fatalf("two in flight at 100ms: cost %v, want 0.3", c)
	}
	if c := e.cost(0, 0.5); math.Abs(c-0.6) > 1e-9 {
		t.Fatalf("at half its weight: cost %v, want 0.6", c)
	}
}

// BenchmarkPick measures the choice alone (no request, no allocation), on
// three endpoints of one tier: the round robin of today against the
// least-latency balancer, slow start configured (idle, and during a
// window), and affinity for a request with a key, so that each one's own
// cost shows without the noise of a whole round trip.
//
//	go test -run '^$' -bench Pick -count 8 .
func BenchmarkPick(b *testing.B) {
	eps := func() []Endpoint {
		eps := benchEndpoints(3)
		for i := range eps {
			eps[i].Priority = 0
		}
		return eps
	}
	for _, tc := range []struct {
		name  string
		cfg   Config
		setup func(tr *Transport)
		key   uint64
	}{
		{name: "round_robin"},
		{name: "least_latency", cfg: Config{Balancer: BalancerLeastLatency}, setup: func(tr *Transport) {
			for i, e := range endpointsOf(tr) {
				e.hot.peak.observe(time.Duration(i+1)*10*time.Millisecond, tr.clock.since())
			}
		}},
		{name: "slow_start/idle", cfg: Config{SlowStart: time.Minute}},
		{name: "slow_start/running", cfg: Config{SlowStart: time.Hour}, setup: func(tr *Transport) {
			tr.heal.started(endpointsOf(tr)[0].endpointState)
		}},
		{name: "affinity/key", cfg: Config{Affinity: AffinityPromptCacheKey}, key: keyOf([]byte(`{"prompt_cache_key":"conversation-1234"}`))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := tc.cfg
			cfg.Base, cfg.Endpoints = cannedBase{}, eps()
			tr := mustNew(b, cfg)
			defer tr.Close()
			if tc.setup != nil {
				tc.setup(tr)
			}
			s := tr.snap.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				st := requestState{key: tc.key}
				clk := lazyClock{c: s.clock}
				e, done, _ := s.pick(&clk, &st)
				if e == nil {
					b.Fatal("no endpoint")
				}
				done(nil)
			}
		})
	}
}

// clockBody is a response body whose first read advances the fake clock
// by d: the time the upstream takes to its first event.
type clockBody struct {
	io.Reader
	clk  *fakeClock
	d    time.Duration
	once sync.Once
}

func (b *clockBody) Read(p []byte) (int, error) {
	b.once.Do(func() { b.clk.Advance(b.d) })
	return b.Reader.Read(p)
}

func (b *clockBody) Close() error { return nil }

// TestLeastLatencyStreamsUseFirstToken: a stream's sample is its time to
// the first token, not to its headers, once the endpoint has streamed one:
// an endpoint that sends headers in 5ms and its first token at 500ms is
// estimated at about 500ms, and its next streams' headers do not pull the
// estimate down.
func TestLeastLatencyStreamsUseFirstToken(t *testing.T) {
	var clk *fakeClock
	const sse = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
	base := newScriptedBase(func(*http.Request, int) (*http.Response, error) {
		clk.Advance(5 * time.Millisecond)
		resp := reply(200, "", "Content-Type", "text/event-stream")
		resp.Body = &clockBody{Reader: strings.NewReader(sse), clk: clk, d: 495 * time.Millisecond}
		return resp, nil
	})
	tr, c := newTestTransport(t, Config{Base: base, Balancer: BalancerLeastLatency,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	clk = c
	for i := range 3 {
		roundTrip(t, tr, chatRequest(t, context.Background(), clientBase, true))
		if est := healthOf(t, tr, "a").LatencyEstimate; est < 400*time.Millisecond || est > 500*time.Millisecond {
			t.Fatalf("after stream %d: estimate %v, want about the first token's 500ms", i+1, est)
		}
	}
}

// TestLeastLatencyUnsampledFirstAnySize: whatever the tier's size, an
// endpoint with no sample is tried before any endpoint is tried twice,
// and each one added by Update takes the next request; once every endpoint
// has a sample, the tier is marked so and no request walks it again.
// Before the fix, two endpoints drawn at random were compared, so with
// three or more an endpoint without a sample was tried only when drawn.
func TestLeastLatencyUnsampledFirstAnySize(t *testing.T) {
	for _, n := range []int{2, 3, 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			lat := &latencies{of: map[string]time.Duration{}}
			base := newScriptedBase(lat.script)
			cfg := Config{Base: base, Balancer: BalancerLeastLatency}
			for i := range n {
				name := fmt.Sprintf("e%d", i)
				lat.of[name] = time.Millisecond
				cfg.Endpoints = append(cfg.Endpoints, hostEndpoint(name, 0))
			}
			tr, clk := newTestTransport(t, cfg)
			lat.clk = clk
			seen := map[string]bool{}
			for i := range n {
				code, body := chat(t, tr)
				if code != 200 {
					t.Fatalf("request %d: status %d", i, code)
				}
				if seen[body] {
					t.Fatalf("request %d went to %s again while %d of %d endpoints had no sample", i, body, n-len(seen), n)
				}
				seen[body] = true
			}
			// Endpoints added one at a time each take the next request.
			for k := range 4 {
				name := fmt.Sprintf("new%d", k)
				lat.set(name, time.Second)
				cfg.Endpoints = append(cfg.Endpoints, hostEndpoint(name, 0))
				if err := tr.Update(cfg); err != nil {
					t.Fatal(err)
				}
				answeredBy(t, tr, name)
			}
			if code, _ := chat(t, tr); code != 200 { // its walk finds every endpoint sampled
				t.Fatalf("status %d", code)
			}
			if !tr.snap.Load().tiers[0].sampled.Load() {
				t.Fatal("every endpoint has a sample, but the tier is not marked sampled")
			}
		})
	}
}

// sinceCounter is the fake clock counting its since readings.
type sinceCounter struct {
	*fakeClock
	n atomic.Int64
}

func (c *sinceCounter) since() time.Duration {
	c.n.Add(1)
	return c.fakeClock.since()
}

// TestLeastLatencyClockReadings: the least-latency choice's clock reading
// is the attempt's send time, so a request through it reads the clock no
// more than one through the round robin: when it is sent and when its
// headers arrive.
func TestLeastLatencyClockReadings(t *testing.T) {
	for _, bal := range []Balancer{BalancerRoundRobin, BalancerLeastLatency} {
		clk := &sinceCounter{fakeClock: newFakeClock()}
		clk.Advance(time.Second) // a since reading of 0 reads as none
		base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) { return reply(200, "ok"), nil })
		eps := []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0), hostEndpoint("c", 0)}
		tr := newTestTransportOn(t, Config{Base: base, Balancer: bal, Endpoints: eps}, clk)
		for range 10 { // every endpoint sampled
			chat(t, tr)
		}
		before := clk.n.Load()
		const requests = 20
		for range requests {
			if code, _ := chat(t, tr); code != 200 {
				t.Fatalf("%s: got %d, want 200", bal, code)
			}
		}
		if got := clk.n.Load() - before; got != 2*requests {
			t.Errorf("%s: %d clock readings for %d requests, want 2 each", bal, got, requests)
		}
	}
}
