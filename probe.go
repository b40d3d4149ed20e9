package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/failover-go/failover/internal/urlpath"
)

// ProbeConfig configures recovery probes: background requests that find
// out whether an endpoint out of the rotation is back, so that no user
// request has to be its trial. The zero value means no probes: an open
// breaker lets a user request through as its trial once its OpenTimeout
// passes, as [BreakerConfig] says.
type ProbeConfig struct {
	// Interval turns probes on and sets their pace. With probes on, an
	// endpoint whose breaker opens stays out of the rotation until a
	// probe succeeds: it is first probed Interval after it opened, then,
	// while its probes fail, after twice the previous wait each time, up
	// to MaxInterval (as Envoy's ejection time grows); a probe that
	// succeeds closes the breaker (with [BreakerConfig].HalfOpenRequests
	// above 1, that many probes in a row must succeed), and the next time
	// it opens the wait starts again from Interval. No user request is
	// ever the trial of an endpoint that probes watch: while it is open,
	// requests go to the other endpoints (or wait for it within MaxWait).
	// An endpoint whose key was refused (401) is first probed when its
	// breaker's OpenTimeout ends, never earlier, so that a revoked key is
	// not hammered. An endpoint cooling down after 429s whose responses
	// named no delay (the doubling of [Config].Cooldown) is probed every
	// Interval while its cooldown lasts longer; a probe that succeeds
	// ends the cooldown. A healthy endpoint, a Disabled one, and one that
	// cools down for a delay its server named are never probed. Each wait
	// is lengthened by a random 0 to 10%, so that the probes of many
	// endpoints (or processes) do not fall together.
	//
	// Zero means no probes; otherwise it must be at least 100ms.
	Interval time.Duration

	// MaxInterval caps the wait between two probes of an endpoint whose
	// probes keep failing. Zero means 5 minutes, or Interval when that is
	// longer; it must not be below Interval. (A refused key's wait starts
	// at its OpenTimeout, which may exceed it.)
	MaxInterval time.Duration

	// Timeout bounds one probe, from sending it until its response body
	// is read. Zero means 10 seconds; negative is an error.
	Timeout time.Duration
}

// ProbeRequest is the request a recovery probe sends to an endpoint (see
// [ProbeConfig]). It is sent as a routed request to the endpoint would
// be: under its BaseURL, with its BaseURL's query, its key (Authorization,
// or api-key for Azure) and its Header; a Body that names a model sends
// it as the endpoint's Models map it, and for an Azure endpoint with an
// APIVersion, under the deployments path (/openai/deployments/<name>/...).
// That model must be one the endpoint serves (a key of its Models, when
// it has Models), or New refuses the configuration. Only a 2xx answer is
// a success; 401 is a refused key.
//
// The zero value is GET {BaseURL}/models, which costs nothing on OpenAI
// and on most compatible servers. For a server without /models, use
// [ChatProbe], or any cheap request the server answers with a 2xx.
type ProbeRequest struct {
	// Method is the request's method. Empty means GET, or POST when Body
	// is set.
	Method string

	// Path is appended to the path of the endpoint's BaseURL; it must
	// begin with "/" and carry no query. Empty means "/models".
	Path string

	// Body, when set, is sent as the request's body with Content-Type
	// application/json; it must be valid JSON. Empty means none.
	Body string
}

// ChatProbe returns a [ProbeRequest] for a server without /models: a chat
// completion of at most one token (max_tokens 1) of "ping" to model, the
// name callers use (the endpoint's Models rename it, as for their
// requests; on an Azure endpoint it names, or maps to, a deployment). Each
// such probe is a billed request on a paid provider: a few input tokens
// and one output token per probe of an endpoint that is out.
func ChatProbe(model string) ProbeRequest {
	body, _ := json.Marshal(map[string]any{
		"model":      model,
		"max_tokens": 1,
		"messages":   []map[string]string{{"role": "user", "content": "ping"}},
	})
	return ProbeRequest{Method: http.MethodPost, Path: "/chat/completions", Body: string(body)}
}

// Defaults and limits of ProbeConfig.
const (
	minProbeInterval    = 100 * time.Millisecond
	defaultProbeMax     = 5 * time.Minute
	defaultProbeTimeout = 10 * time.Second
	defaultProbePath    = "/models"
	probeBodyLimit      = 64 << 10 // a probe's response body read, at most
	probeRetry          = 100 * time.Millisecond
	probeUserAgent      = "failover-probe"
	probeJitterFraction = 10 // a wait is lengthened by up to 1/10
	// probeRequestPoll is how long a request that waits for an endpoint
	// under probe waits before it looks again, once the probe is due.
	probeRequestPoll = 50 * time.Millisecond
)

// problems returns what is wrong with pc.
func (pc ProbeConfig) problems() []error {
	var errs []error
	switch {
	case pc.Interval < 0:
		errs = append(errs, fmt.Errorf("failover: Probe.Interval %v is negative", pc.Interval))
	case pc.Interval > 0 && pc.Interval < minProbeInterval:
		errs = append(errs, fmt.Errorf("failover: Probe.Interval %v is below %v", pc.Interval, minProbeInterval))
	}
	switch {
	case pc.MaxInterval < 0:
		errs = append(errs, fmt.Errorf("failover: Probe.MaxInterval %v is negative", pc.MaxInterval))
	case pc.MaxInterval > 0 && pc.MaxInterval < pc.Interval:
		errs = append(errs, fmt.Errorf("failover: Probe.MaxInterval %v is below Probe.Interval %v", pc.MaxInterval, pc.Interval))
	}
	if pc.Timeout < 0 {
		errs = append(errs, fmt.Errorf("failover: Probe.Timeout %v is negative", pc.Timeout))
	}
	return errs
}

// withDefaults returns pc with its zero fields defaulted; probes off stay
// the zero value.
func (pc ProbeConfig) withDefaults() ProbeConfig {
	if pc.Interval == 0 {
		return ProbeConfig{}
	}
	if pc.MaxInterval == 0 {
		pc.MaxInterval = max(defaultProbeMax, pc.Interval)
	}
	pc.Timeout = orDefault(pc.Timeout, defaultProbeTimeout)
	return pc
}

// problems returns what is wrong with pr, each a phrase for the
// endpoint's error.
func (pr ProbeRequest) problems() []string {
	var out []string
	if pr.Method != "" && !validHeaderName(pr.Method) {
		out = append(out, fmt.Sprintf("Probe.Method %q is not a valid method", pr.Method))
	}
	if pr.Path != "" {
		switch {
		case !strings.HasPrefix(pr.Path, "/"):
			out = append(out, "Probe.Path must begin with /")
		case strings.ContainsAny(pr.Path, "?#"):
			out = append(out, "Probe.Path must not carry a query or a fragment")
		case urlpath.Unsafe(pr.Path) != "":
			out = append(out, "Probe.Path has "+urlpath.Unsafe(pr.Path))
		}
	}
	if pr.Body != "" && !json.Valid([]byte(pr.Body)) {
		out = append(out, "Probe.Body is not valid JSON")
	}
	return out
}

// Probe results, the result label of failover_probes_total.
type probeResult uint32

const (
	probeNone        probeResult = iota
	probeSuccess                 // a 2xx
	probeFailure                 // another status
	probeKeyRejected             // 401
	probeError                   // no response: a connection error or the probe's timeout
)

var probeResultNames = [...]string{"", "success", "failure", "key_rejected", "error"}

func (r probeResult) String() string { return probeResultNames[r] }

// probeState is an endpoint's recovery probing, live across
// configurations.
type probeState struct {
	running  atomic.Bool  // a probe loop runs for the endpoint
	inFlight atomic.Bool  // a probe is being sent
	period   atomic.Int64 // the current wait between probes (doubling); 0 until probes adopt an open period
	next     atomic.Int64 // unix ns of the next probe; 0 when none is planned
	last     atomic.Int64 // unix ns of the last probe's end; 0 before the first
	result   atomic.Uint32
}

// watch starts st's probe loop unless one runs, the Transport is closed,
// or probes are off. It may run under the breaker's lock: it takes only
// its own short lock and starts a goroutine.
func (h *healer) watch(st *endpointState) {
	if h == nil || h.stopped.Load() {
		return
	}
	if s := h.t.snap.Load(); s == nil || s.probe.Interval == 0 {
		return
	}
	if !st.probe.running.CompareAndSwap(false, true) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		st.probe.running.Store(false)
		return
	}
	h.wg.Add(1)
	go h.loop(st)
}

// opened is told by e's breaker that it opened (from closed when
// fromClosed): probes adopt the new open period.
func (h *healer) opened(st *endpointState, fromClosed bool) {
	if fromClosed {
		st.probe.period.Store(0)
	}
	h.watch(st)
}

// watchAll starts the probe loops of s's endpoints that are out, for a
// configuration that may have turned probes on.
func (h *healer) watchAll(s *snapshot) {
	if s.probe.Interval == 0 {
		return
	}
	now := h.t.clock.now().UnixNano()
	for _, e := range s.endpoints {
		if e.probes && (e.breaker.openUntil.Load() != 0 || e.guessedCooldown(now) != 0) {
			h.watch(e.endpointState)
		}
	}
}

// loop probes st's endpoint while it is out. The loop ends when it is
// back, removed, or no longer probed, or when the Transport closes; a
// watch that came while it ended starts it again.
func (h *healer) loop(st *endpointState) {
	defer h.wg.Done()
	for {
		h.run(st)
		st.probe.next.Store(0)
		st.probe.running.Store(false)
		if h.ctx.Err() != nil || !h.wanted(st) || !st.probe.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// wanted reports whether st's endpoint is out and probed in the current
// configuration.
func (h *healer) wanted(st *endpointState) bool {
	s := h.t.snap.Load()
	e := s.endpointOf(st)
	if e == nil || !e.probes {
		return false
	}
	return e.breaker.openUntil.Load() != 0 || e.guessedCooldown(h.t.clock.now().UnixNano()) != 0
}

// run waits for each probe of st's endpoint that is due and sends it,
// until nothing is due.
func (h *healer) run(st *endpointState) {
	for h.ctx.Err() == nil {
		s := h.t.snap.Load()
		e := s.endpointOf(st)
		if e == nil || !e.probes {
			return
		}
		now := h.t.clock.now().UnixNano()
		due, ok := h.due(s, e, now)
		if !ok {
			return
		}
		if due > now {
			st.probe.next.Store(due)
			if h.t.clock.sleep(h.ctx, time.Duration(due-now)) != nil {
				return
			}
			continue
		}
		if wait := h.probe(s, e); wait > 0 {
			if h.t.clock.sleep(h.ctx, wait) != nil {
				return
			}
		}
	}
}

// due returns when e's next probe is due (unix ns), or false when e is
// not out. The first time it sees an open period, probes adopt it: its
// end becomes the first probe, Interval after the breaker opened (its
// whole OpenTimeout for a refused key).
func (h *healer) due(s *snapshot, e *endpoint, now int64) (int64, bool) {
	b := &e.breaker
	if until := b.openUntil.Load(); until != 0 {
		if e.probe.period.Load() == 0 {
			p := s.probe.Interval
			if b.keyOpened.Load() {
				p = time.Duration(b.openTimeout.Load())
			} else {
				b.holdOpen(b.since.Load() + int64(jitter(p)))
			}
			e.probe.period.Store(int64(p))
			if until = b.openUntil.Load(); until == 0 {
				return 0, false // closed meanwhile
			}
		}
		return until, true
	}
	until := e.guessedCooldown(now)
	if until == 0 {
		return 0, false
	}
	next := e.probe.next.Load()
	if next == 0 || e.probe.period.Load() == 0 {
		e.probe.period.Store(int64(s.probe.Interval))
		next = now + int64(jitter(s.probe.Interval))
		e.probe.next.Store(next)
	}
	if next >= until {
		return 0, false // the cooldown ends first
	}
	return next, true
}

// probe sends one probe to e as its breaker's trial and settles it. It
// returns how long to wait before looking again when it could not probe
// (another trial holds the breaker), else 0.
func (h *healer) probe(s *snapshot, e *endpoint) time.Duration {
	b := &e.breaker
	if h.claim != nil && !h.claim(h.ctx, e.name, s.probe.Timeout) {
		// Another process probes it: look again a period later.
		h.reschedule(s, e, false)
		return 0
	}
	clk := lazyClock{c: e.clock}
	done, ok := b.allow(&clk)
	if !ok {
		return probeRetry
	}
	coolUntil := e.cooling.until.Load()
	e.probe.inFlight.Store(true)
	resp, result, err := h.send(s, e)
	e.probe.inFlight.Store(false)
	if h.ctx.Err() != nil {
		// Closing: the probe says nothing of the endpoint.
		b.settle(done, errNotSent)
		closeBody(resp)
		return 0
	}
	e.probe.last.Store(h.t.clock.now().UnixNano())
	e.probe.result.Store(uint32(result))
	e.m.probed(result.String())
	if h.t.logger != nil && h.t.logger.Enabled(h.ctx, slog.LevelDebug) {
		attrs := []any{slog.String("endpoint", e.name), slog.String("result", result.String())}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		} else if resp != nil {
			attrs = append(attrs, slog.Int("status", resp.StatusCode))
		}
		h.t.logger.Debug("failover: recovery probe", attrs...)
	}
	switch result {
	case probeSuccess:
		b.settle(done, nil)
		e.cooling.until.CompareAndSwap(coolUntil, 0)
		e.probe.next.Store(0)
	case probeKeyRejected:
		b.settle(done, errKeyRejected)
		h.reschedule(s, e, true)
	default:
		if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			b.settle(done, errThrottled)
			e.startCooldown(resp)
		} else {
			b.settle(done, errFailed)
		}
		h.reschedule(s, e, true)
	}
	closeBody(resp)
	return 0
}

// reschedule plans e's next probe after one that failed (or was left to
// another process): the wait doubles when failed, up to MaxInterval (a
// refused key's, at least its OpenTimeout), and the breaker, if open,
// stays open until then.
func (h *healer) reschedule(s *snapshot, e *endpoint, failed bool) {
	p := time.Duration(e.probe.period.Load())
	if p == 0 {
		p = s.probe.Interval
	}
	if failed {
		p = min(2*p, s.probe.MaxInterval)
	}
	if e.breaker.keyOpened.Load() {
		p = max(p, time.Duration(e.breaker.openTimeout.Load()))
	}
	e.probe.period.Store(int64(p))
	next := h.t.clock.now().Add(jitter(p)).UnixNano()
	e.probe.next.Store(next)
	e.breaker.holdOpen(next)
}

// send sends e's probe request through the base transport and reads (a
// bounded part of) the answer. Its error carries no secret.
func (h *healer) send(s *snapshot, e *endpoint) (*http.Response, probeResult, error) {
	ctx, cancel := context.WithTimeout(h.ctx, s.probe.Timeout)
	defer cancel()
	req, err := newProbeRequest(ctx, s, e)
	if err != nil {
		return nil, probeError, err
	}
	resp, err := h.t.base.RoundTrip(req)
	if err != nil {
		return nil, probeError, s.redact.error(redactURLError(err))
	}
	if resp == nil {
		return nil, probeError, errNilResponse
	}
	// Read the answer within the probe's time, so that a server that
	// sends headers and then hangs fails the probe.
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	var prefix bytes.Buffer
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.CopyN(&prefix, resp.Body, min(s.maxErrBody, probeBodyLimit))
	}
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, probeBodyLimit-int64(prefix.Len())))
	_ = resp.Body.Close()
	resp.Body = http.NoBody
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return resp, probeRefusal(s.classify(resp, decodedPrefix(resp, prefix.Bytes(), s.maxErrBody), nil)), nil
	case rerr != nil:
		return resp, probeError, s.redact.error(rerr)
	}
	return resp, probeSuccess, nil
}

// probeRefusal is what a probe answered with a status outside 2xx means,
// by the request's own rules (the Classifier): the key refused when the
// classifier says so (a 401 with no scope named, a 403 naming the
// account); a success of the trial when it says the endpoint refused this
// request only (a 401 missing_scope: a restricted key without the models
// scope still answered and authenticated); else a failure.
func probeRefusal(v Verdict) probeResult {
	switch v.Outcome {
	case OutcomeKeyRejected:
		return probeKeyRejected
	case OutcomeRequestRefused:
		return probeSuccess
	}
	return probeFailure
}

// newProbeRequest builds the probe of e, an endpoint of s (its
// cfg.Probe), as a routed request to e is built: rewritten onto e's
// target (BaseURL's path and query, the key under its header, the extra
// headers) and, when its body names a model and s routes by model, sent
// as e sends that model (renamed as e's Models map it, and for an Azure
// endpoint with an APIVersion, under /deployments/<deployment>).
func newProbeRequest(ctx context.Context, s *snapshot, e *endpoint) (*http.Request, error) {
	pr, tg := e.cfg.Probe, &e.target
	p := pr.Path
	if p == "" {
		p = defaultProbePath
	}
	method := pr.Method
	var (
		body []byte
		rd   io.Reader
	)
	if pr.Body != "" {
		body = []byte(pr.Body)
		rd = bytes.NewReader(body)
		if method == "" {
			method = http.MethodPost
		}
	}
	if method == "" {
		method = http.MethodGet
	}
	// The request as a caller would send it under e's own BaseURL.
	u := &url.URL{Scheme: tg.scheme, Host: tg.host, Path: tg.path + p}
	in, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("failover: building the probe request: %w", redactURLError(err))
	}
	in.Header.Set("User-Agent", probeUserAgent) // unless e's Header sets one
	if body != nil {
		in.Header.Set("Content-Type", "application/json")
	}
	m := match{base: &routeBase{scheme: tg.scheme, path: tg.path, rawPath: tg.escPath}, rest: p}
	out := rewrite(ctx, in, tg, m)
	if s.models != nil && body != nil {
		rm := &requestModel{body: body, redact: s.redact}
		if rm.find("application/json", body) {
			rm.plan = s.models.planFor(rm.name)
			if !rm.plan.skip.has(e.index) { // New refuses a probe of a model e does not serve
				rm.apply(out, e)
			}
		}
	}
	return out, nil
}

// probeProblems returns what is wrong with e's Probe: its own problems,
// and a model its body names that e would not serve (a model missing
// from e's Models, or for an Azure endpoint with an APIVersion, one that
// cannot name a deployment), since the probe is sent as a routed request
// for that model would be.
func (e *Endpoint) probeProblems() []string {
	problems := e.Probe.problems()
	if e.Probe.Body == "" || len(problems) > 0 {
		return problems
	}
	var bm bodyModel
	if !bm.find("application/json", []byte(e.Probe.Body)) {
		return problems
	}
	name := quoteModel(bm.name)
	if e.Models != nil {
		if _, ok := e.Models[bm.name]; !ok {
			return append(problems, fmt.Sprintf("Probe's model %s is not in Models: name it as callers do (a key of Models), and the probe sends it as Models maps it", name))
		}
		return problems
	}
	if strings.EqualFold(e.APIType, APITypeAzure) && e.APIVersion != "" && !validDeployment(bm.name) {
		return append(problems, fmt.Sprintf("Probe's model %s is not an Azure deployment name (letters, digits, '.', '_' and '-'): name the deployment, or map the model to it in Models", name))
	}
	return problems
}

// jitter returns d lengthened by a random 0 to 10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d + rand.N(d/probeJitterFraction+1)
}

// guessedCooldown returns when e's cooldown ends (unix ns) if one runs at
// now for a delay no response named (the doubling of Config.Cooldown),
// else 0: only those are probed.
func (e *endpoint) guessedCooldown(now int64) int64 {
	if !e.cooling.guessed.Load() {
		return 0
	}
	return e.cooling.at(now)
}

// endpointOf returns s's endpoint whose live state is st, or nil when s
// has none (it was removed).
func (s *snapshot) endpointOf(st *endpointState) *endpoint {
	for _, e := range s.endpoints {
		if e.endpointState == st {
			return e
		}
	}
	return nil
}

// refusesTrials reports whether e's open breaker must refuse user
// requests even after its open period: probes watch it, and only a probe
// closes it.
func (e *endpoint) refusesTrials() bool {
	return e.probes && !e.heal.stopped.Load()
}

// probeHealth fills h's probe fields from e.
func (e *endpoint) probeHealth(h *EndpointHealth) {
	ps := &e.probe
	if last := ps.last.Load(); last != 0 {
		h.LastProbeAt = time.Unix(0, last)
		h.LastProbeResult = probeResult(ps.result.Load()).String()
	}
	switch {
	case !ps.running.Load():
	case ps.inFlight.Load():
		h.ProbeState = ProbeStateProbing
	default:
		if next := ps.next.Load(); next != 0 {
			h.ProbeState = ProbeStateScheduled
			h.NextProbeAt = time.Unix(0, next)
		}
	}
}

// Probe states of [EndpointHealth].ProbeState.
const (
	// ProbeStateScheduled: the endpoint is out, and its next probe is
	// planned for NextProbeAt.
	ProbeStateScheduled = "scheduled"
	// ProbeStateProbing: a probe of the endpoint is under way.
	ProbeStateProbing = "probing"
)

// probeStateValue is the value of the failover_probe_state gauge for h.
func probeStateValue(h *EndpointHealth) float64 {
	switch h.ProbeState {
	case ProbeStateScheduled:
		return 1
	case ProbeStateProbing:
		return 2
	}
	return 0
}
