package failover

import (
	"math"
	"testing"
	"time"
)

// shareOf sends n chat completions through tr and returns the share the
// scripted host name answered.
func shareOf(t *testing.T, tr *Transport, base *scriptedBase, name string, n int) float64 {
	t.Helper()
	before := base.Hits(name + ".test")
	for range n {
		if code, _ := chat(t, tr); code != 200 {
			t.Fatalf("got %d, want 200", code)
		}
	}
	return float64(base.Hits(name+".test")-before) / float64(n)
}

// recoverByTrial opens e's breaker, lets its open period pass and sends
// requests until one is its trial and closes it.
func recoverByTrial(t *testing.T, tr *Transport, clk *fakeClock, e *endpoint) {
	t.Helper()
	openBreaker(t, e)
	clk.Advance(time.Minute)
	for range 10 {
		chat(t, tr)
		if e.breaker.openUntil.Load() == 0 {
			return
		}
	}
	t.Fatalf("%s did not close", e.name)
}

// TestSlowStartShare: an endpoint whose breaker closes again takes a share
// of its weight that grows from a tenth to all of it over the window, in
// proportion to the time, among the endpoints of its tier.
func TestSlowStartShare(t *testing.T) {
	const window = 100 * time.Second
	base := newScriptedBase(alwaysOK)
	tr, clk := newTestTransport(t, Config{Base: base, SlowStart: window,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)}})
	a := endpointsOf(tr)[0]
	recoverByTrial(t, tr, clk, a)
	for _, tc := range []struct {
		at     time.Duration // since a closed
		factor float64
	}{{0, 0.1}, {25 * time.Second, 0.25}, {50 * time.Second, 0.5}, {75 * time.Second, 0.75}, {window, 1}} {
		clk.Advance(tc.at - clk.Now().Sub(time.Unix(0, a.slow.since.Load())))
		want := tc.factor / (1 + tc.factor)
		got := shareOf(t, tr, base, "a", 4000)
		if math.Abs(got-want) > 0.03 {
			t.Errorf("%v into the slow start: a took %.3f of the requests, want %.3f", tc.at, got, want)
		}
		h := healthOf(t, tr, "a")
		if tc.factor < 1 && math.Abs(h.SlowStart-tc.factor) > 1e-9 || tc.factor == 1 && h.SlowStart != 0 {
			t.Errorf("%v into the slow start: health's SlowStart %v, want %v", tc.at, h.SlowStart, tc.factor)
		}
	}
}

// TestSlowStartAdded: an endpoint Update adds starts slow; one that New
// configured does not; and when every endpoint of the tier starts at once,
// none is held back.
func TestSlowStartAdded(t *testing.T) {
	const window = time.Minute
	base := newScriptedBase(alwaysOK)
	cfg := Config{Base: base, SlowStart: window, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)}}
	tr, clk := newTestTransport(t, cfg)
	if got := shareOf(t, tr, base, "a", 1000); math.Abs(got-0.5) > 0.03 {
		t.Fatalf("at New, a took %.3f, want half", got)
	}
	cfg.Endpoints = append(cfg.Endpoints, hostEndpoint("c", 0))
	if err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := shareOf(t, tr, base, "c", 4000), 0.1/2.1; math.Abs(got-want) > 0.02 {
		t.Fatalf("just added, c took %.3f, want %.3f", got, want)
	}
	clk.Advance(window)
	if got := shareOf(t, tr, base, "c", 3000); math.Abs(got-1.0/3) > 0.03 {
		t.Fatalf("after the window, c took %.3f, want a third", got)
	}

	// All three recover, a while apart: each is in its slow start, at a
	// different factor, and none is held back.
	for _, e := range endpointsOf(tr) {
		openBreaker(t, e)
	}
	clk.Advance(time.Minute)
	for _, e := range endpointsOf(tr) {
		recoverTrial(t, e)
		clk.Advance(window / 4)
	}
	for _, name := range []string{"a", "b", "c"} {
		if f := healthOf(t, tr, name).SlowStart; f == 0 {
			t.Fatalf("%s is not starting", name)
		}
		if got := shareOf(t, tr, base, name, 3000); math.Abs(got-1.0/3) > 0.03 {
			t.Errorf("all three starting: %s took %.3f, want a third", name, got)
		}
	}
}

// recoverTrial closes e's half-open breaker with a successful trial.
func recoverTrial(t *testing.T, e *endpoint) {
	t.Helper()
	clk := lazyClock{c: e.clock}
	done, ok := e.breaker.allow(&clk)
	if !ok {
		t.Fatalf("%s refused its trial", e.name)
	}
	e.breaker.settle(done, nil)
	if e.breaker.openUntil.Load() != 0 {
		t.Fatalf("%s did not close", e.name)
	}
}

// TestSlowFactor: the factor's shape, at its edges.
func TestSlowFactor(t *testing.T) {
	const w = 100 * time.Second
	for _, tc := range []struct {
		since, now int64
		want       float64
	}{
		{0, 50, 1},
		{1, 1, 0.1},
		{1, 1 + int64(5*time.Second), 0.1},
		{1, 1 + int64(30*time.Second), 0.3},
		{1, 1 + int64(w), 1},
		{100, 50, 1}, // a clock that went back: not held back
	} {
		if got := slowFactor(tc.since, tc.now, w); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("slowFactor(%d, %d) = %v, want %v", tc.since, tc.now, got, tc.want)
		}
	}
}
