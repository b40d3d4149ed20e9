package failover

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
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
	// timeout, 408, 409, 5xx, ...). The request fails over and the breaker
	// counts a failure.
	OutcomeFailure
	// OutcomeThrottled: the endpoint is rate limiting (429). It cools down
	// for the time its headers ask, the request fails over, and the
	// breaker is not touched.
	OutcomeThrottled
	// OutcomeKeyRejected: the endpoint refuses the key (401, a 403 that
	// names the key or the account, such as
	// unsupported_country_region_territory, or a 429 whose error code is
	// insufficient_quota). Its breaker opens at once, since
	// retrying does not heal a revoked key, and the request fails over.
	// Within one request only the first such refusal opens a breaker at
	// once; a second counts as an OutcomeFailure, so that one request
	// cannot open every endpoint's breaker.
	OutcomeKeyRejected
	// OutcomeRequestRefused: the endpoint refuses this request, not every
	// request: a key without the scope or permission the request needs, a
	// model its project may not use, a request larger than its token
	// limit. Another endpoint's key or organization may serve it, so the
	// request fails over, and does not try this endpoint again; the
	// breaker is not touched and no cooldown starts.
	OutcomeRequestRefused
)

var outcomeNames = [...]string{"success", "caller-error", "failure", "throttled", "key-rejected", "request-refused"}

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
// [Config].Classifier is nil. It reads the status, the OpenAI error body's
// code, type and message (where OpenAI-compatible servers give nothing
// else), and tells faults of the endpoint from faults of the request:
//
//   - a transport error or per-attempt timeout: OutcomeFailure;
//   - 401: OutcomeKeyRejected, unless the body says the key lacks a scope
//     or permission (code missing_scope, or a message naming insufficient
//     permissions or missing scopes): OutcomeRequestRefused;
//   - 403: OutcomeRequestRefused, unless the body names the key or the
//     account (codes such as unsupported_country_region_territory,
//     account_deactivated, billing_not_active): OutcomeKeyRejected;
//   - 429 whose code or type is insufficient_quota: OutcomeKeyRejected;
//   - 429 for a single request larger than a token limit ("Request too
//     large ... tokens per min"): OutcomeRequestRefused;
//   - any other 429: OutcomeThrottled;
//   - 404 whose code is DeploymentNotFound (Azure has no deployment of
//     that name on this endpoint; another endpoint may serve the model):
//     OutcomeRequestRefused;
//   - 408, 409 and 500-599: OutcomeFailure;
//   - any other 4xx (400, 404, 422, ...): OutcomeCallerError, Azure's
//     content filter (a 400 whose code is content_filter) among them;
//   - 1xx, 2xx and 3xx: OutcomeSuccess.
//
// The header "x-should-retry: true" turns any other non-2xx response into
// OutcomeFailure, but a content filter's 400 (code content_filter or
// content_policy_violation): that goes back to the caller, since another
// provider would judge the same prompt differently only by accident.
// "x-should-retry: false" sets AvoidEndpoint, so the same endpoint is not
// tried again for the request, and leaves the outcome as the status says.
func DefaultClassifier(resp *http.Response, body []byte, err error) Verdict {
	if err != nil || resp == nil {
		return Verdict{Outcome: OutcomeFailure}
	}
	code := resp.StatusCode
	var v Verdict
	switch {
	case code == http.StatusUnauthorized:
		v.Outcome = OutcomeKeyRejected
		if parseAPIError(body).lacksPermission() {
			v.Outcome = OutcomeRequestRefused
		}
	case code == http.StatusForbidden:
		v.Outcome = OutcomeRequestRefused
		if parseAPIError(body).namesAccount() {
			v.Outcome = OutcomeKeyRejected
		}
	case code == http.StatusTooManyRequests:
		v.Outcome = classify429(parseAPIError(body))
	case code == http.StatusNotFound && parseAPIError(body).code == "DeploymentNotFound":
		v.Outcome = OutcomeRequestRefused
	case code == http.StatusRequestTimeout, code == http.StatusConflict, code >= 500:
		v.Outcome = OutcomeFailure
	case code >= 400:
		v.Outcome = OutcomeCallerError
	}
	if code >= 300 {
		switch resp.Header.Get("X-Should-Retry") {
		case "true":
			if !v.Outcome.Failed() && !(code == http.StatusBadRequest && parseAPIError(body).contentFiltered()) {
				v.Outcome = OutcomeFailure
			}
		case "false":
			v.AvoidEndpoint = true
		}
	}
	return v
}

// classify429 tells a spent quota (the key's) and a request larger than a
// token limit (the request's) from throttling.
func classify429(e apiError) Outcome {
	switch {
	case e.code == "insufficient_quota" || e.typ == "insufficient_quota":
		return OutcomeKeyRejected
	case e.tooLarge():
		return OutcomeRequestRefused
	}
	return OutcomeThrottled
}

// apiError is what an error body says, in OpenAI's format
// ({"error":{"code":...,"type":...,"message":...}}) or the simpler shapes
// compatible servers send ({"error":"..."}, {"message":...,"code":...}).
// Its fields are empty when the body says nothing readable.
type apiError struct {
	code, typ, message string
}

// parseAPIError reads body's error code, type and message, without
// failing: a body that is not such JSON gives an empty apiError, or its
// text as the message when it is short plain text.
func parseAPIError(body []byte) apiError {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return apiError{}
	}
	if body[0] != '{' {
		if len(body) <= 1024 {
			return apiError{message: string(body)}
		}
		return apiError{}
	}
	type fields struct {
		Code    json.RawMessage `json:"code"`
		Type    string          `json:"type"`
		Message string          `json:"message"`
	}
	var outer struct {
		fields
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &outer) != nil {
		return apiError{}
	}
	f := outer.fields
	switch {
	case len(outer.Error) > 0 && outer.Error[0] == '{':
		var inner fields
		if json.Unmarshal(outer.Error, &inner) == nil {
			f = inner
		}
	case len(outer.Error) > 0 && outer.Error[0] == '"':
		f.Message = jsonText(outer.Error)
	}
	return apiError{code: jsonText(f.Code), typ: f.Type, message: f.Message}
}

// jsonText returns a JSON string's or number's text; "" for null or other
// values.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') {
		return string(raw)
	}
	return ""
}

// lacksPermission reports whether a 401 is about what the key may do, not
// about the key: OpenAI's restricted keys get "You have insufficient
// permissions for this operation. Missing scopes: ...", sometimes with
// code missing_scope.
func (e apiError) lacksPermission() bool {
	switch e.code {
	case "missing_scope", "missing_scopes", "insufficient_permissions", "permission_denied":
		return true
	}
	m := strings.ToLower(e.message)
	return strings.Contains(m, "insufficient permission") || strings.Contains(m, "missing scope")
}

// accountCodes are the 403 codes that refuse the key or its account, not
// the request.
var accountCodes = map[string]bool{
	"unsupported_country_region_territory": true,
	"account_deactivated":                  true,
	"account_disabled":                     true,
	"organization_deactivated":             true,
	"billing_not_active":                   true,
	"access_terminated":                    true,
	"invalid_api_key":                      true,
}

// namesAccount reports whether a 403 refuses the key or its account (a
// region the provider does not serve, a deactivated account or billing),
// which no retry of any request will heal.
func (e apiError) namesAccount() bool {
	if accountCodes[e.code] {
		return true
	}
	m := strings.ToLower(e.message)
	return strings.Contains(m, "country, region, or territory") ||
		strings.Contains(m, "account is not active") || strings.Contains(m, "account has been deactivated") ||
		strings.Contains(m, "organization has been disabled")
}

// tooLarge reports whether a 429 refuses one request for being larger
// than a token limit ("Request too large for gpt-4o in organization ... on
// tokens per min (TPM): Limit 30000, Requested 50000"), which waiting does
// not heal.
func (e apiError) tooLarge() bool {
	m := strings.ToLower(e.message)
	return strings.Contains(m, "request too large") ||
		(strings.Contains(m, "must be reduced") && strings.Contains(m, "tokens"))
}

// contentFiltered reports whether an error is a content filter's refusal
// of the prompt: Azure's content_filter, OpenAI's content_policy_violation.
func (e apiError) contentFiltered() bool {
	return e.code == "content_filter" || e.code == "content_policy_violation"
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
	case OutcomeRequestRefused:
		return errNotSent
	}
	return errFailed
}
