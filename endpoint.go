package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/failover-go/failover/internal/quote"
)

// Endpoint is one upstream that can serve the client's requests: a base URL,
// the key to present there, and how much traffic it should take.
//
// The zero value is not usable: BaseURL is required. Every other field has a
// documented default for its zero value. An Endpoint is copied into the
// [Transport] by [New] (or [Transport.Update]); changing it afterwards has
// no effect.
type Endpoint struct {
	// Name labels the endpoint in metrics, logs, health and errors, and
	// identifies it across [Transport.Update]. The default is the host of
	// BaseURL, suffixed with "-2", "-3", ... where several endpoints share
	// a host. Names must be unique. Errors quote a name that looks like
	// an API key (a key prefix such as sk-, or a long run of letters and
	// digits) as its first three characters and its length only.
	Name string

	// BaseURL is the absolute http or https URL requests are sent to. It may
	// carry a path prefix (https://proxy.example/openai/v1), which replaces
	// the client-side base path of each request, and a query, whose
	// parameters are added to every request's (Azure's api-version),
	// replacing the caller's of the same name. Its escaping is kept. It
	// must not carry user information, a fragment or a query that does not
	// parse. Required.
	BaseURL string

	// APIKey is sent as "Authorization: Bearer <APIKey>" (to an Azure
	// endpoint, see APIType, as "api-key: <APIKey>"), replacing the
	// caller's Authorization header. Empty sends no key. Either way the
	// caller's own credentials (Authorization, api-key, OpenAI-Organization
	// and OpenAI-Project) never reach the endpoint, unless
	// ForwardCallerAuth says so; set the endpoint's own in Header.
	APIKey string

	// ForwardCallerAuth, for an endpoint without an APIKey, passes the
	// caller's Authorization, api-key, OpenAI-Organization and
	// OpenAI-Project headers on to it, as a plain proxy would. The zero
	// value, false, drops them: an SDK sends the key it found in its own
	// environment (openai-go reads OPENAI_API_KEY), and a keyless backup
	// (a local server, say) must not receive it. Ignored when APIKey is
	// set.
	ForwardCallerAuth bool

	// Priority orders endpoints: lower numbers are preferred, and a higher
	// number receives traffic only while no endpoint of a lower number is
	// eligible. The zero value is the highest preference; negative numbers
	// are allowed.
	Priority int

	// Weight is the endpoint's share of the traffic among the endpoints of
	// its Priority (smooth weighted round robin). Zero means 1; negative is
	// an error.
	Weight int

	// MaxRPS is the most requests per second this endpoint is sent. Zero
	// means unlimited; negative is an error.
	MaxRPS float64

	// Burst is how many requests the endpoint may take at once above its
	// steady MaxRPS. Zero means max(1, ceil(MaxRPS)); negative is an error.
	// Ignored when MaxRPS is zero.
	Burst int

	// Timeout bounds one attempt on this endpoint, from sending the request
	// until the response headers arrive (and, for a status of 300 or above,
	// the read of the error body's first [Config].MaxErrorBody bytes,
	// which decides whether to fail over). It never cuts a successful
	// response body or a stream. Zero means no per-attempt timeout (the
	// caller's context still applies); negative is an error.
	Timeout time.Duration

	// FirstTokenTimeout bounds, for a response that is an event stream
	// (Content-Type text/event-stream), the time from sending the attempt
	// until the first event that carries content: comments, keep-alives,
	// empty data, a chat chunk with only a role and the Responses API's
	// response.created and response.in_progress do not count. Until then
	// the Transport holds the stream back, so when the time passes nothing
	// has reached the caller: the attempt fails (ErrFirstTokenTimeout, a
	// failure for the breaker) and the request fails over. A stream that
	// sends 64 KiB of events without content before its first token is
	// given to the caller as it is, still under this deadline: when it
	// passes, the caller's read fails with an error matching
	// ErrFirstTokenTimeout, the upstream connection is closed and the
	// endpoint counts a failure (bytes reached the caller: no failover).
	// While it runs, StreamIdleTimeout does not: the stall timer starts at
	// the first content event. Zero means [Config].FirstTokenTimeout;
	// negative is an error. Reasoning models may think for minutes before
	// their first token: leave it off for them, or set it above their
	// longest thought.
	FirstTokenTimeout time.Duration

	// StreamIdleTimeout bounds, in an event stream, each wait for an event
	// that carries content (keep-alive comments do not reset it): from
	// each content event to the next and, when there is no
	// FirstTokenTimeout, from the response headers to the first content
	// event too. When it passes while the caller waits in a read, that
	// read fails with an error matching ErrStreamStalled, the upstream
	// connection is closed and the endpoint counts a failure. The
	// Transport reads the stream only when the caller does, so when it
	// passes while the caller is not reading, content may be waiting
	// unread: the stream is not failed then, and the caller's next read
	// gets one whole StreamIdleTimeout of its own, failing only if no
	// content comes in it. Zero means [Config].StreamIdleTimeout;
	// negative is an error.
	StreamIdleTimeout time.Duration

	// Disabled keeps the endpoint configured (in health and metrics) but
	// never chosen. The zero value, false, means enabled.
	Disabled bool

	// Header holds extra headers set on every request to this endpoint,
	// replacing the caller's values for the same keys in any spelling.
	// Nil means none.
	Header http.Header

	// Probe is the request recovery probes send to this endpoint when
	// [Config].Probe turns them on. The zero value means GET
	// {BaseURL}/models; see [ProbeRequest] and [ChatProbe].
	Probe ProbeRequest

	// Models lists the models the endpoint serves, each mapped to the
	// name it is sent under there: the caller's name as the key, the
	// endpoint's own name (an OpenRouter name such as
	// "openai/gpt-4o-mini", an Azure deployment, a local model) as the
	// value, or "" to send the caller's name unchanged. A request whose
	// body names another model skips the endpoint (not a failure: its
	// breaker is not touched); a request for a listed model has the
	// body's "model" rewritten to the mapped name for this endpoint's
	// attempts only. Names match exactly. Nil means the endpoint serves
	// every model under the caller's names; an empty non-nil map is an
	// error. See [ErrNoEndpointForModel].
	Models map[string]string

	// APIType is the endpoint's API flavour: "" or [APITypeOpenAI] for an
	// OpenAI-compatible API, or [APITypeAzure] for Azure OpenAI, which
	// takes its key in the api-key header instead of Authorization and,
	// with an APIVersion, its requests under
	// /openai/deployments/<deployment>. See [APITypeAzure]. Any other
	// value is an error; case does not matter.
	APIType string

	// APIVersion is, for an Azure endpoint, the api-version its classic
	// deployments API is called with (for example "2024-10-21"): it is
	// added to every request's query, and the deployment comes from
	// Models, or is the request's model where Models does not map it.
	// Empty means Azure's v1 API (/openai/v1), where the deployment is
	// the body's model and no api-version is needed. Set for an endpoint
	// that is not Azure, it is an error.
	APIVersion string

	// MaxTPM is the most tokens per minute this endpoint is sent, as the
	// provider counts them: each request is charged its estimate (see
	// the README's "Rate limits": its characters divided by four, plus
	// its max_completion_tokens or max_tokens times n, else
	// [DefaultCompletionTokens]), corrected to the usage the response
	// reports. Zero means unlimited; negative is an error. With
	// [Config].Shared it is the fleet's total.
	MaxTPM float64

	// TokenBurst is how many tokens the endpoint may take at once above
	// its steady MaxTPM. Zero means one minute's worth, ceil(MaxTPM);
	// negative is an error. Ignored when MaxTPM is zero.
	TokenBurst int
}

// minRPS is the smallest MaxRPS accepted: one request an hour. A rate
// below it would have requests wait past any sensible MaxWait for a token.
const minRPS = 1.0 / 3600

// check returns every problem of e, each an error naming the endpoint by
// its position i and its name, never by its key. The problems come in the
// order of the steps: BaseURL, traffic, timeouts, Name and APIKey, Probe,
// Header, Models.
func (e *Endpoint) check(i int) []error {
	var problems []error
	problems = append(problems, e.baseURLProblems()...)
	problems = append(problems, e.trafficProblems()...)
	problems = append(problems, e.timeoutProblems()...)
	problems = append(problems, e.textProblems()...)
	problems = append(problems, stringProblems(e.probeProblems())...)
	problems = append(problems, e.headerProblems()...)
	problems = append(problems, stringProblems(e.checkModels())...)
	if len(problems) == 0 {
		return nil
	}
	label := endpointLabel(i, e.Name)
	errs := make([]error, len(problems))
	for j, p := range problems {
		errs[j] = fmt.Errorf("%s: %w", label, p)
	}
	return errs
}

// stringProblems turns problems told as text into errors.
func stringProblems(problems []string) []error {
	var errs []error
	for _, p := range problems {
		errs = append(errs, errors.New(p))
	}
	return errs
}

// baseURLProblems checks BaseURL with parseBaseURL.
func (e *Endpoint) baseURLProblems() []error {
	if _, err := parseBaseURL(e.BaseURL); err != nil {
		return []error{fmt.Errorf("BaseURL: %w", err)}
	}
	return nil
}

// trafficProblems checks how much traffic the endpoint takes: Weight,
// MaxRPS and Burst, MaxTPM and TokenBurst.
func (e *Endpoint) trafficProblems() []error {
	var errs []error
	if e.Weight < 0 {
		errs = append(errs, fmt.Errorf("Weight %d is negative", e.Weight))
	}
	switch {
	case e.MaxRPS < 0 || math.IsNaN(e.MaxRPS) || math.IsInf(e.MaxRPS, 0):
		errs = append(errs, fmt.Errorf("MaxRPS %v is not a non-negative finite number", e.MaxRPS))
	case e.MaxRPS > 0 && e.MaxRPS < minRPS:
		errs = append(errs, fmt.Errorf("MaxRPS %v is below one request an hour (%.6g); for an endpoint that takes no traffic, set Disabled", e.MaxRPS, minRPS))
	}
	if e.Burst < 0 {
		errs = append(errs, fmt.Errorf("Burst %d is negative", e.Burst))
	}
	if e.MaxTPM < 0 || math.IsNaN(e.MaxTPM) || math.IsInf(e.MaxTPM, 0) || e.MaxTPM > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("MaxTPM %v is not a non-negative finite number of at most %d", e.MaxTPM, math.MaxInt32))
	}
	if e.TokenBurst < 0 || e.TokenBurst > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("TokenBurst %d is negative or above %d", e.TokenBurst, math.MaxInt32))
	}
	return errs
}

// timeoutProblems checks Timeout, FirstTokenTimeout and StreamIdleTimeout.
func (e *Endpoint) timeoutProblems() []error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Timeout", e.Timeout}, {"FirstTokenTimeout", e.FirstTokenTimeout}, {"StreamIdleTimeout", e.StreamIdleTimeout}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", f.name, f.d))
		}
	}
	return errs
}

// textProblems checks Name and APIKey.
func (e *Endpoint) textProblems() []error {
	var errs []error
	if !utf8.ValidString(e.Name) {
		errs = append(errs, errors.New("Name is not valid UTF-8"))
	}
	if strings.ContainsAny(e.APIKey, "\r\n") {
		errs = append(errs, errors.New("APIKey contains a line break"))
	}
	return errs
}

// headerProblems checks Header's names and values, in the names' order.
func (e *Endpoint) headerProblems() []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(e.Header)) {
		if !validHeaderName(k) {
			errs = append(errs, fmt.Errorf("Header: %q is not a valid header name", k))
			continue
		}
		if slices.ContainsFunc(e.Header[k], func(v string) bool { return strings.ContainsAny(v, "\r\n") }) {
			errs = append(errs, fmt.Errorf("Header %q: value contains a line break", k))
		}
	}
	return errs
}

// endpointLabel names endpoint i in an error: by its position and, when it
// has a valid name, by that name as [quote.Name] shows it, so that a key
// pasted into Name is never printed in full.
func endpointLabel(i int, name string) string {
	if name == "" || !utf8.ValidString(name) {
		return fmt.Sprintf("failover: endpoint %d", i)
	}
	return fmt.Sprintf("failover: endpoint %d (%s)", i, quote.Name(name))
}

// withDefaults returns e with its zero fields given their defaults (but
// Name, which nameEndpoints gives) and its Header keys canonical.
func (e Endpoint) withDefaults() Endpoint {
	if e.Weight == 0 {
		e.Weight = 1
	}
	if e.MaxRPS > 0 && e.Burst == 0 {
		e.Burst = max(1, int(math.Ceil(e.MaxRPS)))
	}
	if e.Header != nil {
		h := make(http.Header, len(e.Header))
		for k, vs := range e.Header {
			ck := http.CanonicalHeaderKey(k)
			h[ck] = append(h[ck], vs...)
		}
		e.Header = h
	}
	e.Models = maps.Clone(e.Models)
	e.APIType = strings.ToLower(e.APIType)
	return e
}

// nameEndpoints gives each endpoint without a Name the host of its BaseURL,
// made unique in configuration order, and reports names used twice. It
// runs in time linear in the number of endpoints.
func nameEndpoints(eps []Endpoint, hosts []string) []error {
	taken := make(map[string]bool, len(eps))
	for _, e := range eps {
		if e.Name != "" {
			taken[e.Name] = true
		}
	}
	next := map[string]int{} // host -> next suffix to try
	for i := range eps {
		if eps[i].Name != "" {
			continue
		}
		host := hosts[i]
		n := max(next[host], 1)
		name := host
		if n > 1 {
			name = fmt.Sprintf("%s-%d", host, n)
		}
		for taken[name] {
			n++
			name = fmt.Sprintf("%s-%d", host, n)
		}
		next[host] = n + 1
		taken[name] = true
		eps[i].Name = name
	}
	var errs []error
	first := make(map[string]int, len(eps))
	for i, e := range eps {
		if j, dup := first[e.Name]; dup {
			errs = append(errs, fmt.Errorf("failover: endpoint %d: name %s is already used by endpoint %d", i, quote.Name(e.Name), j))
			continue
		}
		first[e.Name] = i
	}
	return errs
}

// endpoint is one endpoint of one configuration: its settings, immutable
// once built, and a pointer to its live state, which outlives the
// configuration when [Transport.Update] keeps the endpoint's Name.
type endpoint struct {
	*endpointState

	cfg        Endpoint // defaulted, Name set
	index      int      // position in the configuration
	target     target   // where and how its requests are sent
	timeout    time.Duration
	firstToken time.Duration // FirstTokenTimeout, defaulted; 0 for none
	streamIdle time.Duration // StreamIdleTimeout, defaulted; 0 for none
	// timed says an attempt has a context of its own, which a timeout
	// cancels: timeout, firstToken or streamIdle is set.
	timed   bool
	cool    cooldownPolicy
	limiter *rate.Limiter   // the state's limiter; nil when unlimited
	probes  bool            // recovery probes watch it (Config.Probe, not Disabled)
	hrw     uint64          // its name's hash, for affinity's rendezvous scores
	budget  *endpointBudget // MaxTPM and shared budgets; nil for none (budget.go)
}

// endpointState is the live state of an endpoint: breaker, cooldown, rate
// limiter, statistics and metric series. It is atomics, the breaker's own
// short lock and the limiter's own short lock: no lock of the Transport's.
// It keeps the clock and logger it was made with (a Transport's never
// change).
type endpointState struct {
	name    string
	clock   clock
	timers  timerClock // makes the stream timers and reads their time: a test's clock, or realTimers
	logger  *slog.Logger
	breaker breaker
	cooling cooldown

	limMu sync.Mutex    // orders clock readings given to the limiter (allowRate)
	lim   *rate.Limiter // made at the first configuration with a MaxRPS

	stats endpointStats
	m     *endpointMetrics // nil when metrics are off
	bud   budgetState      // pacing, MaxTPM, shared leases and health (budget.go)

	heal  *healer // the Transport's probes and slow-start hint
	probe probeState
	slow  slowStart

	// hot is written by every attempt. It sits on cache lines of its own
	// so that those writes, from every core, do not keep evicting the
	// read-mostly fields above that every request reads.
	_   [64]byte
	hot hotStats
	_   [64]byte
}

// newEndpointState returns the state of a new endpoint named name, its
// breaker closed.
func newEndpointState(name string, c clock, logger *slog.Logger, m *metrics, bc BreakerConfig) *endpointState {
	s := &endpointState{name: name, clock: c, logger: logger}
	if tc, ok := c.(timerClock); ok {
		s.timers = tc
	} else {
		s.timers = realTimers{newRealClock()}
	}
	s.breaker.init(s, bc)
	s.m = m.forEndpoint(name)
	return s
}

// limiterFor returns the state's limiter set to cfg's rate and burst,
// creating it at the first configuration that has a rate (its tokens
// then carry over the configurations that follow); nil when cfg has no
// MaxRPS.
func (s *endpointState) limiterFor(cfg Endpoint) *rate.Limiter {
	if cfg.MaxRPS <= 0 {
		return nil
	}
	s.limMu.Lock()
	defer s.limMu.Unlock()
	now := s.clock.now()
	if s.lim == nil {
		s.lim = rate.NewLimiter(rate.Limit(cfg.MaxRPS), cfg.Burst)
		return s.lim
	}
	if s.lim.Limit() != rate.Limit(cfg.MaxRPS) {
		s.lim.SetLimitAt(now, rate.Limit(cfg.MaxRPS))
	}
	if s.lim.Burst() != cfg.Burst {
		s.lim.SetBurstAt(now, cfg.Burst)
	}
	return s.lim
}

// allowRate takes a token from e's limiter if one is available now. The
// clock is read under limMu: rate.Limiter counts time from the latest
// instant it was given, so an instant older than one already given (a
// goroutine descheduled between reading the clock and the limiter) would
// hand out tokens twice. Only rate-limited endpoints pay for this lock.
func (e *endpoint) allowRate() bool {
	e.limMu.Lock()
	defer e.limMu.Unlock()
	return e.limiter.AllowN(e.clock.now(), 1)
}

// untilToken estimates how long until e's limiter has a whole token.
func (e *endpoint) untilToken(now time.Time) time.Duration {
	missing := 1 - e.limiter.TokensAt(now)
	if missing <= 0 {
		return time.Millisecond
	}
	return time.Duration(missing / float64(e.limiter.Limit()) * float64(time.Second))
}

// endpointStats are the counters behind [EndpointHealth] that change only
// when an attempt fails (or a failure streak ends).
type endpointStats struct {
	failures    atomic.Uint64
	consecutive atomic.Uint64
	lastErr     atomic.Pointer[lastError]
}

// hotStats are the counters behind [EndpointHealth] that every attempt
// writes: started and finished attempts (in flight is their difference)
// and the latency average.
type hotStats struct {
	started    atomic.Uint64
	finished   atomic.Uint64
	latency    ewma     // time to the response headers
	firstToken ewma     // time to a stream's first content event
	peak       peakEWMA // the least-latency balancer's estimate

	// modelSkips counts the requests that passed it by for a model it
	// does not serve.
	modelSkips atomic.Uint64
}

// inflight returns the attempts started and not yet finished.
func (s *hotStats) inflight() int64 {
	finished := s.finished.Load() // before started, so never negative
	return int64(s.started.Load() - finished)
}

type lastError struct {
	msg string
	at  time.Time
}

// ewmaAlpha is the weight of the newest sample in an ewma.
const ewmaAlpha = 0.2

// ewma is an exponentially weighted moving average of durations, updated
// without a lock. The zero value has no sample.
type ewma struct{ bits atomic.Uint64 } // float64 bits, seconds; 0: no sample

func (a *ewma) observe(d time.Duration) {
	sample := d.Seconds()
	for {
		old := a.bits.Load()
		next := sample
		if old != 0 {
			prev := math.Float64frombits(old)
			next = prev + ewmaAlpha*(sample-prev)
		}
		if a.bits.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// value returns the average; 0 with no sample.
func (a *ewma) value() time.Duration {
	return time.Duration(math.Float64frombits(a.bits.Load()) * float64(time.Second))
}

// beginAttempt and endAttempt bracket one attempt on e for its statistics.
func (s *endpointState) beginAttempt() {
	s.hot.started.Add(1)
}

func (s *endpointState) endAttempt(latency time.Duration) {
	s.hot.finished.Add(1)
	s.hot.latency.observe(latency)
	s.m.latency(latency)
}

// record accounts for one classified attempt: statistics, metrics and, for
// a failure, the debug log line and the last error.
func (s *endpointState) record(attempt int, v Verdict, resp *http.Response, err error) {
	s.m.attempt(resp, err)
	if !v.Outcome.Failed() {
		if s.stats.consecutive.Load() != 0 {
			s.stats.consecutive.Store(0)
		}
		if v.Outcome == OutcomeSuccess {
			s.cooling.succeeded()
		}
		return
	}
	s.stats.failures.Add(1)
	s.stats.consecutive.Add(1)
	label := outcomeLabel(resp, err)
	msg := label
	if err != nil {
		msg = err.Error()
	} else if resp != nil {
		msg = "status " + label
	}
	s.stats.lastErr.Store(&lastError{msg: msg, at: s.clock.now()})
	if s.logger != nil && s.logger.Enabled(context.Background(), slog.LevelDebug) {
		s.logger.Debug("failover: attempt failed",
			slog.String("endpoint", s.name), slog.Int("attempt", attempt),
			slog.String("outcome", v.Outcome.String()), slog.String("result", label))
	}
}

// outcomeLabel is the coarse outcome of an attempt for metrics and logs:
// the status code, "timeout" or "error".
func outcomeLabel(resp *http.Response, err error) string {
	switch {
	case resp != nil:
		return statusLabel(resp.StatusCode)
	case errors.Is(err, ErrAttemptTimeout):
		return "timeout"
	case errors.Is(err, ErrFirstTokenTimeout):
		return "first_token_timeout"
	default:
		return "error"
	}
}
