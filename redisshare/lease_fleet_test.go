package redisshare

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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/failover-go/failover/internal/redistest"
)

// TestLeaseGivesBack: a Lease of a negative want gives the units back to
// the bucket, which still holds at most its burst; a want of 0 is refused.
func TestLeaseGivesBack(t *testing.T) {
	s := open(t, redistest.URL(t), redistest.Prefix(t), Options{})
	const r = 0.001 // no refill to speak of within the test
	lease := func(want int64) int64 {
		t.Helper()
		n, err := s.Lease(ctx(t), "tpm:a", r, 10, want)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := lease(10); n != 10 {
		t.Fatalf("a lease of 10 from a full bucket of 10 took %d", n)
	}
	if n := lease(-4); n != -4 {
		t.Fatalf("giving back 4 returned %d, want -4", n)
	}
	if n := lease(10); n != 4 {
		t.Fatalf("after 4 were given back, a lease of 10 took %d, want 4", n)
	}
	lease(-100)
	if n := lease(100); n != 10 {
		t.Fatalf("after 100 were given back to a bucket of burst 10, a lease of 100 took %d, want 10", n)
	}
	if _, err := s.Lease(ctx(t), "tpm:a", r, 10, 0); err == nil {
		t.Fatal("a lease of 0 was not refused")
	}
}

// leaseCounter is a Store that counts the Lease calls a process makes and
// the units they took.
type leaseCounter struct {
	*Store
	calls   atomic.Int64
	mu      sync.Mutex
	granted []int64
}

func (c *leaseCounter) Lease(ctx context.Context, key string, rate float64, burst, want int64) (int64, error) {
	c.calls.Add(1)
	n, err := c.Store.Lease(ctx, key, rate, burst, want)
	if err == nil && n > 0 {
		c.mu.Lock()
		c.granted = append(c.granted, n)
		c.mu.Unlock()
	}
	return n, err
}

// mean returns the mean size of the leases granted from the from'th on.
func (c *leaseCounter) mean(from int) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.granted[min(from, len(c.granted)):]
	sum := int64(0)
	for _, n := range g {
		sum += n
	}
	return float64(sum) / float64(max(1, len(g)))
}

func (c *leaseCounter) leases() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.granted)
}

// paced sends count chat requests through tr at rate a second (workers
// goroutines, each keeping to its share of the schedule) and returns how
// many failed; it gives up at the test's waitBound.
func paced(t testing.TB, tr *failover.Transport, rate float64, count, workers int) int64 {
	t.Helper()
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(waitBound)
	every := time.Duration(float64(time.Second) / rate)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < count; i += workers {
				if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
					time.Sleep(d) // the schedule: a request every 1/rate seconds
				}
				if time.Now().After(deadline) {
					failed.Add(int64((count - i + workers - 1) / workers))
					return
				}
				req, _ := http.NewRequest(http.MethodPost, clientBase+"/chat/completions",
					strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return failed.Load()
}

// TestLeaseCallsAtAThousandRequestsASecond: a process sending about 1,000
// requests a second to an endpoint whose shared MaxRPS (2,000) is not the
// bottleneck makes well under one lease call to Redis per ten requests to
// it, and its leases are larger than those of a process of the same fleet
// sending a fifth as many (a lease follows the process's own traffic).
func TestLeaseCallsAtAThousandRequestsASecond(t *testing.T) {
	up := upstream(t, "up")
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	eps := []failover.Endpoint{{Name: "up", BaseURL: up.URL(), MaxRPS: 2000, Burst: 2000}}
	// A generous SharedTimeout: a call slowed by a loaded machine must not
	// make a process fall back to its local share, where it makes none.
	var regs []*prometheus.Registry
	mk := func() (*leaseCounter, *failover.Transport) {
		c := &leaseCounter{Store: open(t, url, prefix, Options{})}
		base := &http.Transport{MaxIdleConnsPerHost: 64}
		t.Cleanup(base.CloseIdleConnections)
		reg := prometheus.NewRegistry()
		regs = append(regs, reg)
		tr, err := failover.New(failover.Config{Base: base, Shared: c, SharedTimeout: time.Second, Registerer: reg,
			MaxWait: 2 * time.Second, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		return c, tr
	}
	busy, trBusy := mk()
	quiet, trQuiet := mk()
	const n, nQuiet = 1500, 300
	var failed, failedQuiet int64
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { failed = paced(t, trBusy, 1000, n, 4) })
	wg.Go(func() { failedQuiet = paced(t, trQuiet, 200, nQuiet, 1) })
	wg.Wait()
	took := time.Since(start)
	if failed+failedQuiet != 0 {
		t.Fatalf("%d of the busy process's and %d of the quiet one's requests failed, want none", failed, failedQuiet)
	}
	if got := len(up.Requests()); got != n+nQuiet {
		t.Fatalf("up got %d requests, want all %d", got, n+nQuiet)
	}
	for _, reg := range regs {
		if errs := callErrors(t, reg); errs != 0 {
			t.Fatalf("%v calls to Redis failed: the process spent its local share, not leases", errs)
		}
	}
	calls := busy.calls.Load()
	per := float64(calls) / n
	t.Logf("%d requests in %v; busy: %d lease calls (%.4f a request), leases of %.1f on average; quiet: %d calls, leases of %.1f",
		n, took.Round(time.Millisecond), calls, per, busy.mean(1), quiet.calls.Load(), quiet.mean(1))
	if per >= 0.1 {
		t.Fatalf("the busy process made %d lease calls for %d requests to the endpoint (%.3f a request), want well under 0.1", calls, n, per)
	}
	if quiet.leases() < 2 {
		t.Fatalf("the quiet process took %d leases, want it to renew", quiet.leases())
	}
	// The first lease of each is a window of the whole rate (200):
	// compare the renewals.
	if mb, mq := busy.mean(1), quiet.mean(1); mb < 2*mq {
		t.Fatalf("the busy process's leases average %.1f, the quiet one's %.1f: want the busy one's at least twice as large", mb, mq)
	}
}

// callErrors returns failover_shared_calls_total{result="error"} in reg.
func callErrors(t testing.TB, reg *prometheus.Registry) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "failover_shared_calls_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "error" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal("failover_shared_calls_total{result=\"error\"} is not registered")
	return 0
}

// tokensPerSecond returns the most tokens up was sent within any second
// (a window sliding over the arrivals) between from and to, each request
// counted at est.
func tokensPerSecond(up *fakeopenai.Server, from, to time.Time, est int) int {
	return up.MostWithin(time.Second, from, to) * est
}

// TestFleetSharesTheTokenLimit: three processes, each configured with
// MaxTPM 600,000 (10,000 tokens a second) and TokenBurst 20,000 for one
// endpoint, share it on a real Redis. Each sends a request (and so holds
// what its lease sizing gives it); the bucket refills; then all send as
// fast as their budget lets them. In any second the endpoint gets no more
// tokens than the README's bound, r + b + N×min(b, max(ceil(r/10), 2E)),
// E the requests' estimate (at least DefaultCompletionTokens): without
// sharing, each process would send its own 30,000 in the first second.
// The responses are closed unread, so each request is charged its
// estimate (no usage correction).
func TestFleetSharesTheTokenLimit(t *testing.T) {
	const n, tpm, b = 3, 600000, 20000
	const r = tpm / 60
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	est := (len(body)+3)/4 + failover.DefaultCompletionTokens // the README's estimate: characters / 4, plus the default completion
	up := upstream(t, "up")
	eps := []failover.Endpoint{{Name: "up", BaseURL: up.URL(), MaxTPM: tpm, TokenBurst: b}}
	var trs []*failover.Transport
	var regs []*prometheus.Registry
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	for range n {
		st := open(t, url, prefix, Options{})
		base := &http.Transport{MaxIdleConnsPerHost: 16}
		t.Cleanup(base.CloseIdleConnections)
		reg := prometheus.NewRegistry()
		tr, err := failover.New(failover.Config{Base: base, Shared: st, SharedTimeout: time.Second, Registerer: reg,
			MaxWait: 5 * time.Second, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		trs, regs = append(trs, tr), append(regs, reg)
	}
	send := func(tr *failover.Transport) error {
		req, _ := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(body))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		resp.Body.Close() // unread: the charge stays the estimate
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	for _, tr := range trs {
		if err := send(tr); err != nil {
			t.Fatal(err)
		}
	}
	// The bucket refills to its burst on Redis's clock (b/r = 2s); the
	// processes keep what they hold.
	time.Sleep(2*time.Second + 200*time.Millisecond)
	from := time.Now()
	var failed atomic.Int64
	var wg sync.WaitGroup
	for _, tr := range trs {
		for range 2 {
			wg.Go(func() {
				for time.Since(from) < 1500*time.Millisecond {
					if send(tr) != nil {
						failed.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	to := time.Now()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d requests failed", f)
	}
	held := min(b, max(int(math.Ceil(r/10.0)), 2*max(est, failover.DefaultCompletionTokens)))
	bound := r + b + n*held
	most := tokensPerSecond(up, from, to, est)
	total := 0
	for _, q := range up.Requests() {
		if !q.At.Before(from) {
			total += est
		}
	}
	leases := 0.0
	for _, reg := range regs {
		leases += gauge(t, reg, "failover_shared_leases_total")
		if errs := callErrors(t, reg); errs != 0 {
			t.Fatalf("%v calls to Redis failed: a process spent its local share besides (the bound counts it apart)", errs)
		}
	}
	t.Logf("%d tokens in %v (%d requests of %d); at most %d in a second (bound %d; unshared %d); %.0f leases",
		total, to.Sub(from).Round(time.Millisecond), total/est, est, most, bound, n*(r+b), leases)
	if most > bound {
		t.Fatalf("up got %d tokens in one second, above the fleet's bound %d", most, bound)
	}
	if total < b {
		t.Fatalf("up got %d tokens in %v, want at least the burst %d", total, to.Sub(from).Round(time.Millisecond), b)
	}
	if leases < n {
		t.Fatalf("the fleet took %.0f token leases, want every process to have leased", leases)
	}
}
