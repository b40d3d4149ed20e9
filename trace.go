package failover

import (
	"context"
	"net/http"
	"time"
)

// AttemptInfo describes one attempt of a routed request, as
// [Config].OnAttempt receives it. It never carries a key or a body. The
// Transport fills it; the zero value describes no attempt (attempt 0 on
// an endpoint named "") and is never passed to OnAttempt.
type AttemptInfo struct {
	// Endpoint is the Name of the endpoint tried.
	Endpoint string
	// Attempt is the attempt's number within the request, from 1.
	Attempt int
	// Outcome is the classifier's verdict; a request goes on to another
	// attempt after a failed one (Outcome.Failed). It is OutcomeSuccess
	// for an attempt the caller gave up on (Canceled).
	Outcome Outcome
	// StatusCode is the upstream's status, or 0 when no response arrived.
	StatusCode int
	// Err is the transport error (ErrAttemptTimeout and
	// ErrFirstTokenTimeout among them, with errors.Is), or the context's
	// cause when Canceled; nil when a response arrived. Its text carries
	// no secret of the configuration.
	Err error
	// Canceled reports that the caller gave up during the attempt: no
	// fault of the endpoint's.
	Canceled bool
	// Duration is the time from sending the attempt until its response
	// headers (and, for a status of 300 or above, its error body) arrived
	// or it failed.
	Duration time.Duration
}

// observe tells s's OnAttempt, if any, about an attempt of the request
// with context ctx.
func (s *snapshot) observe(ctx context.Context, e *endpoint, n int, v Verdict, resp *http.Response, err error, canceled bool, sent time.Duration) {
	if s.onAttempt == nil {
		return
	}
	a := AttemptInfo{Endpoint: e.name, Attempt: n, Outcome: v.Outcome, Err: err, Canceled: canceled,
		Duration: s.clock.since() - sent}
	if resp != nil {
		a.StatusCode = resp.StatusCode
	}
	s.onAttempt(ctx, a)
}
