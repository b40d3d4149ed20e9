package fakeopenai

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RateLimits makes a Server enforce a provider's rate limits, as OpenAI
// does: at most Requests requests and Tokens tokens per Window (a minute
// for RPM and TPM; shorter in tests). Every answer of the API carries
// the x-ratelimit-limit-*, x-ratelimit-remaining-* and x-ratelimit-reset-*
// headers (resets as Go durations: "1s", "250ms"), and a request beyond a
// limit gets a 429 rate_limit_exceeded with the same headers. A request's
// tokens are its body's length divided by four plus its max_tokens (or
// max_completion_tokens). Faults take precedence. A zero limit is none.
type RateLimits struct {
	Requests int
	Tokens   int
	Window   time.Duration // zero means a minute
}

// WithRateLimits makes the Server enforce l (see RateLimits).
func WithRateLimits(l RateLimits) Option {
	return func(c *config) {
		if l.Window <= 0 {
			l.Window = time.Minute
		}
		c.limits = &l
	}
}

// limiter is the windows of a Server with RateLimits.
type limiter struct {
	l RateLimits

	mu        sync.Mutex
	start     time.Time // of the current window
	requests  int
	tokens    int
	throttled int64
}

// Throttled returns how many requests the Server answered 429 for its
// RateLimits since New.
func (s *Server) Throttled() int64 {
	if s.limits == nil {
		return 0
	}
	s.limits.mu.Lock()
	defer s.limits.mu.Unlock()
	return s.limits.throttled
}

// requestTokens is the fake's count of a request's tokens.
func requestTokens(body []byte) int {
	var req struct {
		MaxTokens           int `json:"max_tokens"`
		MaxCompletionTokens int `json:"max_completion_tokens"`
	}
	_ = json.Unmarshal(body, &req)
	return (len(body)+3)/4 + max(req.MaxTokens, req.MaxCompletionTokens)
}

// admit counts a request of body against the windows at now. It returns
// the headers to send and whether the request is over a limit.
func (l *limiter) admit(body []byte, now time.Time) (http.Header, bool) {
	tokens := requestTokens(body)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.l.Window {
		l.start, l.requests, l.tokens = now, 0, 0
	}
	over := (l.l.Requests > 0 && l.requests+1 > l.l.Requests) || (l.l.Tokens > 0 && l.tokens+tokens > l.l.Tokens)
	if over {
		l.throttled++
	} else {
		l.requests++
		l.tokens += tokens
	}
	// Rounded up: a client that waits exactly this long finds the new
	// window.
	reset := (l.l.Window - now.Sub(l.start) + time.Millisecond - 1).Truncate(time.Millisecond)
	h := http.Header{}
	if l.l.Requests > 0 {
		h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(l.l.Requests))
		h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(l.l.Requests-l.requests))
		h.Set("X-Ratelimit-Reset-Requests", reset.String())
	}
	if l.l.Tokens > 0 {
		h.Set("X-Ratelimit-Limit-Tokens", strconv.Itoa(l.l.Tokens))
		h.Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(l.l.Tokens-l.tokens))
		h.Set("X-Ratelimit-Reset-Tokens", reset.String())
	}
	return h, over
}

// throttledResponse is OpenAI's 429 for a rate limit.
func throttledResponse(h http.Header) response {
	resp := bodyResponse(http.StatusTooManyRequests, errorJSON(
		"Rate limit reached: please try again later.", "requests", "rate_limit_exceeded"))
	for k, v := range h {
		resp.header[k] = v
	}
	return resp
}

// withHeaders adds h to resp's headers.
func withHeaders(resp response, h http.Header) response {
	if resp.header == nil {
		resp.header = http.Header{}
	}
	for k, v := range h {
		resp.header[k] = v
	}
	return resp
}

// limitedRoute answers a request under RateLimits: a 429 when over a
// limit, else the route's answer, with the headers either way.
func (s *Server) limitedRoute(r *http.Request, body []byte, seq int64, f Fault) response {
	h, over := s.limits.admit(bytes.TrimSpace(body), time.Now())
	if over {
		return throttledResponse(h)
	}
	return withHeaders(s.route(r, body, seq, "", f), h)
}

func newLimiter(l *RateLimits) *limiter {
	if l == nil {
		return nil
	}
	return &limiter{l: *l}
}
