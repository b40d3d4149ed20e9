package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// memHub is an in-memory shared state for unit tests, on a test's clock:
// token buckets, claims and event delivery between its members. The
// real-server tests of redisshare check the same behaviour on Redis.
type memHub struct {
	clk *fakeClock

	mu      sync.Mutex
	buckets map[string]*memBucket
	claims  map[string]time.Time
	members []*memShared
	procs   int
}

type memBucket struct {
	level float64
	at    time.Time
}

func newMemHub(clk *fakeClock) *memHub {
	return &memHub{clk: clk, buckets: map[string]*memBucket{}, claims: map[string]time.Time{}, procs: 1}
}

// memShared is one process's Shared on a memHub; down makes every call
// fail, as an unreachable Redis would.
type memShared struct {
	hub   *memHub
	down  atomic.Bool
	calls atomic.Int64

	mu  sync.Mutex
	fns []func(SharedEvent)
}

func (h *memHub) join() *memShared {
	m := &memShared{hub: h}
	h.mu.Lock()
	h.members = append(h.members, m)
	h.mu.Unlock()
	return m
}

var errMemDown = errors.New("memShared: down")

func (m *memShared) Lease(_ context.Context, key string, r float64, burst, want int64) (int64, error) {
	m.calls.Add(1)
	if m.down.Load() {
		return 0, errMemDown
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clk.Now()
	b := h.buckets[key]
	if b == nil {
		b = &memBucket{level: float64(burst), at: now}
		h.buckets[key] = b
	}
	b.level = math.Min(float64(burst), b.level+now.Sub(b.at).Seconds()*r)
	b.at = now
	if want < 0 { // given back
		b.level = math.Min(float64(burst), b.level-float64(want))
		return want, nil
	}
	granted := min(want, int64(b.level))
	b.level -= float64(granted)
	return granted, nil
}

func (m *memShared) Publish(_ context.Context, ev SharedEvent) error {
	m.calls.Add(1)
	if m.down.Load() {
		return errMemDown
	}
	m.hub.mu.Lock()
	members := slices.Clone(m.hub.members)
	m.hub.mu.Unlock()
	for _, o := range members {
		if o == m || o.down.Load() {
			continue
		}
		o.mu.Lock()
		fns := slices.Clone(o.fns)
		o.mu.Unlock()
		for _, fn := range fns {
			fn(ev)
		}
	}
	return nil
}

func (m *memShared) Subscribe(fn func(SharedEvent)) func() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fns = append(m.fns, fn)
	return func() {}
}

func (m *memShared) Claim(_ context.Context, key string, ttl time.Duration) (bool, error) {
	m.calls.Add(1)
	if m.down.Load() {
		return false, errMemDown
	}
	h := m.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clk.Now()
	if exp, held := h.claims[key]; held && now.Before(exp) {
		return false, nil
	}
	h.claims[key] = now.Add(ttl)
	return true, nil
}

func (m *memShared) Processes() int {
	m.hub.mu.Lock()
	defer m.hub.mu.Unlock()
	return m.hub.procs
}

// settle waits for tr's background calls to the shared state.
func settle(tr *Transport) { tr.fleet.wg.Wait() }

// newFleetPair returns two processes, a and b, sharing one in-memory
// fleet state on the fake clock clk, each over its own scripted hosts
// (repA, repB; their bases baseA, baseB count the hits): endpoints x
// (preferred) and y, a breaker that opens at the first failure for 10s.
func newFleetPair(t *testing.T) (clk *fakeClock, repA, repB *hostReplies, baseA, baseB *scriptedBase, a, b *Transport) {
	t.Helper()
	clk = newFakeClock()
	hub := newMemHub(clk)
	repA, repB = newHostReplies(), newHostReplies()
	baseA, baseB = newScriptedBase(repA.script), newScriptedBase(repB.script)
	cfg := func(base http.RoundTripper) Config {
		return Config{Base: base, Shared: hub.join(), Breaker: BreakerConfig{FailureThreshold: 1, OpenTimeout: 10 * time.Second},
			Endpoints: []Endpoint{hostEndpoint("x", 0), hostEndpoint("y", 1)}}
	}
	return clk, repA, repB, baseA, baseB, newTestTransportOn(t, cfg(baseA), clk), newTestTransportOn(t, cfg(baseB), clk)
}

// TestSharedHealth: one process's open breaker, cooldown and spent
// provider window keep the other process off the endpoint at once, though
// it saw no failure; at the end of the open period exactly one process
// sends the trial, and its success reopens the endpoint to both.
func TestSharedHealth(t *testing.T) {
	clk, repA, _, baseA, baseB, a, b := newFleetPair(t)

	repA.set("x", 500, `{"error":{"message":"down"}}`)
	answeredBy(t, a, "y") // x failed, and its breaker opened
	settle(a)
	answeredBy(t, b, "y")
	if got := baseB.Hits("x.test"); got != 0 {
		t.Fatalf("b sent %d requests to x after a opened its breaker, want 0", got)
	}
	if h := healthOf(t, b, "x"); h.State != StateOpen || h.FleetOpenUntil.IsZero() {
		t.Fatalf("b's x: %v (fleet open until %v), want open by the fleet", h.State, h.FleetOpenUntil)
	}

	clk.Advance(10 * time.Second) // the open period ends for both
	repA.healthy("x")
	ex := endpointsOf(b)[0]
	if wait, _ := ex.bud.fleet.gate(ex, b.fleet, clk.Now().UnixNano()); wait == 0 {
		t.Fatal("b's gate let a request through before claiming the trial")
	}
	settle(b)             // b's claim is in: it won
	answeredBy(t, a, "y") // a claims too
	settle(a)             // a's claim is in: it lost
	answeredBy(t, a, "y")
	if got := baseA.Hits("x.test"); got != 1 {
		t.Fatalf("a sent %d requests to x in all while b held the trial, want only its first failure", got)
	}
	answeredBy(t, b, "x") // the fleet's trial
	settle(b)
	answeredBy(t, a, "x")
	answeredBy(t, b, "x")
	if h := healthOf(t, a, "x"); h.State != StateClosed {
		t.Fatalf("a's x is %v after the fleet's trial succeeded, want closed", h.State)
	}

	t.Run("cooldown and pacing", func(t *testing.T) {
		repA.set("x", 429, `{}`, "Retry-After", "5")
		answeredBy(t, a, "y")
		settle(a)
		if h := healthOf(t, b, "x"); h.State != StateCoolingDown || !h.CooldownUntil.Equal(clk.Now().Add(5*time.Second)) {
			t.Fatalf("b's x: %v until %v, want cooling down for a's 5s", h.State, h.CooldownUntil)
		}
		clk.Advance(5 * time.Second)
		repA.set("x", 200, "x", hdrRemainingRequests, "0", hdrResetRequests, "3s")
		answeredBy(t, a, "x")
		settle(a)
		if h := healthOf(t, b, "x"); h.State != StatePaced || !h.PacedUntil.Equal(clk.Now().Add(3*time.Second)) {
			t.Fatalf("b's x: %v until %v, want paced for a's 3s", h.State, h.PacedUntil)
		}
	})
}

// TestSharedLeasesBoundTheFleet: three processes with MaxRPS 10 (burst
// 10) on one shared budget send, together, no more than the bucket lets
// out: 10 at once, then 10 a second.
func TestSharedLeasesBoundTheFleet(t *testing.T) {
	clk := newFakeClock()
	hub := newMemHub(clk)
	base := newScriptedBase(alwaysOK)
	x := hostEndpoint("x", 0)
	x.MaxRPS = 10
	var trs []*Transport
	for range 3 {
		trs = append(trs, newTestTransportOn(t, Config{Base: base, Shared: hub.join(), MaxWait: -1,
			Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}, clk))
	}
	round := func(n int) {
		for i := range n {
			tr := trs[i%len(trs)]
			chat(t, tr)
			settle(tr)
		}
	}
	for _, tr := range trs {
		settle(tr)
	}
	round(60)
	if got := base.Hits("x.test"); got > 10 || got < 5 {
		t.Fatalf("x got %d requests from the fleet with no time passing, want at most its burst, 10 (and most of it)", got)
	}
	before := base.Hits("x.test")
	clk.Advance(time.Second)
	round(60)
	if got := base.Hits("x.test") - before; got > 10 {
		t.Fatalf("x got %d requests in the next second, want at most 10", got)
	}
}

// TestSharedDownFallsBackToLocalShares: with the shared state unreachable,
// a process spends a local share of each budget (MaxRPS over the processes
// last seen), logs it once, and rejoins when the state is back.
func TestSharedDownFallsBackToLocalShares(t *testing.T) {
	clk := newFakeClock()
	hub := newMemHub(clk)
	hub.procs = 2
	sh := hub.join()
	sh.down.Store(true)
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	base := newScriptedBase(alwaysOK)
	x := hostEndpoint("x", 0)
	x.MaxRPS, x.Burst = 10, 10
	tr := newTestTransportOn(t, Config{Base: base, Shared: sh, MaxWait: -1, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}, clk)
	settle(tr)
	for range 20 {
		chat(t, tr)
		settle(tr)
	}
	if got := base.Hits("x.test"); got != 5 {
		t.Fatalf("x got %d requests while the shared state was down, want the local share of 2 processes, 5", got)
	}
	if n := strings.Count(logs.String(), "shared state unreachable"); n != 1 {
		t.Fatalf("logged the fallback %d times, want once:\n%s", n, logs.String())
	}
	if got := metricValue(t, reg, "failover_shared_degraded", nil); got != 1 {
		t.Fatalf("failover_shared_degraded = %v, want 1", got)
	}
	calls := sh.calls.Load()
	sh.down.Store(false)
	clk.Advance(sharedRetry)
	for range 5 {
		chat(t, tr)
		settle(tr)
	}
	if sh.calls.Load() == calls || tr.fleet.isDown() {
		t.Fatal("the transport did not rejoin the shared state once it was back")
	}
	if n := strings.Count(logs.String(), "reachable again"); n != 1 {
		t.Fatalf("logged the rejoin %d times, want once:\n%s", n, logs.String())
	}
}

// TestUpdateKeepsShared: Update takes the Shared of New, or none, and
// refuses another.
func TestUpdateKeepsShared(t *testing.T) {
	hub := newMemHub(newFakeClock())
	sh := hub.join()
	tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Shared: sh, Endpoints: []Endpoint{hostEndpoint("x", 0)}})
	settle(tr)
	for _, tc := range []struct {
		name    string
		shared  Shared
		wantErr bool
	}{{"same", sh, false}, {"none", nil, false}, {"another", hub.join(), true}} {
		t.Run(tc.name, func(t *testing.T) {
			err := tr.Update(Config{Shared: tc.shared, Endpoints: []Endpoint{hostEndpoint("x", 0)}})
			if (err != nil) != tc.wantErr || (err != nil && !strings.Contains(err.Error(), "Shared cannot change")) {
				t.Fatalf("Update: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// flakyShared fails its first failures calls, then is memShared.
type flakyShared struct {
	*memShared
	failures atomic.Int64
}

func (f *flakyShared) Lease(ctx context.Context, key string, r float64, burst, want int64) (int64, error) {
	if f.failures.Add(-1) >= 0 {
		return 0, errMemDown
	}
	return f.memShared.Lease(ctx, key, r, burst, want)
}

// TestSharedOneFailureIsNoOutage: a call that fails now and then (a slow
// Redis on a loaded machine) does not send the process to its local
// shares; three in a row do.
func TestSharedOneFailureIsNoOutage(t *testing.T) {
	for _, tc := range []struct {
		failures int64
		down     bool
	}{{1, false}, {2, false}, {3, true}} {
		t.Run(fmt.Sprintf("%d failures", tc.failures), func(t *testing.T) {
			sh := &flakyShared{memShared: newMemHub(newFakeClock()).join()}
			sh.failures.Store(tc.failures)
			x := hostEndpoint("x", 0)
			x.MaxRPS = 100
			tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Shared: sh, Endpoints: []Endpoint{x}})
			b := endpointsOf(tr)[0].budget.rpsLease
			for range tc.failures - 1 {
				settle(tr)
				b.renew(tr.clock.now())
			}
			settle(tr)
			if got := tr.fleet.isDown(); got != tc.down {
				t.Fatalf("down %v after %d failed calls in a row, want %v", got, tc.failures, tc.down)
			}
		})
	}
}

// TestProbeClaimedAcrossTheFleet: with Config.Shared, the recovery probes
// of an endpoint are claimed in the fleet's shared state, so that one
// process probes it; a process whose shared state is unreachable probes
// for itself.
func TestProbeClaimedAcrossTheFleet(t *testing.T) {
	clk := newFakeClock()
	hub := newMemHub(clk)
	one, two := hub.join(), hub.join()
	cfg := func(sh Shared) Config {
		return Config{Base: newScriptedBase(alwaysOK), Shared: sh, Probe: ProbeConfig{Interval: 10 * time.Second},
			Endpoints: []Endpoint{hostEndpoint("a", 0)}}
	}
	tr1, tr2 := newTestTransportOn(t, cfg(one), clk), newTestTransportOn(t, cfg(two), clk)
	if tr1.heal.claim == nil || tr2.heal.claim == nil {
		t.Fatal("a Transport with Shared has no probe claim")
	}
	ctx := context.Background()
	if !tr1.heal.claim(ctx, "a", time.Second) {
		t.Fatal("the first claim was lost")
	}
	if tr2.heal.claim(ctx, "a", time.Second) {
		t.Fatal("a second process won the probe another holds")
	}
	if !tr2.heal.claim(ctx, "b", time.Second) {
		t.Fatal("a claim for another endpoint was lost")
	}
	two.down.Store(true)
	if !tr2.heal.claim(ctx, "a", time.Second) {
		t.Fatal("a process whose shared state is down does not probe for itself")
	}
	clk.Advance(2 * time.Second)
	two.down.Store(false)
	if !tr2.heal.claim(ctx, "a", time.Second) {
		t.Fatal("a claim after the holder's expired was lost")
	}
}

// TestFleetTrialRefusedByBudget: the fleet's trial on x, claimed by
// this process, is refused by x's own token budget (MaxTPM) after the
// fleet's gate handed this request the trial. The request goes to y. The
// trial must not be lost: once x has its budget again, the next request
// is x's trial, not a wait until the claim's time-to-live (the open
// timeout, 10 minutes here) has passed, in every process of the fleet.
func TestFleetTrialRefusedByBudget(t *testing.T) {
	clk := newFakeClock()
	hub := newMemHub(clk)
	rep := newHostReplies()
	base := newScriptedBase(rep.script)
	body := `{"model":"gpt-test","max_tokens":1,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 70) + `"}]}`
	est := estimateTokens([]byte(body), "/chat/completions")
	x := hostEndpoint("x", 0)
	x.MaxTPM, x.TokenBurst = 60, int(est*3/2) // a token a second; a request takes 2/3 of the burst
	cfg := func(base http.RoundTripper) Config {
		return Config{Base: base, Shared: hub.join(), MaxWait: -1,
			Breaker:   BreakerConfig{OpenTimeout: 10 * time.Minute}, // also the trial claim's time-to-live
			Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}
	}
	a := newTestTransportOn(t, cfg(base), clk)
	settle(a)

	send := func(t *testing.T) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(body))
		return roundTrip(t, a, req)
	}
	if code, got := send(t); code != 200 || got != "x" {
		t.Fatalf("got %d %q, want x, which has its budget", code, got)
	}
	settle(a) // x's token budget holds a third of a request
	// Another process opened x's breaker for 10s; it ends, and a claims
	// the fleet's trial (won).
	a.fleet.receive(SharedEvent{Endpoint: "x", Kind: SharedBreakerOpen, Until: clk.Now().Add(10 * time.Second)})
	clk.Advance(10 * time.Second)
	ex := endpointsOf(a)[0]
	if wait, _ := ex.bud.fleet.gate(ex, a.fleet, clk.Now().UnixNano()); wait == 0 {
		t.Fatal("the gate let a request through before claiming the trial")
	}
	settle(a)

	// x's budget refuses the trial (it holds a third of a request and ten
	// seconds' worth): y answers.
	if code, got := send(t); code != 200 || got != "y" {
		t.Fatalf("got %d %q, want y while x is short of tokens", code, got)
	}
	settle(a)

	// A minute later x has its budget again: the fleet's trial is due, and
	// a request goes to x (y is healthy too, but of a later priority).
	clk.Advance(time.Minute)
	ex.budget.tpmLease.renew(clk.Now()) // the shared budget's lease, as a request would ask it
	settle(a)
	if code, got := send(t); code != 200 || got != "x" {
		t.Fatalf("got %d %q, want the fleet's trial on x: the claim this process won was used up by a refused attempt", code, got)
	}
}

// TestFleetProbesOnce: with Shared set, one process of the fleet
// probes an endpoint that is out, not every process (issue 15; the README:
// recovery probes claim "probe:<endpoint name>" through Shared.Claim, true
// for exactly one process). Two processes that both saw x fail (their
// breakers opened before either heard of the other's) send one probe per
// interval between them, not one each.
func TestFleetProbesOnce(t *testing.T) {
	const interval = 10 * time.Second
	clk := newStepClock()
	hub := newMemHub(newFakeClock()) // claims last their whole time-to-live
	hosts := newProbeHosts()
	base := newScriptedBase(hosts.script)
	var trs []*Transport
	for range 2 {
		trs = append(trs, newTestTransportOn(t, Config{Base: base, Shared: hub.join(), MaxWait: -1,
			Probe:     ProbeConfig{Interval: interval},
			Endpoints: []Endpoint{hostEndpoint("x", 0), hostEndpoint("y", 1)}}, clk))
	}
	hosts.set("x", 500)
	for _, tr := range trs {
		openBreaker(t, endpointsOf(tr)[0]) // both saw x fail
	}
	clk.BlockUntil(t, 2) // both probe loops wait for their first probe
	clk.Advance(interval + interval/10)
	clk.BlockUntil(t, 2) // both wait again: the first round is over
	for _, tr := range trs {
		settle(tr)
	}
	if n := len(probesOf(base, "x")); n != 1 {
		t.Fatalf("the fleet sent %d probes to x in one interval, want 1: every process probes", n)
	}
}

// subscriptionShared is a memShared that tells whether its subscriptions
// were stopped, and whose Publish waits for gate (or its context).
type subscriptionShared struct {
	*memShared
	subscribed, stopped atomic.Int32
	publishing          atomic.Int32 // Publish calls under way
	gate                chan struct{}
}

func (s *subscriptionShared) Subscribe(fn func(SharedEvent)) func() {
	s.subscribed.Add(1)
	stop := s.memShared.Subscribe(fn)
	return func() { s.stopped.Add(1); stop() }
}

func (s *subscriptionShared) Publish(ctx context.Context, ev SharedEvent) error {
	s.publishing.Add(1)
	defer s.publishing.Add(-1)
	select {
	case <-s.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.memShared.Publish(ctx, ev)
}

// TestCloseLeavesTheFleet: Close stops the Transport's background
// work ("when Close returns, no goroutine of the Transport's runs"): with
// Shared, that is its subscription to the fleet's events (else a Shared
// that outlives the Transport, as a redisshare.Store may, keeps calling
// it, and keeps it in memory) and its calls to the shared state under way.
func TestCloseLeavesTheFleet(t *testing.T) {
	clk := newFakeClock()
	sh := &subscriptionShared{memShared: newMemHub(clk).join(), gate: make(chan struct{})}
	rep := newHostReplies()
	tr, err := newTransport(Config{Base: newScriptedBase(rep.script), Shared: sh, SharedTimeout: time.Minute,
		Endpoints: []Endpoint{hostEndpoint("x", 0), hostEndpoint("y", 1)}}, clk)
	if err != nil {
		t.Fatal(err)
	}
	defer close(sh.gate) // lets a publish left behind end, whatever the outcome
	rep.set("x", 429, `{}`, "Retry-After", "5")
	answeredBy(t, tr, "y") // x cools down: published in the background
	eventually(t, "publishing", func() bool { return sh.publishing.Load() == 1 })
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if sub, stop := sh.subscribed.Load(), sh.stopped.Load(); stop != sub {
		t.Errorf("%d subscriptions, %d stopped by Close: the closed Transport still receives the fleet's events", sub, stop)
	}
	if n := sh.publishing.Load(); n != 0 {
		t.Errorf("%d calls to the shared state still under way after Close returned", n)
	}
}

// TestFleetBoundWhenOneProcessFallsBack: the README's bound ("N
// processes send at most R×T + B + N×L in any interval", L =
// min(B, max(ceil(R/10), 2)) for requests) with one process of two cut off from the shared state (its
// calls time out on a loaded machine, as TestProxyFleetSharesTheRateLimit
// saw once in a full run: one proxy had 5 failed calls and the fleet sent
// 35 in a second against a bound of 34) while the other still spends the
// shared bucket: the cut-off one spends its local share besides.
func TestFleetBoundWhenOneProcessFallsBack(t *testing.T) {
	const r, b, n = 100, 100, 2
	clk := newFakeClock()
	hub := newMemHub(clk)
	hub.procs = n
	base := newScriptedBase(alwaysOK)
	x := hostEndpoint("x", 0)
	x.MaxRPS, x.Burst = r, b
	var trs []*Transport
	var shs []*memShared
	for range n {
		sh := hub.join()
		shs = append(shs, sh)
		trs = append(trs, newTestTransportOn(t, Config{Base: base, Shared: sh, MaxWait: -1,
			Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}, clk))
		settle(trs[len(trs)-1])
	}
	shs[0].down.Store(true) // process 0 is cut off; process 1 is not
	for range 3 * b {
		for _, tr := range trs {
			chat(t, tr)
			settle(tr)
		}
	}
	bound := int(fleetBound(n, r, b, 1, 0))
	bound += r*0/n + max(1, b/n) // the one cut-off process's local share (README)
	if got := base.Hits("x.test"); got > bound {
		t.Fatalf("x got %d requests from the fleet with no time passing, above the README's bound %d", got, bound)
	}
}

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
