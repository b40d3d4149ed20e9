package failover

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Transport is an [http.RoundTripper] that routes requests under the
// configured base URLs to the healthiest preferred endpoint and fails over
// to the next when one fails. Create one with [New]; the zero value is not
// usable. A Transport is safe for concurrent use; [Transport.Update]
// changes its configuration while it serves.
type Transport struct {
	snap atomic.Pointer[snapshot] // the configuration; replaced whole by Update

	// Fixed at New.
	base       http.RoundTripper
	registerer prometheus.Registerer
	logger     *slog.Logger
	metrics    *metrics
	clock      clock
	fleet      *fleet // Config.Shared's link; nil without (shared.go)

	mu     sync.Mutex // serializes Update
	warned sync.Map   // hosts warnUnrouted has warned of
	heal   healer     // recovery probes and slow start, across configurations
}

// RoundTrip sends req to the chosen endpoint, failing over to the next when
// an attempt fails, as [Transport] describes; a request not under a routed
// base URL goes to the base transport untouched. req is never modified, and
// its body is closed exactly once. The returned response's Request is req
// (the attempt's own request carries the endpoint's key).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	s := t.snap.Load()
	m, routed, err := s.router.route(req.URL)
	if !routed {
		if t.logger != nil {
			t.warnUnrouted(s, req.URL)
		}
		return t.base.RoundTrip(req)
	}
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	r := request{s: s, req: req, ctx: req.Context(), m: m}
	if s.models != nil {
		if resp, err := r.byModel(s.models); resp != nil || err != nil {
			return resp, err
		}
	} else if err := r.body.init(req, s.maxBody); err != nil {
		return nil, err
	}
	defer r.body.close()
	if s.affinity {
		r.st.key = affinityKey(req, &r.body, cmp.Or(s.maxBody, defaultMaxBodyBuffer))
	}
	r.st.tokens = newTokenEstimate(&r.body, m.rest) // after affinity: reads what it read

	for n := 1; n <= s.attempts && r.cause == nil; n++ {
		e, done, err := s.choose(r.ctx, &r.st)
		if err != nil {
			r.cause = err
			break
		}
		if resp := r.attempt(n, e, done); resp != nil {
			return resp, nil
		}
	}
	return r.fail()
}

// request is one routed request on its way through its attempts.
type request struct {
	s      *snapshot // the configuration it started on, to its end
	req    *http.Request
	ctx    context.Context
	m      match
	body   replayBody
	st     requestState
	failed failures
	cause  error         // why the attempts stopped without a response to return
	sent   time.Duration // when the current attempt was sent, on the clock's since
}

// failures is what failed attempts leave for the next: the last failed
// response (returned if no attempt succeeds), the first MaxErrorBody bytes
// of its body, the endpoint that sent it, and why each attempt failed.
type failures struct {
	last   *http.Response
	prefix []byte
	by     *endpoint
	errs   []error
}

// attempt makes attempt n of the request on e, which e's breaker admitted
// with done: send, classify, record, settle. It returns the response for
// the caller when the attempt succeeded; otherwise nil, having kept what
// the next attempt needs (or, when the request cannot go on, the cause).
func (r *request) attempt(n int, e *endpoint, done func(error)) *http.Response {
	result := errNotSent // what the breaker hears, also if a panic unwinds
	defer func() { e.breaker.settle(done, result) }()
	if r.failed.last != nil {
		// Another attempt runs: hold the last failure in memory
		// (bounded) and release its connection.
		r.failed.last = keepBody(r.failed.last, r.failed.prefix)
	}
	rc, err := r.body.next()
	if err != nil {
		r.cause = err
		return nil
	}
	ctx, cancel := r.ctx, context.CancelCauseFunc(nil)
	if e.timed {
		// The attempt's own context, which its timeouts cancel; made
		// before the copy, which carries it.
		ctx, cancel = context.WithCancelCause(ctx)
	}
	out := rewrite(ctx, r.req, &e.target, r.m)
	out.Body, out.GetBody = rc, r.body.getBody
	if r.st.model != nil {
		r.st.model.apply(out, e)
	}
	resp, errBody, err := r.send(e, out, cancel)
	if r.ctx.Err() != nil {
		r.canceled(n, e, resp)
		return nil
	}
	v := r.s.classify(resp, decodedPrefix(resp, errBody, r.s.maxErrBody), err)
	e.record(n, v, resp, err)
	if r.st.model != nil && v.Outcome.Failed() {
		r.st.model.noteFailure(e)
	}
	r.afterResponse(e, resp, v.Outcome.Failed())
	r.s.observe(r.ctx, e, n, v, resp, err, false, r.sent)
	result = v.breakerResult()
	if result == errKeyRejected {
		// One request opens at most one breaker at once: a second
		// refused key counts as an ordinary failure.
		if r.st.keyRefused {
			result = errFailed
		}
		r.st.keyRefused = true
	}
	if !v.Outcome.Failed() {
		closeBody(r.failed.last)
		r.s.metrics.requestDone(len(r.failed.errs), true)
		r.watch(e, resp)
		r.tapUsage(e, resp)
		return r.s.deliver(resp, r.req, e)
	}
	if resp != nil && (v.Outcome == OutcomeThrottled || resp.StatusCode == http.StatusServiceUnavailable) {
		e.startCooldown(resp)
	}
	r.keep(n, e, v, resp, errBody, err)
	return nil
}

// canceled ends the request after its caller gave up during attempt n on
// e: no fault of the endpoint's.
func (r *request) canceled(n int, e *endpoint, resp *http.Response) {
	if resp != nil {
		e.m.attempt(resp, nil)
	} else {
		e.m.canceled()
	}
	closeBody(resp)
	r.cause = context.Cause(r.ctx)
	r.failed.errs = append(r.failed.errs, &AttemptError{Endpoint: e.name, Attempt: n, Err: r.cause})
	r.s.observe(r.ctx, e, n, Verdict{}, resp, r.cause, true, r.sent)
}

// keep records failed attempt n on e for the attempts that follow: e is
// tried in this round (and avoided, when the verdict says so), its
// response becomes the last failure, and why it failed joins the errors.
func (r *request) keep(n int, e *endpoint, v Verdict, resp *http.Response, errBody []byte, err error) {
	r.st.tried.add(e.index)
	if v.AvoidEndpoint || v.Outcome == OutcomeRequestRefused {
		r.st.avoid.add(e.index)
	}
	ae := &AttemptError{Endpoint: e.name, Attempt: n, Outcome: v.Outcome, Err: err}
	if resp != nil {
		ae.StatusCode = resp.StatusCode
		closeBody(r.failed.last)
		r.failed.last, r.failed.prefix, r.failed.by = resp, errBody, e
	}
	r.failed.errs = append(r.failed.errs, ae)
}

// fail ends a request no attempt succeeded: with the last failed response,
// when there is one and the caller still waits, else with an [*Error].
func (r *request) fail() (*http.Response, error) {
	r.s.metrics.requestDone(len(r.failed.errs), false)
	f := &r.failed
	if f.last != nil && r.ctx.Err() == nil {
		return r.s.deliver(f.last, r.req, f.by), nil
	}
	closeBody(f.last)
	cause := r.cause
	if cause == nil {
		cause = ErrAttemptsExhausted
	}
	return nil, &Error{Attempts: f.errs, Err: cause}
}

// deliver readies a response e sent to req for the caller: its Request is
// req, not the attempt's (which carries the endpoint's key), and it names
// e in the EndpointHeader, if any.
func (s *snapshot) deliver(resp *http.Response, req *http.Request, e *endpoint) *http.Response {
	resp.Request = req
	if s.endpointHeader != "" {
		if resp.Header == nil {
			resp.Header = make(http.Header, 1)
		}
		resp.Header[s.endpointHeader] = []string{e.name}
	}
	return resp
}

// send makes one attempt on e with out, whose context cancel ends (nil
// when e has no timeout: then out has the caller's context). For a
// response with status 300 or above it reads up to MaxErrorBody bytes of
// the body into errBody. The per-attempt timeout, if any, covers the wait
// for the headers and that read; it never cuts a body returned to the
// caller. For an event stream, when e has a
// FirstTokenTimeout, it also waits for the first event that carries
// content, holding back what it reads. Its error never carries the
// outgoing URL's query, which may hold a key.
func (r *request) send(e *endpoint, out *http.Request, cancel context.CancelCauseFunc) (resp *http.Response, errBody []byte, err error) {
	s := r.s
	var timer *time.Timer
	if e.timeout > 0 {
		timer = time.AfterFunc(e.timeout, func() { cancel(ErrAttemptTimeout) })
	}
	if r.sent, r.st.picked = r.st.picked, 0; r.sent == 0 {
		r.sent = s.clock.since()
	}
	resp, err = s.roundTrip(e, out, r.sent)
	switch {
	case err != nil:
		err = s.redact.error(redactURLError(err))
	case resp == nil:
		err = errNilResponse
	case resp.Body == nil:
		resp.Body = http.NoBody // as http.Client would make it
	}
	if err == nil && resp.StatusCode >= 300 {
		errBody, resp.Body = readPrefix(resp.Body, s.maxErrBody)
	}
	if cancel == nil {
		return resp, errBody, err
	}
	if timer != nil && !timer.Stop() {
		// The timer fired: whatever arrived, the attempt timed out.
		closeBody(resp)
		cancel(nil)
		return nil, nil, &timeoutError{after: e.timeout}
	}
	if err != nil {
		cancel(nil)
		return nil, nil, err
	}
	if e.firstToken > 0 && isEventStream(resp) {
		if resp.Body, err = r.awaitFirstToken(cancel, e, resp.Body); err != nil {
			cancel(nil)
			return nil, nil, err
		}
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

// awaitFirstToken holds body, e's event stream, back until its first event
// that carries content, within e's FirstTokenTimeout from the attempt's
// start; it returns the stream body the caller reads. When the time
// passes, it closes body and returns an error matching
// ErrFirstTokenTimeout. When it releases the stream before its first
// content event (past maxHeld bytes), the deadline goes on running on the
// caller's reads.
func (r *request) awaitFirstToken(cancel context.CancelCauseFunc, e *endpoint, body io.ReadCloser) (io.ReadCloser, error) {
	sb := newStreamBody(e, body, streamKindOf(r.m.rest), r.s.strictStreams, r.sent, cancel)
	err := sb.awaitFirstToken()
	if err == nil && sb.cut.Load() == watchFirst {
		// The deadline passed as the first content came: it still
		// fails over, as the canceled attempt cannot go on.
		err = &timeoutError{after: e.firstToken, firstToken: true}
	}
	if err != nil {
		sb.ended.Store(true) // not a stream the caller got
		sb.stop()
		_ = body.Close()
		return nil, err
	}
	return sb, nil
}

// watch gives a successful event stream to the caller through a
// streamBody, unless awaitFirstToken already did.
func (r *request) watch(e *endpoint, resp *http.Response) {
	if !isEventStream(resp) {
		return
	}
	body, cancel := resp.Body, context.CancelCauseFunc(nil)
	c, wrapped := body.(*cancelOnClose)
	if wrapped {
		body, cancel = c.ReadCloser, c.cancel
	}
	if _, done := body.(*streamBody); done {
		return
	}
	sb := newStreamBody(e, body, streamKindOf(r.m.rest), r.s.strictStreams, r.sent, cancel)
	if wrapped {
		c.ReadCloser = sb
	} else {
		resp.Body = sb
	}
}

// roundTrip hands out to the base transport, bracketed for e's statistics
// until the response headers arrive: ended by a defer, so that a panic in
// the base does not leave the attempt in flight forever.
func (s *snapshot) roundTrip(e *endpoint, out *http.Request, start time.Duration) (resp *http.Response, err error) {
	e.beginAttempt()
	defer func() {
		end := s.clock.since()
		e.endAttempt(end - start)
		if s.leastLatency {
			e.sampleHeaders(resp, err, start, end)
		}
	}()
	return s.base.RoundTrip(out)
}

// warnUnrouted logs, once per host, a request that passes untouched to the
// base transport although its path is an OpenAI API route: a client that
// sends to a base URL missing from ClientBaseURLs (openai-go sends to
// OPENAI_BASE_URL when it is set) silently gets no failover.
func (t *Transport) warnUnrouted(s *snapshot, u *url.URL) {
	if u == nil || !looksLikeAPI(u.Path) {
		return
	}
	if _, seen := t.warned.LoadOrStore(u.Host, true); seen {
		return
	}
	t.logger.Warn("failover: a request to an OpenAI API route is not routed: it goes to its own host, without failover; add its base URL to Config.ClientBaseURLs",
		slog.String("host", u.Host), slog.Any("client_base_urls", s.clientBases))
}

// apiRoutes are path segments of the OpenAI API, to recognise a request
// that was meant to be routed.
var apiRoutes = []string{"/chat/completions", "/completions", "/embeddings", "/responses", "/models",
	"/audio/", "/images/", "/moderations", "/files", "/batches", "/uploads", "/realtime", "/assistants",
	"/threads", "/vector_stores", "/fine_tuning/"}

func looksLikeAPI(p string) bool {
	for _, r := range apiRoutes {
		if strings.Contains(p, r) {
			return true
		}
	}
	return false
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
