// Package failover gives any HTTP client of an OpenAI-compatible API
// transparent failover across several endpoints: base URLs and API keys,
// each with a priority, a weight, a rate limit, a per-attempt timeout and a
// circuit breaker.
//
// A [Transport] is an [http.RoundTripper]. Set it as an [http.Client]'s
// Transport (or wrap an existing client with [WrapClient]) and hand that
// client to an SDK such as github.com/sashabaranov/go-openai or
// github.com/openai/openai-go. Each request under a routed base URL (by
// default https://api.openai.com/v1) is rewritten onto the chosen endpoint:
// host, path prefix and Authorization. When an attempt fails (connection
// error, timeout, 5xx, 429, 401, ...) the request goes at once to the next
// eligible endpoint; the calling code does not change.
package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/failover-go/failover/internal/urlpath"
)

// Config configures a [Transport]. Only Endpoints is required; every other
// zero field means the documented default. [New] copies what it needs, so a
// Config may be changed or reused after New without effect on the Transport.
type Config struct {
	// Endpoints are the upstreams, at least one. See [Endpoint].
	Endpoints []Endpoint

	// MaxRetries is how many extra attempts a request may make after its
	// first, across all endpoints, at most 1000. Zero means the default,
	// 3; negative means none: one attempt per request, no failover.
	MaxRetries int

	// Base sends the rewritten requests, and passes through untouched the
	// requests that are not routed. Nil means http.DefaultTransport.
	Base http.RoundTripper

	// Registerer receives the Transport's Prometheus metrics. Nil means no
	// metrics are registered (and none are collected). The global registry
	// is never used unless passed here. One registry serves one Transport:
	// New fails, leaving the registry unchanged, when the metrics are
	// already registered there. The metrics, whose endpoint label
	// is the endpoint's Name and whose outcome label is the status code
	// ("other" outside 100-599), or "error", "timeout", or "canceled" when
	// the caller gave up before a response arrived (never a path, a model,
	// a key or an error text):
	//
	//	failover_attempts_total{endpoint,outcome}       counter
	//	failover_attempt_duration_seconds{endpoint}     histogram, until the response headers
	//	failover_attempts_in_flight{endpoint}           gauge
	//	failover_breaker_state{endpoint}                gauge: 0 closed, 1 half-open, 2 open
	//	failover_cooldowns_total{endpoint}              counter: cooldowns started (429, Retry-After)
	//	failover_rate_limit_spillovers_total{endpoint}  counter: requests that found it at its rate limit
	//	failover_wait_seconds{reason}                   histogram: waits before an attempt, by
	//	                                                rate_limit, cooldown, breaker_open or backoff
	//	failover_requests_failed_over_total             counter: answered after a failed attempt
	//	failover_requests_exhausted_total               counter: ended without a successful attempt
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
	// copied). A larger body is sent once, with no failover. Zero means
	// 8 MiB; negative means never buffer.
	MaxBodyBuffer int64

	// MaxErrorBody is how much of a response body with status 300 or above
	// is read into memory, so that the classifier can inspect it and the
	// connection is released while later attempts run. A longer error body
	// reaches the caller whole when its attempt is the request's last, and
	// cut at this size when a later attempt ran. (A 2xx response that a
	// custom Classifier fails is not read: when a later attempt runs, its
	// body is dropped.) Zero means 1 MiB.
	MaxErrorBody int64

	// EndpointHeader, when set, names a response header that every
	// response of a routed request carries, set to the Name of the
	// endpoint that answered (for instance "Failover-Endpoint"), so that
	// a caller, or a client of the proxy, can tell which served it. It
	// must be a valid header name. Empty means no such header.
	EndpointHeader string
}

// BreakerConfig configures the circuit breaker of each endpoint (a
// github.com/sony/gobreaker/v2 two-step breaker). The zero value means the
// defaults below.
type BreakerConfig struct {
	// FailureThreshold is how many consecutive failed attempts open the
	// breaker. Zero means 5. A rejected key (401) opens it at once
	// whatever this is.
	FailureThreshold int

	// OpenTimeout is how long an open breaker refuses requests before it
	// lets trial requests through (half-open). Zero means 1 minute.
	OpenTimeout time.Duration

	// HalfOpenRequests is how many trial requests a half-open breaker lets
	// through; that many consecutive successes close it, and one failure
	// opens it again. Zero means 1.
	HalfOpenRequests int
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
	defaultFailures      = 5
	defaultOpenTimeout   = time.Minute
)

// Transport is an [http.RoundTripper] that routes requests under the
// configured base URLs to the healthiest preferred endpoint and fails over
// to the next when one fails. Create one with [New]; the zero value is not
// usable. A Transport is safe for concurrent use, and its configuration
// never changes after New.
type Transport struct {
	base       http.RoundTripper
	endpoints  []*endpoint // in configuration order
	tiers      []*tier     // enabled endpoints by priority, lowest first
	router     router
	attempts   int // 1 + MaxRetries
	classify   Classifier
	backoff    retryablehttp.Backoff
	backoffMin time.Duration
	backoffMax time.Duration
	maxWait    time.Duration
	cooldown   time.Duration
	maxCool    time.Duration
	maxBody    int64
	maxErrBody int64
	// endpointHeader is Config.EndpointHeader, canonical; "" for none.
	endpointHeader string
	logger         *slog.Logger
	metrics        *metrics

	// now and sleep are the clock; tests replace them. epoch is the
	// monotonic origin of attempt latencies.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	epoch time.Time
}

// New validates cfg and returns a Transport for it. The error names every
// field that is wrong (never quoting a key); New never panics on bad input.
func New(cfg Config) (*Transport, error) {
	var errs []error
	eps, err := prepareEndpoints(cfg.Endpoints)
	if err != nil {
		errs = append(errs, err)
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"BackoffMin", cfg.BackoffMin}, {"BackoffMax", cfg.BackoffMax}, {"Cooldown", cfg.Cooldown},
		{"MaxCooldown", cfg.MaxCooldown}, {"Breaker.OpenTimeout", cfg.Breaker.OpenTimeout}} {
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
	clientBases := cfg.ClientBaseURLs
	if clientBases == nil {
		clientBases = []string{DefaultClientBaseURL}
	}
	rt, err := newRouter(clientBases, eps) // eps may be nil: still checks clientBases
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	t := &Transport{
		base:           cfg.Base,
		endpoints:      eps,
		router:         rt,
		attempts:       1 + cfg.MaxRetries,
		classify:       cfg.Classifier,
		backoff:        cfg.Backoff,
		backoffMin:     orDefault(cfg.BackoffMin, defaultBackoffMin),
		backoffMax:     orDefault(cfg.BackoffMax, defaultBackoffMax),
		maxWait:        orDefault(cfg.MaxWait, defaultMaxWait),
		cooldown:       orDefault(cfg.Cooldown, defaultCooldown),
		maxCool:        orDefault(cfg.MaxCooldown, defaultMaxCooldown),
		maxBody:        orDefault(cfg.MaxBodyBuffer, defaultMaxBodyBuffer),
		maxErrBody:     orDefault(cfg.MaxErrorBody, defaultMaxErrorBody),
		endpointHeader: http.CanonicalHeaderKey(cfg.EndpointHeader),
		logger:         cfg.Logger,
		now:            time.Now,
		sleep:          sleepContext,
		epoch:          time.Now(),
	}
	switch {
	case cfg.MaxRetries == 0:
		t.attempts = 1 + defaultMaxRetries
	case cfg.MaxRetries < 0:
		t.attempts = 1
	}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if t.classify == nil {
		t.classify = DefaultClassifier
	}
	if t.backoff == nil {
		t.backoff = DefaultBackoff
	}
	if t.backoffMax < t.backoffMin {
		t.backoffMax = t.backoffMin
	}
	if cfg.MaxWait < 0 {
		t.maxWait = 0
	}
	if cfg.MaxBodyBuffer < 0 {
		t.maxBody = 0
	}
	// A limit is checked by reading limit+1 bytes: keep that from
	// overflowing.
	t.maxBody = min(t.maxBody, math.MaxInt64-1)
	t.maxErrBody = min(t.maxErrBody, math.MaxInt64-1)
	for _, e := range eps {
		t.initBreaker(e, cfg.Breaker)
	}
	// Registered last: a scrape may come at once and reads the breakers.
	if t.metrics, err = newMetrics(cfg.Registerer, t); err != nil {
		return nil, err
	}
	for _, e := range eps {
		e.m = t.metrics.forEndpoint(e)
	}
	t.tiers = buildTiers(eps)
	return t, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// RoundTrip sends req to the chosen endpoint, failing over to the next when
// an attempt fails, as [Transport] describes; a request not under a routed
// base URL goes to the base transport untouched. req is never modified, and
// its body is closed exactly once. The returned response's Request is req
// (the attempt's own request carries the endpoint's key).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	m, ok := t.router.match(req.URL)
	if !ok {
		return t.base.RoundTrip(req)
	}
	if urlpath.HasDotSegment(m.rest) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errDotSegment
	}
	ctx := req.Context()
	var body replayBody
	if err := body.init(req, t.maxBody); err != nil {
		return nil, err
	}
	attempts := t.attempts
	if !body.replayable {
		attempts = 1
	}
	var (
		st         requestState
		last       *http.Response // the last failed response
		lastPrefix []byte         // the first MaxErrorBody bytes of its body
		lastBy     *endpoint      // the endpoint that sent it
		errs       []error        // why each attempt failed
		cause      error          // why the loop ended without a response to return
		held       heldAttempt    // the breaker's ticket of the attempt in progress
	)
	defer held.release()
	for n := 1; n <= attempts; n++ {
		e, tk, err := t.choose(ctx, &st)
		if err != nil {
			cause = err
			break
		}
		held.hold(e, tk)
		t.flushTransitions(e)
		if last != nil {
			// Another attempt runs: hold the last failure in memory
			// (bounded) and release its connection.
			last = keepBody(last, lastPrefix)
		}
		rc, err := body.next()
		if err != nil {
			e.settle(held.take().done, errNotSent)
			cause = err
			break
		}
		out := rewrite(ctx, req, e, m)
		out.Body, out.GetBody = rc, body.getBody
		resp, errBody, err := t.send(e, out)
		err = redactURLError(err)
		if ctx.Err() != nil {
			// The caller gave up: no fault of the endpoint's.
			if resp != nil {
				e.m.attempt(resp, nil)
			} else {
				e.m.canceled()
			}
			e.settle(held.take().done, errNotSent)
			closeBody(resp)
			cause = context.Cause(ctx)
			errs = append(errs, &AttemptError{Endpoint: e.name, Attempt: n, Err: cause})
			break
		}
		v := t.classify(resp, decodedPrefix(resp, errBody, t.maxErrBody), err)
		t.record(e, n, v, resp, err)
		if !v.Outcome.Failed() {
			e.reportSuccess(held.take())
			t.flushTransitions(e)
			closeBody(last)
			body.close()
			t.metrics.requestDone(len(errs), true)
			return t.deliver(resp, req, e), nil
		}
		t.reportFailure(e, v, resp, held.take())
		st.tried.add(e.index)
		if v.AvoidEndpoint {
			st.avoid.add(e.index)
		}
		ae := &AttemptError{Endpoint: e.name, Attempt: n, Outcome: v.Outcome, Err: err}
		if resp != nil {
			ae.StatusCode = resp.StatusCode
			closeBody(last)
			last, lastPrefix, lastBy = resp, errBody, e
		}
		errs = append(errs, ae)
	}
	body.close()
	t.metrics.requestDone(len(errs), false)
	if last != nil && ctx.Err() == nil {
		return t.deliver(last, req, lastBy), nil
	}
	closeBody(last)
	if cause == nil {
		cause = ErrAttemptsExhausted
	}
	return nil, &Error{Attempts: errs, Err: cause}
}

// deliver readies a response e sent to req for the caller: its Request is
// req, not the attempt's (which carries the endpoint's key), and it names
// e in the EndpointHeader, if any.
func (t *Transport) deliver(resp *http.Response, req *http.Request, e *endpoint) *http.Response {
	resp.Request = req
	if t.endpointHeader != "" {
		if resp.Header == nil {
			resp.Header = make(http.Header, 1)
		}
		resp.Header[t.endpointHeader] = []string{e.name}
	}
	return resp
}

// heldAttempt keeps the breaker's ticket of the attempt in progress until
// it is settled. Should a panic (in the base, the classifier or a log
// handler) unwind RoundTrip first, release frees the breaker's slot: a
// half-open breaker would otherwise wait for its trial forever.
type heldAttempt struct {
	e  *endpoint
	tk ticket
	on bool // tk is held and not yet settled
}

func (h *heldAttempt) hold(e *endpoint, tk ticket) { h.e, h.tk, h.on = e, tk, true }

// take returns the ticket for settling, and forgets it.
func (h *heldAttempt) take() ticket {
	h.on = false
	return h.tk
}

// release settles an attempt a panic left unsettled.
func (h *heldAttempt) release() {
	if h.on {
		h.e.settle(h.take().done, errNotSent)
	}
}

// send makes one attempt on e. For a response with status 300 or above it
// reads up to MaxErrorBody bytes of the body into errBody. The per-attempt
// timeout, if any, covers the wait for the headers and that read; it never
// cuts a body returned to the caller.
func (t *Transport) send(e *endpoint, out *http.Request) (resp *http.Response, errBody []byte, err error) {
	var (
		timer  *time.Timer
		cancel context.CancelCauseFunc
	)
	if e.timeout > 0 {
		var ctx context.Context
		ctx, cancel = context.WithCancelCause(out.Context())
		timer = time.AfterFunc(e.timeout, func() { cancel(ErrAttemptTimeout) })
		out = out.WithContext(ctx)
	}
	e.beginAttempt()
	// time.Since on a fixed epoch reads only the monotonic clock: half
	// the cost of time.Now on virtual machines.
	start := time.Since(t.epoch)
	resp, err = t.base.RoundTrip(out)
	e.endAttempt(time.Since(t.epoch) - start) // the headers are in
	switch {
	case err != nil:
	case resp == nil:
		err = errNilResponse
	case resp.Body == nil:
		resp.Body = http.NoBody // as http.Client would make it
	}
	if err == nil && resp.StatusCode >= 300 {
		errBody, resp.Body = readPrefix(resp.Body, t.maxErrBody)
	}
	if timer == nil {
		return resp, errBody, err
	}
	if !timer.Stop() {
		// The timer fired: whatever arrived, the attempt timed out.
		closeBody(resp)
		cancel(nil)
		return nil, nil, &timeoutError{after: e.timeout}
	}
	if err != nil {
		cancel(nil)
		return nil, nil, err
	}
	c := &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	if w, ok := resp.Body.(io.Writer); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (WebSocket) must stay writable.
		resp.Body = &cancelOnCloseRW{cancelOnClose: c, w: w}
	} else {
		resp.Body = c
	}
	return resp, errBody, nil
}

// CloseIdleConnections closes the idle connections of the base transport
// when it has that method (http.Transport does), so that
// http.Client.CloseIdleConnections reaches through a Transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// closeBody drains (bounded) and closes a discarded response's body so its
// connection can be reused.
func closeBody(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	_ = resp.Body.Close()
}

// drainLimit bounds how much of a discarded body is read to reuse its
// connection.
const drainLimit = 4 << 10
