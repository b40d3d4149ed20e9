package failover

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fleetBound is the README's bound ("Running many replicas"): the most N
// processes send an endpoint of rate r units a second and burst b in any
// interval of d, e being the largest estimate of a request (1 for
// requests): r×T + b + N×min(b, max(ceil(r/10), 2e)).
func fleetBound(n int, r float64, b, e int64, d time.Duration) int64 {
	held := min(b, max(int64(math.Ceil(r/10)), 2*e))
	return int64(math.Floor(r*d.Seconds())) + b + int64(n)*held
}

// sentTokens returns the requests base sent to host from the from'th seen
// on, and the tokens they were charged (their estimates: the scripted
// base's replies carry no usage).
func sentTokens(base *scriptedBase, host string, from int) (reqs int, tokens int64) {
	for _, s := range base.Seen()[from:] {
		if s.host == host {
			reqs++
			tokens += estimateTokens([]byte(s.body), "/chat/completions")
		}
	}
	return reqs, tokens
}

// blast sends through the processes in turn, with no time passing, until
// a whole round of them sent x nothing twice over (the fleet's leases and
// its bucket are spent); at most most requests.
func blast(t *testing.T, base *scriptedBase, trs []*Transport, send func(*Transport), most int) {
	t.Helper()
	idle := 0
	for range most {
		before := base.Hits("x.test")
		for _, tr := range trs {
			send(tr)
		}
		if base.Hits("x.test") == before {
			if idle++; idle == 2 {
				return
			}
		} else {
			idle = 0
		}
	}
	t.Fatalf("x still took requests after %d rounds", most)
}

// TestFleetBoundHoldsForRequestsAndTokens: three processes share an
// endpoint's MaxRPS, or its MaxTPM (with the default TokenBurst, a
// minute's worth), on the fake clock. Each sends a few requests, so that
// each holds what its lease sizing gives it; then the bucket refills to
// its burst, and the processes send all they can at one instant, and again
// a second later. What the fleet sends stays within the README's bound,
// r×T + b + N×min(b, max(ceil(r/10), 2e)), in the instant and over the
// second, and the fleet gets at least its burst.
func TestFleetBoundHoldsForRequestsAndTokens(t *testing.T) {
	const n = 3
	small := `{"model":"gpt-test","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`
	est, estSmall := estimateTokens([]byte(chatBody(false)), "/chat/completions"), estimateTokens([]byte(small), "/chat/completions")
	requests := func(reqs int, _ int64) int64 { return int64(reqs) }
	tokens := func(_ int, tokens int64) int64 { return tokens }
	for _, c := range []struct {
		name  string
		body  string
		set   func(*Endpoint)
		unit  func(reqs int, tokens int64) int64 // what the budget counts
		r     float64
		b, e  int64 // e: the largest estimate, at least DefaultCompletionTokens for tokens
		usage int64 // x's replies report this usage; 0: none
	}{
		{"MaxRPS", chatBody(false), func(e *Endpoint) { e.MaxRPS, e.Burst = 100, 100 }, requests, 100, 100, 1, 0},
		{"MaxTPM", chatBody(false), func(e *Endpoint) { e.MaxTPM = 60000 }, tokens, 1000, 60000, max(est, DefaultCompletionTokens), 0},
		// A process's first lease assumes requests of DefaultCompletionTokens.
		{"MaxTPM-small", small, func(e *Endpoint) { e.MaxTPM = 60000 }, tokens, 1000, 60000, max(estSmall, DefaultCompletionTokens), 0},
		{"MaxTPM-small-burst", small, func(e *Endpoint) { e.MaxTPM, e.TokenBurst = 60000, 1500 }, tokens, 1000, 1500, max(estSmall, DefaultCompletionTokens), 0},
		// Each charge is corrected down to the usage: what is given back
		// never takes a process's holding beyond the bound.
		{"MaxTPM-usage", chatBody(false), func(e *Endpoint) { e.MaxTPM = 60000 },
			func(reqs int, _ int64) int64 { return int64(reqs) * 100 }, 1000, 60000, max(est, DefaultCompletionTokens), 100},
	} {
		for _, warm := range []int{1, 2, 3, 5, 8, 13} {
			t.Run(fmt.Sprintf("%s/warm%d", c.name, warm), func(t *testing.T) {
				clk := newFakeClock()
				hub := newMemHub(clk)
				hub.procs = n
				base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
					if c.usage > 0 && req.URL.Host == "x.test" {
						return reply(200, fmt.Sprintf(`{"choices":[],"usage":{"total_tokens":%d}}`, c.usage), "Content-Type", "application/json"), nil
					}
					return reply(200, "ok"), nil
				})
				x := hostEndpoint("x", 0)
				c.set(&x)
				var trs []*Transport
				for range n {
					tr := newTestTransportOn(t, Config{Base: base, Shared: hub.join(), MaxWait: -1,
						Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}, clk)
					settle(tr)
					trs = append(trs, tr)
				}
				send := func(tr *Transport) {
					req, _ := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(c.body))
					roundTrip(t, tr, req)
					settle(tr)
				}
				// Each process sends warm requests, 10ms apart.
				for range warm {
					for _, tr := range trs {
						send(tr)
					}
					clk.Advance(10 * time.Millisecond)
				}
				// The bucket refills to its burst; the processes keep
				// what they hold.
				clk.Advance(time.Duration(float64(c.b) / c.r * float64(time.Second)))
				from := len(base.Seen())
				blast(t, base, trs, send, 10000)
				got := c.unit(sentTokens(base, "x.test", from))
				bound := fleetBound(n, c.r, c.b, c.e, 0)
				t.Logf("at one instant the fleet sent x %d (bound %d, burst %d)", got, bound, c.b)
				if got > bound {
					t.Fatalf("at one instant the fleet sent x %d, above the README's bound %d", got, bound)
				}
				if got < c.b-max(c.e, est) {
					t.Fatalf("at one instant the fleet sent x only %d, want its burst %d", got, c.b)
				}
				clk.Advance(time.Second)
				blast(t, base, trs, send, 10000)
				got = c.unit(sentTokens(base, "x.test", from))
				bound = fleetBound(n, c.r, c.b, c.e, time.Second)
				t.Logf("over a second the fleet sent x %d (bound %d)", got, bound)
				if got > bound {
					t.Fatalf("over a second the fleet sent x %d, above the README's bound %d", got, bound)
				}
			})
		}
	}
}

// leaseLog is a memShared that records the units each Lease granted,
// the bursts asked, and the leases granted per key.
type leaseLog struct {
	*memShared
	mu      sync.Mutex
	granted []int64
	bursts  []int64
	byKey   map[string]int
}

func (l *leaseLog) Lease(ctx context.Context, key string, r float64, burst, want int64) (int64, error) {
	n, err := l.memShared.Lease(ctx, key, r, burst, want)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && n > 0 {
		l.granted = append(l.granted, n)
		if l.byKey == nil {
			l.byKey = map[string]int{}
		}
		l.byKey[key]++
	}
	l.bursts = append(l.bursts, burst)
	return n, err
}

// mean returns the leases' mean size and their count.
func (l *leaseLog) mean() (float64, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sum := int64(0)
	for _, n := range l.granted {
		sum += n
	}
	return float64(sum) / float64(max(1, len(l.granted))), len(l.granted)
}

// TestLeaseSizeFollowsTheProcessShare: of two processes sharing MaxRPS
// 5,000, the one sending 800 requests a second takes leases at least four
// times the size of those of the one sending 100, and renews at well under
// one call per ten requests; neither is refused a request.
func TestLeaseSizeFollowsTheProcessShare(t *testing.T) {
	clk := newFakeClock()
	hub := newMemHub(clk)
	base := newScriptedBase(alwaysOK)
	x := hostEndpoint("x", 0)
	x.MaxRPS, x.Burst = 5000, 5000
	busy, quiet := &leaseLog{memShared: hub.join()}, &leaseLog{memShared: hub.join()}
	mk := func(sh Shared) *Transport {
		tr := newTestTransportOn(t, Config{Base: base, Shared: sh, MaxWait: -1,
			Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}, clk)
		settle(tr)
		return tr
	}
	trBusy, trQuiet := mk(busy), mk(quiet)
	// In 10ms steps, 8 requests from the busy process and 1 from the
	// quiet one; the leases of the last four seconds of ten are compared
	// (the first lease of each is a window of the whole rate, 500).
	step := func() {
		for range 8 {
			chat(t, trBusy)
			settle(trBusy)
		}
		chat(t, trQuiet)
		settle(trQuiet)
		clk.Advance(10 * time.Millisecond)
	}
	for range 600 {
		step()
	}
	for _, l := range []*leaseLog{busy, quiet} {
		l.mu.Lock()
		l.granted = nil
		l.mu.Unlock()
	}
	calls := busy.calls.Load()
	for range 400 {
		step()
	}
	if got := base.Hits("y.test"); got != 0 {
		t.Fatalf("%d requests spilled to y, want none: the budget is not the bottleneck", got)
	}
	mb, cb := busy.mean()
	mq, cq := quiet.mean()
	t.Logf("busy: %d leases of %.1f on average; quiet: %d leases of %.1f", cb, mb, cq, mq)
	if cq < 2 {
		t.Fatalf("the quiet process took %d leases in 4s, want it to renew", cq)
	}
	if mb < 4*mq {
		t.Fatalf("the busy process's leases average %.1f, the quiet one's %.1f: want the busy one's at least 4 times larger", mb, mq)
	}
	if per := float64(busy.calls.Load()-calls) / 3200; per >= 0.1 {
		t.Fatalf("the busy process made %d lease calls for 3200 requests (%.3f a request), want under 0.1", busy.calls.Load()-calls, per)
	}
}

// TestTokenBurstDefaultsToAMinute: with MaxTPM and no TokenBurst, an
// endpoint takes a minute's worth of tokens at one instant, and the fleet's
// bucket is given the same burst; TokenBurst, when set, replaces it.
func TestTokenBurstDefaultsToAMinute(t *testing.T) {
	est := estimateTokens([]byte(chatBody(false)), "/chat/completions")
	for _, c := range []struct {
		name      string
		burst     int
		wantBurst int64
	}{
		{"default", 0, 6000},
		{"TokenBurst", int(3 * est), 3 * est},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, shared := range []bool{false, true} {
				clk := newFakeClock()
				log := &leaseLog{memShared: newMemHub(clk).join()}
				base := newScriptedBase(alwaysOK)
				x := hostEndpoint("x", 0)
				x.MaxTPM, x.TokenBurst = 6000, c.burst
				cfg := Config{Base: base, MaxWait: -1, Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}
				if shared {
					cfg.Shared = log
				}
				tr := newTestTransportOn(t, cfg, clk)
				h := tr.Health()[0]
				if h.TokenBudget != float64(c.wantBurst) {
					t.Errorf("shared %v: health's token budget %v at the start, want the burst %d", shared, h.TokenBudget, c.wantBurst)
				}
				for range 200 {
					chat(t, tr)
					if shared {
						settle(tr)
					}
				}
				if got, want := int64(base.Hits("x.test")), c.wantBurst/est; got != want {
					t.Errorf("shared %v: x took %d requests of %d tokens at one instant, want %d (burst %d)", shared, got, est, want, c.wantBurst)
				}
				if shared {
					log.mu.Lock()
					bursts := log.bursts
					log.mu.Unlock()
					for _, b := range bursts {
						if b != c.wantBurst {
							t.Fatalf("the fleet's token bucket was given burst %d, want %d", b, c.wantBurst)
						}
					}
					if len(bursts) == 0 {
						t.Fatal("no lease was asked of the shared state")
					}
				}
			}
		})
	}
}
