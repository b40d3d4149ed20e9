package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// What the proxy allows of web browsers. A web page can reach a proxy on
// loopback two ways: cross-origin, when its script calls
// http://127.0.0.1:8080 (the browser then sends an Origin header, and a
// preflight first for any request an SDK makes), and through DNS rebinding,
// when its own host name is made to resolve to 127.0.0.1 (the browser then
// sends that name as Host, and no Origin on a GET). So, without a proxy key,
// only loopback Host names are accepted; and, key or not, a request with an
// Origin that is not allowed gets a 403, and every CORS preflight is answered
// here and never forwarded (an endpoint would see it with its key, and its
// own Access-Control-Allow-Origin would come back).

// apiMethods are the methods that reach an endpoint; a WebSocket upgrade is
// a GET.
const apiMethods = "GET, POST, DELETE"

// preflightMaxAge is how long a browser may cache a preflight's answer, in
// seconds.
const preflightMaxAge = "600"

// isAPIMethod reports whether m is one of apiMethods.
func isAPIMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodPost || m == http.MethodDelete
}

// originPolicy is the set of origins allowed to call the API from a
// browser.
type originPolicy struct {
	any     bool            // "*": every origin (only with a proxy key)
	origins map[string]bool // exact Origin values
}

// newOriginPolicy validates list, the proxy's AllowOrigins; "*" needs a
// proxy key (haveKey).
func newOriginPolicy(list []string, haveKey bool) (originPolicy, error) {
	pol := originPolicy{origins: make(map[string]bool, len(list))}
	for _, o := range list {
		if o == "*" {
			if !haveKey {
				return pol, fmt.Errorf(`allowed origin "*" needs a proxy key (FAILOVER_PROXY_KEY): without one, any web page the user opens could spend the endpoints' keys; list the origins instead`)
			}
			pol.any = true
			continue
		}
		if err := checkOrigin(o); err != nil {
			return pol, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		pol.origins[o] = true
	}
	return pol, nil
}

// checkOrigin accepts o only in the form a browser sends it in an Origin
// header, so that an exact comparison can match: scheme://host[:port],
// lowercase, without user information, path, query, fragment or the
// scheme's default port.
func checkOrigin(o string) error {
	const want = "want scheme://host[:port] as a browser sends it, such as https://app.example.com or http://localhost:3000"
	if o == "null" {
		return fmt.Errorf("the null origin is any sandboxed page or local file, so it cannot be allowed; %s", want)
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("not an origin; %s", want)
	}
	if u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return fmt.Errorf("an origin has no user information, path, query or fragment (not even a trailing /); %s", want)
	}
	if (u.Scheme == "http" && u.Port() == "80") || (u.Scheme == "https" && u.Port() == "443") {
		return fmt.Errorf("a browser leaves out the default port; write %s://%s", u.Scheme, u.Hostname())
	}
	if o != strings.ToLower(o) {
		return fmt.Errorf("a browser sends the scheme and host in lowercase; write %q", strings.ToLower(o))
	}
	return nil
}

// allows reports whether a request with the Origin header origin may call
// the API.
func (pol originPolicy) allows(origin string) bool {
	return pol.any || pol.origins[origin]
}

// isLoopbackHost reports whether host, a request's Host (with or without a
// port), names this machine's loopback interface: localhost in any case, an
// address in 127.0.0.0/8, or [::1]. A DNS-rebinding page sends its own host
// name instead.
func isLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// hostAllowed reports whether r may be served under its Host: any Host
// with AnyHost, and for the API (api) with a proxy key; otherwise a
// loopback name only.
func (p *Proxy) hostAllowed(r *http.Request, api bool) bool {
	return p.anyHost || (api && p.requireKey) || isLoopbackHost(r.Host)
}

// refuseHost answers a request whose Host is not allowed.
func (p *Proxy) refuseHost(w http.ResponseWriter) {
	writeError(w, http.StatusForbidden, "invalid_request_error", "host_not_allowed",
		"The proxy answers only requests for a loopback host name (localhost, 127.0.0.1, [::1]) unless it has a proxy key (FAILOVER_PROXY_KEY) or -allow-remote: another name may be a web page's, reaching the proxy through DNS rebinding.")
}

// isPreflight reports whether r is a CORS preflight: an OPTIONS request
// naming the method it asks for.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

// preflight answers a CORS preflight here, never upstream: 204 with the
// Access-Control-* headers for an allowed origin and method, else 403.
func (p *Proxy) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	origin := r.Header.Get("Origin")
	method := r.Header.Get("Access-Control-Request-Method")
	switch {
	case origin == "" || !p.origins.allows(origin):
		p.refuseOrigin(w)
		return
	case !isAPIMethod(method):
		writeError(w, http.StatusForbidden, "invalid_request_error", "method_not_allowed",
			fmt.Sprintf("The proxy forwards only %s requests.", apiMethods))
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", apiMethods)
	if hs := r.Header.Values("Access-Control-Request-Headers"); len(hs) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(hs, ", "))
	}
	h.Set("Access-Control-Max-Age", preflightMaxAge)
	w.WriteHeader(http.StatusNoContent)
}

// refuseOrigin answers a request from a web page whose origin is not
// allowed.
func (p *Proxy) refuseOrigin(w http.ResponseWriter) {
	writeError(w, http.StatusForbidden, "invalid_request_error", "origin_not_allowed",
		"Requests from this web page's origin are not allowed: list it in the proxy's -allow-origin.")
}

// allowOrigin sets the headers that let a browser hand the response to a
// page of origin, an allowed origin. Upstream Access-Control-* headers never
// pass ([stripCORS]), so these are the only ones.
func allowOrigin(h http.Header, origin string) {
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "*")
	h.Add("Vary", "Origin")
}

// modifyResponse is the ReverseProxy's ModifyResponse: it strips the CORS
// headers and watches event streams for the access log.
func modifyResponse(resp *http.Response) error {
	stripCORS(resp)
	watchStream(resp)
	return nil
}

// stripCORS deletes an upstream response's Access-Control-* headers: an
// endpoint's "Access-Control-Allow-Origin: *" would hand its answer to any
// web page.
func stripCORS(resp *http.Response) error {
	for k := range resp.Header {
		if len(k) > len("Access-Control-") && strings.EqualFold(k[:len("Access-Control-")], "Access-Control-") {
			delete(resp.Header, k)
		}
	}
	return nil
}
