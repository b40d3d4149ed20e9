package failover

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// flakyPublisher is a memShared whose next publishFails calls to Publish fail
// without publishing, as calls slower than SharedTimeout do.
type flakyPublisher struct {
	*memShared
	publishFails atomic.Int32
}

func (f *flakyPublisher) Publish(ctx context.Context, ev SharedEvent) error {
	if f.publishFails.Add(-1) >= 0 {
		return errMemDown
	}
	return f.memShared.Publish(ctx, ev)
}

// TestSharedPublishRetried: a transition whose publication fails once (one
// call slower than SharedTimeout, not an outage) is published again: the
// other process still learns that the breaker opened.
func TestSharedPublishRetried(t *testing.T) {
	clk := newFakeClock()
	hub := newMemHub(clk)
	repA := newHostReplies()
	baseA := newScriptedBase(repA.script)
	flaky := &flakyPublisher{memShared: hub.join()}
	cfg := func(sh Shared, base *scriptedBase) Config {
		return Config{Base: base, Shared: sh, Breaker: BreakerConfig{FailureThreshold: 1, OpenTimeout: 10 * time.Second},
			Endpoints: []Endpoint{hostEndpoint("x", 0), hostEndpoint("y", 1)}}
	}
	a := newTestTransportOn(t, cfg(flaky, baseA), clk)
	b := newTestTransportOn(t, cfg(hub.join(), newScriptedBase(alwaysOK)), clk)

	flaky.publishFails.Store(1)
	repA.set("x", 500, `{}`)
	answeredBy(t, a, "y") // x's breaker opens in a; its first publication fails
	settle(a)
	if h := healthOf(t, b, "x"); h.State != StateOpen || !h.FleetOpenUntil.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("b's x: %v (fleet open until %v), want open by the fleet: a's failed publication was not made again", h.State, h.FleetOpenUntil)
	}
}
