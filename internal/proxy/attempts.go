package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/errdesc"
)

// endpointMarker is a header the proxy adds to each endpoint's
// [failover.Endpoint].Header so that its base transport, [attemptCounter],
// knows which endpoint an attempt is for; attemptCounter removes it before
// the attempt leaves the process. Its value is the endpoint's index. (The
// endpoint's Header replaces a client's header of the same name, so a
// client cannot forge it.)
const endpointMarker = "Failover-Proxy-Endpoint-Index"

// markEndpoints returns a copy of eps, each with the endpointMarker header
// naming its index; eps is not modified.
func markEndpoints(eps []failover.Endpoint) []failover.Endpoint {
	out := make([]failover.Endpoint, len(eps))
	for i, e := range eps {
		e.Header = e.Header.Clone()
		if e.Header == nil {
			e.Header = make(http.Header, 1)
		}
		e.Header.Set(endpointMarker, strconv.Itoa(i))
		out[i] = e
	}
	return out
}

// attemptCounter is the base transport of the proxy's failover transport:
// it records each attempt of a request in the request's [attemptLog], if
// its context carries one, and sends it through next without the
// endpointMarker.
type attemptCounter struct {
	next http.RoundTripper
}

func (c attemptCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	index := -1
	if v := req.Header.Get(endpointMarker); v != "" {
		index, _ = strconv.Atoi(v)
		req = req.Clone(req.Context()) // a RoundTripper must not modify its request
		req.Header.Del(endpointMarker)
	}
	resp, err := c.next.RoundTrip(req)
	if l, ok := req.Context().Value(attemptLogKey{}).(*attemptLog); ok {
		a := attempt{endpoint: index, failed: true}
		switch {
		case errors.Is(context.Cause(req.Context()), failover.ErrAttemptTimeout):
			a.result = "timed out" // the endpoint's Timeout cut the attempt
		case err != nil:
			a.result = errdesc.Describe(err)
		case resp != nil:
			// The classifier, wrapped by recordVerdicts, decides.
			a.status, a.failed = resp.StatusCode, false
			a.result = "status " + strconv.Itoa(resp.StatusCode)
		}
		l.add(a)
	}
	return resp, err
}

// recordVerdicts wraps c (nil: [failover.DefaultClassifier]) to record its
// verdict on each response in the request's attemptLog, if any: the
// response's Request is the attempt's, whose context carries the log.
func recordVerdicts(c failover.Classifier) failover.Classifier {
	if c == nil {
		c = failover.DefaultClassifier
	}
	return func(resp *http.Response, body []byte, err error) failover.Verdict {
		v := c(resp, body, err)
		if resp != nil && resp.Request != nil {
			if l, ok := resp.Request.Context().Value(attemptLogKey{}).(*attemptLog); ok {
				l.setOutcome(v.Outcome)
			}
		}
		return v
	}
}

// CloseIdleConnections closes next's idle connections, if it has that
// method.
func (c attemptCounter) CloseIdleConnections() {
	if ci, ok := c.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// attempt is one attempt of a request as the base transport and the
// classifier saw it.
type attempt struct {
	endpoint int    // index into the proxy's endpoints; -1 when unknown
	status   int    // the upstream's status; 0 when none arrived
	result   string // "status 503", "connection refused", "timed out", ...
	outcome  string // the classifier's verdict, such as "throttled"; "" if none
	failed   bool   // no response, or the classifier failed it
}

// attemptLog collects the attempts of one proxied request.
type attemptLog struct {
	mu         sync.Mutex
	attempts   []attempt
	noResponse bool // the client got the proxy's own error, not an upstream's response
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

// setOutcome records the classifier's verdict on the latest attempt.
func (l *attemptLog) setOutcome(o failover.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.attempts); n > 0 {
		l.attempts[n-1].outcome = o.String()
		l.attempts[n-1].failed = o.Failed()
	}
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
			if outcome == "" {
				outcome = failover.OutcomeFailure.String()
			}
			p.logger.LogAttrs(ctx, slog.LevelDebug, "attempt failed",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("attempt", i+1), slog.String("endpoint", p.endpointName(a.endpoint)),
				slog.String("outcome", outcome), slog.String("result", a.result))
		}
	}
	attrs := make([]slog.Attr, 0, 2)
	if answered {
		attrs = append(attrs, slog.String("endpoint", p.endpointName(attempts[len(attempts)-1].endpoint)))
	}
	return append(attrs, slog.Int("attempts", len(attempts)))
}

// endpointName names the endpoint of index i.
func (p *Proxy) endpointName(i int) string {
	if i < 0 || i >= len(p.endpoints) {
		return "(unknown)"
	}
	return p.endpoints[i].Name
}
