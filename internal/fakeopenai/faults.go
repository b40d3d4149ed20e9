package fakeopenai

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind selects how a Server treats the requests that follow a SetFault.
// The zero value is KindHealthy.
type Kind int

// The kinds of fault a Server can simulate. KindHealthy is the zero value.
const (
	// KindHealthy answers every request normally.
	KindHealthy Kind = iota
	// KindStatus answers with Fault.Status, Fault.Header and Fault.Body.
	KindStatus
	// KindRefuse closes the listening socket so that dials are refused.
	KindRefuse
	// KindHang accepts the request and never sends a response.
	KindHang
	// KindReset resets the TCP connection before any response byte.
	KindReset
	// KindStreamCut drops the connection part-way through the response body.
	KindStreamCut
	// KindSlowDrip sends headers at once and then the body slowly.
	KindSlowDrip
	// KindRandom applies Fault.Inner to a seeded random fraction of requests.
	KindRandom
	// KindStreamStall sends a stream's first AfterChunks events, then only
	// an SSE keep-alive comment every Interval (none when Interval is 0),
	// never the rest, until the client goes away. With AfterChunks 0 the
	// headers come at once and no event follows: a first token that never
	// comes. Non-streaming responses are answered normally.
	KindStreamStall
	// KindStreamTruncate sends a stream's first AfterChunks events (all but
	// the terminal one when AfterChunks is 0 or too large) and then ends
	// the body cleanly, without the terminal "data: [DONE]" or
	// response.completed event: a proxy that dropped the tail.
	// Non-streaming responses are answered normally.
	KindStreamTruncate
	// KindContentFilter answers chat completions with 200 and
	// finish_reason content_filter and no content, as Azure OpenAI does
	// when its filter stops the output (see ContentFilterStop). Other
	// routes are answered normally.
	KindContentFilter
)

// String returns the kind's name, e.g. "status".
func (k Kind) String() string {
	switch k {
	case KindHealthy:
		return "healthy"
	case KindStatus:
		return "status"
	case KindRefuse:
		return "refuse"
	case KindHang:
		return "hang"
	case KindReset:
		return "reset"
	case KindStreamCut:
		return "stream-cut"
	case KindSlowDrip:
		return "slow-drip"
	case KindRandom:
		return "random"
	case KindStreamStall:
		return "stream-stall"
	case KindStreamTruncate:
		return "stream-truncate"
	case KindContentFilter:
		return "content-filter"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// SlowDripPieces is the number of pieces a non-streaming body is split into
// under a SlowDrip fault; each piece is preceded by Fault.Interval.
const SlowDripPieces = 8

// Fault describes how a Server misbehaves. It is a value type: the zero
// value is a healthy upstream, and SetFault keeps its own deep copy, so a
// Fault may be reused or modified after it was set. Build one with the
// constructors (StatusFault, Refuse, Hang, ...) and refine it with the
// With* methods, or fill the fields directly.
type Fault struct {
	// Kind selects the behaviour; the other fields refine it.
	Kind Kind
	// Status is the HTTP status code written under KindStatus, whatever
	// the route; codes outside 200..999 are written as 500.
	Status int
	// Header holds extra response headers written under KindStatus. They
	// override the defaults (Content-Type, X-Fake-Upstream).
	Header http.Header
	// Body is the response body written under KindStatus. If empty, an
	// OpenAI-style error JSON suited to Status is written.
	Body string
	// AfterChunks is the number of stream chunks sent before the connection
	// is dropped under KindStreamCut. Non-streaming responses are cut after
	// half of their body instead.
	AfterChunks int
	// Interval is the pause before each stream chunk (including the final
	// "data: [DONE]") or before each of the SlowDripPieces pieces of a
	// non-streaming body under KindSlowDrip.
	Interval time.Duration
	// Delay is waited before anything is written, in every kind except
	// KindRefuse. The wait ends early, dropping the connection, if the
	// client goes away or the Server is closed. Under KindRandom the outer
	// Delay applies to every request and the chosen fault's Delay is added.
	Delay time.Duration
	// Fraction is the probability in [0, 1] that a request gets Inner
	// under KindRandom; the others are healthy.
	Fraction float64
	// Inner is the fault applied to the chosen requests under KindRandom.
	// A nil Inner is healthy; an Inner of KindRefuse acts as KindReset,
	// since the connection has already been accepted.
	Inner *Fault
}

// Healthy returns the zero Fault: every request is answered normally.
func Healthy() Fault { return Fault{} }

// StatusFault returns a Fault that answers every request with the status
// code and an OpenAI-style error body suited to it (see Fault.Body).
func StatusFault(code int) Fault { return Fault{Kind: KindStatus, Status: code} }

// RateLimited returns a 429 rate_limit_exceeded Fault with the Retry-After
// header set to retryAfter (seconds or an HTTP date); an empty retryAfter
// leaves the header out.
func RateLimited(retryAfter string) Fault {
	f := StatusFault(http.StatusTooManyRequests)
	if retryAfter != "" {
		f = f.WithHeader("Retry-After", retryAfter)
	}
	return f
}

// RateLimitedMs returns a 429 rate_limit_exceeded Fault with the
// retry-after-ms header set to ms.
func RateLimitedMs(ms int) Fault {
	return StatusFault(http.StatusTooManyRequests).WithHeader("retry-after-ms", strconv.Itoa(ms))
}

// InsufficientQuota returns a 429 Fault whose error has type and code
// "insufficient_quota", as OpenAI sends when the account is out of credit.
func InsufficientQuota() Fault {
	f := StatusFault(http.StatusTooManyRequests)
	f.Body = string(errorJSON(
		"You exceeded your current quota, please check your plan and billing details.",
		"insufficient_quota", "insufficient_quota"))
	return f
}

// Refuse returns a Fault under which the Server's port refuses connections:
// the listening socket is closed for real (a dial fails with ECONNREFUSED)
// and open connections, kept-alive ones included, are closed. A client that
// has not yet noticed that its pooled connection was closed may see that
// request fail with EOF rather than ECONNREFUSED. Setting any other Fault
// re-opens the listener on the same address.
func Refuse() Fault { return Fault{Kind: KindRefuse} }

// Hang returns a Fault under which the Server reads the request and then
// never sends headers, until the client goes away or the Server is closed;
// then the connection is dropped.
func Hang() Fault { return Fault{Kind: KindHang} }

// Reset returns a Fault under which the Server reads the request and then
// resets the TCP connection (RST) before sending any response byte.
func Reset() Fault { return Fault{Kind: KindReset} }

// StreamCut returns a Fault under which a streaming chat completion sends
// afterChunks chunks and then drops the connection without a terminating
// chunk or "data: [DONE]", and any other response declares its full
// Content-Length, sends half of its body and drops the connection.
func StreamCut(afterChunks int) Fault {
	return Fault{Kind: KindStreamCut, AfterChunks: afterChunks}
}

// SlowDrip returns a Fault under which headers are sent at once and the
// body follows slowly: every stream chunk, or every one of the
// SlowDripPieces pieces of a non-streaming body, is preceded by interval.
func SlowDrip(interval time.Duration) Fault {
	return Fault{Kind: KindSlowDrip, Interval: interval}
}

// Random returns a Fault that applies f to the given fraction of requests
// and answers the rest normally. The choice comes from the Server's PRNG
// (see WithSeed), so a given seed yields the same sequence of choices.
func Random(fraction float64, f Fault) Fault {
	inner := f.clone()
	return Fault{Kind: KindRandom, Fraction: fraction, Inner: &inner}
}

// WithHeader returns a copy of f with the response header k set to v.
func (f Fault) WithHeader(k, v string) Fault {
	f.Header = f.Header.Clone()
	if f.Header == nil {
		f.Header = make(http.Header)
	}
	f.Header.Set(k, v)
	return f
}

// WithBody returns a copy of f with Body set to body.
func (f Fault) WithBody(body string) Fault {
	f.Body = body
	return f
}

// WithDelay returns a copy of f with Delay set to d.
func (f Fault) WithDelay(d time.Duration) Fault {
	f.Delay = d
	return f
}

// String describes f briefly, e.g. "status 429 +delay 1s".
func (f Fault) String() string {
	var b strings.Builder
	b.WriteString(f.Kind.String())
	switch f.Kind {
	case KindStatus:
		fmt.Fprintf(&b, " %d", f.Status)
	case KindStreamCut:
		fmt.Fprintf(&b, " after %d", f.AfterChunks)
	case KindSlowDrip:
		fmt.Fprintf(&b, " every %v", f.Interval)
	case KindRandom:
		inner := Healthy()
		if f.Inner != nil {
			inner = *f.Inner
		}
		fmt.Fprintf(&b, " %g of (%v)", f.Fraction, inner)
	}
	if f.Delay > 0 {
		fmt.Fprintf(&b, " +delay %v", f.Delay)
	}
	return b.String()
}

// clone returns a deep copy of f, sharing no map or pointer with it.
func (f Fault) clone() Fault {
	f.Header = f.Header.Clone()
	if f.Inner != nil {
		inner := f.Inner.clone()
		f.Inner = &inner
	}
	return f
}

// resolve turns f into the fault to apply to one request, drawing from rng
// for KindRandom (recursively). The result is never KindRandom or
// KindRefuse. The caller must serialise calls sharing rng.
func (f Fault) resolve(rng *rand.Rand) Fault {
	switch f.Kind {
	case KindRefuse:
		f.Kind = KindReset
	case KindRandom:
		chosen := Healthy()
		if rng.Float64() < f.Fraction && f.Inner != nil {
			chosen = f.Inner.resolve(rng)
		}
		chosen.Delay += f.Delay
		return chosen
	}
	return f
}

// errorJSON renders an OpenAI-style error body. A nil code is rendered as
// JSON null.
func errorJSON(message, typ string, code any) []byte {
	return mustJSON(obj{"error": obj{
		"message": message,
		"type":    typ,
		"param":   nil,
		"code":    code,
	}})
}

// defaultErrorBody returns the OpenAI-style error body the Server sends
// with status when no body is configured.
func defaultErrorBody(status int) []byte {
	const invalid = "invalid_request_error"
	switch status {
	case http.StatusBadRequest:
		return errorJSON("Bad request.", invalid, nil)
	case http.StatusUnauthorized:
		return errorJSON("Incorrect API key provided.", invalid, "invalid_api_key")
	case http.StatusForbidden:
		return errorJSON("You are not allowed to access this resource.", "permission_error", "forbidden")
	case http.StatusNotFound:
		return errorJSON("The model does not exist or you do not have access to it.", invalid, "model_not_found")
	case http.StatusRequestEntityTooLarge:
		return errorJSON("Request too large.", invalid, "request_too_large")
	case http.StatusTooManyRequests:
		return errorJSON("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded")
	case http.StatusInternalServerError:
		return errorJSON("The server had an error while processing your request. Sorry about that!", "server_error", "server_error")
	case http.StatusBadGateway:
		return errorJSON("Bad gateway.", "server_error", "bad_gateway")
	case http.StatusServiceUnavailable:
		return errorJSON("The engine is currently overloaded, please try again later.", "server_error", "service_unavailable")
	case http.StatusGatewayTimeout:
		return errorJSON("Gateway timeout.", "server_error", "timeout")
	}
	msg := http.StatusText(status)
	if msg == "" {
		msg = "Status " + strconv.Itoa(status)
	}
	if status >= 500 {
		return errorJSON(msg+".", "server_error", "server_error")
	}
	return errorJSON(msg+".", invalid, nil)
}

// MissingScope returns a 401 Fault as OpenAI answers a restricted key that
// lacks the scope a request needs: a refusal of the request, not the key.
func MissingScope() Fault {
	f := StatusFault(http.StatusUnauthorized)
	f.Body = string(errorJSON("You have insufficient permissions for this operation. Missing scopes: model.request. "+
		"Check that you have the correct role in your organization, and if you're using a restricted API key, that it has the necessary scopes.",
		"invalid_request_error", nil))
	return f
}

// RegionRefused returns a 403 Fault as OpenAI answers a key used from a
// country it does not serve: a refusal of the key, not of the request.
func RegionRefused() Fault {
	f := StatusFault(http.StatusForbidden)
	f.Body = string(errorJSON("Country, region, or territory not supported", "request_forbidden", "unsupported_country_region_territory"))
	return f
}

// RequestTooLarge returns a 429 Fault as OpenAI answers a single request
// larger than the organization's tokens-per-minute limit: waiting does
// not help, another organization's higher limit may.
func RequestTooLarge() Fault {
	f := StatusFault(http.StatusTooManyRequests)
	f.Body = string(errorJSON("Request too large for gpt-4o in organization org-fake on tokens per min (TPM): Limit 30000, Requested 50000. "+
		"The input or output tokens must be reduced in order to run successfully.", "tokens", "rate_limit_exceeded"))
	return f
}

// StreamStall returns a KindStreamStall Fault: afterChunks events, then a
// keep-alive comment every interval and nothing more.
func StreamStall(afterChunks int, interval time.Duration) Fault {
	return Fault{Kind: KindStreamStall, AfterChunks: afterChunks, Interval: interval}
}

// StreamTruncate returns a KindStreamTruncate Fault: afterChunks events
// (all but the terminal one for 0), then a clean end without it.
func StreamTruncate(afterChunks int) Fault {
	return Fault{Kind: KindStreamTruncate, AfterChunks: afterChunks}
}
