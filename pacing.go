package failover

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pacing from the provider's rate limit headers. OpenAI answers every
// request with
//
//	x-ratelimit-limit-requests      x-ratelimit-limit-tokens
//	x-ratelimit-remaining-requests  x-ratelimit-remaining-tokens
//	x-ratelimit-reset-requests      x-ratelimit-reset-tokens   (Go durations: 1s, 6m0s, 20ms)
//
// and Azure OpenAI sends the remaining counts (and, on newer versions, the
// rest). Because the provider counts for the whole organisation, these
// figures already reflect every process sending with the key. An endpoint
// whose remaining requests are 0, or whose remaining tokens are fewer than
// a request's estimate, is skipped until the reset, as in a cooldown but
// without a 429 and without the breaker.

// defaultPacingReset is how long a remaining count with no reset header
// holds (Azure's older versions send none): the count is trusted that
// long, then forgotten until the next response.
const defaultPacingReset = time.Second

// Canonical names of the provider's headers.
const (
	hdrLimitRequests     = "X-Ratelimit-Limit-Requests"
	hdrLimitTokens       = "X-Ratelimit-Limit-Tokens"
	hdrRemainingRequests = "X-Ratelimit-Remaining-Requests"
	hdrRemainingTokens   = "X-Ratelimit-Remaining-Tokens"
	hdrResetRequests     = "X-Ratelimit-Reset-Requests"
	hdrResetTokens       = "X-Ratelimit-Reset-Tokens"
)

// rateHeaders is what one response's headers say of the provider's
// limits: -1 for a figure not given.
type rateHeaders struct {
	limitReq, limitTok int64
	leftReq, leftTok   int64
	resetReq, resetTok time.Duration // 0: not given
}

// parseRateHeaders reads h's x-ratelimit-* headers; ok is false when it
// has neither remaining count (the common case for other providers, at
// the cost of two map lookups).
func parseRateHeaders(h http.Header) (rateHeaders, bool) {
	lr, lt := h[hdrRemainingRequests], h[hdrRemainingTokens]
	if len(lr) == 0 && len(lt) == 0 {
		return rateHeaders{}, false
	}
	rh := rateHeaders{limitReq: -1, limitTok: -1, leftReq: -1, leftTok: -1}
	if len(lr) > 0 {
		rh.leftReq = parseCount(lr[0])
	}
	if len(lt) > 0 {
		rh.leftTok = parseCount(lt[0])
	}
	if rh.leftReq < 0 && rh.leftTok < 0 {
		return rateHeaders{}, false
	}
	if v := h[hdrLimitRequests]; len(v) > 0 {
		rh.limitReq = parseCount(v[0])
	}
	if v := h[hdrLimitTokens]; len(v) > 0 {
		rh.limitTok = parseCount(v[0])
	}
	if v := h[hdrResetRequests]; len(v) > 0 {
		rh.resetReq, _ = parseResetDuration(v[0])
	}
	if v := h[hdrResetTokens]; len(v) > 0 {
		rh.resetTok, _ = parseResetDuration(v[0])
	}
	return rh, true
}

// parseCount parses a count of the headers: a non-negative integer, or a
// number with a fraction (cut); -1 when it is neither.
func parseCount(s string) int64 {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return -1
		}
		return n
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != f || f > 1<<62 {
		return -1
	}
	return int64(f)
}

// pacing is an endpoint's view of the provider's limits, from the newest
// response that carried them: atomics, read by every request's choice and
// written by every response that carries the headers; a response sent
// before the one already applied never replaces it.
type pacing struct {
	active atomic.Bool // a window is known: the choice must look

	leftReq  atomic.Int64 // remaining requests; spent locally as requests go
	leftTok  atomic.Int64 // remaining tokens; likewise
	resetReq atomic.Int64 // unix nanoseconds when leftReq resets; 0: unknown
	resetTok atomic.Int64
	limitReq atomic.Int64 // as the provider said; -1 unknown (for health)
	limitTok atomic.Int64

	sent atomic.Int64 // the send time (clock since, at least 1) of the applied response; 0 none
	mu   sync.Mutex   // serializes pause, and clearing active
}

// reorderSlack is how close in time two requests may be sent for the
// provider to count them in either order: a response to a request sent
// within it of the one applied last may only lower the counts.
const reorderSlack = 20 * time.Millisecond

// observe applies rh, the rate limit headers of a response to an attempt
// sent at sent, at now, while inflight other attempts are on their way
// (each of about est tokens): the provider may not have counted them yet,
// so they are taken off its counts. A response to a request sent more
// than reorderSlack after the one applied last (or after its window
// ended) replaces the counts and their resets; any other may only lower
// the counts (the provider counts requests sent together in any order,
// and within a window its count only falls), never move a reset. Headers
// from a failed response apply like any other, for exactly as long as
// they say (capped at limit), never longer. It returns the instant until
// which the endpoint is out of requests, 0 when it is not.
func (p *pacing) observe(rh rateHeaders, sent time.Duration, now time.Time, limit time.Duration, inflight, est int64) (exhaustedUntil int64) {
	fresh := false
	for {
		last := p.sent.Load()
		if last != 0 && int64(sent) <= last+int64(reorderSlack) {
			break
		}
		if p.sent.CompareAndSwap(last, max(int64(sent), 1)) {
			fresh = true
			break
		}
	}
	at := func(d time.Duration) int64 {
		if d <= 0 {
			d = defaultPacingReset
		}
		return now.Add(min(d, limit)).UnixNano()
	}
	ns := now.UnixNano()
	if fresh {
		p.limitReq.Store(rh.limitReq)
		p.limitTok.Store(rh.limitTok)
	}
	inflight = max(inflight, 0)
	if rh.leftReq >= 0 {
		applyCount(&p.leftReq, &p.resetReq, rh.leftReq-inflight, at(rh.resetReq), fresh, ns)
	}
	if rh.leftTok >= 0 {
		applyCount(&p.leftTok, &p.resetTok, rh.leftTok-inflight*max(est, 0), at(rh.resetTok), fresh, ns)
	}
	p.active.Store(true)
	if until := p.resetReq.Load(); rh.leftReq >= 0 && rh.leftReq <= inflight && until > ns {
		return until
	}
	return 0
}

// applyCount sets a window's count to n until until when the response is
// fresh or the window has passed at now; otherwise it only lowers the
// count to n.
func applyCount(left, reset *atomic.Int64, n, until int64, fresh bool, now int64) {
	if fresh || reset.Load() <= now {
		left.Store(n)
		reset.Store(until)
		return
	}
	for {
		cur := left.Load()
		if n >= cur || left.CompareAndSwap(cur, n) {
			return
		}
	}
}

// block reports until when (unix nanoseconds) the endpoint must be skipped
// at now for a request of est tokens (0 when not known), and 0 when it
// need not be: its remaining requests are spent until their reset, or its
// remaining tokens are fewer than est until theirs. est is asked for only
// when a token window is running.
func (p *pacing) block(now int64, est func() int64) int64 {
	rr, rt := p.resetReq.Load(), p.resetTok.Load()
	if rr <= now && rt <= now {
		// Every window known has passed: nothing is known until the
		// next response. Under the lock, so that a response applied
		// meanwhile is not forgotten.
		p.mu.Lock()
		p.active.Store(false)
		if p.resetReq.Load() > now || p.resetTok.Load() > now {
			// observe stores the resets before it sets active: a
			// window it opened meanwhile is seen here, or its own
			// store of active comes after this one.
			p.active.Store(true)
		}
		p.mu.Unlock()
		return 0
	}
	if rr > now && p.leftReq.Load() <= 0 {
		return rr
	}
	if rt > now {
		if n := est(); n > 0 && p.leftTok.Load() < n {
			return rt
		}
	}
	return 0
}

// spend counts a request of est tokens sent, against the remaining counts
// of the windows still running, until the next response says anew.
func (p *pacing) spend(now int64, est int64) {
	if p.resetReq.Load() > now {
		p.leftReq.Add(-1)
	}
	if est > 0 && p.resetTok.Load() > now {
		p.leftTok.Add(-est)
	}
}

// pause makes the endpoint skip requests until until (unix nanoseconds),
// as a provider's exhausted request window would: another process of the
// fleet saw it.
func (p *pacing) pause(until int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resetReq.Load() < until {
		p.resetReq.Store(until)
	}
	p.leftReq.Store(0)
	p.active.Store(true)
}

// ProviderLimits is what the provider's x-ratelimit-* headers said last of
// an endpoint's limits, as [EndpointHealth] reports it. The zero value,
// which Health never reports (it reports -1 for a count it does not
// know), would mean no request or token left, out of limits of zero,
// with no reset time.
type ProviderLimits struct {
	// RemainingRequests and RemainingTokens are the counts the newest
	// response gave, less the requests sent since (and their token
	// estimates); -1 when the provider gave none or its window has passed.
	RemainingRequests int64 `json:"remaining_requests"`
	RemainingTokens   int64 `json:"remaining_tokens"`
	// LimitRequests and LimitTokens are the provider's limits as it gave
	// them; -1 when it gave none. (Azure's request count is not per
	// minute: trust the remaining counts and their resets.)
	LimitRequests int64 `json:"limit_requests"`
	LimitTokens   int64 `json:"limit_tokens"`
	// RequestsReset and TokensReset are when those windows reset; zero
	// when unknown or past.
	RequestsReset time.Time `json:"requests_reset,omitzero"`
	TokensReset   time.Time `json:"tokens_reset,omitzero"`
}

// limits returns p's figures at now; nil when no window is running.
func (p *pacing) limits(now time.Time) *ProviderLimits {
	ns := now.UnixNano()
	rr, rt := p.resetReq.Load(), p.resetTok.Load()
	if rr <= ns && rt <= ns {
		return nil
	}
	l := &ProviderLimits{RemainingRequests: -1, RemainingTokens: -1,
		LimitRequests: p.limitReq.Load(), LimitTokens: p.limitTok.Load()}
	if rr > ns {
		l.RemainingRequests = max(p.leftReq.Load(), 0)
		l.RequestsReset = time.Unix(0, rr)
	}
	if rt > ns {
		l.RemainingTokens = max(p.leftTok.Load(), 0)
		l.TokensReset = time.Unix(0, rt)
	}
	return l
}
