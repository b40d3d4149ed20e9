package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/failover-go/failover"
)

// droppedHeaders are the client's headers the proxy never forwards, in
// their canonical spelling (any spelling is dropped):
//
//   - Authorization, so that only an endpoint's own key ever goes upstream;
//   - OpenAI-Organization and OpenAI-Project, which qualify the client's
//     own key: sent with an endpoint's key, OpenAI answers them with 401
//     mismatched_organization, a failure the transport would count against
//     every endpoint in turn until their breakers open;
//   - Accept-Encoding, so that the base transport negotiates compression
//     itself and the failover classifier reads error bodies decompressed.
var droppedHeaders = []string{"Authorization", "Openai-Organization", "Openai-Project", "Accept-Encoding"}

// rewrite maps an inbound request under the base path onto InternalBaseURL,
// keeping the rest of its path (escaping included) and its query, drops
// the client's [droppedHeaders] whatever their spelling, and adds the
// proxy's hop ID to [HopHeader]. Out is a clone of In; In is not modified.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	in := pr.In.URL
	u := *p.internal
	u.Path = p.internal.Path + in.Path[len(p.basePath):]
	if in.RawPath != "" {
		if esc := in.EscapedPath(); strings.HasPrefix(esc, p.basePath) {
			u.RawPath = p.internal.Path + esc[len(p.basePath):]
		}
	}
	u.RawQuery = pr.Out.URL.RawQuery
	pr.Out.URL = &u
	pr.Out.Host = "" // the Host header follows the URL, then the endpoint
	dropHeaders(pr.Out.Header)
	pr.Out.Header.Add(HopHeader, p.hopID)
}

// dropHeaders deletes from h each of [droppedHeaders] in any spelling: a
// header map written to directly (not parsed off the wire) can hold
// "openai-organization" beside or instead of the canonical key.
func dropHeaders(h http.Header) {
	for k := range h {
		for _, name := range droppedHeaders {
			if len(k) == len(name) && strings.EqualFold(k, name) {
				delete(h, k)
				break
			}
		}
	}
}

// keyHash hashes a proxy key so that comparisons take the same time
// whatever the length of the presented token.
func keyHash(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// authorized reports whether r presents the proxy key as its bearer token,
// comparing in constant time.
func (p *Proxy) authorized(r *http.Request) bool {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	sum := keyHash(strings.TrimSpace(token))
	match := subtle.ConstantTimeCompare(sum[:], p.keySum[:]) == 1
	return match && strings.EqualFold(scheme, "Bearer")
}

// statusClientClosed is logged for a request whose client went away before
// an answer (nginx's convention); it is never sent.
const statusClientClosed = 499

// proxyError answers a request that got no upstream response at all: every
// attempt failed without one, no endpoint was available, no endpoint
// serves its model (a 404 model_not_found), or the client went away. (When an upstream answered, even with an error status, its
// response is passed through instead.)
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	markNoResponse(r)
	ctx := r.Context()
	rec, _ := w.(*recorder)
	var body *clientBody
	if rec != nil {
		body = rec.body
	}
	if body.bodyTimedOut() {
		// The client, not an endpoint, failed: its context was canceled
		// with errBodyTimeout, so no endpoint was charged.
		p.logger.InfoContext(ctx, "request body too slow", "path", cutPath(r.URL.Path), "read_timeout", p.readTimeout)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, "invalid_request_error", "request_timeout",
			fmt.Sprintf("The request body did not arrive within the proxy's read timeout (%v).", p.readTimeout))
		return
	}
	if ctx.Err() != nil {
		if rec != nil {
			rec.code = statusClientClosed
		}
		p.logger.DebugContext(ctx, "request abandoned", "path", cutPath(r.URL.Path), "error", err)
		return
	}
	if errors.Is(err, failover.ErrNoEndpointForModel) {
		// The client's request, not an endpoint, is at fault.
		p.logger.InfoContext(ctx, "no endpoint serves the model", "path", cutPath(r.URL.Path), "error", err)
		writeError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", modelNotServed(err))
		return
	}
	status, code := errorStatus(err)
	p.logger.WarnContext(ctx, "no endpoint answered", "path", cutPath(r.URL.Path), "error", err)
	msg := describe(err)
	if body.overBuffer(p.own.maxBody) {
		msg += bodyHint(p.own.maxBody)
	}
	writeError(w, status, "server_error", code, msg)
}

// errorStatus chooses the status and OpenAI error code of a request that
// got no upstream response: 504 upstream_timeout when time ran out (the
// request's deadline passed, or it made attempts and every one of them was
// cut by its endpoint's Timeout, whatever ended the request then); else
// 503 no_endpoint_available when no endpoint was available; else 502
// upstream_unavailable.
func errorStatus(err error) (int, string) {
	var fe *failover.Error
	if !errors.As(err, &fe) {
		return http.StatusBadGateway, "upstream_unavailable"
	}
	switch {
	case errors.Is(fe.Err, context.DeadlineExceeded), allTimedOut(fe.Attempts):
		return http.StatusGatewayTimeout, "upstream_timeout"
	case errors.Is(fe.Err, failover.ErrNoEndpointAvailable):
		return http.StatusServiceUnavailable, "no_endpoint_available"
	}
	return http.StatusBadGateway, "upstream_unavailable"
}

// allTimedOut reports whether attempts is not empty and each attempt in it
// ended in its endpoint's Timeout ([failover.ErrAttemptTimeout]).
func allTimedOut(attempts []error) bool {
	for _, a := range attempts {
		if !errors.Is(a, failover.ErrAttemptTimeout) {
			return false
		}
	}
	return len(attempts) > 0
}

// describe summarises a transport error for the client: why the request
// stopped and, for each attempt, the endpoint's name and what happened,
// without the transport errors' text (which names upstream hosts).
func describe(err error) string {
	var fe *failover.Error
	if !errors.As(err, &fe) {
		return "failover proxy: the request could not be sent upstream."
	}
	var b strings.Builder
	b.WriteString(fe.Err.Error())
	for i, a := range fe.Attempts {
		if i == 0 {
			b.WriteString(". Attempts: ")
		} else {
			b.WriteString("; ")
		}
		var ae *failover.AttemptError
		if !errors.As(a, &ae) {
			b.WriteString("failed")
			continue
		}
		b.WriteString(strconv.Quote(ae.Endpoint))
		switch {
		case ae.StatusCode != 0:
			b.WriteString(": status ")
			b.WriteString(strconv.Itoa(ae.StatusCode))
		case errors.Is(ae.Err, failover.ErrAttemptTimeout):
			b.WriteString(": timed out")
		default:
			b.WriteString(": no response")
		}
	}
	b.WriteString(".")
	return b.String()
}

// modelNotServed is the message of a request whose model no endpoint
// serves ([failover.ErrNoEndpointForModel]), naming the model as the
// error does.
func modelNotServed(err error) string {
	model, ok := strings.CutPrefix(err.Error(), "failover: no endpoint serves model ")
	if !ok {
		return "No endpoint of this proxy serves the request's model."
	}
	return "The model " + model + " is not served by any endpoint of this proxy; GET /v1/models lists those it serves when every endpoint lists its models (OPENAI_MODELS_N)."
}

// writeError writes an OpenAI-format error, which the SDKs parse.
func writeError(w http.ResponseWriter, status int, typ, code, message string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": message,
		"type":    typ,
		"param":   nil,
		"code":    code,
	}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Del("Content-Encoding")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
