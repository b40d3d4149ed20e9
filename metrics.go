package failover

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the collectors of one Transport. A nil *metrics (no
// Registerer) makes every method a no-op.
type metrics struct {
	attempts   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	cooldowns  *prometheus.CounterVec
	spillovers *prometheus.CounterVec
	wait       *prometheus.HistogramVec
	failedOver prometheus.Counter
	exhausted  prometheus.Counter
	firstToken *prometheus.HistogramVec
	streams    *prometheus.CounterVec
	modelSkips *prometheus.CounterVec
	state      *stateCollector
	waitBy     [waitReasons]prometheus.Observer
	probes     *prometheus.CounterVec
	budget     *budgetMetrics // pacing, token budgets, shared state (budgetmetrics.go)
}

// waitReason indexes metrics.waitBy.
type waitReason int

const (
	waitRateLimit waitReason = iota
	waitCooldown
	waitBackoff
	waitBreaker
	waitPacing
	waitReasons
)

var waitReasonNames = [waitReasons]string{"rate_limit", "cooldown", "backoff", "breaker_open", "pacing"}

// commonCodes are the status codes whose attempt counters are cached per
// endpoint after their first use; others are looked up each time they occur.
var commonCodes = [...]int{200, 201, 204, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504}

// Slots of endpointMetrics.attempts past the common codes.
const (
	slotError = len(commonCodes) + iota
	slotTimeout
	slotFirstToken
	slotCanceled
	numSlots
)

// endpointMetrics are one endpoint's children, resolved once (in New, or
// for attempt outcomes at their first occurrence, so that no series exists
// before its first event) so that the hot path does no label lookup. A nil
// *endpointMetrics is a no-op.
type endpointMetrics struct {
	vec        *prometheus.CounterVec
	name       string
	attempts   [numSlots]atomic.Pointer[counterRef]
	duration   prometheus.Observer
	cooldowns  prometheus.Counter
	spillovers prometheus.Counter
	firstTok   prometheus.Observer
	streams    *prometheus.CounterVec
	modelSkips prometheus.Counter
	budget     *budgetEndpointMetrics
	gone       atomic.Bool // the endpoint was removed: make no new series
	probes     *prometheus.CounterVec
}

type counterRef struct{ prometheus.Counter }

func newMetrics(enabled bool, t *Transport) *metrics {
	if !enabled {
		return nil
	}
	ep := []string{"endpoint"}
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "failover_attempts_total",
			Help: "Attempts sent to each endpoint, by outcome: the status code, or error, timeout or canceled (the caller gave up) when no response arrived.",
		}, []string{"endpoint", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "failover_attempt_duration_seconds",
			Help:    "Time from sending an attempt until its response headers arrived (or it failed).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, ep),
		cooldowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "failover_cooldowns_total",
			Help: "Cooldowns started on each endpoint after a 429 or a Retry-After.",
		}, ep),
		spillovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "failover_rate_limit_spillovers_total",
			Help: "Requests that found this endpoint at its rate limit and went to another (or, when every endpoint was at its limit, waited).",
		}, ep),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "failover_wait_seconds",
			Help:    "Time a request waited before an attempt, by reason: rate_limit, cooldown, breaker_open or backoff.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"reason"}),
		failedOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "failover_requests_failed_over_total",
			Help: "Requests answered by an endpoint after at least one failed attempt.",
		}),
		exhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "failover_requests_exhausted_total",
			Help: "Requests that ended without a successful attempt.",
		}),
	}
	m.addFeatureVecs(ep)
	m.state = newStateCollector(t, ep)
	for i, name := range waitReasonNames {
		m.waitBy[i] = m.wait.WithLabelValues(name)
	}
	m.budget = newBudgetMetrics(t)
	return m
}

// newStateCollector returns the collector of the gauges read from the
// endpoints' state at scrape time.
func newStateCollector(t *Transport, ep []string) *stateCollector {
	return &stateCollector{
		t: t,
		inflight: prometheus.NewDesc("failover_attempts_in_flight",
			"Attempts sent to each endpoint that have not yet received their response headers.", ep, nil),
		breaker: prometheus.NewDesc("failover_breaker_state",
			"Circuit breaker state of each endpoint: 0 closed, 1 half-open, 2 open.", ep, nil),
		probeState: prometheus.NewDesc("failover_probe_state",
			"Recovery probe state of each endpoint: 0 not probed, 1 next probe scheduled, 2 probing.", ep, nil),
		slowStart: prometheus.NewDesc("failover_slow_start_factor",
			"Share of its weight each endpoint takes now: below 1 during its slow start, 1 otherwise.", ep, nil),
		latencyEst: prometheus.NewDesc("failover_latency_estimate_seconds",
			"The least-latency balancer's latency estimate of each endpoint (a decaying peak EWMA); 0 before the first sample.", ep, nil),
	}
}

// addFeatureVecs adds to m the collectors of streams, recovery probes and
// routing by model.
func (m *metrics) addFeatureVecs(ep []string) {
	m.firstToken = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "failover_first_token_seconds",
		Help:    "Time from sending an attempt to its event stream's first event that carries content.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2, 4, 8, 15, 30, 60, 120, 300},
	}, ep)
	m.streams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "failover_streams_total",
		Help: "Event streams by how they ended: complete, truncated (a clean end before the terminal event), stalled, first_token_timeout (released before its first content event, which then missed the deadline), canceled (by the caller) or error (a broken connection).",
	}, []string{"endpoint", "outcome"})
	m.probes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "failover_probes_total",
		Help: "Recovery probes sent to each endpoint, by result: success (a 2xx), failure (another status), key_rejected (401) or error (no response).",
	}, []string{"endpoint", "result"})
	m.modelSkips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "failover_model_skips_total",
		Help: "Requests that passed this endpoint by because it does not serve the model their body names (Endpoint.Models): not failures.",
	}, ep)
}

// register registers m's collectors with reg. When one fails it leaves
// reg as it was and returns the error.
func (m *metrics) register(reg prometheus.Registerer) error {
	if m == nil {
		return nil
	}
	collectors := []prometheus.Collector{m.attempts, m.duration, m.state, m.cooldowns, m.spillovers, m.wait, m.failedOver, m.exhausted,
		m.firstToken, m.streams, m.probes, m.modelSkips}
	collectors = append(collectors, m.budget.collectors()...)
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("failover: registering metrics (one registry per Transport): %w", err)
		}
	}
	return nil
}

// forEndpoint resolves the children of the endpoint named name; nil when
// metrics are off.
func (m *metrics) forEndpoint(name string) *endpointMetrics {
	if m == nil {
		return nil
	}
	return &endpointMetrics{
		vec:        m.attempts,
		streams:    m.streams,
		firstTok:   m.firstToken.WithLabelValues(name),
		name:       name,
		duration:   m.duration.WithLabelValues(name),
		cooldowns:  m.cooldowns.WithLabelValues(name),
		spillovers: m.spillovers.WithLabelValues(name),
		probes:     m.probes,
		modelSkips: m.modelSkips.WithLabelValues(name),
		budget:     m.budget.forEndpoint(name),
	}
}

// forget deletes the series of an endpoint that is gone, and keeps em
// (which requests in flight may still hold) from making them again.
func (m *metrics) forget(em *endpointMetrics) {
	if m == nil || em == nil {
		return
	}
	em.gone.Store(true)
	labels := prometheus.Labels{"endpoint": em.name}
	m.attempts.DeletePartialMatch(labels)
	m.duration.Delete(labels)
	m.cooldowns.Delete(labels)
	m.spillovers.Delete(labels)
	m.firstToken.Delete(labels)
	m.streams.DeletePartialMatch(labels)
	m.probes.DeletePartialMatch(labels)
	m.modelSkips.Delete(labels)
	m.budget.forget(labels)
}

// attempt counts an attempt by its outcome: resp's status code, else
// timeout or error.
func (m *endpointMetrics) attempt(resp *http.Response, err error) {
	if m == nil {
		return
	}
	slot := slotError
	switch {
	case resp != nil:
		slot = -1
		for i, code := range commonCodes {
			if code == resp.StatusCode {
				slot = i
				break
			}
		}
		if slot < 0 {
			if !m.gone.Load() {
				m.vec.WithLabelValues(m.name, statusLabel(resp.StatusCode)).Inc()
			}
			return
		}
	case errors.Is(err, ErrAttemptTimeout):
		slot = slotTimeout
	case errors.Is(err, ErrFirstTokenTimeout):
		slot = slotFirstToken
	}
	m.count(slot)
}

// canceled counts an attempt the caller gave up on before its response
// arrived.
func (m *endpointMetrics) canceled() {
	if m != nil {
		m.count(slotCanceled)
	}
}

func (m *endpointMetrics) count(slot int) {
	ref := m.attempts[slot].Load()
	if ref == nil {
		if m.gone.Load() {
			return
		}
		label := "error"
		switch {
		case slot < len(commonCodes):
			label = statusLabel(commonCodes[slot])
		case slot == slotTimeout:
			label = "timeout"
		case slot == slotFirstToken:
			label = "first_token_timeout"
		case slot == slotCanceled:
			label = "canceled"
		}
		// WithLabelValues returns the same child for the same labels, so
		// two goroutines racing here store equal values.
		ref = &counterRef{m.vec.WithLabelValues(m.name, label)}
		m.attempts[slot].Store(ref)
	}
	ref.Inc()
}

func (m *endpointMetrics) latency(d time.Duration) {
	if m != nil {
		m.duration.Observe(d.Seconds())
	}
}

func (m *endpointMetrics) cooldown() {
	if m != nil {
		m.cooldowns.Inc()
	}
}

func (m *endpointMetrics) spilled() {
	if m != nil {
		m.spillovers.Inc()
	}
}

func (m *metrics) waited(r waitReason, d time.Duration) {
	if m != nil {
		m.waitBy[r].Observe(d.Seconds())
	}
}

func (m *metrics) requestDone(failedAttempts int, ok bool) {
	if m == nil {
		return
	}
	switch {
	case !ok:
		m.exhausted.Inc()
	case failedAttempts > 0:
		m.failedOver.Inc()
	}
}

// stateCollector reports the gauges that mirror endpoint state
// (attempts in flight, breaker state) at scrape time, from the atomics the
// transport keeps anyway: no gauge is written on the hot path.
type stateCollector struct {
	t          *Transport
	inflight   *prometheus.Desc
	breaker    *prometheus.Desc
	probeState *prometheus.Desc
	slowStart  *prometheus.Desc
	latencyEst *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inflight
	ch <- c.breaker
	ch <- c.probeState
	ch <- c.slowStart
	ch <- c.latencyEst
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.t.snap.Load()
	if s == nil {
		return
	}
	now := c.t.clock.now()
	for _, e := range s.endpoints {
		bs, _ := e.breaker.current(now)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(e.hot.inflight()), e.name)
		ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, float64(bs), e.name)
		var h EndpointHealth
		s.healHealth(e, &h, now)
		ch <- prometheus.MustNewConstMetric(c.probeState, prometheus.GaugeValue, probeStateValue(&h), e.name)
		ch <- prometheus.MustNewConstMetric(c.slowStart, prometheus.GaugeValue, s.slowShare(e, now), e.name)
		ch <- prometheus.MustNewConstMetric(c.latencyEst, prometheus.GaugeValue, h.LatencyEstimate.Seconds(), e.name)
	}
}

// statusLabel is a status code as an outcome label: the code, or "other"
// outside 100-599.
func statusLabel(code int) string {
	if code >= 100 && code <= 599 {
		return strconv.Itoa(code)
	}
	return "other"
}

// firstToken records an attempt's time to its stream's first content event.
func (m *endpointMetrics) firstToken(d time.Duration) {
	if m != nil {
		m.firstTok.Observe(d.Seconds())
	}
}

// streamEnded counts a stream by how it ended. It is called once per
// stream, so the label lookup is not worth caching.
func (m *endpointMetrics) streamEnded(outcome string) {
	if m != nil && !m.gone.Load() {
		m.streams.WithLabelValues(m.name, outcome).Inc()
	}
}

// probed counts a recovery probe by its result.
func (m *endpointMetrics) probed(result string) {
	if m != nil && !m.gone.Load() {
		m.probes.WithLabelValues(m.name, result).Inc()
	}
}

// modelSkipped counts a request that passed the endpoint by for a model it
// does not serve.
func (m *endpointMetrics) modelSkipped() {
	if m != nil {
		m.modelSkips.Inc()
	}
}
