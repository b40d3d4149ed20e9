package failover

import (
	"slices"
	"sync/atomic"
)

// tier is the enabled endpoints of one priority with their weighted
// schedule. A pick is one atomic add on next; a tier of one endpoint needs
// not even that.
type tier struct {
	priority int
	members  []*endpoint
	schedule []uint16 // member indexes in smooth weighted round robin order
	// sampled is set once every member has a latency sample, for the
	// least-latency balancer (see cheapestUnsampled); read by every
	// request of such a tier, written once.
	sampled atomic.Bool
	_       [64]byte // next, written by every request, on a line of its own
	next    atomic.Uint64
	_       [56]byte
}

// maxSchedule bounds the length of a tier's schedule. Weights whose sum
// (after dividing by their greatest common divisor) exceeds it are scaled
// down proportionally, each to at least 1.
const maxSchedule = 1 << 14

// start returns the member index a request begins its walk of the tier at.
func (t *tier) start() int {
	if len(t.members) == 1 {
		return 0
	}
	n := t.next.Add(1) - 1
	return int(t.schedule[n%uint64(len(t.schedule))])
}

// buildTiers groups the enabled endpoints by priority, lowest first, and
// computes each tier's smooth weighted round robin schedule once.
func buildTiers(eps []*endpoint) []*tier {
	enabled := make([]*endpoint, 0, len(eps))
	for _, e := range eps {
		if !e.cfg.Disabled {
			enabled = append(enabled, e)
		}
	}
	// Stable: within a priority, configuration order.
	slices.SortStableFunc(enabled, func(a, b *endpoint) int { return cmpInt(a.cfg.Priority, b.cfg.Priority) })
	var tiers []*tier
	for len(enabled) > 0 {
		n := 1
		for n < len(enabled) && enabled[n].cfg.Priority == enabled[0].cfg.Priority {
			n++
		}
		members := enabled[:n:n]
		weights := make([]int, n)
		for i, m := range members {
			weights[i] = m.cfg.Weight
		}
		tiers = append(tiers, &tier{priority: members[0].cfg.Priority, members: members, schedule: swrrSchedule(weights)})
		enabled = enabled[n:]
	}
	return tiers
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// swrrSchedule returns one full cycle of smooth weighted round robin (the
// nginx algorithm) over weights: each index appears weights[i] times, spread
// as evenly as the algorithm spreads them.
//
// nginx's step adds each weight to its endpoint's current value, picks the
// greatest (the lowest index among equals) and takes the total off it: at
// step k (from 1) endpoint i stands at k*w[i] - total*picks[i].
// Endpoints of equal weight are therefore picked in turn, in index order,
// so each group of equal weight is a queue and only the heads of the
// groups need comparing: the cycle costs total times the number of
// distinct weights, not total times the number of endpoints.
func swrrSchedule(weights []int) []uint16 {
	w := normalizeWeights(weights)
	type group struct {
		weight  int
		members []int // endpoint indexes, ascending
		picks   int   // picks of the whole group
	}
	var groups []*group
	byWeight := map[int]*group{}
	total := 0
	for i, x := range w {
		total += x
		g := byWeight[x]
		if g == nil {
			g = &group{weight: x}
			byWeight[x] = g
			groups = append(groups, g)
		}
		g.members = append(g.members, i)
	}
	out := make([]uint16, 0, total)
	for k := 1; k <= total; k++ {
		var best *group
		bestCur, bestIdx := 0, 0
		for _, g := range groups {
			n := len(g.members)
			idx := g.members[g.picks%n]
			cur := k*g.weight - total*(g.picks/n)
			if best == nil || cur > bestCur || (cur == bestCur && idx < bestIdx) {
				best, bestCur, bestIdx = g, cur, idx
			}
		}
		best.picks++
		out = append(out, uint16(bestIdx))
	}
	return out
}

// normalizeWeights divides weights by their greatest common divisor and, if
// their sum still exceeds maxSchedule, scales them down to fit.
func normalizeWeights(weights []int) []int {
	w := make([]int, len(weights))
	g := 0
	for i, x := range weights {
		if x <= 0 {
			x = 1
		}
		w[i] = x
		g = gcd(g, x)
	}
	total := 0.0 // in float64: a sum of large ints could overflow
	for i := range w {
		w[i] /= g
		total += float64(w[i])
	}
	if total <= maxSchedule {
		return w
	}
	scale := float64(maxSchedule-len(w)) / total
	for i := range w {
		w[i] = max(1, int(float64(w[i])*scale))
	}
	return w
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
