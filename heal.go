package failover

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// healer is the part of a Transport that heals endpoints across its
// configurations: the probe loops (one goroutine per endpoint that is out,
// while it is out) and the hint that a slow start runs.
type healer struct {
	t      *Transport
	ctx    context.Context // ends at Close
	stop   context.CancelFunc
	mu     sync.Mutex // guards closed with wg.Add
	closed bool
	wg     sync.WaitGroup
	// stopped is set by Close: endpoints then recover by user trials
	// again.
	stopped atomic.Bool

	// claim, when set, asks whether this process may probe the endpoint
	// now, for ttl: with state shared across a fleet, one process probes
	// each endpoint. Nil means this process always may.
	claim func(ctx context.Context, endpoint string, ttl time.Duration) bool

	// starting is the unix ns at which the latest slow start began, 0
	// when none may be running: the choice reads it to skip slow start's
	// work when no endpoint starts.
	starting atomic.Int64

	// leastLatency is the current configuration's: streams feed the
	// balancer's estimates only then.
	leastLatency atomic.Bool
}

// balancesByLatency reports whether the current configuration balances by
// latency; false for a nil h.
func (h *healer) balancesByLatency() bool {
	return h != nil && h.leastLatency.Load()
}

func (h *healer) init(t *Transport) {
	h.t = t
	h.ctx, h.stop = context.WithCancel(context.Background())
}

// adopt gives st, a new endpoint's state, the healer; an endpoint added by
// Update (not by New) begins a slow start.
func (h *healer) adopt(st *endpointState, added bool) {
	st.heal = h
	if added {
		h.started(st)
	}
}

// Close stops the Transport's background work, the recovery probes of
// [ProbeConfig] and the calls to [Config].Shared, and waits for it to end:
// when Close returns, no goroutine of the Transport's runs. With Shared it
// also stops the Transport's subscription to the fleet's events. The
// Transport still serves requests after Close, without probes (an open
// breaker then lets a user request through as its trial, as without
// probes) and off the fleet (each budget a local share, as while the
// shared state is unreachable). Close is safe to call more than once
// and concurrently with requests; it always returns nil. A proxy or a
// program that builds Transports with probes calls it at shutdown.
func (t *Transport) Close() error {
	h := &t.heal
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.stopped.Store(true)
	h.stop()
	h.wg.Wait()
	if t.fleet != nil {
		t.fleet.close()
	}
	return nil
}

// setHealing sets s's fields of the healing features from cfg, defaulted.
func (s *snapshot) setHealing(h *healer, cfg Config) {
	s.heal = h
	s.probe = cfg.Probe
	s.slowStart = cfg.SlowStart
	s.leastLatency = cfg.Balancer == BalancerLeastLatency
	h.leastLatency.Store(s.leastLatency)
	s.affinity = cfg.Affinity == AffinityPromptCacheKey
	s.steered = s.slowStart > 0 || s.leastLatency || s.affinity
}

// checkHealing returns the problems of cfg's Probe, SlowStart, Balancer and
// Affinity.
func checkHealing(cfg Config) []error {
	errs := cfg.Probe.problems()
	if cfg.SlowStart < 0 {
		errs = append(errs, fmt.Errorf("failover: SlowStart %v is negative", cfg.SlowStart))
	}
	for _, err := range []error{cfg.Balancer.check(), cfg.Affinity.check()} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// healHealth fills h's fields of the healing features for e at now.
func (s *snapshot) healHealth(e *endpoint, h *EndpointHealth, now time.Time) {
	e.probeHealth(h)
	if f := s.slowShare(e, now); f < 1 {
		h.SlowStart = f
	}
	h.LatencyEstimate = e.latencyEstimate(s.clock.since())
}

// healCells formats h's probe, slow-start and latency-estimate cells of
// the status page at now. The page's script formats the JSON the same
// way (see pageScript); keep them in step.
func healCells(h EndpointHealth, now time.Time) (probe, slow, latency string) {
	var parts []string
	switch h.ProbeState {
	case ProbeStateProbing:
		parts = append(parts, "probing")
	case ProbeStateScheduled:
		parts = append(parts, "next in "+humanDuration(h.NextProbeAt.Sub(now)))
	}
	if h.LastProbeResult != "" {
		parts = append(parts, "last "+h.LastProbeResult+" "+humanDuration(now.Sub(h.LastProbeAt))+" ago")
	}
	probe, slow, latency = "-", "-", "-"
	if len(parts) > 0 {
		probe = strings.Join(parts, "; ")
	}
	if h.SlowStart > 0 {
		slow = strconv.Itoa(int(math.Round(h.SlowStart*100))) + "%"
	}
	if h.LatencyEstimate > 0 {
		latency = humanLatency(h.LatencyEstimate)
	}
	return probe, slow, latency
}
