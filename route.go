package failover

import (
	"fmt"
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

func newRouter(clientBases []string, targets []target) (router, error) {
	r := router{byHost: map[string][]routeBase{}}
	seen := map[[3]string]bool{}
	add := func(scheme, host, path, rawPath string) {
		if key := [3]string{scheme, host, path}; !seen[key] {
			seen[key] = true
			r.byHost[host] = append(r.byHost[host], routeBase{scheme: scheme, path: path, rawPath: rawPath})
		}
	}
	for i, s := range clientBases {
		u, err := parseBaseURL(s)
		if err != nil {
			return router{}, fmt.Errorf("failover: ClientBaseURLs[%d]: %w", i, err)
		}
		add(u.Scheme, u.Host, strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.EscapedPath(), "/"))
	}
	for _, tg := range targets {
		add(tg.scheme, tg.host, tg.path, tg.escPath)
	}
	for h, bases := range r.byHost {
		sort.SliceStable(bases, func(i, j int) bool { return len(bases[i].path) > len(bases[j].path) })
		r.byHost[h] = bases
	}
	return r, nil
}

// route tells whether a request for u is routed, and where it falls under
// its base; err refuses a routed request that must not be sent: an opaque
// URL, whose path the rewrite would not see, or a path an upstream could
// resolve outside the endpoint's base path (see urlpath.Unsafe).
func (r *router) route(u *url.URL) (m match, routed bool, err error) {
	if u != nil && u.Opaque != "" {
		if r.hasHost(u) {
			return match{}, true, &unsafePathError{reason: "an opaque form"}
		}
		return match{}, false, nil
	}
	m, ok := r.match(u)
	if !ok {
		return match{}, false, nil
	}
	if reason := urlpath.Unsafe(m.rest); reason != "" {
		return match{}, true, &unsafePathError{reason: reason}
	}
	return m, true, nil
}

// hasHost reports whether u's host has a routed base.
func (r *router) hasHost(u *url.URL) bool {
	if _, ok := r.byHost[u.Host]; ok {
		return true
	}
	_, ok := r.byHost[canonicalHost(u.Scheme, u.Host)]
	return ok
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

// unsafePathError refuses a routed request whose URL an upstream could
// resolve outside the endpoint's base path; it matches [ErrUnsafePath].
type unsafePathError struct{ reason string }

func (e *unsafePathError) Error() string {
	return "failover: request path has " + e.reason + "; not sent"
}

func (e *unsafePathError) Is(target error) bool { return target == ErrUnsafePath }
