package redisshare

import (
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/failover-go/failover/internal/redistest"
)

// clientBase is the client-side base URL the fleet tests send to.
const clientBase = "https://api.openai.com/v1"

// upstream starts a fake OpenAI upstream closed with the test.
func upstream(t testing.TB, name string) *fakeopenai.Server {
	t.Helper()
	s := fakeopenai.New(fakeopenai.WithName(name))
	t.Cleanup(s.Close)
	return s
}

// member is one process of a fleet: its Store, Transport and registry.
type member struct {
	store *Store
	tr    *failover.Transport
	reg   *prometheus.Registry
}

// newFleet returns n members on the Redis at url under prefix, each with
// endpoints eps.
func newFleet(t testing.TB, n int, url, prefix string, eps []failover.Endpoint) []member {
	t.Helper()
	var ms []member
	for range n {
		st := open(t, url, prefix, Options{Heartbeat: 100 * time.Millisecond})
		base := &http.Transport{MaxIdleConnsPerHost: 64}
		t.Cleanup(base.CloseIdleConnections)
		reg := prometheus.NewRegistry()
		tr, err := failover.New(failover.Config{Base: base, Shared: st, Registerer: reg, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, member{store: st, tr: tr, reg: reg})
	}
	return ms
}

// load sends chat requests through every member, workers goroutines
// each, until stop is closed (at most most requests each); it returns
// the requests sent and those that failed.
func load(t testing.TB, ms []member, workers, most int, stop <-chan struct{}) (sent, failed int64) {
	t.Helper()
	var wg sync.WaitGroup
	var s, f atomic.Int64
	for _, m := range ms {
		for range workers {
			wg.Go(func() {
				for range most {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), waitBound)
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, clientBase+"/chat/completions",
						strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
					resp, err := m.tr.RoundTrip(req)
					s.Add(1)
					if err != nil || resp.StatusCode != 200 {
						f.Add(1)
						if err == nil {
							resp.Body.Close()
						}
					} else {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					cancel()
				}
			})
		}
	}
	wg.Wait()
	return s.Load(), f.Load()
}

// maxPerSecond returns the most requests up received within any second
// (a window sliding over their arrivals) between from and to.
func maxPerSecond(up *fakeopenai.Server, from, to time.Time) int {
	return up.MostWithin(time.Second, from, to)
}

// gauge returns the value of an unlabelled gauge or the sum of a
// counter's series in reg.
func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// bound is the most a fleet of n processes sends to an endpoint of rate r
// and burst b in one second (the README's bound): r + b, plus what the
// processes hold, each at most min(b, max(ceil(r/10), 2)).
func bound(n int, r float64, b int) int {
	return int(r) + b + n*held(r, b, 1)
}

// held is the most one process holds of a budget of rate r and burst b,
// e being the largest request (1 for requests; for tokens, the largest
// estimate, at least DefaultCompletionTokens): min(b, max(ceil(r/10), 2e)).
func held(r float64, b int, e int) int {
	return min(b, max(int(math.Ceil(r/10)), 2*e))
}

// TestFleetSharesTheRateLimit: four processes, each configured with
// MaxRPS 20 for one endpoint, send to it no more than the fleet's bound in
// any second (without sharing: 80 a second); the rest goes to a
// spill-over endpoint, and the fleet makes far fewer Redis calls than it
// sends requests (most of which spill: the calls per request to the
// leased endpoint itself are TestLeaseCallsAtAThousandRequestsASecond's).
func TestFleetSharesTheRateLimit(t *testing.T) {
	const n, r, b = 4, 20, 5
	up, spill := upstream(t, "up"), upstream(t, "spill")
	eps := []failover.Endpoint{
		{Name: "up", BaseURL: up.URL(), MaxRPS: r, Burst: b},
		{Name: "spill", BaseURL: spill.URL(), Priority: 1},
	}
	ms := newFleet(t, n, redistest.URL(t), redistest.Prefix(t), eps)
	stop := make(chan struct{})
	start := time.AfterFunc(3*time.Second, func() { close(stop) })
	defer start.Stop()
	from := time.Now()
	sent, failed := load(t, ms, 2, 20000, stop)
	to := time.Now()
	if failed != 0 {
		t.Fatalf("%d of %d requests failed", failed, sent)
	}
	most := maxPerSecond(up, from, to)
	total := len(up.Requests())
	calls := 0.0
	for _, m := range ms {
		calls += gauge(t, m.reg, "failover_shared_calls_total")
	}
	t.Logf("%d requests in %v; up got %d (at most %d in a second; bound %d), Redis calls per request %.4f",
		sent, to.Sub(from).Round(time.Millisecond), total, most, bound(n, r, b), calls/float64(sent))
	if most > bound(n, r, b) {
		t.Fatalf("up got %d requests in one second, above the fleet's bound %d", most, bound(n, r, b))
	}
	if secs := to.Sub(from).Seconds(); float64(total) < 0.5*r*secs {
		t.Fatalf("up got %d requests in %.1fs, want at least half its rate of %d a second", total, secs, r)
	}
	if calls/float64(sent) >= 0.1 {
		t.Fatalf("%.0f Redis calls for %d requests (to either endpoint), want well under one per ten", calls, sent)
	}
}

// TestFleetSurvivesRedisDeath: Redis is killed while three processes
// send: no request fails, each process falls back to its local share (a
// third of the rate), says so in its metrics, and rejoins once Redis is
// back.
func TestFleetSurvivesRedisDeath(t *testing.T) {
	const n, r, b = 3, 30, 3
	srv := redistest.Start(t)
	up, spill := upstream(t, "up"), upstream(t, "spill")
	eps := []failover.Endpoint{
		{Name: "up", BaseURL: up.URL(), MaxRPS: r, Burst: b},
		{Name: "spill", BaseURL: spill.URL(), Priority: 1},
	}
	ms := newFleet(t, n, srv.URL(), redistest.Prefix(t), eps)
	eventually(t, "3 processes seen", func() bool { return ms[0].store.Processes() == n })

	stop := make(chan struct{})
	var sent, failed int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, failed = load(t, ms, 2, 50000, stop)
	}()
	phase := func(d time.Duration) (from, to time.Time) {
		from = time.Now()
		time.Sleep(d) // the load runs for this phase's length
		return from, time.Now()
	}
	phase(time.Second)
	srv.Stop()
	downFrom, downTo := phase(2 * time.Second)
	for _, m := range ms {
		if gauge(t, m.reg, "failover_shared_degraded") != 1 {
			t.Errorf("a process did not report the shared state degraded while Redis was down")
		}
	}
	srv.Restart()
	eventually(t, "every process rejoined", func() bool {
		for _, m := range ms {
			if gauge(t, m.reg, "failover_shared_degraded") != 0 {
				return false
			}
		}
		return true
	})
	phase(time.Second)
	close(stop)
	<-done
	if failed != 0 || sent == 0 {
		t.Fatalf("%d of %d requests failed with Redis killed mid-run, want none", failed, sent)
	}
	// Down, each process spends r/n a second with a burst of b/n (at
	// least 1), on top of what it had leased before.
	most := maxPerSecond(up, downFrom.Add(200*time.Millisecond), downTo)
	limit := r + n*max(1, b/n) + n*held(r, b, 1)
	t.Logf("%d requests; while Redis was down up got at most %d in a second (limit %d)", sent, most, limit)
	if most > limit {
		t.Fatalf("up got %d requests in a second while Redis was down, above the local shares' %d", most, limit)
	}
	if most < r/2 {
		t.Fatalf("up got only %d requests in a second while Redis was down: the local shares were not used", most)
	}
}
