package failover

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a [Transport]. Only Endpoints is required; every other
// zero field means the documented default. [New] copies what it needs, so a
// Config may be changed or reused after New without effect on the Transport.
type Config struct {
	// Endpoints are the upstreams, at least one. See [Endpoint].
	Endpoints []Endpoint

	// MaxRetries is how many extra attempts a request may make after its
	// first, across all endpoints, at most 1000. Zero means the default,
	// 3; negative means none: one attempt per request, no failover. (The
	// environment's OPENAI_MAX_RETRIES=0 means none: [ConfigFromEnv]
	// turns it into -1.)
	MaxRetries int

	// Base sends the rewritten requests, and passes through untouched the
	// requests that are not routed. Nil means http.DefaultTransport.
	Base http.RoundTripper

	// Registerer receives the Transport's Prometheus metrics. Nil means no
	// metrics are registered (and none are collected). The global registry
	// is never used unless passed here. One registry serves one Transport:
	// New fails, leaving the registry unchanged, when the metrics are
	// already registered there. The metrics, whose endpoint label is the
	// endpoint's Name and whose outcome label is the status code ("other"
	// outside 100-599), or "error", "timeout", "first_token_timeout", or
	// "canceled" when the caller gave up before a response arrived (never
	// a path, a model, a key or an error text):
	//
	//	failover_attempts_total{endpoint,outcome}       counter
	//	failover_attempt_duration_seconds{endpoint}     histogram, until the response headers
	//	failover_attempts_in_flight{endpoint}           gauge
	//	failover_breaker_state{endpoint}                gauge: 0 closed, 1 half-open, 2 open
	//	failover_cooldowns_total{endpoint}              counter: cooldowns started (429, Retry-After)
	//	failover_rate_limit_spillovers_total{endpoint}  counter: requests that found it at its rate limit
	//	failover_wait_seconds{reason}                   histogram: waits before an attempt, by
	//	                                                rate_limit, cooldown, breaker_open, backoff or pacing
	//	failover_requests_failed_over_total             counter: answered after a failed attempt
	//	failover_requests_exhausted_total               counter: ended without a successful attempt
	//	failover_first_token_seconds{endpoint}          histogram: to a stream's first content event
	//	failover_streams_total{endpoint,outcome}        counter: streams by how they ended (complete,
	//	                                                truncated, stalled, canceled, error)
	//	failover_probes_total{endpoint,result}          counter: recovery probes by result (success,
	//	                                                failure, key_rejected, error)
	//	failover_probe_state{endpoint}                  gauge: 0 not probed, 1 scheduled, 2 probing
	//	failover_slow_start_factor{endpoint}            gauge: share of its weight taken now (1 when
	//	                                                not in slow start)
	//	failover_latency_estimate_seconds{endpoint}     gauge: the least-latency balancer's estimate
	//	failover_model_skips_total{endpoint}            counter: requests that passed it by for a model
	//	                                                it does not serve (Endpoint.Models)
	//	failover_pacing_skips_total{endpoint}           counter: requests that found it out of the
	//	                                                provider's rate limit (its x-ratelimit-* headers)
	//	failover_token_estimate_ratio{endpoint}         histogram: token estimate / usage counted
	//	failover_provider_remaining{endpoint,budget}    gauge: the provider's remaining requests or tokens
	//	failover_shared_leases_total{endpoint,budget}   counter: leases from the fleet's shared budget
	//	failover_shared_degraded                        gauge: 1 while Shared is unreachable
	//	failover_shared_calls_total{result}             counter: calls to Shared, ok or error
	//	failover_shared_processes                       gauge: the fleet's processes last seen
	Registerer prometheus.Registerer

	// Logger receives the Transport's logs: breaker state changes and
	// cooldowns at Warn, each failed attempt at Debug. Nil means silent. No
	// log line carries an API key or a request or response body.
	Logger *slog.Logger

	// ClientBaseURLs are the base URLs the calling code sends to, whose
	// requests are routed to the endpoints. Nil means
	// {[DefaultClientBaseURL]}; an empty non-nil slice means none. A
	// request under any endpoint's own BaseURL is routed too; any other
	// request passes to Base untouched.
	ClientBaseURLs []string

	// Breaker configures each endpoint's circuit breaker. The zero value
	// means the defaults documented on [BreakerConfig].
	Breaker BreakerConfig

	// Backoff computes the pause before a request tries again an endpoint
	// it has already tried, after every eligible endpoint has failed it.
	// It is called with BackoffMin, BackoffMax and the number of rounds
	// already made (0 first). Nil means [DefaultBackoff]. A failover to an
	// endpoint not yet tried never pauses.
	Backoff retryablehttp.Backoff

	// BackoffMin is the first backoff step. Zero means 200ms.
	BackoffMin time.Duration

	// BackoffMax caps one backoff step. Zero means 5s.
	BackoffMax time.Duration

	// MaxWait bounds the total time one request spends waiting (in
	// backoff, for a rate limiter, for a cooldown to end, or for an open
	// breaker to let a trial through); the request's context bounds it
	// too. Zero means 10s; negative means never wait:
	// when no endpoint can take a request at once, it ends at once.
	MaxWait time.Duration

	// Cooldown is how long an endpoint rests after a 429 that names no
	// delay (in retry-after-ms, Retry-After or x-ratelimit-reset-*); it
	// doubles with each consecutive such 429, up to MaxCooldown. Zero
	// means 1s.
	Cooldown time.Duration

	// MaxCooldown caps every cooldown, including one a response's headers
	// ask for. Zero means 1 minute.
	MaxCooldown time.Duration

	// Classifier decides what each attempt's result means. Nil means
	// [DefaultClassifier].
	Classifier Classifier

	// MaxBodyBuffer is the largest request body buffered for replay when
	// the request has no GetBody (requests built by http.NewRequest from
	// a bytes.Buffer, bytes.Reader or strings.Reader have one and are never
	// copied). A larger body is streamed: it fails over only while no
	// attempt has read any of it (see [ErrBodyTooLarge]). Zero means
	// 8 MiB; negative means never buffer.
	//
	// When the configuration routes by model (an endpoint has Models, or
	// is an Azure endpoint with an APIVersion), every request body up to
	// this size is read into memory once, GetBody or not, to find its
	// model and rename it per endpoint. A larger body is not read for
	// its model: it is sent as a request without one (no endpoint skips
	// it, no name is rewritten, an Azure deployments endpoint gets it
	// without a deployment in its path), and without GetBody it is sent
	// once. Raise MaxBodyBuffer above the largest request that names a
	// model (audio uploads go to 25 MB). Negative is then an error.
	MaxBodyBuffer int64

	// MaxErrorBody is how much of a response body with status 300 or above
	// is read into memory, so that the classifier can inspect it and the
	// connection is released while later attempts run. A longer error body
	// reaches the caller whole when its attempt is the request's last, and
	// cut at this size when a later attempt ran. (A 2xx response that a
	// custom Classifier fails is not read: when a later attempt runs, its
	// body is dropped.) Zero means 1 MiB.
	MaxErrorBody int64

	// FirstTokenTimeout is the FirstTokenTimeout of every endpoint that
	// sets none: the longest an event stream may take, from sending the
	// attempt, to send its first event that carries content; the attempt
	// fails over if it has not reached the caller. Zero means none;
	// negative is an error. See [Endpoint].FirstTokenTimeout.
	FirstTokenTimeout time.Duration

	// StreamIdleTimeout is the StreamIdleTimeout of every endpoint that
	// sets none: the longest an event stream may go without an event that
	// carries content while the caller reads, from one content event to
	// the next and, without a FirstTokenTimeout, from the headers to the
	// first. Zero means none; negative is an error. See
	// [Endpoint].StreamIdleTimeout.
	StreamIdleTimeout time.Duration

	// AllowTruncatedStreams, when true, passes a chat completions,
	// completions or Responses API stream that ends cleanly before its
	// terminal event ("data: [DONE]", response.completed, ...) to the
	// caller as complete. The zero value, false, makes its last read
	// return an error matching io.ErrUnexpectedEOF and naming the
	// endpoint, and counts a failure for the endpoint: a proxy that
	// dropped the tail must not pass a truncated answer as whole.
	AllowTruncatedStreams bool

	// OnAttempt, when set, is called after each attempt of a routed
	// request, in the goroutine of the request's RoundTrip, with the
	// request's context: which endpoint was tried, what the classifier
	// said, the status or error, and how long it took. A proxy or a
	// tracer can log or record each attempt with it (the request's
	// context carries the caller's own values). It must return quickly
	// and be safe for concurrent use. Nil means none.
	OnAttempt func(ctx context.Context, a AttemptInfo)

	// Shared, when set, shares the endpoints' rate budgets (MaxRPS and
	// MaxTPM become the fleet's totals) and health (open breakers,
	// cooldowns, pacing) with the other processes of a fleet that use the
	// same Shared state, endpoints matched by Name; see [Shared] and the
	// README's "Running many replicas". The package
	// github.com/failover-go/failover/redisshare provides one on Redis.
	// Nil means each process alone. It cannot change after New.
	Shared Shared

	// SharedTimeout bounds each call to Shared. Zero means
	// [DefaultSharedTimeout], 10ms; negative is an error.
	SharedTimeout time.Duration

	// EndpointHeader, when set, names a response header that every
	// response of a routed request carries, set to the Name of the
	// endpoint that answered (for instance "Failover-Endpoint"), so that
	// a caller, or a client of the proxy, can tell which served it. It
	// must be a valid header name. Empty means no such header.
	EndpointHeader string

	// Probe configures recovery probes, which find out in the background
	// whether an endpoint out of the rotation is back, so that no user
	// request is its trial. The zero value means none. See
	// [ProbeConfig]; call [Transport.Close] to stop them.
	Probe ProbeConfig

	// SlowStart, when positive, is the window over which an endpoint
	// whose breaker closes again, or that [Transport.Update] adds, grows
	// its share of its tier's traffic from a tenth of its weight to all of
	// it, in proportion to the time (as Envoy's slow start does), so that
	// an endpoint that just recovered is not flooded. It does not apply
	// while every endpoint of the tier starts. Zero means none; negative
	// is an error.
	SlowStart time.Duration

	// Balancer chooses which endpoint of a tier a request tries first.
	// The zero value means [BalancerRoundRobin]; see
	// [BalancerLeastLatency].
	Balancer Balancer

	// Affinity keeps related requests on one endpoint of their tier. The
	// zero value, [AffinityNone], means none; see
	// [AffinityPromptCacheKey].
	Affinity Affinity
}

// Defaults for the zero fields of Config.
const (
	defaultMaxRetries    = 3
	maxRetriesLimit      = 1000
	defaultBackoffMin    = 200 * time.Millisecond
	defaultBackoffMax    = 5 * time.Second
	defaultMaxWait       = 10 * time.Second
	defaultCooldown      = time.Second
	defaultMaxCooldown   = time.Minute
	defaultMaxBodyBuffer = 8 << 20
	defaultMaxErrorBody  = 1 << 20
)

// New validates cfg and returns a Transport for it. The error names every
// field that is wrong (never quoting a key); New never panics on bad input.
func New(cfg Config) (*Transport, error) {
	return newTransport(cfg, newRealClock())
}

// newTransport is New on the clock c.
func newTransport(cfg Config, c clock) (*Transport, error) {
	p, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		base:       cfg.Base,
		registerer: cfg.Registerer,
		logger:     cfg.Logger,
		clock:      c,
	}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	t.metrics = newMetrics(cfg.Registerer != nil, t)
	t.heal.init(t)
	t.fleet = newFleet(t, cfg.Shared, cfg.SharedTimeout)
	if t.fleet != nil {
		t.heal.claim = t.fleet.claimProbe // one process of the fleet probes each endpoint
	}
	t.snap.Store(t.build(p, nil))
	// Registered last: a scrape may come at once and reads the endpoints.
	if err := t.metrics.register(cfg.Registerer); err != nil {
		if t.fleet != nil {
			t.fleet.close() // no Transport: no subscriber
		}
		return nil, err
	}
	return t, nil
}

// prepared is a Config that passed validation, with every default filled
// in and each endpoint's BaseURL parsed.
type prepared struct {
	cfg         Config
	endpoints   []Endpoint // defaulted, named
	targets     []target   // each endpoint's, from its parsed BaseURL
	router      router
	clientBases []string // ClientBaseURLs, defaulted, without their queries
}

// prepare validates cfg and fills its defaults. The error names every
// problem of every field and endpoint.
func prepare(cfg Config) (*prepared, error) {
	p := &prepared{cfg: cfg}
	errs := p.prepareEndpoints(cfg.Endpoints)
	errs = append(errs, checkSettings(cfg)...)
	clientBases := cfg.ClientBaseURLs
	if clientBases == nil {
		clientBases = []string{DefaultClientBaseURL}
	}
	var err error
	if p.router, err = newRouter(clientBases, p.targets); err != nil {
		errs = append(errs, err)
	}
	for _, b := range clientBases {
		p.clientBases = append(p.clientBases, redactURL(b))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p.cfg = cfg.withDefaults()
	return p, nil
}

// prepareEndpoints checks, defaults and names the endpoints into p.
func (p *prepared) prepareEndpoints(eps []Endpoint) []error {
	switch {
	case len(eps) == 0:
		return []error{ErrNoEndpoints}
	case len(eps) > math.MaxUint16:
		return []error{fmt.Errorf("failover: %d endpoints configured, at most %d supported", len(eps), math.MaxUint16)}
	}
	var errs []error
	p.endpoints = make([]Endpoint, len(eps))
	urls := make([]*url.URL, len(eps))
	hosts := make([]string, len(eps))
	for i, e := range eps {
		if problems := e.check(i); len(problems) > 0 {
			errs = append(errs, problems...)
			continue
		}
		urls[i], _ = parseBaseURL(e.BaseURL) // check parsed it
		hosts[i] = urls[i].Host
		p.endpoints[i] = e.withDefaults()
	}
	if len(errs) > 0 {
		p.endpoints = nil
		return errs
	}
	if errs := nameEndpoints(p.endpoints, hosts); len(errs) > 0 {
		return errs
	}
	if !slices.ContainsFunc(p.endpoints, func(e Endpoint) bool { return !e.Disabled }) {
		return []error{errors.New("failover: every endpoint is Disabled; at least one must take requests (Disabled is for switching one off)")}
	}
	p.targets = make([]target, len(eps))
	for i, u := range urls {
		p.targets[i] = newTarget(p.endpoints[i], u)
	}
	return nil
}

// checkSettings returns the problems of cfg's fields other than Endpoints
// and ClientBaseURLs.
func checkSettings(cfg Config) []error {
	var errs []error
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"BackoffMin", cfg.BackoffMin}, {"BackoffMax", cfg.BackoffMax}, {"Cooldown", cfg.Cooldown},
		{"MaxCooldown", cfg.MaxCooldown}, {"Breaker.OpenTimeout", cfg.Breaker.OpenTimeout},
		{"FirstTokenTimeout", cfg.FirstTokenTimeout}, {"StreamIdleTimeout", cfg.StreamIdleTimeout},
		{"SharedTimeout", cfg.SharedTimeout}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("failover: %s %v is negative", f.name, f.v))
		}
	}
	if cfg.Breaker.FailureThreshold < 0 {
		errs = append(errs, fmt.Errorf("failover: Breaker.FailureThreshold %d is negative", cfg.Breaker.FailureThreshold))
	}
	if cfg.Breaker.HalfOpenRequests < 0 {
		errs = append(errs, fmt.Errorf("failover: Breaker.HalfOpenRequests %d is negative", cfg.Breaker.HalfOpenRequests))
	}
	if cfg.EndpointHeader != "" && !validHeaderName(cfg.EndpointHeader) {
		errs = append(errs, fmt.Errorf("failover: EndpointHeader %q is not a valid header name", cfg.EndpointHeader))
	}
	if cfg.MaxRetries > maxRetriesLimit {
		errs = append(errs, fmt.Errorf("failover: MaxRetries %d is above %d", cfg.MaxRetries, maxRetriesLimit))
	}
	if cfg.MaxErrorBody < 0 {
		errs = append(errs, fmt.Errorf("failover: MaxErrorBody %d is negative", cfg.MaxErrorBody))
	}
	errs = append(errs, checkHealing(cfg)...)
	errs = append(errs, checkModelSettings(cfg)...)
	return errs
}

// withDefaults returns cfg with its zero fields (but Endpoints, Base,
// Registerer and Logger) given their defaults, and the values that mean
// "none" made explicit: MaxRetries -1 for no retry, MaxWait and
// MaxBodyBuffer 0 for none.
func (cfg Config) withDefaults() Config {
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = defaultMaxRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.Classifier == nil {
		cfg.Classifier = DefaultClassifier
	}
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	cfg.BackoffMin = orDefault(cfg.BackoffMin, defaultBackoffMin)
	cfg.BackoffMax = max(orDefault(cfg.BackoffMax, defaultBackoffMax), cfg.BackoffMin)
	switch {
	case cfg.MaxWait == 0:
		cfg.MaxWait = defaultMaxWait
	case cfg.MaxWait < 0:
		cfg.MaxWait = 0
	}
	cfg.Cooldown = orDefault(cfg.Cooldown, defaultCooldown)
	cfg.MaxCooldown = orDefault(cfg.MaxCooldown, defaultMaxCooldown)
	switch {
	case cfg.MaxBodyBuffer == 0:
		cfg.MaxBodyBuffer = defaultMaxBodyBuffer
	case cfg.MaxBodyBuffer < 0:
		cfg.MaxBodyBuffer = 0
	}
	cfg.MaxErrorBody = orDefault(cfg.MaxErrorBody, defaultMaxErrorBody)
	// A limit is checked by reading limit+1 bytes: keep that from
	// overflowing.
	cfg.MaxBodyBuffer = min(cfg.MaxBodyBuffer, math.MaxInt64-1)
	cfg.MaxErrorBody = min(cfg.MaxErrorBody, math.MaxInt64-1)
	cfg.EndpointHeader = http.CanonicalHeaderKey(cfg.EndpointHeader)
	cfg.Probe = cfg.Probe.withDefaults()
	return cfg
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// snapshot is one configuration of a Transport, immutable once built: a
// request loads it with one atomic read and keeps it to its end, and
// [Transport.Update] replaces it whole. Its endpoints' live states outlive
// it.
type snapshot struct {
	endpoints []*endpoint // in configuration order
	tiers     []*tier     // enabled endpoints by priority, lowest first
	router    router
	attempts  int // 1 + MaxRetries

	classify   Classifier
	backoff    retryablehttp.Backoff
	backoffMin time.Duration
	backoffMax time.Duration
	maxWait    time.Duration
	maxBody    int64
	maxErrBody int64
	// endpointHeader is Config.EndpointHeader, canonical; "" for none.
	endpointHeader string
	breakerCfg     BreakerConfig
	strictStreams  bool // !AllowTruncatedStreams
	onAttempt      func(ctx context.Context, a AttemptInfo)
	redact         *redactor // removes every secret of this configuration from error texts
	clientBases    []string  // ClientBaseURLs, for a warning
	// models routes requests by the model their body names; nil when no
	// endpoint has Models or is an Azure deployments endpoint.
	models *modelRouting

	base    http.RoundTripper
	clock   clock
	metrics *metrics

	// Healing: probes, slow start, the balancer and affinity.
	heal         *healer
	probe        ProbeConfig   // defaulted; Interval 0: no probes
	slowStart    time.Duration // 0: none
	leastLatency bool          // Balancer is BalancerLeastLatency
	affinity     bool          // Affinity is AffinityPromptCacheKey
	steered      bool          // the choice is steered by one of the three above
}

// build returns the snapshot of p. An endpoint whose Name old has keeps
// its live state, reconfigured; the others get a new one.
func (t *Transport) build(p *prepared, old *snapshot) *snapshot {
	cfg := p.cfg
	s := &snapshot{
		router:         p.router,
		attempts:       1 + cfg.MaxRetries,
		classify:       cfg.Classifier,
		backoff:        cfg.Backoff,
		backoffMin:     cfg.BackoffMin,
		backoffMax:     cfg.BackoffMax,
		maxWait:        cfg.MaxWait,
		maxBody:        cfg.MaxBodyBuffer,
		maxErrBody:     cfg.MaxErrorBody,
		endpointHeader: cfg.EndpointHeader,
		breakerCfg:     cfg.Breaker,
		strictStreams:  !cfg.AllowTruncatedStreams,
		onAttempt:      cfg.OnAttempt,
		redact:         newRedactor(p.endpoints),
		clientBases:    p.clientBases,
		base:           t.base,
		clock:          t.clock,
		metrics:        t.metrics,
	}
	s.setHealing(&t.heal, cfg)
	states := old.states()
	cool := cooldownPolicy{base: cfg.Cooldown, max: cfg.MaxCooldown}
	s.endpoints = make([]*endpoint, len(p.endpoints))
	for i, ec := range p.endpoints {
		st := states[ec.Name]
		if st == nil {
			st = newEndpointState(ec.Name, t.clock, t.logger, t.metrics, cfg.Breaker)
			t.heal.adopt(st, old != nil)
		} else {
			st.breaker.configure(cfg.Breaker)
		}
		e := &endpoint{
			endpointState: st,
			cfg:           ec,
			index:         i,
			target:        p.targets[i],
			timeout:       ec.Timeout,
			firstToken:    cmp.Or(ec.FirstTokenTimeout, cfg.FirstTokenTimeout),
			streamIdle:    cmp.Or(ec.StreamIdleTimeout, cfg.StreamIdleTimeout),
			cool:          cool,
			limiter:       st.limiterFor(ec),
			probes:        cfg.Probe.Interval > 0 && !ec.Disabled,
			hrw:           nameHash(ec.Name),
			budget:        st.budgetFor(ec, t.fleet),
		}
		e.timed = e.timeout > 0 || e.firstToken > 0 || e.streamIdle > 0
		s.endpoints[i] = e
	}
	s.tiers = buildTiers(s.endpoints)
	s.models = newModelRouting(s.endpoints)
	return s
}

// states returns the live state of each endpoint of s, by name; none for a
// nil s.
func (s *snapshot) states() map[string]*endpointState {
	if s == nil {
		return nil
	}
	m := make(map[string]*endpointState, len(s.endpoints))
	for _, e := range s.endpoints {
		m[e.name] = e.endpointState
	}
	return m
}
