package failover

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"strings"
)

// outgoing is an attempt's request with its URL, allocated together.
type outgoing struct {
	req http.Request
	url url.URL
}

// rewrite returns the outgoing request for one attempt of in on tg: a shallow
// copy carrying ctx, with scheme, host and base path replaced by the
// endpoint's (escaping kept), its query parameters added, Authorization
// replaced by its key, the caller's OpenAI-Organization and OpenAI-Project
// dropped when it has a key, and its extra headers set. in is never
// modified.
//
// Header value slices are shared with in and with the endpoint's
// configuration; the http.RoundTripper contract forbids a transport to
// modify its request, so none is written to.
func rewrite(ctx context.Context, in *http.Request, tg *target, m match) *http.Request {
	// One allocation for the request and its URL. WithContext's copy,
	// inlined, is copied in turn without a second allocation.
	o := &outgoing{url: *in.URL}
	if ctx != in.Context() {
		o.req = *in.WithContext(ctx)
	} else {
		o.req = *in
	}
	out, u := &o.req, &o.url
	u.Scheme = tg.scheme
	u.Host = tg.host
	u.User = nil
	if tg.path != m.base.path {
		u.Path = tg.path + m.rest
	}
	if in.URL.RawPath != "" || tg.rawPath {
		// Keep the escaping of both parts: the endpoint's prefix as its
		// BaseURL has it, the rest as the caller sent it (or the default
		// escaping when the caller's did not line up with the base).
		rest := m.rawRest
		if rest == "" && m.rest != "" {
			rest = (&url.URL{Path: m.rest}).EscapedPath()
		}
		u.RawPath = tg.escPath + rest
	}
	if tg.query != nil {
		u.RawQuery = mergeQuery(tg, in.URL.RawQuery)
	}
	out.URL = u
	out.Host = ""

	// maps.Clone copies a small map's table wholesale, far cheaper than
	// inserting key by key.
	h := http.Header(maps.Clone(in.Header))
	if h == nil {
		h = make(http.Header, len(tg.header)+1)
	}
	if tg.auth != nil {
		h[tg.authKey] = tg.auth
	}
	if len(tg.drop) > 0 {
		for k := range h {
			if dropped(k, tg.drop) {
				delete(h, k)
			}
		}
	}
	for k, vs := range tg.header {
		h[k] = vs
	}
	out.Header = h
	return out
}

// dropped reports whether the caller's header k is to be removed: one of
// names in any spelling (a header map written to directly can hold
// "authorization"), except the canonical spelling of one set again anyway.
func dropped(k string, names []headerName) bool {
	for _, n := range names {
		if len(k) == len(n.name) && strings.EqualFold(k, n.name) {
			return !n.set || k != n.name
		}
	}
	return false
}

// mergeQuery is the outgoing query of a request with query caller to tg:
// tg's own query as written, then each of the caller's parameters,
// verbatim, except those tg sets itself. Pairs that do not parse are kept
// as they are.
func mergeQuery(e *target, caller string) string {
	if caller == "" {
		return e.rawQuery
	}
	var b strings.Builder
	b.Grow(len(e.rawQuery) + 1 + len(caller))
	b.WriteString(e.rawQuery)
	for caller != "" {
		var pair string
		pair, caller, _ = strings.Cut(caller, "&")
		if pair == "" {
			continue
		}
		key, _, _ := strings.Cut(pair, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			if _, set := e.query[k]; set {
				continue
			}
		}
		b.WriteByte('&')
		b.WriteString(pair)
	}
	return b.String()
}

// target is where and how an endpoint's requests are sent: the parts of
// its BaseURL the rewrite puts in place of the caller's, and the headers it
// sets and drops. It is computed once per configuration.
type target struct {
	scheme   string
	host     string
	path     string // path prefix without trailing slash (unless escaped, %2F)
	escPath  string // the same, escaped as BaseURL has it
	rawPath  bool   // escPath is not the default escaping of path
	query    url.Values
	rawQuery string   // BaseURL's query as written, sent before the caller's
	auth     []string // {"Bearer <key>"} ({"<key>"} for Azure), nil when APIKey is empty
	authKey  string   // the header auth goes in: Authorization, or Api-Key for Azure
	header   http.Header
	// drop are the caller's headers removed, in any spelling, from each
	// request to this endpoint: those it sets itself (Authorization when
	// it has a key, its extra headers), so that the caller's value never
	// travels beside its own, and with a key, OpenAI-Organization and
	// OpenAI-Project, which qualify the caller's key, not this one.
	drop []headerName
	// deploy is set for an Azure endpoint with an APIVersion: a request
	// that names a model goes under /deployments/<name> (withDeployment).
	deploy bool
}

// newTarget returns the target of cfg, a checked and defaulted Endpoint
// whose BaseURL parses as u.
func newTarget(cfg Endpoint, u *url.URL) target {
	tg := target{
		scheme: u.Scheme,
		host:   u.Host,
		path:   strings.TrimSuffix(u.Path, "/"),
		header: cfg.Header,
	}
	tg.escPath = strings.TrimSuffix(u.EscapedPath(), "/")
	if tg.escPath == u.EscapedPath() {
		// The path ends in an escaped slash (%2F), not a separator: it
		// stays, in both forms, so that they still agree.
		tg.path = u.Path
	}
	tg.rawPath = u.RawPath != ""
	if u.RawQuery != "" {
		tg.query, _ = url.ParseQuery(u.RawQuery) // parseBaseURL checked it
		tg.rawQuery = u.RawQuery
	}
	tg.authKey = "Authorization"
	auth := "Bearer " + cfg.APIKey
	if cfg.APIType == APITypeAzure {
		tg.authKey, auth = "Api-Key", cfg.APIKey
		tg.azure(cfg)
	}
	if cfg.APIKey != "" {
		tg.auth = []string{auth}
		tg.drop = append(tg.drop, headerName{tg.authKey, true})
	}
	if cfg.APIKey != "" || !cfg.ForwardCallerAuth {
		for _, k := range callerCredentials {
			if _, set := cfg.Header[k]; !set && (k != tg.authKey || tg.auth == nil) {
				tg.drop = append(tg.drop, headerName{k, false})
			}
		}
	}
	for k := range cfg.Header {
		tg.drop = append(tg.drop, headerName{k, true})
	}
	return tg
}

// callerCredentials name the caller's credentials (canonical spelling):
// its key, as OpenAI and Azure take it, and the organization and project
// the key is used under. They belong to the caller's key, so no endpoint
// receives them unless it forwards them (Endpoint.ForwardCallerAuth): sent
// with an endpoint's key of another organization they get a 401, and a
// keyless endpoint must not receive the caller's key.
var callerCredentials = []string{"Authorization", "Api-Key", "Openai-Organization", "Openai-Project"}

// headerName is a canonical header name the rewrite removes from the
// caller's headers in any spelling; set means the endpoint sets it again,
// so its canonical spelling is left to be overwritten.
type headerName struct {
	name string
	set  bool
}

// parseBaseURL parses an absolute http(s) URL without user information. Its
// errors quote no part of the URL beyond the scheme, as a URL may carry a
// secret in its query.
func parseBaseURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("empty; want an absolute http or https URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("does not parse as a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		if u.Scheme == "" {
			return nil, errors.New("has no scheme; want http:// or https://")
		}
		// The scheme is not quoted: a key pasted by mistake could be it.
		return nil, errors.New("scheme is not http or https")
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("has no host")
	case u.User != nil:
		return nil, errors.New("carries user information; put credentials in APIKey or Header")
	case u.Fragment != "":
		return nil, errors.New("carries a fragment")
	}
	if _, err := url.ParseQuery(u.RawQuery); err != nil {
		return nil, errors.New("query does not parse")
	}
	u.Host = canonicalHost(u.Scheme, u.Host)
	return u, nil
}

// canonicalHost lowercases host (but an IPv6 zone, an interface name that
// may be case-sensitive) and removes the scheme's default port.
func canonicalHost(scheme, host string) string {
	// url.Parse has unescaped the zone's "%25" to "%".
	name, zone, hasZone := strings.Cut(host, "%")
	host = strings.ToLower(name)
	if hasZone {
		host += "%" + zone
	}
	switch {
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		return strings.TrimSuffix(host, ":443")
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		return strings.TrimSuffix(host, ":80")
	}
	return host
}

// validHeaderName reports whether k is a header name (an HTTP token).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}
