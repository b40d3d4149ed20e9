package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/quote"
)

// HopHeader is the request header a proxy adds to every request it sends
// upstream: its own random hop ID, appended to the IDs of the proxies the
// request already passed. A proxy that finds its own ID in an incoming
// request is seeing one of its own requests come back (through another
// hop, a DNS name, an address it does not know as its own) and answers 508
// at once, instead of sending it round again until the file descriptors
// run out. Other proxies' IDs pass: chaining proxies is no loop.
const HopHeader = "Failover-Hop"

// maxHops bounds the IDs a request may carry: more means a loop through
// proxies that somehow do not recognise themselves, or a client that fills
// the header.
const maxHops = 16

// newHopID returns a random hop ID.
func newHopID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// looped reports whether r came back to the proxy whose hop ID is id, or
// passed more than maxHops proxies.
func looped(r *http.Request, id string) bool {
	n := 0
	for _, v := range r.Header.Values(HopHeader) {
		for hop := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(hop) == id {
				return true
			}
			n++
		}
	}
	return n > maxHops
}

// refuseLoop answers a request that came back to the proxy.
func refuseLoop(w http.ResponseWriter) {
	writeError(w, http.StatusLoopDetected, "server_error", "loop_detected",
		"This request has already passed this proxy: an endpoint's base URL leads back to it (is OPENAI_BASE_URL, meant for an SDK, set in the proxy's environment?).")
}

// CheckNoLoop returns an error naming the first of endpoints whose base URL
// is the proxy's own listener at addr, where every request would come back
// to the proxy. It happens when OPENAI_BASE_URL, set for an SDK to reach
// the proxy, is also in the proxy's environment: it is the default base URL
// of every endpoint. An endpoint is the proxy when it is plain http on the
// listener's port and its host is localhost (in any case, with a trailing
// dot or as a subdomain), a loopback or unspecified address (127.x, [::1],
// 0.0.0.0, [::]), the listener's own address, or any address when the
// listener is on every interface. Host names are not resolved: the
// [HopHeader] stops the loops this misses at their first turn.
func CheckNoLoop(endpoints []failover.Endpoint, addr net.Addr) error {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil
	}
	for i, e := range endpoints {
		u, err := url.Parse(e.BaseURL)
		if err != nil || !strings.EqualFold(u.Scheme, "http") {
			continue // the proxy serves plain HTTP only
		}
		port := u.Port()
		if port == "" {
			port = "80"
		}
		if port != strconv.Itoa(tcp.Port) || !isThisHost(u.Hostname(), tcp) {
			continue
		}
		name := e.Name
		if name == "" {
			name = fmt.Sprintf("%d (%s)", i+1, u.Host)
		} else {
			name = quote.Name(name)
		}
		shown := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
		return fmt.Errorf("endpoint %s (%s) is this proxy itself, so its requests would loop; "+
			"is OPENAI_BASE_URL, meant for an SDK, set in the proxy's environment? "+
			"It is the default of every OPENAI_BASE_URL_N", name, shown.String())
	}
	return nil
}

// isThisHost reports whether host, a URL's host name without brackets,
// reaches the listener bound to tcp on this machine.
func isThisHost(host string, tcp *net.TCPAddr) bool {
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.WithZone("").Unmap()
	bound, _ := netip.AddrFromSlice(tcp.IP)
	bound = bound.Unmap()
	return ip.IsLoopback() || ip.IsUnspecified() || ip == bound || bound.IsUnspecified()
}
