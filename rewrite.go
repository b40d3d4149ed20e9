package failover

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"sort"
	"strings"
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
		raw := e.rawPath
		if raw == "" {
			raw = e.path
		}
		add(e.scheme, e.host, e.path, raw)
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
		if b.scheme != u.Scheme || !underPath(u.Path, b.path) {
			continue
		}
		m := match{base: b, rest: u.Path[len(b.path):]}
		if u.RawPath != "" {
			if esc := u.EscapedPath(); underPath(esc, b.rawPath) {
				m.rawRest = esc[len(b.rawPath):]
			}
		}
		return m, true
	}
	return match{}, false
}

// underPath reports whether p is base or below it at a segment boundary.
func underPath(p, base string) bool {
	if !strings.HasPrefix(p, base) {
		return false
	}
	return len(p) == len(base) || p[len(base)] == '/' || base == ""
}

// outgoing is an attempt's request with its URL, allocated together.
type outgoing struct {
	req http.Request
	url url.URL
}

// rewrite returns the outgoing request for one attempt of in on e: a shallow
// copy carrying ctx, with scheme, host and base path replaced by
// the endpoint's, its query parameters set, Authorization replaced by its
// key and its extra headers set. in is never modified.
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
	switch {
	case in.URL.RawPath == "":
	case m.rawRest != "" || m.rest == "":
		raw := e.rawPath
		if raw == "" {
			raw = e.path
		}
		u.RawPath = raw + m.rawRest
	default:
		u.RawPath = "" // let url.URL derive the escaping from Path
	}
	if e.query != nil {
		q := u.Query()
		for k, vs := range e.query {
			q[k] = vs
		}
		u.RawQuery = q.Encode()
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
	for k, vs := range e.header {
		h[k] = vs
	}
	out.Header = h
	return out
}
