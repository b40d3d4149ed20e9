package failover

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// DefaultCompletionTokens is the completion a request's token estimate
// counts when its body sets none of max_completion_tokens, max_tokens and
// max_output_tokens.
const DefaultCompletionTokens = 1024

// maxEstimateBody bounds the request body read for a token estimate; a
// larger body is estimated from its length alone.
const maxEstimateBody = 8 << 20

// estimateTokens estimates the tokens a provider counts for a request to
// the routed path rest with body, as OpenAI and Azure count them for their
// limits: the body's characters divided by four (rounded up), plus
// max_completion_tokens (else max_tokens, else max_output_tokens, else
// [DefaultCompletionTokens]) times n (default 1). An embeddings request
// counts its input's characters divided by four, no completion. A body
// that is not a JSON object (an upload, a GET) counts 0. It walks the
// top-level members without decoding the messages.
func estimateTokens(body []byte, rest string) int64 {
	var (
		completion = int64(-1) // the first of the completion limits found, by precedence
		rank       = 4         // that limit's precedence: 1 best
		n          = int64(1)
		input      []byte
	)
	ok := topFields(body, func(key []byte, start, end int) bool {
		val := body[start:end]
		r := 0
		switch string(key) {
		case "max_completion_tokens":
			r = 1
		case "max_tokens":
			r = 2
		case "max_output_tokens":
			r = 3
		case "n":
			if v, err := strconv.ParseInt(string(val), 10, 64); err == nil && v > 1 {
				n = min(v, 128)
			}
		case "input":
			input = val
		}
		if r > 0 && r < rank {
			if v, err := strconv.ParseInt(string(val), 10, 64); err == nil && v >= 0 {
				completion, rank = v, r
			}
		}
		return true
	})
	if !ok {
		return 0
	}
	if strings.HasSuffix(rest, "/embeddings") {
		if input == nil {
			input = body
		}
		return quarter(utf8.RuneCount(input))
	}
	if completion < 0 {
		completion = DefaultCompletionTokens
	}
	return quarter(utf8.RuneCount(body)) + min(completion, math.MaxInt32)*n
}

// quarter is c/4 rounded up.
func quarter(c int) int64 { return (int64(c) + 3) / 4 }

// tokenEstimate is a request's token estimate, computed at most once, when
// a choice first needs it: a request to endpoints with no token limit and
// no provider token window never reads its body for it. It holds what it
// needs of the request's replayBody by value (a pointer into the request
// would move the request to the heap).
type tokenEstimate struct {
	src  replaySource
	rest string
	n    int64
	done bool
}

// replaySource is where an estimate reads a request's body: the bytes
// buffered for replay, else the request's GetBody.
type replaySource struct {
	req     *http.Request
	held    []byte // the buffered body, when buffered
	getBody func() (io.ReadCloser, error)
}

// newTokenEstimate returns the estimate of the request whose body b
// replays, to the routed path rest.
func newTokenEstimate(b *replayBody, rest string) tokenEstimate {
	src := replaySource{req: b.req, held: b.data}
	if !b.buffered {
		src.held, src.getBody = b.peeked, b.getBody // what affinity read, if anything
	}
	return tokenEstimate{src: src, rest: rest}
}

// get returns the estimate, computing it on first use.
func (t *tokenEstimate) get() int64 {
	if !t.done {
		t.done = true
		if t.src.req != nil {
			t.n = t.src.estimate(t.rest)
		}
	}
	return t.n
}

// estimatePool holds the buffers a request body is read into, through its
// GetBody, for an estimate.
var estimatePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// estimate returns the token estimate of the body for the routed path
// rest: from the bytes held (a buffered body), else read once more through
// the request's GetBody into a pooled buffer, else (a body too large, or
// unreadable) from its length alone.
func (b replaySource) estimate(rest string) int64 {
	req := b.req
	if b.held != nil {
		return estimateTokens(b.held, rest)
	}
	if req.Body == nil || req.Body == http.NoBody {
		return 0
	}
	if b.getBody == nil || req.ContentLength > maxEstimateBody {
		return quarter(int(min(max(req.ContentLength, 0), math.MaxInt32)))
	}
	rc, err := b.getBody()
	if err != nil || rc == nil {
		return quarter(int(min(max(req.ContentLength, 0), math.MaxInt32)))
	}
	defer rc.Close()
	buf := estimatePool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			estimatePool.Put(buf)
		}
	}()
	if err := readInto(buf, rc, maxEstimateBody+1, req.ContentLength); err != nil || buf.Len() > maxEstimateBody {
		return quarter(buf.Len())
	}
	return estimateTokens(buf.Bytes(), rest)
}

// readInto reads r into buf until EOF or limit bytes, growing buf once
// to size (the body's length, when known) first. It allocates nothing
// but buf's growth.
func readInto(buf *bytes.Buffer, r io.Reader, limit, size int64) error {
	if size > 0 {
		buf.Grow(int(min(size, limit)) + 1)
	}
	for int64(buf.Len()) < limit {
		if buf.Available() == 0 {
			buf.Grow(4 << 10)
		}
		room := buf.AvailableBuffer()[:min(int64(buf.Available()), limit-int64(buf.Len()))]
		n, err := r.Read(room)
		buf.Write(room[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// tokenLimiter is an endpoint's MaxTPM limiter (golang.org/x/time/rate, in
// tokens per second), made at the first configuration with a MaxTPM; its
// tokens carry over the configurations that follow. Like the request
// limiter, the clock is read under its lock.
type tokenLimiter struct {
	mu  sync.Mutex
	lim *rate.Limiter
}

// forConfig returns the limiter set to cfg's MaxTPM and TokenBurst; nil
// when cfg has no MaxTPM.
func (l *tokenLimiter) forConfig(cfg Endpoint, c clock) *rate.Limiter {
	if cfg.MaxTPM <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r, burst := rate.Limit(cfg.MaxTPM/60), tokenBurst(cfg)
	if l.lim == nil {
		l.lim = rate.NewLimiter(r, burst)
		return l.lim
	}
	now := c.now()
	if l.lim.Limit() != r {
		l.lim.SetLimitAt(now, r)
	}
	if l.lim.Burst() != burst {
		l.lim.SetBurstAt(now, burst)
	}
	return l.lim
}

// tokenBurst is cfg's TokenBurst, defaulted to one minute's worth.
func tokenBurst(cfg Endpoint) int {
	if cfg.TokenBurst > 0 {
		return cfg.TokenBurst
	}
	return int(min(math.Ceil(cfg.MaxTPM), math.MaxInt32))
}

// take takes n tokens (at most the burst: a larger request would never
// fit) from lim at the clock's now, if it has them.
func (l *tokenLimiter) take(lim *rate.Limiter, c clock, n int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return lim.AllowN(c.now(), int(min(n, int64(lim.Burst()))))
}

// until estimates how long until lim has n tokens (at most its burst).
func (l *tokenLimiter) until(lim *rate.Limiter, c clock, n int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	missing := float64(min(n, int64(lim.Burst()))) - lim.TokensAt(c.now())
	if missing <= 0 {
		return int64(1e6) // a millisecond
	}
	return int64(missing / float64(lim.Limit()) * 1e9)
}

// adjust moves lim by diff tokens: a positive diff takes them (into debt,
// which later requests wait out), a negative one gives them back (up to
// the burst). rate.Limiter's reservation arithmetic gives back tokens for a
// negative count; TestTokenLimiterAdjust guards that.
func (l *tokenLimiter) adjust(lim *rate.Limiter, c clock, diff int64) {
	if diff == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	burst := int64(lim.Burst())
	lim.ReserveN(c.now(), int(max(min(diff, burst), -burst)))
}

// totalTokensKey is the member of a response's usage object that says
// what the provider counted: chat completions, completions, embeddings
// and the Responses API all carry it. Inside a JSON string a quote is
// escaped, so these bytes only ever appear as a member name.
var totalTokensKey = []byte(`"total_tokens"`)

// usageBody passes a successful response's body to the caller unchanged
// and unbuffered, watching it for the usage the provider counted (the
// last "total_tokens"; a stream carries it with
// stream_options.include_usage). At its end it corrects the endpoint's
// token budgets from the request's estimate to that usage.
type usageBody struct {
	io.ReadCloser
	e      *endpoint
	est    int64 // the tokens the request was charged
	tail   [usageWindow]byte
	nTail  int
	total  int64 // the last total_tokens seen; -1 none
	closed bool
}

// usageWindow is how much of a read's end is kept to find a usage member
// split across reads: the key, a colon, spaces and digits.
const usageWindow = 64

func newUsageBody(rc io.ReadCloser, e *endpoint, est int64) *usageBody {
	return &usageBody{ReadCloser: rc, e: e, est: est, total: -1}
}

// Read passes the body on, scanning what it returns.
func (u *usageBody) Read(p []byte) (int, error) {
	n, err := u.ReadCloser.Read(p)
	if n > 0 {
		u.scan(p[:n])
	}
	if err == io.EOF {
		u.finish()
	}
	return n, err
}

// Close closes the body; a body closed before its usage arrived leaves the
// estimate as it was.
func (u *usageBody) Close() error {
	u.finish()
	return u.ReadCloser.Close()
}

// scan looks for total_tokens in p and across the boundary with the
// previous read.
func (u *usageBody) scan(p []byte) {
	if u.nTail > 0 {
		var joint [2 * usageWindow]byte
		k := copy(joint[:], u.tail[:u.nTail])
		k += copy(joint[k:], p[:min(len(p), usageWindow)])
		if v, ok := lastTotal(joint[:k]); ok {
			u.total = v
		}
	}
	if v, ok := lastTotal(p); ok {
		u.total = v
	}
	if len(p) >= usageWindow {
		u.nTail = copy(u.tail[:], p[len(p)-usageWindow:])
		return
	}
	// Keep the newest usageWindow bytes of the old tail and p.
	keep := min(u.nTail, usageWindow-len(p))
	copy(u.tail[:], u.tail[u.nTail-keep:u.nTail])
	u.nTail = keep + copy(u.tail[keep:], p)
}

// lastTotal returns the value of the last complete "total_tokens" member
// in p: digits followed by a delimiter within p.
func lastTotal(p []byte) (int64, bool) {
	for len(p) > 0 {
		i := bytes.LastIndex(p, totalTokensKey)
		if i < 0 {
			return 0, false
		}
		rest := p[i+len(totalTokensKey):]
		rest = rest[skipSpace(rest, 0):]
		if len(rest) > 0 && rest[0] == ':' {
			rest = rest[skipSpace(rest, 1):]
			d := 0
			for d < len(rest) && rest[d] >= '0' && rest[d] <= '9' {
				d++
			}
			if d > 0 && d < len(rest) && d <= 18 {
				v, _ := strconv.ParseInt(string(rest[:d]), 10, 64)
				return v, true
			}
		}
		p = p[:i]
	}
	return 0, false
}

// finish applies the usage found, once.
func (u *usageBody) finish() {
	if u.closed {
		return
	}
	u.closed = true
	if u.total >= 0 && u.e != nil {
		u.e.correctTokens(u.est, u.total)
	}
}
