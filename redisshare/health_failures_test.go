package redisshare

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/redistest"
)

// TestHealthFleetCountsFailuresLocally: failures are counted by each
// process, and only a breaker's opening is shared: each of three
// processes meets two failures of an endpoint whose threshold is three
// (six in the fleet), and none opens, none tells the fleet anything, and
// each goes on sending to it; the third failure in one process opens it
// there, and that reaches the other two.
func TestHealthFleetCountsFailuresLocally(t *testing.T) {
	const n, threshold = 3, 3
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	p := newHealthProvider()
	trs := healthFleetOn(t, url, prefix, n, p, failover.Config{Breaker: failover.BreakerConfig{FailureThreshold: threshold, OpenTimeout: time.Minute}})

	// An observer process records every event of the fleet.
	var mu sync.Mutex
	var events []failover.SharedEvent
	observer := open(t, url, prefix, Options{})
	defer observer.Subscribe(func(ev failover.SharedEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	})()
	awaitSubscribed(t, url, prefix, []*Store{observer})
	opens := func() (n int, all []failover.SharedEvent) {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range events {
			if ev.Endpoint == "x" && ev.Kind == failover.SharedBreakerOpen {
				n++
			}
		}
		return n, slices.Clone(events)
	}

	p.set("x.test", http.StatusInternalServerError)
	for i, tr := range trs {
		for range threshold - 1 {
			if got := sendVia(t, tr); got != "y" {
				t.Fatalf("process %d: answered by %q after x failed, want y", i, got)
			}
		}
	}
	perProc := make([]int, n)
	for _, h := range p.hitsOf("x.test") {
		perProc[h.proc]++
	}
	for i, got := range perProc {
		if got != threshold-1 {
			t.Fatalf("process %d sent %d requests to x, want %d: it skipped x after the others' failures (sent per process: %v)",
				i, got, threshold-1, perProc)
		}
		h := endpointHealth(t, trs[i], "x")
		if h.State != failover.StateClosed || h.ConsecutiveFailures != threshold-1 || !h.FleetOpenUntil.IsZero() {
			t.Fatalf("process %d's x: %v, %d consecutive failures, fleet open until %v; want closed with its own %d",
				i, h.State, h.ConsecutiveFailures, h.FleetOpenUntil, threshold-1)
		}
	}

	// One more failure in process 0 opens its breaker, and the fleet
	// learns it: by then any opening announced before would have come.
	watch := watchHealth(t, trs[1:], "x", func(h failover.EndpointHealth) bool { return h.State == failover.StateOpen })
	sendVia(t, trs[0])
	if h := endpointHealth(t, trs[0], "x"); h.State != failover.StateOpen {
		t.Fatalf("process 0's x is %v after its %dth failure in a row, want open", h.State, threshold)
	}
	failed := p.hitsOf("x.test")[n*(threshold-1)]
	var lat []time.Duration
	for _, at := range watch() {
		lat = append(lat, at.Sub(failed.at))
	}
	eventually(t, "the observer told of the opening", func() bool { n, _ := opens(); return n >= 1 })
	if got, all := opens(); got != 1 {
		t.Fatalf("the fleet announced %d openings of x, want the one of process 0 (all events: %+v)", got, all)
	}
	t.Logf("delay from the opening failure to the others' Health showing x open: %s", latencySpread(lat))
}
