package failover

import (
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"time"
)

// Balancer chooses, within a priority tier, the endpoint a request tries
// first; the request fails over from there to the tier's other endpoints,
// then to the next tier. The zero value, "", is [BalancerRoundRobin].
type Balancer string

const (
	// BalancerRoundRobin shares each tier's requests among its endpoints
	// in proportion to their Weight, in smooth weighted round robin
	// order, whatever their latency. It costs one atomic add per request.
	BalancerRoundRobin Balancer = "round_robin"

	// BalancerLeastLatency sends each request to the better of two
	// endpoints of the tier drawn at random (power of two choices), by a
	// cost: the endpoint's latency estimate times one more than its
	// attempts in flight, divided by its Weight. The estimate is a
	// peak-sensitive moving average (as Finagle's and Linkerd's peak
	// EWMA): a sample above it replaces it at once, one below pulls it
	// down gradually, and it decays towards zero with time, halving about
	// every two seconds, so that an endpoint that was slow is tried again
	// and seen to have recovered (a 300ms one beside a 10ms one, about
	// every ten seconds). A sample is
	// the time to the response headers of an attempt that got a response
	// below 500 or, for an event stream, the time to its first event
	// that carries content (once the endpoint has streamed one; until
	// then, its headers' time). An endpoint with no sample and no attempt
	// in flight costs nothing, so it is tried first: while any endpoint
	// of the tier has no sample, each request goes to the tier's cheapest
	// endpoint (a walk of the tier, until every one has answered once),
	// and only then to the better of two drawn. Use it when the
	// endpoints of a tier differ in speed (regions, providers, loaded
	// servers); it costs two random draws and a few atomic loads per
	// request (its clock reading doubles as the attempt's send time), and
	// takes no lock.
	BalancerLeastLatency Balancer = "least_latency"
)

// check returns what is wrong with b.
func (b Balancer) check() error {
	switch b {
	case "", BalancerRoundRobin, BalancerLeastLatency:
		return nil
	}
	return fmt.Errorf("failover: Balancer %q is not %q or %q", string(b), BalancerRoundRobin, BalancerLeastLatency)
}

// latencyDecay is the time constant of the latency estimate's decay: a
// sample's weight falls by e every latencyDecay (halving about every two
// seconds).
const latencyDecay = 3 * time.Second

// unsampledCost is the cost, per attempt in flight, of an endpoint with no
// latency sample yet: it is tried first when idle, but requests do not
// pile onto it before its first answer.
const unsampledCost = 1.0 // seconds

// peakEWMA is a peak-sensitive exponentially weighted moving average of
// latencies that decays with time, updated without a lock. Its times are
// readings of the clock's since. The zero value has no sample.
type peakEWMA struct {
	bits  atomic.Uint64 // float64 seconds; 0: no sample
	stamp atomic.Int64  // when it was last updated, as a since reading
}

// observe adds a sample d taken at now.
func (p *peakEWMA) observe(d, now time.Duration) {
	sample := max(d.Seconds(), 1e-9) // 0 means no sample
	for {
		old := p.bits.Load()
		next := sample
		if old != 0 {
			w := decayWeight(now - time.Duration(p.stamp.Load()))
			if prev := math.Float64frombits(old) * w; sample < prev {
				next = prev + (1-w)*sample
			}
		}
		if p.bits.CompareAndSwap(old, math.Float64bits(next)) {
			p.stamp.Store(int64(now))
			return
		}
	}
}

// value returns the estimate at now in seconds, decayed since its last
// update; 0 with no sample.
func (p *peakEWMA) value(now time.Duration) float64 {
	bits := p.bits.Load()
	if bits == 0 {
		return 0
	}
	return math.Float64frombits(bits) * decayWeight(now-time.Duration(p.stamp.Load()))
}

// decayWeight is what remains of an estimate after age.
func decayWeight(age time.Duration) float64 {
	if age <= 0 {
		return 1
	}
	x := float64(age) / float64(latencyDecay)
	switch {
	case x < 1e-3:
		// Updated within the last thousandth of the decay (3 ms: the
		// usual case for an endpoint taking a few hundred requests a
		// second or more): 1-x is e^-x within x²/2, a relative error
		// under 5e-7, without math.Exp.
		return 1 - x
	case x < 1.0/8:
		// Within an eighth of it (375 ms: an endpoint the balancer
		// passed over for a while): e^-x's series to x⁴, within
		// x⁵/120, a relative error under 3e-7, still without math.Exp.
		return 1 - x*(1-x/2*(1-x/3*(1-x/4)))
	}
	return math.Exp(-x)
}

// sampleHeaders feeds the balancer's estimate of e with an attempt's time
// to its response headers, from start to end (since readings): for a
// response below 500, unless it is an event stream of an endpoint whose
// streams' first tokens are measured (those feed it instead).
func (e *endpoint) sampleHeaders(resp *http.Response, err error, start, end time.Duration) {
	if err != nil || resp == nil || resp.StatusCode >= 500 {
		return
	}
	if e.hot.firstToken.value() != 0 && isEventStream(resp) {
		return
	}
	e.hot.peak.observe(end-start, end)
}

// cost is e's cost for the least-latency balancer at now, its weight
// scaled by factor (slow start).
func (e *endpoint) cost(now time.Duration, factor float64) float64 {
	inflight := float64(max(e.hot.inflight(), 0))
	est := e.hot.peak.value(now)
	if est == 0 { // no sample: nothing while idle
		return unsampledCost * inflight / (float64(e.cfg.Weight) * factor)
	}
	return est * (inflight + 1) / (float64(e.cfg.Weight) * factor)
}

// twoChoices returns the member index of tr the least-latency balancer
// starts at: while a member of tr has no latency sample, the cheapest
// member (so an idle one without a sample is tried first, whatever the
// tier's size); afterwards, the cheaper of two members drawn at random.
// factors, when not nil, scale their weights (slow start).
func (s *snapshot) twoChoices(tr *tier, clk *lazyClock, factors []float64) int {
	now := clk.since()
	if !tr.sampled.Load() {
		if i, ok := cheapestUnsampled(tr, now, factors); ok {
			return i
		}
	}
	n := uint64(len(tr.members))
	x := splitmix64(tr.next.Add(1))
	a := x % n
	b := (x >> 32) % (n - 1)
	if b >= a {
		b++
	}
	fa, fb := 1.0, 1.0
	if factors != nil {
		fa, fb = factors[a], factors[b]
	}
	if tr.members[b].cost(now, fb) < tr.members[a].cost(now, fa) {
		return int(b)
	}
	return int(a)
}

// cheapestUnsampled returns, when a member of tr has no latency sample
// yet, the index of tr's cheapest member at now, ties going to the first
// from a start that turns with each request; ok is false when every
// member has a sample, and then tr is marked sampled, so that no request
// walks it again. A member never loses its sample (the estimate decays
// but stays above zero, and an endpoint's live state outlives Updates),
// so the mark holds for the tier's life: the walk costs the requests
// before every member's first answer, and one atomic load afterwards.
func cheapestUnsampled(tr *tier, now time.Duration, factors []float64) (int, bool) {
	n := len(tr.members)
	start := int(tr.next.Add(1) % uint64(n))
	best, bestCost, unsampled := start, math.Inf(1), false
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		e := tr.members[i]
		unsampled = unsampled || e.hot.peak.bits.Load() == 0
		f := 1.0
		if factors != nil {
			f = factors[i]
		}
		if c := e.cost(now, f); c < bestCost {
			best, bestCost = i, c
		}
	}
	if !unsampled {
		tr.sampled.Store(true)
		return 0, false
	}
	return best, true
}

// latencyEstimate returns e's latency estimate at now for the health
// report and the metrics; 0 with no sample.
func (e *endpoint) latencyEstimate(now time.Duration) time.Duration {
	return time.Duration(e.hot.peak.value(now) * float64(time.Second))
}

// pickSteered is pick's walk of tier tr when the configuration steers the
// choice: in the order of the request's affinity key when it has one,
// else from the member the balancer and slow start give, on round the
// tier.
func (s *snapshot) pickSteered(tr *tier, clk *lazyClock, st *requestState, p *pickResult) (*endpoint, func(error), bool) {
	if st.key != 0 {
		return s.pickByKey(tr, clk, st, p)
	}
	n := len(tr.members)
	i := s.steerStart(tr, clk)
	for range n {
		e := tr.members[i]
		if i++; i == n {
			i = 0
		}
		if done, ok := e.take(clk, st, p); ok {
			return e, done, true
		}
	}
	return nil, nil, false
}

// steerStart returns the member index of tr a request without an
// affinity key starts at: the least-latency balancer's choice, or a
// weighted draw while a slow start runs in the tier, else the round robin
// schedule's.
func (s *snapshot) steerStart(tr *tier, clk *lazyClock) int {
	var buf [16]float64
	var factors []float64
	if now := s.slowNow(clk); now != 0 {
		factors = s.slowFactors(tr, now, buf[:])
	}
	switch {
	case s.leastLatency:
		return s.twoChoices(tr, clk, factors)
	case factors != nil:
		return weightedStart(tr, factors)
	}
	return tr.start()
}
