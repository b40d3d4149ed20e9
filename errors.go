package failover

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/failover-go/failover/internal/quote"
)

// errNilResponse stands for what a base RoundTripper that broke its
// contract returned: neither a response nor an error.
var errNilResponse = errors.New("failover: the base RoundTripper returned neither a response nor an error")

var (
	// ErrNoEndpoints is returned by [New] for a Config without endpoints.
	ErrNoEndpoints = errors.New("failover: no endpoints configured")

	// ErrNoEndpointAvailable ends a request when no endpoint may take it
	// now (each is disabled, open, cooling down, at its rate limit, or
	// already tried and not to be tried again) and waiting for one would
	// not fit the request's context or [Config].MaxWait.
	ErrNoEndpointAvailable = errors.New("failover: no endpoint available")

	// ErrAttemptsExhausted ends a request whose every allowed attempt
	// failed without an upstream response to return.
	ErrAttemptsExhausted = errors.New("failover: attempts exhausted")

	// ErrBodyTooLarge ends a request whose body, larger than
	// [Config].MaxBodyBuffer and without GetBody (so streamed, not
	// buffered), was partly sent to an endpoint that then failed: it cannot
	// be replayed to another. A body no attempt read any of (the endpoint
	// refused the connection, say) still fails over whole. Its message
	// names the limit.
	ErrBodyTooLarge = errors.New("failover: request body too large to fail over")

	// ErrUnsafePath ends, before any attempt, a routed request whose URL
	// an upstream could resolve outside the endpoint's base path, where
	// the endpoint's key would go with it: a "." or ".." segment (escaped
	// or not), a segment a second decoding turns into one (%252e%252e),
	// a backslash, a semicolon, a control character, bytes that are not
	// UTF-8 (overlong forms such as %c0%ae), or an opaque URL. No OpenAI
	// API path has any of these. Its message says which.
	ErrUnsafePath = errors.New("failover: unsafe request path")

	// ErrAttemptTimeout is the cause of an attempt cut by its endpoint's
	// Timeout: before the response headers arrived or, for a status of 300
	// or above, before the first MaxErrorBody bytes of its body were read.
	ErrAttemptTimeout = errors.New("failover: attempt timed out")
)

// timeoutError is an attempt cut by its endpoint's Timeout, or, with
// firstToken, by its FirstTokenTimeout. It matches [ErrAttemptTimeout] (or
// [ErrFirstTokenTimeout]) and reports Timeout() true, as net errors do.
type timeoutError struct {
	after      time.Duration
	firstToken bool
}

func (e *timeoutError) Error() string {
	if e.firstToken {
		return "failover: no first token within " + e.after.String()
	}
	return "failover: attempt timed out after " + e.after.String()
}

func (e *timeoutError) Is(target error) bool {
	if e.firstToken {
		return target == ErrFirstTokenTimeout
	}
	return target == ErrAttemptTimeout
}

func (e *timeoutError) Timeout() bool { return true }

// AttemptError is why one attempt of a request failed. Its message names
// the endpoint, never its URL or key (a Name that looks like a key, as
// [Endpoint].Name says, shows as its first characters and its length). The Transport fills every field it
// knows; the zero value describes no attempt (attempt 0 on an endpoint
// named "", with OutcomeSuccess and no cause) and is never returned.
type AttemptError struct {
	// Endpoint is the Name of the endpoint tried.
	Endpoint string
	// Attempt is the attempt's number within the request, from 1.
	Attempt int
	// Outcome is the classifier's verdict on the attempt.
	Outcome Outcome
	// StatusCode is the upstream's status, or 0 when no response arrived.
	StatusCode int
	// Err is the transport error, or nil when a response arrived.
	Err error
}

// Error describes the attempt, such as `attempt 2 on "backup": status 503`.
func (e *AttemptError) Error() string {
	var b strings.Builder
	b.WriteString("attempt ")
	b.WriteString(strconv.Itoa(e.Attempt))
	b.WriteString(" on ")
	b.WriteString(quote.Name(e.Endpoint))
	b.WriteString(": ")
	switch {
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	case e.StatusCode != 0:
		fmt.Fprintf(&b, "status %d (%s)", e.StatusCode, e.Outcome)
	default:
		b.WriteString(e.Outcome.String())
	}
	return b.String()
}

// Unwrap returns the transport error, if any.
func (e *AttemptError) Unwrap() error { return e.Err }

// Error is returned by [Transport.RoundTrip] when a routed request ends
// without an upstream response to return: every attempt failed with a
// transport error, no endpoint was available, or the caller's context ended.
// errors.Is and errors.As see through it to each attempt's cause and to Err,
// so errors.Is(err, context.DeadlineExceeded) works as with a plain
// transport. A routed request whose path has a "." or ".." segment, whose
// body cannot be read, or whose model no endpoint serves
// ([ErrNoEndpointForModel]), fails before any attempt with a plain error
// instead. RoundTrip never returns an Error with a nil Err.
type Error struct {
	// Attempts lists the attempts made, in order; it may be empty.
	Attempts []error
	// Err is why the request stopped: ErrAttemptsExhausted,
	// ErrNoEndpointAvailable (possibly wrapped with detail), a body
	// error, or the context's cause.
	Err error
}

// Error says how many attempts were made and why each failed.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("failover: request failed")
	}
	if len(e.Attempts) > 0 {
		fmt.Fprintf(&b, " after %d attempt(s): ", len(e.Attempts))
		for i, a := range e.Attempts {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(a.Error())
		}
	}
	return b.String()
}

// Unwrap returns Err followed by each attempt's error.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, 1+len(e.Attempts))
	out = append(out, e.Err)
	return append(out, e.Attempts...)
}

// redactURLError returns err with the URL of a *url.Error (which a Base
// wrapping an http.Client returns) cut to scheme, host and path: the
// outgoing URL carries the endpoint's query, which may hold a key, and
// attempt errors reach messages, logs and Health.
func redactURLError(err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return err
	}
	if r := redactURL(ue.URL); r != ue.URL {
		return &url.Error{Op: ue.Op, URL: r, Err: ue.Err}
	}
	return err
}
