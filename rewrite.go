package failover

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/failover-go/failover/internal/urlpath"
)

// DefaultClientBaseURL is the client-side base URL routed when
// [Config].ClientBaseURLs is nil: where OpenAI SDKs send by default.
const DefaultClientBaseURL = "https://api.openai.com/v1"

// router recognises the requests the Transport routes: those under a
// client-side base URL or under an endpoint's own BaseURL. It is built once
// in New and only read afterwards.
type router struct {
	byHost map[string][]routeBase // canonical host -> bases, longest path first
}

type routeBase struct {
	scheme  string
	path    string // without trailing slash
	rawPath string // escaped form of path
}

// match is where a request falls under a routed base: rest is the part of
// its path after the base path.
type match struct {
	base    *routeBase
	rest    string
	rawRest string // escaped rest, set only when the request has a RawPath
}

func newRouter(clientBases []string, eps []*endpoint) (router, error) {
	r := router{byHost: map[string][]routeBase{}}
	add := func(scheme, host, path, rawPath string) {
		for _, b := range r.byHost[host] {
			if b.scheme == scheme && b.path == path {
				return
			}
		}
		r.byHost[host] = append(r.byHost[host], routeBase{scheme: scheme, path: path, rawPath: rawPath})
	}
	for i, s := range clientBases {
		u, err := parseBaseURL(s)
		if err != nil {
			return router{}, fmt.Errorf("failover: ClientBaseURLs[%d]: %w", i, err)
		}
		add(u.Scheme, u.Host, strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.EscapedPath(), "/"))
	}
	for _, e := range eps {
		add(e.scheme, e.host, e.path, e.escPath)
	}
	for h, bases := range r.byHost {
		sort.SliceStable(bases, func(i, j int) bool { return len(bases[i].path) > len(bases[j].path) })
		r.byHost[h] = bases
	}
	return r, nil
}

// match reports whether u is under a routed base URL.
func (r *router) match(u *url.URL) (match, bool) {
	if u == nil {
		return match{}, false
	}
	bases, ok := r.byHost[u.Host]
	if !ok {
		if u.Host == "" {
			return match{}, false
		}
		if bases, ok = r.byHost[canonicalHost(u.Scheme, u.Host)]; !ok {
			return match{}, false
		}
	}
	for i := range bases {
		b := &bases[i]
		if b.scheme != u.Scheme || !urlpath.Under(u.Path, b.path) {
			continue
		}
		m := match{base: b, rest: u.Path[len(b.path):]}
		if u.RawPath != "" {
			if esc := u.EscapedPath(); urlpath.Under(esc, b.rawPath) {
				m.rawRest = esc[len(b.rawPath):]
			}
		}
		return m, true
	}
	return match{}, false
}

// outgoing is an attempt's request with its URL, allocated together.
type outgoing struct {
	req http.Request
	url url.URL
}

// rewrite returns the outgoing request for one attempt of in on e: a shallow
// copy carrying ctx, with scheme, host and base path replaced by the
// endpoint's (escaping kept), its query parameters added, Authorization
// replaced by its key, the caller's OpenAI-Organization and OpenAI-Project
// dropped when it has a key, and its extra headers set. in is never
// modified.
//
// Header value slices are shared with in and with the endpoint's
// configuration; the http.RoundTripper contract forbids a transport to
// modify its request, so none is written to.
func rewrite(ctx context.Context, in *http.Request, e *endpoint, m match) *http.Request {
	// One allocation for the request and its URL.
	o := &outgoing{req: *in, url: *in.URL}
	out, u := &o.req, &o.url
	if ctx != in.Context() {
		out = out.WithContext(ctx)
	}
	u.Scheme = e.scheme
	u.Host = e.host
	u.User = nil
	if e.path != m.base.path {
		u.Path = e.path + m.rest
	}
	if in.URL.RawPath != "" || e.rawPath {
		// Keep the escaping of both parts: the endpoint's prefix as its
		// BaseURL has it, the rest as the caller sent it (or the default
		// escaping when the caller's did not line up with the base).
		rest := m.rawRest
		if rest == "" && m.rest != "" {
			rest = (&url.URL{Path: m.rest}).EscapedPath()
		}
		u.RawPath = e.escPath + rest
	}
	if e.query != nil {
		u.RawQuery = mergeQuery(e, in.URL.RawQuery)
	}
	out.URL = u
	out.Host = ""

	// maps.Clone copies a small map's table wholesale, far cheaper than
	// inserting key by key.
	h := http.Header(maps.Clone(in.Header))
	if h == nil {
		h = make(http.Header, len(e.header)+1)
	}
	if e.auth != nil {
		h["Authorization"] = e.auth
	}
	if len(e.drop) > 0 {
		for k := range h {
			if dropped(k, e.drop) {
				delete(h, k)
			}
		}
	}
	for k, vs := range e.header {
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

// mergeQuery is the outgoing query of a request with query caller to e: e's
// own query as written, then each of the caller's parameters, verbatim,
// except those e sets itself. Pairs that do not parse are kept as they are.
func mergeQuery(e *endpoint, caller string) string {
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
