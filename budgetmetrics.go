package failover

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// budgetMetrics are the collectors of pacing, token budgets and the
// shared state:
//
//	failover_pacing_skips_total{endpoint}             counter: requests that found it out of the provider's limits
//	failover_token_estimate_ratio{endpoint}           histogram: a request's token estimate / the usage counted
//	failover_provider_remaining{endpoint,budget}      gauge: the provider's remaining requests or tokens
//	failover_shared_leases_total{endpoint,budget}     counter: leases taken from the shared budget
//	failover_shared_degraded                          gauge: 1 while the shared state is unreachable
//	failover_shared_calls_total{result}               counter: calls to the shared state, ok or error
//	failover_shared_processes                         gauge: the fleet's processes last seen
type budgetMetrics struct {
	paced *prometheus.CounterVec
	ratio *prometheus.HistogramVec
	state *budgetCollector
}

func newBudgetMetrics(t *Transport) *budgetMetrics {
	ep := []string{"endpoint"}
	both := []string{"endpoint", "budget"}
	return &budgetMetrics{
		paced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "failover_pacing_skips_total",
			Help: "Requests that found the endpoint out of the provider's rate limit (its x-ratelimit-* headers) and went to another or waited.",
		}, ep),
		ratio: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "failover_token_estimate_ratio",
			Help:    "A request's token estimate divided by the usage the provider counted (1: exact; above: overestimated).",
			Buckets: []float64{.25, .5, .75, .9, 1.1, 1.5, 2, 4, 8, 16},
		}, ep),
		state: &budgetCollector{t: t,
			remaining: prometheus.NewDesc("failover_provider_remaining",
				"The provider's remaining requests or tokens for the endpoint (budget), as its headers said, less what was sent since.", both, nil),
			leases: prometheus.NewDesc("failover_shared_leases_total",
				"Leases this process took from the fleet's shared budget of the endpoint (budget: requests or tokens).", both, nil),
			degraded: prometheus.NewDesc("failover_shared_degraded",
				"1 while the shared state (Config.Shared) is unreachable and budgets fall back to local shares; 0 while connected.", nil, nil),
			calls: prometheus.NewDesc("failover_shared_calls_total",
				"Calls to the shared state, by result: ok or error.", []string{"result"}, nil),
			procs: prometheus.NewDesc("failover_shared_processes",
				"The fleet's processes last seen alive by the shared state.", nil, nil),
		},
	}
}

func (m *budgetMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.paced, m.ratio, m.state}
}

// budgetEndpointMetrics are one endpoint's children; nil is a no-op.
type budgetEndpointMetrics struct {
	paced prometheus.Counter
	ratio prometheus.Observer
}

func (m *budgetMetrics) forEndpoint(name string) *budgetEndpointMetrics {
	return &budgetEndpointMetrics{paced: m.paced.WithLabelValues(name), ratio: m.ratio.WithLabelValues(name)}
}

func (m *budgetMetrics) forget(labels prometheus.Labels) {
	m.paced.Delete(labels)
	m.ratio.Delete(labels)
}

// budget returns the endpoint's budget metrics; nil when metrics are off.
func (m *endpointMetrics) budgetMetrics() *budgetEndpointMetrics {
	if m == nil {
		return nil
	}
	return m.budget
}

func (m *budgetEndpointMetrics) pacedSkip() {
	if m != nil {
		m.paced.Inc()
	}
}

// estimated records a request's token estimate against the usage counted.
func (m *budgetEndpointMetrics) estimated(est, usage int64) {
	if m != nil && usage > 0 {
		m.ratio.Observe(float64(est) / float64(usage))
	}
}

// budgetCollector reports, at scrape time, the figures the budgets keep
// in atomics anyway.
type budgetCollector struct {
	t                                         *Transport
	remaining, leases, degraded, calls, procs *prometheus.Desc
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.remaining
	ch <- c.leases
	ch <- c.degraded
	ch <- c.calls
	ch <- c.procs
}

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.t.snap.Load()
	if s == nil {
		return
	}
	now := c.t.clock.now()
	for _, e := range s.endpoints {
		if l := e.bud.pace.limits(now); l != nil {
			if l.RemainingRequests >= 0 {
				ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, float64(l.RemainingRequests), e.name, "requests")
			}
			if l.RemainingTokens >= 0 {
				ch <- prometheus.MustNewConstMetric(c.remaining, prometheus.GaugeValue, float64(l.RemainingTokens), e.name, "tokens")
			}
		}
		for _, lb := range []*leaseBudget{e.bud.rpsLease.Load(), e.bud.tpmLease.Load()} {
			if lb != nil {
				ch <- prometheus.MustNewConstMetric(c.leases, prometheus.CounterValue, float64(lb.leases.Load()), e.name, lb.kind)
			}
		}
	}
	f := c.t.fleet
	if f == nil {
		return
	}
	degraded := 0.0
	if f.isDown() {
		degraded = 1
	}
	ch <- prometheus.MustNewConstMetric(c.degraded, prometheus.GaugeValue, degraded)
	errs := f.errs.Load()
	ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(f.calls.Load()-errs), "ok")
	ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(errs), "error")
	ch <- prometheus.MustNewConstMetric(c.procs, prometheus.GaugeValue, float64(f.shared.Processes()))
}

// budgetText formats an endpoint's rate limits for the status page:
// what the provider's headers say is left and the soonest reset, and the
// MaxTPM budget; "-" for none. The page's script formats them the same
// way (limits, in pageScript).
func budgetText(h EndpointHealth, now time.Time) string {
	var parts []string
	if p := h.Provider; p != nil {
		var left []string
		if p.RemainingRequests >= 0 {
			left = append(left, strconv.FormatInt(p.RemainingRequests, 10)+" req")
		}
		if p.RemainingTokens >= 0 {
			left = append(left, strconv.FormatInt(p.RemainingTokens, 10)+" tok")
		}
		var reset time.Duration
		for _, r := range []time.Time{p.RequestsReset, p.TokensReset} {
			if at := r.Sub(now); !r.IsZero() && at > 0 && (reset == 0 || at < reset) {
				reset = at
			}
		}
		if len(left) > 0 {
			s := strings.Join(left, ", ") + " left"
			if reset > 0 {
				s += " (resets in " + humanDuration(reset) + ")"
			}
			parts = append(parts, s)
		}
	}
	if h.TokenBudget >= 0 {
		parts = append(parts, "TPM budget "+strconv.FormatInt(int64(math.Floor(h.TokenBudget)), 10))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}
