package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"
)

// Outcome is what one attempt's result means for the request and for the
// endpoint that produced it. The zero value is [OutcomeSuccess].
type Outcome uint8

const (
	// OutcomeSuccess: the response goes to the caller, and the endpoint's
	// breaker counts a success.
	OutcomeSuccess Outcome = iota
	// OutcomeCallerError: the request itself is wrong (400, 404, 422, ...).
	// The response goes to the caller at once, since another endpoint
	// would refuse it too; the breaker counts a success, as the endpoint
	// is working.
	OutcomeCallerError
	// OutcomeFailure: the endpoint failed (connection error, per-attempt
	// timeout, 5xx, 403, ...). The request fails over and the breaker
	// counts a failure.
	OutcomeFailure
	// OutcomeThrottled: the endpoint is rate limiting (429). It cools down
	// for the time its headers ask, the request fails over, and the
	// breaker is not touched.
	OutcomeThrottled
	// OutcomeKeyRejected: the endpoint refuses the key (401, or a 429 whose
	// error code is insufficient_quota). Its breaker opens at once, since
	// retrying does not heal a revoked key, and the request fails over.
	OutcomeKeyRejected
)

var outcomeNames = [...]string{"success", "caller-error", "failure", "throttled", "key-rejected"}

// String returns the outcome's lower-case name, such as "throttled".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Failed reports whether the outcome makes the request fail over.
func (o Outcome) Failed() bool {
	return o >= OutcomeFailure
}

// Verdict is a [Classifier]'s decision on one attempt. The zero value is a
// success that allows the endpoint to be tried again.
type Verdict struct {
	// Outcome says what happens to the request and the endpoint.
	Outcome Outcome
	// AvoidEndpoint forbids trying the same endpoint again for this
	// request (the upstream sent "x-should-retry: false"). A failed
	// Outcome still fails over to other endpoints.
	AvoidEndpoint bool
}

// Classifier decides what an attempt's result means. Exactly one of resp and
// err is non-nil. For a response with status 300 or above, body holds its
// first bytes (up to [Config].MaxErrorBody, gunzipped if the caller asked
// for gzip itself) and the classifier must not read resp.Body; for other
// responses body is nil. A Classifier must be safe for
// concurrent use. Wrap [DefaultClassifier] to change one rule and keep the
// rest.
type Classifier func(resp *http.Response, body []byte, err error) Verdict

// DefaultClassifier is the classification [New] uses when
// [Config].Classifier is nil:
//
//   - a transport error or per-attempt timeout: OutcomeFailure;
//   - 401, and 429 whose OpenAI error code is "insufficient_quota":
//     OutcomeKeyRejected;
//   - 429: OutcomeThrottled;
//   - 403, 408, 409 and 500-599: OutcomeFailure;
//   - any other 4xx (400, 404, 422, ...): OutcomeCallerError;
//   - 1xx, 2xx and 3xx: OutcomeSuccess.
//
// The header "x-should-retry: true" turns any other non-2xx response into
// OutcomeFailure; "x-should-retry: false" sets AvoidEndpoint, so the same
// endpoint is not tried again for the request, and leaves the outcome as
// the status says.
func DefaultClassifier(resp *http.Response, body []byte, err error) Verdict {
	if err != nil || resp == nil {
		return Verdict{Outcome: OutcomeFailure}
	}
	code := resp.StatusCode
	var v Verdict
	switch {
	case code == http.StatusUnauthorized:
		v.Outcome = OutcomeKeyRejected
	case code == http.StatusTooManyRequests:
		v.Outcome = OutcomeThrottled
		if isInsufficientQuota(body) {
			v.Outcome = OutcomeKeyRejected
		}
	case code == http.StatusForbidden, code == http.StatusRequestTimeout, code == http.StatusConflict, code >= 500:
		v.Outcome = OutcomeFailure
	case code >= 400:
		v.Outcome = OutcomeCallerError
	}
	if code >= 300 {
		switch resp.Header.Get("X-Should-Retry") {
		case "true":
			if !v.Outcome.Failed() {
				v.Outcome = OutcomeFailure
			}
		case "false":
			v.AvoidEndpoint = true
		}
	}
	return v
}

// isInsufficientQuota reports whether an OpenAI error body says the key's
// credit is spent.
func isInsufficientQuota(body []byte) bool {
	if !bytes.Contains(body, []byte("insufficient_quota")) {
		return false
	}
	var e struct {
		Error struct {
			Code json.RawMessage `json:"code"`
			Type string          `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return false
	}
	return string(e.Error.Code) == `"insufficient_quota"` || e.Error.Type == "insufficient_quota"
}

// DefaultBackoff is the backoff [New] uses when [Config].Backoff is nil:
// exponential from min, doubling with each round, capped at max, with equal
// jitter (a uniformly random duration between half the step and the whole
// step). It ignores resp: Retry-After drives cooldowns, not backoff. It has
// the signature of go-retryablehttp's Backoff, so retryablehttp's own
// backoffs, such as retryablehttp.LinearJitterBackoff, fit
// [Config].Backoff too.
func DefaultBackoff(min, max time.Duration, attemptNum int, _ *http.Response) time.Duration {
	d := retryablehttp.DefaultBackoff(min, max, attemptNum, nil)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// retryDelay returns how long the response headers ask the client to wait
// before the next request: retry-after-ms, else Retry-After (seconds or an
// HTTP date), else, when resets is set (for a 429), the later of
// x-ratelimit-reset-requests and x-ratelimit-reset-tokens (Go durations such
// as "1s" or "6m0s", as OpenAI sends them; a 429 does not say which limit
// it hit). It never returns a negative duration nor one above limit; ok is
// false when no header gives a usable delay.
func retryDelay(h http.Header, now time.Time, limit time.Duration, resets bool) (d time.Duration, ok bool) {
	if len(h) == 0 {
		return 0, false
	}
	if d, ok = parseMillis(h.Get("Retry-After-Ms")); !ok {
		if d, ok = parseRetryAfter(h.Get("Retry-After"), now); !ok && resets {
			dr, okr := parseResetDuration(h.Get("X-Ratelimit-Reset-Requests"))
			dt, okt := parseResetDuration(h.Get("X-Ratelimit-Reset-Tokens"))
			switch {
			case okr && okt:
				d, ok = max(dr, dt), true
			case okr:
				d, ok = dr, true
			case okt:
				d, ok = dt, true
			}
		}
	}
	if !ok {
		return 0, false
	}
	return min(max(d, 0), limit), true
}

// maxHeaderDelay bounds any delay parsed from a header before the caller's
// own cap applies, so that arithmetic on it cannot overflow.
const maxHeaderDelay = 24 * time.Hour

func parseMillis(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	ms, err := strconv.ParseFloat(s, 64)
	if err != nil || ms < 0 || ms != ms {
		return 0, false
	}
	if ms > float64(maxHeaderDelay/time.Millisecond) {
		return maxHeaderDelay, true
	}
	return time.Duration(ms * float64(time.Millisecond)), true
}

func parseRetryAfter(s string, now time.Time) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(maxHeaderDelay/time.Second) {
			return maxHeaderDelay, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(s)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		return 0, true
	}
	return min(d, maxHeaderDelay), true
}

func parseResetDuration(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		// Some servers send plain seconds here.
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || secs < 0 || secs != secs {
			return 0, false
		}
		if secs > maxHeaderDelay.Seconds() {
			return maxHeaderDelay, true
		}
		return time.Duration(secs * float64(time.Second)), true
	}
	if d < 0 {
		return 0, false
	}
	return min(d, maxHeaderDelay), true
}

// requestState is what one request remembers across its attempts. It lives
// on the request's stack; its sets allocate only past 64 endpoints.
type requestState struct {
	tried   bitset // tried in the current round
	avoid   bitset // not to be tried again (x-should-retry: false)
	spilled bitset // found at their rate limit (counted in metrics once)
	rounds  int    // backoff rounds made
	waited  time.Duration
}

// bitset is a set of endpoint indexes.
type bitset struct {
	small uint64
	big   []uint64
}

func (s *bitset) has(i int) bool {
	if i < 64 {
		return s.small&(1<<i) != 0
	}
	w := i/64 - 1
	return w < len(s.big) && s.big[w]&(1<<(i%64)) != 0
}

func (s *bitset) add(i int) {
	if i < 64 {
		s.small |= 1 << i
		return
	}
	w := i/64 - 1
	for len(s.big) <= w {
		s.big = append(s.big, 0)
	}
	s.big[w] |= 1 << (i % 64)
}

func (s *bitset) clear() {
	s.small = 0
	clear(s.big)
}

// choose returns the endpoint for the next attempt, with the breaker's
// ticket for it, whose done is to be settled exactly once. When no endpoint
// can take the request now it waits, within MaxWait and the context, for
// the soonest to become available (a rate limiter refilling, a cooldown ending, an open breaker
// letting a trial through) or, when every eligible endpoint was tried, for
// a backoff before trying them again.
func (t *Transport) choose(ctx context.Context, st *requestState) (*endpoint, ticket, error) {
	for {
		clock := lazyClock{now: t.now}
		e, tk, p := t.pick(&clock, st)
		if e != nil {
			return e, tk, nil
		}
		now := clock.get()
		fits := func(d time.Duration) bool {
			if st.waited+d > t.maxWait {
				return false
			}
			dl, ok := ctx.Deadline()
			return !ok || !now.Add(d).After(dl)
		}
		var d time.Duration
		reason := p.reason
		switch {
		case p.wait > 0 && fits(p.wait):
			d = p.wait
			if p.waitTried {
				// Its cooldown serves as the backoff: a new round.
				st.rounds++
				st.tried.clear()
			}
		case p.retryable:
			reason = waitBackoff
			d = t.backoff(t.backoffMin, t.backoffMax, st.rounds, nil)
			if !fits(d) {
				return nil, ticket{}, p.unavailable()
			}
			st.rounds++
			st.tried.clear()
		default:
			return nil, ticket{}, p.unavailable()
		}
		if err := t.sleep(ctx, d); err != nil {
			return nil, ticket{}, err
		}
		st.waited += d
		t.metrics.waited(reason, d)
	}
}

// pickResult says, when no endpoint could be picked, why, and how long until
// the soonest might be.
type pickResult struct {
	wait      time.Duration // until the soonest endpoint is expected free; 0 if none
	reason    waitReason    // what that wait is for
	waitTried bool          // the soonest is an endpoint this request already tried
	retryable bool          // an endpoint tried in this round is eligible again, after a backoff
	open      int
	cooling   int
	limited   int
	avoided   int
}

func (p *pickResult) unavailable() error {
	if p.open+p.cooling+p.limited+p.avoided == 0 {
		return ErrNoEndpointAvailable
	}
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{p.open, "breaker open"}, {p.cooling, "cooling down"}, {p.limited, "at rate limit"}, {p.avoided, "asked not to be retried"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	return fmt.Errorf("%w (%s)", ErrNoEndpointAvailable, strings.Join(parts, ", "))
}

// pick returns the first eligible endpoint: tiers by priority, each walked
// from its weighted round robin start. Cheap atomic checks come first;
// then the breaker admits the request, then the limiter. It does not wait.
func (t *Transport) pick(clock *lazyClock, st *requestState) (*endpoint, ticket, pickResult) {
	var p pickResult
	for _, tr := range t.tiers {
		n := len(tr.members)
		i := tr.start()
		for range n {
			e := tr.members[i]
			if i++; i == n {
				i = 0
			}
			if st.avoid.has(e.index) {
				p.avoided++
				continue
			}
			tried := st.tried.has(e.index)
			if e.cooldownUntil.Load() != 0 {
				ns := clock.get().UnixNano()
				if until := e.coolingUntil(ns); until != 0 {
					p.cooling++
					p.soonest(time.Duration(until-ns), waitCooldown, tried)
					continue
				}
			}
			if gobreaker.State(e.breakerState.Load()) == gobreaker.StateOpen {
				if ns := clock.get().UnixNano(); e.openAt(ns) {
					p.open++
					p.soonest(time.Duration(e.openUntil.Load()-ns), waitBreaker, tried)
					continue
				}
			}
			if tried {
				p.retryable = true
				continue
			}
			tk, ok := e.admit()
			if !ok {
				p.open++
				continue
			}
			if e.limiter != nil && !e.allowRate(t.now) {
				e.settle(tk.done, errNotSent)
				p.limited++
				p.soonest(untilToken(e.limiter, t.now()), waitRateLimit, false)
				if !st.spilled.has(e.index) {
					st.spilled.add(e.index) // count each request once
					e.m.spilled()
				}
				continue
			}
			return e, tk, p
		}
	}
	return nil, ticket{}, p
}

func (p *pickResult) soonest(d time.Duration, r waitReason, tried bool) {
	d = max(d, time.Millisecond)
	if p.wait == 0 || d < p.wait {
		p.wait, p.reason, p.waitTried = d, r, tried
	}
}

// untilToken estimates how long until lim has a whole token.
func untilToken(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 {
		return time.Millisecond
	}
	return time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}

// lazyClock reads its clock at most once, and only when asked: the happy
// path (no cooldown, breaker closed, no limiter) reads no time at all.
type lazyClock struct {
	now func() time.Time
	t   time.Time
	set bool
}

func (c *lazyClock) get() time.Time {
	if !c.set {
		c.t, c.set = c.now(), true
	}
	return c.t
}
