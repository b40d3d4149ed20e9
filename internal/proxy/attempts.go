package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/errdesc"
)

// recordAttempt is the transport's OnAttempt: it adds a to the attemptLog
// of the request whose context is ctx, if it has one. What happened is
// said in a few words ("status 503", "connection refused", "timed out"),
// never with a key, a body or a query.
func recordAttempt(ctx context.Context, a failover.AttemptInfo) {
	l, ok := ctx.Value(attemptLogKey{}).(*attemptLog)
	if !ok {
		return
	}
	at := attempt{endpoint: a.Endpoint, status: a.StatusCode, outcome: a.Outcome.String(), failed: a.Outcome.Failed()}
	switch {
	case a.Canceled:
		at.result, at.outcome, at.failed = "canceled", "canceled", true
	case errors.Is(a.Err, failover.ErrAttemptTimeout):
		at.result = "timed out" // the endpoint's Timeout cut the attempt
	case errors.Is(a.Err, failover.ErrFirstTokenTimeout):
		at.result = "no first token in time"
	case a.Err != nil:
		at.result = errdesc.Describe(a.Err)
	default:
		at.result = "status " + strconv.Itoa(a.StatusCode)
	}
	l.add(at)
}

// attempt is one attempt of a request as the transport reported it.
type attempt struct {
	endpoint string // the endpoint's name
	status   int    // the upstream's status; 0 when none arrived
	result   string // "status 503", "connection refused", "timed out", ...
	outcome  string // the classifier's verdict, such as "throttled"
	failed   bool   // no response, or the classifier failed it
}

// attemptLog collects the attempts of one proxied request.
type attemptLog struct {
	mu         sync.Mutex
	attempts   []attempt
	noResponse bool   // the client got the proxy's own error, not an upstream's response
	stream     string // how the event stream the client got ended; "" for none
}

type attemptLogKey struct{}

// withAttemptLog returns r with a fresh attemptLog in its context.
func withAttemptLog(r *http.Request) (*http.Request, *attemptLog) {
	l := new(attemptLog)
	return r.WithContext(context.WithValue(r.Context(), attemptLogKey{}, l)), l
}

func (l *attemptLog) add(a attempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts = append(l.attempts, a)
}

// markNoResponse records that no upstream response reached the client.
func (l *attemptLog) markNoResponse() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.noResponse = true
}

// snapshot returns the attempts so far, each marked failed when it was
// (a request goes on to another attempt only after a failed one), and
// whether an upstream answered the client: the last attempt's response was
// passed on, a success or the last failure.
func (l *attemptLog) snapshot() ([]attempt, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]attempt(nil), l.attempts...)
	for i := range out {
		if i < len(out)-1 || l.noResponse {
			out[i].failed = true
		}
	}
	answered := !l.noResponse && len(out) > 0 && out[len(out)-1].status != 0
	return out, answered
}

// markNoResponse records in r's attemptLog, if any, that the client got no
// upstream response.
func markNoResponse(r *http.Request) {
	if l, ok := r.Context().Value(attemptLogKey{}).(*attemptLog); ok {
		l.markNoResponse()
	}
}

// logAttempts logs, at Debug, each attempt of r that failed, with its
// endpoint, the classifier's outcome and what happened ("status 503",
// "connection refused", "timed out"). It returns the attributes the access
// line adds: the endpoint that answered (none when no upstream did) and the
// number of attempts. It never logs a key, a body or a query.
func (p *Proxy) logAttempts(r *http.Request, l *attemptLog) []slog.Attr {
	attempts, answered := l.snapshot()
	ctx := r.Context()
	if p.logger.Enabled(ctx, slog.LevelDebug) {
		for i, a := range attempts {
			if !a.failed {
				continue
			}
			outcome := a.outcome
			p.logger.LogAttrs(ctx, slog.LevelDebug, "attempt failed",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("attempt", i+1), slog.String("endpoint", a.endpoint),
				slog.String("outcome", outcome), slog.String("result", a.result))
		}
	}
	attrs := make([]slog.Attr, 0, 3)
	if answered {
		attrs = append(attrs, slog.String("endpoint", attempts[len(attempts)-1].endpoint))
	}
	attrs = append(attrs, slog.Int("attempts", len(attempts)))
	if stream := l.streamOutcome(); stream != "" {
		attrs = append(attrs, slog.String("stream", stream))
	}
	return attrs
}

// setStream records how the event stream the client got ended, once.
func (l *attemptLog) setStream(outcome string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stream == "" {
		l.stream = outcome
	}
}

func (l *attemptLog) streamOutcome() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stream
}

// watchStream wraps resp's body, when it is an event stream of a request
// with an attemptLog, to record for the access log how it ended: complete,
// stalled, first_token_timeout, truncated, canceled (the client went away) or error. The
// transport's own stream body has already turned a stall or a clean end
// before the terminal event into an error, so the ReverseProxy cuts the
// client's connection, as for a broken one, and the client's SDK raises an
// error instead of taking the stream as complete.
func watchStream(resp *http.Response) {
	if resp.Request == nil || !strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), "text/event-stream") {
		return
	}
	if l, ok := resp.Request.Context().Value(attemptLogKey{}).(*attemptLog); ok {
		resp.Body = &streamWatch{ReadCloser: resp.Body, log: l}
	}
}

// streamWatch records how the stream it reads ends in its attemptLog.
type streamWatch struct {
	io.ReadCloser
	log *attemptLog
}

func (s *streamWatch) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	if err != nil {
		s.log.setStream(streamOutcome(err))
	}
	return n, err
}

// Close records a stream closed before its end as canceled: the client
// went away.
func (s *streamWatch) Close() error {
	s.log.setStream("canceled")
	return s.ReadCloser.Close()
}

func streamOutcome(err error) string {
	switch {
	case err == io.EOF:
		return "complete"
	case errors.Is(err, failover.ErrStreamStalled):
		return "stalled"
	case errors.Is(err, failover.ErrFirstTokenTimeout):
		// A stream released to the client past its held events before
		// the first token, whose first token then came too late.
		return "first_token_timeout"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}
