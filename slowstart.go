package failover

import (
	"sync/atomic"
	"time"
)

// minSlowShare is the share of its weight an endpoint takes at the start
// of its slow start.
const minSlowShare = 0.1

// slowStart is when an endpoint last began a slow start: its breaker
// closed again, or Update added it.
type slowStart struct {
	since atomic.Int64 // unix ns; 0: never
}

// recovered is told by st's breaker that it closed at now (unix ns): st
// begins a slow start, and probes forget the probe they planned.
func (h *healer) recovered(st *endpointState, now int64) {
	st.probe.next.Store(0)
	if h != nil {
		h.startedAt(st, now)
	}
}

// started begins st's slow start now.
func (h *healer) started(st *endpointState) {
	h.startedAt(st, h.t.clock.now().UnixNano())
}

func (h *healer) startedAt(st *endpointState, now int64) {
	st.slow.since.Store(now)
	for {
		old := h.starting.Load()
		if old >= now || h.starting.CompareAndSwap(old, now) {
			return
		}
	}
}

// slowNow returns now (unix ns) when a slow start of s's window may be
// running, reading the clock only when one began within the window; 0
// otherwise. Once the latest one is over it clears the hint, so that the
// choice reads no clock for slow start until the next one begins.
func (s *snapshot) slowNow(clk *lazyClock) int64 {
	if s.slowStart == 0 {
		return 0
	}
	began := s.heal.starting.Load()
	if began == 0 {
		return 0
	}
	now := clk.get().UnixNano()
	if now-began >= int64(s.slowStart) {
		s.heal.starting.CompareAndSwap(began, 0)
		return 0
	}
	return now
}

// slowFactor returns the share of its weight an endpoint whose slow start
// began at since (unix ns; 0 for never) takes at now under window: from
// a tenth at its start, growing in proportion to the time, to all of it
// at the window's end (Envoy's time factor, aggression 1).
func slowFactor(since, now int64, window time.Duration) float64 {
	if since == 0 || window <= 0 {
		return 1
	}
	elapsed := now - since
	if elapsed >= int64(window) || elapsed < 0 {
		return 1
	}
	return max(minSlowShare, float64(elapsed)/float64(window))
}

// slowFactors returns each member's slow-start factor at now, or nil when
// none of them starts or every one does (slow start then does not apply:
// there is no one to take the traffic instead). buf is used when it is
// large enough.
func (s *snapshot) slowFactors(tr *tier, now int64, buf []float64) []float64 {
	f := buf[:0]
	if len(tr.members) > cap(buf) {
		f = make([]float64, 0, len(tr.members))
	}
	starting := 0
	for _, e := range tr.members {
		x := slowFactor(e.slow.since.Load(), now, s.slowStart)
		if x < 1 {
			starting++
		}
		f = append(f, x)
	}
	if starting == 0 || starting == len(tr.members) {
		return nil
	}
	return f
}

// weightedStart returns a member index of tr drawn at random in
// proportion to weight times factor.
func weightedStart(tr *tier, factors []float64) int {
	total := 0.0
	for i, e := range tr.members {
		total += float64(e.cfg.Weight) * factors[i]
	}
	r := unitFloat(splitmix64(tr.next.Add(1))) * total
	for i, e := range tr.members {
		r -= float64(e.cfg.Weight) * factors[i]
		if r < 0 {
			return i
		}
	}
	return len(tr.members) - 1
}

// slowShare returns the slow-start factor of e at now for the health
// report and the metrics: 1 when it does not start.
func (s *snapshot) slowShare(e *endpoint, now time.Time) float64 {
	if s.slowStart == 0 {
		return 1
	}
	return slowFactor(e.slow.since.Load(), now.UnixNano(), s.slowStart)
}

// splitmix64 mixes x into a uniformly distributed 64-bit value (the
// SplitMix64 finalizer), for cheap, lock-free and reproducible draws from
// a counter.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// unitFloat maps x to [0, 1) uniformly.
func unitFloat(x uint64) float64 {
	return float64(x>>11) / (1 << 53)
}

// openUnitFloat maps x to (0, 1) uniformly, for logarithms.
func openUnitFloat(x uint64) float64 {
	return (float64(x>>11) + 0.5) / (1 << 53)
}
