package redisshare

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/failover-go/failover"
)

// fleetLoad sends a request through each of trs every 5ms (one sender per
// process) until the returned stop is called, which returns the first
// request that failed, if any.
func fleetLoad(trs []*failover.Transport) (stop func() error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i, tr := range trs {
		wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			deadline := time.After(2 * time.Minute) // bounds the loop whatever the test does
			for {
				select {
				case <-done:
					return
				case <-deadline:
					return
				case <-tick.C:
				}
				if _, err := trySendVia(tr); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("process %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	return func() error {
		close(done)
		wg.Wait()
		return first
	}
}

// waitHits waits until host has received n requests and returns them.
func waitHits(t *testing.T, p *healthProvider, host string, n int) []providerHit {
	t.Helper()
	var hits []providerHit
	eventually(t, fmt.Sprintf("%d requests to %s", n, host), func() bool {
		hits = p.hitsOf(host)
		return len(hits) >= n
	})
	return hits
}

// TestHealthFleetBreakerTrial: a breaker that opens in one process of a
// fleet of three is skipped by the other two, which learn it within 100ms;
// while the three send, each time the open period ends exactly one
// request of the whole fleet goes to the endpoint (the trial: the
// requests to it come one open period apart or more), and its failure
// reopens the endpoint in every process within 100ms, whether or not it
// opened the breaker of the process that sent it (a threshold of 1, or
// 3); once the endpoint answers again, the trial's success reaches every
// process within 100ms, and each sends to it.
func TestHealthFleetBreakerTrial(t *testing.T) {
	for _, threshold := range []int{1, 3} {
		t.Run(fmt.Sprintf("threshold %d", threshold), func(t *testing.T) { testBreakerTrial(t, threshold) })
	}
}

func testBreakerTrial(t *testing.T, threshold int) {
	const n, rounds = 3, 6
	const openFor = 300 * time.Millisecond
	p := newHealthProvider()
	trs := healthFleet(t, n, p, failover.Config{Breaker: failover.BreakerConfig{FailureThreshold: threshold, OpenTimeout: openFor}})
	p.set("x.test", http.StatusInternalServerError)

	// One process meets the failures and opens its breaker.
	for range threshold - 1 {
		sendVia(t, trs[0])
	}
	watch := watchHealth(t, trs[1:], "x", func(h failover.EndpointHealth) bool { return h.State == failover.StateOpen })
	if got := sendVia(t, trs[0]); got != "y" {
		t.Fatalf("the request that met x's failure was answered by %q, want y", got)
	}
	first := threshold - 1 // the index of the opening failure among x's requests
	opened := waitHits(t, p, "x.test", threshold)[first]
	var lat []time.Duration
	for i, at := range watch() {
		lat = append(lat, at.Sub(opened.at))
		h := endpointHealth(t, trs[1+i], "x")
		if d := h.FleetOpenUntil.Sub(opened.at); d < openFor || d > openFor+time.Second {
			t.Fatalf("process %d skips x for %v after the failure, want the open period %v", 1+i, d, openFor)
		}
		if got := sendVia(t, trs[1+i]); got != "y" {
			t.Fatalf("process %d sent to x (answered by %q) though the fleet's breaker is open", 1+i, got)
		}
	}

	// The fleet sends; each open period ends in one trial, which fails.
	stop := fleetLoad(trs)
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	winners := make([]int, n)
	for round := 1; round <= rounds; round++ {
		trial := waitHits(t, p, "x.test", first+1+round)[first+round]
		winners[trial.proc]++
		var others []*failover.Transport
		for i, tr := range trs {
			if i != trial.proc {
				others = append(others, tr)
			}
		}
		reopened := func(h failover.EndpointHealth) bool {
			return h.State == failover.StateOpen && !h.FleetOpenUntil.Before(trial.at.Add(openFor))
		}
		for _, at := range watchHealth(t, others, "x", reopened)() {
			lat = append(lat, at.Sub(trial.at))
		}
	}

	// x answers again: the next trial closes it for the fleet.
	p.set("x.test", http.StatusOK)
	hits := waitHits(t, p, "x.test", first+rounds+2)
	closing := hits[first+rounds+1]
	var gaps []time.Duration
	for i := first + 1; i <= first+rounds+1; i++ {
		gap := hits[i].at.Sub(hits[i-1].at)
		if gap < openFor {
			t.Fatalf("requests %d and %d to x (processes %d and %d) came %v apart, within one open period of %v: two trials",
				i-1, i, hits[i-1].proc, hits[i].proc, gap, openFor)
		}
		if gap > openFor+time.Second {
			t.Fatalf("the trial %d came %v after the request before it: the open period of %v ended long before", i, gap, openFor)
		}
		gaps = append(gaps, gap-openFor)
	}
	if closing.status != http.StatusOK {
		t.Fatalf("the trial after x recovered got %d", closing.status)
	}
	back := make([]time.Time, n) // each process's first request to x after the closing trial
	eventually(t, "every process sending to x again", func() bool {
		for _, h := range p.hitsOf("x.test")[first+rounds+1:] {
			if back[h.proc].IsZero() {
				back[h.proc] = h.at
			}
		}
		for _, at := range back {
			if at.IsZero() {
				return false
			}
		}
		return true
	})
	watchHealth(t, trs, "x", func(h failover.EndpointHealth) bool { return h.Eligible() && h.FleetOpenUntil.IsZero() })()
	stopped = true
	if err := stop(); err != nil {
		t.Fatalf("a request failed: %v", err)
	}
	var closed []time.Duration
	for i, at := range back {
		if i != closing.proc {
			closed = append(closed, at.Sub(closing.at))
		}
	}

	t.Logf("trials won by process: %v; each trial after its open period's end: %s", winners, latencySpread(gaps))
	t.Logf("delay from the provider's answer to the others' Health showing x open: %s; from the closing trial to each other's next request to x: %s",
		latencySpread(lat), latencySpread(closed))
	learnedWithin100ms(t, "open and reopen", lat)
	learnedWithin100ms(t, "closed", closed)
}
