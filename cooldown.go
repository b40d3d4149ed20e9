package failover

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// cooldownPolicy is how long cooldowns last: the Config's Cooldown and
// MaxCooldown, defaulted.
type cooldownPolicy struct {
	base time.Duration // after a 429 that names no delay; doubles with each such 429
	max  time.Duration // caps every cooldown
}

// cooldown is an endpoint's rest after a 429 or a Retry-After: until when,
// and how many 429s without a delay came in a row (for the doubling).
type cooldown struct {
	until     atomic.Int64 // unix nanoseconds; 0 or past: none
	throttled atomic.Int32 // consecutive 429s without a delay header
	guessed   atomic.Bool  // the running cooldown's delay was not named by the response (recovery probes may end it)
}

// at returns when the cooldown ends (unix nanoseconds), or 0 when it is not
// running at now.
func (c *cooldown) at(now int64) int64 {
	if until := c.until.Load(); until > now {
		return until
	}
	return 0
}

// succeeded ends the run of 429s the doubling counts.
func (c *cooldown) succeeded() {
	if c.throttled.Load() != 0 {
		c.throttled.Store(0)
	}
}

// extend makes the cooldown last at least until until; it never shortens
// one already running. It reports whether it changed anything.
func (c *cooldown) extend(until int64) bool {
	for {
		old := c.until.Load()
		if old >= until {
			return false
		}
		if c.until.CompareAndSwap(old, until) {
			return true
		}
	}
}

// startCooldown rests e after a failed response when it asks for it: a 429,
// for the delay its headers give or, without one, the policy's base doubled
// for each consecutive such 429; a 503 only for the delay its Retry-After
// (or retry-after-ms) gives. Every cooldown is capped at the policy's max.
func (e *endpoint) startCooldown(resp *http.Response) {
	throttled := resp.StatusCode == http.StatusTooManyRequests
	now := e.clock.now()
	d, ok := retryDelay(resp.Header, now, e.cool.max, throttled)
	if !ok {
		if !throttled {
			return
		}
		d = e.cool.doubled(e.cooling.throttled.Add(1) - 1)
	}
	if d <= 0 || !e.cooling.extend(now.Add(d).UnixNano()) {
		return
	}
	e.cooling.guessed.Store(!ok)
	e.heal.watch(e.endpointState) // probes decide whether it is theirs
	e.bud.fleet.cooled(e.name, now.Add(d).UnixNano())

	e.m.cooldown()
	if e.logger != nil {
		e.logger.Warn("failover: endpoint cooling down",
			slog.String("endpoint", e.name), slog.Int("status", resp.StatusCode), slog.Duration("for", d))
	}
}

// doubled returns the base cooldown doubled n times, capped at max (also
// where the shift would overflow).
func (p cooldownPolicy) doubled(n int32) time.Duration {
	n = min(n, 30)
	if p.base > p.max>>n {
		return p.max
	}
	return p.base << n
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
			d, ok = laterReset(h)
		}
	}
	if !ok {
		return 0, false
	}
	return min(max(d, 0), limit), true
}

// laterReset returns the later of the x-ratelimit-reset-requests and
// x-ratelimit-reset-tokens delays, of those present.
func laterReset(h http.Header) (time.Duration, bool) {
	dr, okr := parseResetDuration(h.Get("X-Ratelimit-Reset-Requests"))
	dt, okt := parseResetDuration(h.Get("X-Ratelimit-Reset-Tokens"))
	switch {
	case okr && okt:
		return max(dr, dt), true
	case okr:
		return dr, true
	case okt:
		return dt, true
	}
	return 0, false
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
