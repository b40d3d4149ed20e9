package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"
)

// Endpoint is one upstream that can serve the client's requests: a base URL,
// the key to present there, and how much traffic it should take.
//
// The zero value is not usable: BaseURL is required. Every other field has a
// documented default for its zero value. An Endpoint is copied into the
// [Transport] by [New]; changing it afterwards has no effect.
type Endpoint struct {
	// Name labels the endpoint in metrics, logs, health and errors. The
	// default is the host of BaseURL, suffixed with "-2", "-3", ... where
	// several endpoints share a host. Names must be unique.
	Name string

	// BaseURL is the absolute http or https URL requests are sent to. It may
	// carry a path prefix (https://proxy.example/openai/v1), which replaces
	// the client-side base path of each request, and a query, whose
	// parameters are added to every request's (Azure's api-version),
	// replacing the caller's of the same name. Its escaping is kept. It
	// must not carry user information, a fragment or a query that does not
	// parse. Required.
	BaseURL string

	// APIKey is sent as "Authorization: Bearer <APIKey>", replacing the
	// caller's Authorization header. The caller's OpenAI-Organization and
	// OpenAI-Project headers, which scope the caller's key, are then
	// dropped; set the endpoint's own in Header. Empty keeps the caller's
	// headers as they are.
	APIKey string

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

	// Disabled keeps the endpoint configured (in health and metrics) but
	// never chosen. The zero value, false, means enabled.
	Disabled bool

	// Header holds extra headers set on every request to this endpoint,
	// replacing the caller's values for the same keys in any spelling.
	// Nil means none.
	Header http.Header
}

// String returns the endpoint's name and base URL, never its key, so that
// printing an Endpoint or a Config with %v cannot leak a key.
func (e Endpoint) String() string {
	return fmt.Sprintf("%s (%s)", e.Name, redactURL(e.BaseURL))
}

// GoString is String for the %#v verb.
func (e Endpoint) GoString() string {
	return "failover.Endpoint{" + e.String() + "}"
}

// endpoint is an Endpoint with its live state. Its configuration is
// immutable after New; its state is atomics, the breaker's own short lock and
// the limiter's own short lock: no lock of the Transport's.
type endpoint struct {
	cfg      Endpoint
	index    int    // position in Transport.endpoints
	name     string // == cfg.Name
	scheme   string
	host     string
	path     string // path prefix without trailing slash (unless escaped, %2F)
	escPath  string // the same, escaped as BaseURL has it
	rawPath  bool   // escPath is not the default escaping of path
	query    url.Values
	rawQuery string   // BaseURL's query as written, sent before the caller's
	auth     []string // {"Bearer <key>"}, nil when APIKey is empty
	header   http.Header
	// drop are the caller's headers removed, in any spelling, from each
	// request to this endpoint: those it sets itself (Authorization when
	// it has a key, its extra headers), so that the caller's value never
	// travels beside its own, and with a key, OpenAI-Organization and
	// OpenAI-Project, which qualify the caller's key, not this one.
	drop    []headerName
	timeout time.Duration

	limiter *rate.Limiter // nil when unlimited
	limMu   sync.Mutex    // orders clock readings given to limiter (allowRate)
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]

	// breakerState mirrors the breaker's state (set in OnStateChange) so
	// the choice can skip an open endpoint without taking the breaker's
	// lock. openUntil is when an open breaker lets a trial through (unix
	// nanoseconds).
	breakerState atomic.Int32
	// gen counts the breaker's state changes, as gobreaker counts its
	// generations: a result only counts in the generation its attempt
	// was admitted in (see ticket).
	gen         atomic.Uint64
	openUntil   atomic.Int64
	stateSince  atomic.Int64
	keyRejected atomic.Bool // set while reporting a failure that must open the breaker at once

	pendingMu  sync.Mutex
	pending    []transition
	hasPending atomic.Bool

	cooldownUntil atomic.Int64 // unix nanoseconds; 0 or past: none
	throttled     atomic.Int32 // consecutive 429s without Retry-After, for the doubling default

	stats endpointStats
	m     *endpointMetrics // nil when metrics are off

	// hot is written by every attempt. It sits on cache lines of its own
	// so that those writes, from every core, do not keep evicting the
	// read-mostly fields above that every request reads.
	_   [64]byte
	hot hotStats
	_   [64]byte
}

// endpointStats are the counters behind [EndpointHealth] that change only
// when an attempt fails (or a failure streak ends).
type endpointStats struct {
	failures    atomic.Uint64
	consecutive atomic.Uint64
	lastErr     atomic.Pointer[lastError]

	// unsettled counts the failures reported to the breaker since the
	// last success reported to it: while it is not zero, a success must
	// be reported too, or the breaker would keep counting failures that
	// the success ended. It is raised after the breaker hears of a
	// failure and taken (Swap) before it hears of a success, so it is
	// never zero while the breaker counts a failure; at worst it makes a
	// success be reported that the breaker did not need.
	unsettled atomic.Int64
}

// hotStats are the counters behind [EndpointHealth] that every attempt
// writes: started and finished attempts (in flight is their difference)
// and the latency average.
type hotStats struct {
	started     atomic.Uint64
	finished    atomic.Uint64
	latencyEWMA atomic.Uint64 // float64 bits, seconds
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

// latencyAlpha is the weight of the newest sample in the latency EWMA.
const latencyAlpha = 0.2

func (s *hotStats) observeLatency(d time.Duration) {
	sample := d.Seconds()
	for {
		old := s.latencyEWMA.Load()
		next := sample
		if old != 0 {
			prev := math.Float64frombits(old)
			next = prev + latencyAlpha*(sample-prev)
		}
		if s.latencyEWMA.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// coolingUntil returns when e's cooldown ends (unix nanoseconds), or 0 when
// it is not cooling down at now.
func (e *endpoint) coolingUntil(now int64) int64 {
	if until := e.cooldownUntil.Load(); until > now {
		return until
	}
	return 0
}

// openAt reports whether e's breaker is open and still refusing at now, as
// far as the mirrored state tells without the breaker's lock; the breaker
// itself has the last word.
func (e *endpoint) openAt(now int64) bool {
	return gobreaker.State(e.breakerState.Load()) == gobreaker.StateOpen && now < e.openUntil.Load()
}

// allowRate takes a token from e's limiter if one is available now. The
// clock is read under limMu: rate.Limiter counts time from the latest
// instant it was given, so an instant older than one already given (a
// goroutine descheduled between reading the clock and the limiter) would
// hand out tokens twice. Only rate-limited endpoints pay for this lock.
func (e *endpoint) allowRate(now func() time.Time) bool {
	e.limMu.Lock()
	defer e.limMu.Unlock()
	return e.limiter.AllowN(now(), 1)
}

// tier is the eligible endpoints of one priority with their weighted
// schedule. A pick is one atomic add on next; a tier of one endpoint needs
// not even that.
type tier struct {
	priority int
	members  []*endpoint
	schedule []uint16 // member indexes in smooth weighted round robin order
	_        [64]byte // next, written by every request, on a line of its own
	next     atomic.Uint64
	_        [56]byte
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
	byPrio := map[int][]*endpoint{}
	for _, e := range eps {
		if e.cfg.Disabled {
			continue
		}
		byPrio[e.cfg.Priority] = append(byPrio[e.cfg.Priority], e)
	}
	prios := make([]int, 0, len(byPrio))
	for p := range byPrio {
		prios = append(prios, p)
	}
	sort.Ints(prios)
	tiers := make([]*tier, 0, len(prios))
	for _, p := range prios {
		members := byPrio[p]
		weights := make([]int, len(members))
		for i, m := range members {
			weights[i] = m.cfg.Weight
		}
		tiers = append(tiers, &tier{priority: p, members: members, schedule: swrrSchedule(weights)})
	}
	return tiers
}

// swrrSchedule returns one full cycle of smooth weighted round robin (the
// nginx algorithm) over weights: each index appears weights[i] times, spread
// as evenly as the algorithm spreads them.
func swrrSchedule(weights []int) []uint16 {
	w := normalizeWeights(weights)
	total := 0
	for _, x := range w {
		total += x
	}
	current := make([]int, len(w))
	out := make([]uint16, 0, total)
	for range total {
		best := 0
		for i := range w {
			current[i] += w[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, uint16(best))
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

// prepareEndpoints validates the configured endpoints, fills their defaults
// and builds their live state. Errors name the endpoint by its position and
// name, never by its key.
func prepareEndpoints(cfgs []Endpoint) ([]*endpoint, error) {
	if len(cfgs) == 0 {
		return nil, ErrNoEndpoints
	}
	if len(cfgs) > math.MaxUint16 {
		return nil, fmt.Errorf("failover: %d endpoints configured, at most %d supported", len(cfgs), math.MaxUint16)
	}
	eps := make([]*endpoint, len(cfgs))
	var errs []error
	hostCount := map[string]int{}
	for i, c := range cfgs {
		e, err := prepareEndpoint(i, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		eps[i] = e
		if c.Name == "" {
			hostCount[e.host]++
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Default names: the host, made unique in configuration order.
	seen := map[string]int{}
	names := map[string]bool{}
	for _, e := range eps {
		if e.cfg.Name != "" {
			names[e.cfg.Name] = true
		}
	}
	for _, e := range eps {
		if e.cfg.Name != "" {
			continue
		}
		base := e.host
		n := seen[base] + 1
		name := base
		if n > 1 {
			name = fmt.Sprintf("%s-%d", base, n)
		}
		for names[name] {
			n++
			name = fmt.Sprintf("%s-%d", base, n)
		}
		seen[base] = n
		names[name] = true
		e.cfg.Name = name
	}
	dup := map[string]int{}
	for i, e := range eps {
		e.name = e.cfg.Name
		if j, ok := dup[e.name]; ok {
			errs = append(errs, fmt.Errorf("failover: endpoint %d: name %q is already used by endpoint %d", i, e.name, j))
		}
		dup[e.name] = i
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return eps, nil
}

func prepareEndpoint(i int, c Endpoint) (*endpoint, error) {
	label := fmt.Sprintf("failover: endpoint %d", i)
	if c.Name != "" {
		label = fmt.Sprintf("failover: endpoint %d (%q)", i, c.Name)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{label}, args...)...))
	}
	u, err := parseBaseURL(c.BaseURL)
	if err != nil {
		bad("BaseURL: %w", err)
	}
	if c.Weight < 0 {
		bad("Weight %d is negative", c.Weight)
	}
	if c.MaxRPS < 0 || math.IsNaN(c.MaxRPS) || math.IsInf(c.MaxRPS, 0) {
		bad("MaxRPS %v is not a non-negative finite number", c.MaxRPS)
	}
	if c.Burst < 0 {
		bad("Burst %d is negative", c.Burst)
	}
	if c.Timeout < 0 {
		bad("Timeout %v is negative", c.Timeout)
	}
	if !utf8.ValidString(c.Name) {
		bad("Name is not valid UTF-8")
	}
	if strings.ContainsAny(c.APIKey, "\r\n") {
		bad("APIKey contains a line break")
	}
	for _, k := range slices.Sorted(maps.Keys(c.Header)) {
		if !validHeaderName(k) {
			bad("Header: %q is not a valid header name", k)
			continue
		}
		if slices.ContainsFunc(c.Header[k], func(v string) bool { return strings.ContainsAny(v, "\r\n") }) {
			bad("Header %q: value contains a line break", k)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if c.Weight == 0 {
		c.Weight = 1
	}
	if c.MaxRPS > 0 && c.Burst == 0 {
		c.Burst = max(1, int(math.Ceil(c.MaxRPS)))
	}
	if c.Header != nil {
		h := make(http.Header, len(c.Header))
		for k, vs := range c.Header {
			ck := http.CanonicalHeaderKey(k)
			h[ck] = append(h[ck], vs...)
		}
		c.Header = h
	}
	e := &endpoint{
		index:   i,
		scheme:  u.Scheme,
		host:    u.Host,
		path:    strings.TrimSuffix(u.Path, "/"),
		timeout: c.Timeout,
		header:  c.Header,
	}
	e.escPath = strings.TrimSuffix(u.EscapedPath(), "/")
	if e.escPath == u.EscapedPath() {
		// The path ends in an escaped slash (%2F), not a separator: it
		// stays, in both forms, so that they still agree.
		e.path = u.Path
	}
	e.rawPath = u.RawPath != ""
	if u.RawQuery != "" {
		e.query, _ = url.ParseQuery(u.RawQuery) // parseBaseURL checked it
		e.rawQuery = u.RawQuery
	}
	if c.APIKey != "" {
		e.auth = []string{"Bearer " + c.APIKey}
		e.drop = append(e.drop, headerName{"Authorization", true})
		for _, k := range keyScopeHeaders {
			if _, set := c.Header[k]; !set {
				e.drop = append(e.drop, headerName{k, false})
			}
		}
	}
	for k := range c.Header {
		e.drop = append(e.drop, headerName{k, true})
	}
	if c.MaxRPS > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(c.MaxRPS), c.Burst)
	}
	e.cfg = c
	return e, nil
}

// keyScopeHeaders name the account and project an OpenAI key is used
// under (canonical spelling). A caller's apply to the caller's key: sent
// with an endpoint's key of another organization they get a 401, which
// would open that endpoint's breaker.
var keyScopeHeaders = []string{"Openai-Organization", "Openai-Project"}

// headerName is a canonical header name the rewrite removes from the
// caller's headers in any spelling; set means the endpoint sets it again,
// so its canonical spelling is left to be overwritten.
type headerName struct {
	name string
	set  bool
}

// parseBaseURL parses an absolute http(s) URL without user information. Its
// errors quote no part of the URL beyond the scheme, as a URL may carry a
// secret in its query.
func parseBaseURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("empty; want an absolute http or https URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("does not parse as a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		if u.Scheme == "" {
			return nil, errors.New("has no scheme; want http:// or https://")
		}
		// The scheme is not quoted: a key pasted by mistake could be it.
		return nil, errors.New("scheme is not http or https")
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("has no host")
	case u.User != nil:
		return nil, errors.New("carries user information; put credentials in APIKey or Header")
	case u.Fragment != "":
		return nil, errors.New("carries a fragment")
	}
	if _, err := url.ParseQuery(u.RawQuery); err != nil {
		return nil, errors.New("query does not parse")
	}
	u.Host = canonicalHost(u.Scheme, u.Host)
	return u, nil
}

// canonicalHost lowercases host (but an IPv6 zone, an interface name that
// may be case-sensitive) and removes the scheme's default port.
func canonicalHost(scheme, host string) string {
	// url.Parse has unescaped the zone's "%25" to "%".
	name, zone, hasZone := strings.Cut(host, "%")
	host = strings.ToLower(name)
	if hasZone {
		host += "%" + zone
	}
	switch {
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		return strings.TrimSuffix(host, ":443")
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		return strings.TrimSuffix(host, ":80")
	}
	return host
}

// redactURL returns s without its query and user information, for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	return u.String()
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// initBreaker gives e its circuit breaker. The breaker's OnStateChange runs
// under the breaker's lock, so it only records the change; the goroutine
// that caused it logs it afterwards (flushTransitions).
func (t *Transport) initBreaker(e *endpoint, bc BreakerConfig) {
	threshold := clampUint32(orDefault(bc.FailureThreshold, defaultFailures))
	timeout := orDefault(bc.OpenTimeout, defaultOpenTimeout)
	e.stateSince.Store(t.now().UnixNano())
	e.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        e.name,
		MaxRequests: clampUint32(orDefault(bc.HalfOpenRequests, 1)),
		Timeout:     timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			rejected := e.keyRejected.Load()
			return rejected || c.ConsecutiveFailures >= threshold
		},
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return err == errNotSent || err == errThrottled },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			now := t.now()
			if to == gobreaker.StateOpen {
				// Before the state: whoever sees it open must find
				// when it reopens.
				e.openUntil.Store(now.Add(timeout).UnixNano())
			}
			e.stateSince.Store(now.UnixNano())
			e.gen.Add(1)
			e.breakerState.Store(int32(to))
			if t.logger == nil {
				return // nothing to log later
			}
			e.pendingMu.Lock()
			e.pending = append(e.pending, transition{from: from, to: to})
			e.pendingMu.Unlock()
			e.hasPending.Store(true)
		},
	})
}

// clampUint32 converts n, not negative, to the breaker's uint32 counts,
// saturating: a threshold above them is one never reached.
func clampUint32(n int) uint32 {
	if uint64(n) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

// breakerNow returns e's breaker state as the breaker itself has it, not
// the mirror: an open breaker whose timeout has passed is half-open even
// when no request has come since. Health and the metrics read it.
func (t *Transport) breakerNow(e *endpoint) gobreaker.State {
	bs := e.breaker.State()
	t.flushTransitions(e) // State may have changed it
	return bs
}

// transition is a breaker state change waiting to be logged.
type transition struct{ from, to gobreaker.State }

// flushTransitions logs e's breaker state changes recorded since the last
// flush (recorded only when there is a logger). It is called after calls
// into the breaker, outside its lock.
func (t *Transport) flushTransitions(e *endpoint) {
	if !e.hasPending.Load() {
		return
	}
	e.pendingMu.Lock()
	pending := e.pending
	e.pending = nil
	e.hasPending.Store(false)
	e.pendingMu.Unlock()
	for _, tr := range pending {
		t.logger.Warn("failover: circuit breaker state changed",
			slog.String("endpoint", e.name), slog.String("from", tr.from.String()), slog.String("to", tr.to.String()))
	}
}

// beginAttempt and endAttempt bracket one attempt on e for its statistics.
func (e *endpoint) beginAttempt() {
	e.hot.started.Add(1)
}

func (e *endpoint) endAttempt(latency time.Duration) {
	e.hot.finished.Add(1)
	e.hot.observeLatency(latency)
	e.m.latency(latency)
}

// record accounts for one classified attempt: statistics, metrics and, for
// a failure, the debug log line and the last error.
func (t *Transport) record(e *endpoint, attempt int, v Verdict, resp *http.Response, err error) {
	e.m.attempt(resp, err)
	if !v.Outcome.Failed() {
		if e.stats.consecutive.Load() != 0 {
			e.stats.consecutive.Store(0)
		}
		if v.Outcome == OutcomeSuccess && e.throttled.Load() != 0 {
			e.throttled.Store(0)
		}
		return
	}
	e.stats.failures.Add(1)
	e.stats.consecutive.Add(1)
	label := outcomeLabel(resp, err)
	msg := label
	if err != nil {
		msg = err.Error()
	} else if resp != nil {
		msg = "status " + label
	}
	e.stats.lastErr.Store(&lastError{msg: msg, at: t.now()})
	if t.logger != nil && t.logger.Enabled(context.Background(), slog.LevelDebug) {
		t.logger.Debug("failover: attempt failed",
			slog.String("endpoint", e.name), slog.Int("attempt", attempt),
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
	default:
		return "error"
	}
}

func statusLabel(code int) string {
	if code >= 100 && code <= 599 {
		return strconv.Itoa(code)
	}
	return "other"
}

// ticket is the breaker's admission of one attempt: done is the breaker's
// own callback, nil on the fast path, and gen the endpoint's breaker
// generation (read before asking the breaker) when it was admitted.
type ticket struct {
	done func(error)
	gen  uint64
}

// stale reports whether the breaker has changed state since tk was issued:
// it opened, or opened and closed again, while the attempt ran. gobreaker
// ignores a stale done; the fast path must ignore a stale result too.
func (e *endpoint) stale(tk ticket) bool { return e.gen.Load() != tk.gen }

// admit asks e's breaker to let an attempt through. On the fast path (the
// breaker closed and counting no failure) the ticket has a nil done and
// the breaker's lock is not taken: a success would teach the breaker
// nothing, and a failure is reported through settle, which then asks the
// breaker first. Otherwise done is the breaker's own, to run exactly once
// through settle.
func (e *endpoint) admit() (ticket, bool) {
	tk := ticket{gen: e.gen.Load()}
	if gobreaker.State(e.breakerState.Load()) == gobreaker.StateClosed && e.stats.unsettled.Load() == 0 {
		return tk, true
	}
	done, err := e.breaker.Allow()
	tk.done = done
	return tk, err == nil
}

// settle reports an attempt's result to e's breaker: through done when
// admit gave one, else (fast path) only when the breaker has something to
// learn.
func (e *endpoint) settle(done func(error), err error) {
	if done == nil {
		if err == errNotSent || err == errThrottled {
			return // the breaker would ignore it
		}
		d, aerr := e.breaker.Allow()
		if aerr != nil {
			return // opened meanwhile: nothing left to report
		}
		done = d
	}
	done(err)
}

// reportSuccess settles a successful attempt. On the fast path it tells the
// breaker only when failures were reported to it meanwhile (see
// endpointStats.unsettled), so that its count of consecutive failures
// resets. A stale success (see ticket) settles nothing it owes: the
// breaker would not count it, so the next success does.
func (e *endpoint) reportSuccess(tk ticket) {
	// Taken before the breaker hears of the success: see unsettled.
	owed := !e.stale(tk) && e.stats.unsettled.Load() != 0 && e.stats.unsettled.Swap(0) != 0
	if tk.done != nil || owed {
		e.settle(tk.done, nil)
	}
}

// reportFailure tells e's breaker about a failed attempt and starts a
// cooldown when the response asks for one. A failure admitted on the fast
// path before the breaker last changed state is not counted, as gobreaker
// does not count a stale done; but a rejected key always is, in the
// breaker's current state.
func (t *Transport) reportFailure(e *endpoint, v Verdict, resp *http.Response, tk ticket) {
	switch {
	case v.Outcome == OutcomeThrottled:
		e.settle(tk.done, errThrottled)
	case v.Outcome == OutcomeKeyRejected:
		if e.stale(tk) {
			e.settle(tk.done, errNotSent)
			tk.done = nil // report it afresh
		}
		e.keyRejected.Store(true)
		e.settle(tk.done, errKeyRejected)
		e.keyRejected.Store(false)
		e.stats.unsettled.Add(1)
	case tk.done == nil && e.stale(tk):
		// Stale on the fast path: dropped.
	default:
		e.settle(tk.done, errFailed)
		e.stats.unsettled.Add(1)
	}
	t.flushTransitions(e)
	if resp == nil {
		return
	}
	if v.Outcome == OutcomeThrottled || resp.StatusCode == http.StatusServiceUnavailable {
		t.startCooldown(e, resp)
	}
}

// startCooldown rests e for the delay resp's headers ask for or, for a 429
// without one, the default cooldown doubled for each consecutive such 429;
// capped at MaxCooldown.
func (t *Transport) startCooldown(e *endpoint, resp *http.Response) {
	now := t.now()
	d, ok := retryDelay(resp.Header, now, t.maxCool, resp.StatusCode == http.StatusTooManyRequests)
	if !ok {
		if resp.StatusCode != http.StatusTooManyRequests {
			return
		}
		n := min(e.throttled.Add(1)-1, 30)
		if t.cooldown > t.maxCool>>n {
			d = t.maxCool // also where the shift would overflow
		} else {
			d = t.cooldown << n
		}
	}
	if d <= 0 {
		return
	}
	until := now.Add(d).UnixNano()
	for {
		old := e.cooldownUntil.Load()
		if old >= until {
			return
		}
		if e.cooldownUntil.CompareAndSwap(old, until) {
			break
		}
	}
	e.m.cooldown()
	if t.logger != nil {
		t.logger.Warn("failover: endpoint cooling down",
			slog.String("endpoint", e.name), slog.Int("status", resp.StatusCode), slog.Duration("for", d))
	}
}
