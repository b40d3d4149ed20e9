package failover

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
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

// breakerResult is what v tells the endpoint's breaker: a success (nil), a
// failure, a rejected key (which opens it at once), or, for throttling,
// nothing.
func (v Verdict) breakerResult() error {
	switch v.Outcome {
	case OutcomeSuccess, OutcomeCallerError:
		return nil
	case OutcomeThrottled:
		return errThrottled
	case OutcomeKeyRejected:
		return errKeyRejected
	}
	return errFailed
}
