package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestCheckNoLoop refuses an endpoint at the proxy's own address, however
// its host is spelled, as when OPENAI_BASE_URL for an SDK leaks into the
// proxy's environment.
func TestCheckNoLoop(t *testing.T) {
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	wildcard := &net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}
	lan := &net.TCPAddr{IP: net.IPv4(192, 168, 1, 2), Port: 8080}
	for _, tc := range []struct {
		url   string
		addr  *net.TCPAddr
		loops bool
	}{
		{"http://127.0.0.1:8080/v1", loopback, true},
		{"http://localhost:8080/v1", loopback, true},
		{"http://LOCALHOST:8080/v1", loopback, true},
		{"http://LocalHost.:8080/v1", loopback, true},
		{"http://api.localhost:8080/v1", loopback, true},
		{"HTTP://127.0.0.1:8080/v1", loopback, true},
		{"http://127.0.0.2:8080/v1", loopback, true},
		{"http://127.255.255.254:8080/v1", loopback, true},
		{"http://[::1]:8080/v1", loopback, true},
		{"http://[::ffff:127.0.0.1]:8080/v1", loopback, true},
		{"http://0.0.0.0:8080/v1", loopback, true},
		{"http://[::]:8080/v1", loopback, true},
		{"http://0.0.0.0:8080/v1", lan, true},
		{"http://192.168.1.2:8080/v1", lan, true},
		{"http://10.1.2.3:8080/v1", wildcard, true},
		{"http://127.0.0.1/v1", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, true},
		{"http://127.0.0.1:8081/v1", loopback, false},
		{"https://127.0.0.1:8080/v1", loopback, false},
		{"http://127.0.0.1/v1", loopback, false},
		{"http://api.example.com:8080/v1", loopback, false},
		{"http://localhost.example.com:8080/v1", loopback, false},
		{"http://10.1.2.3:8080/v1", lan, false},
	} {
		err := CheckNoLoop([]failover.Endpoint{{BaseURL: "https://api.openai.com/v1"}, {Name: "e", BaseURL: tc.url}}, tc.addr)
		if (err != nil) != tc.loops {
			t.Errorf("%s on %v: error %v, want a loop: %v", tc.url, tc.addr, err, tc.loops)
		}
		if err != nil && !strings.Contains(err.Error(), `endpoint "e"`) {
			t.Errorf("%s: error %q does not name the endpoint", tc.url, err)
		}
	}
}

// TestCheckNoLoopRedacts checks that the loop error shows neither the
// query of the base URL nor its user information.
func TestCheckNoLoopRedacts(t *testing.T) {
	err := CheckNoLoop([]failover.Endpoint{{BaseURL: "http://127.0.0.1:8080/v1?api-key=query-secret"}},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080})
	if err == nil {
		t.Fatal("no loop found")
	}
	if strings.Contains(err.Error(), "query-secret") {
		t.Errorf("the error shows the query: %v", err)
	}
	if !strings.Contains(err.Error(), "endpoint 1 (127.0.0.1:8080) (http://127.0.0.1:8080/v1)") {
		t.Errorf("the error %q does not name the endpoint by number and URL", err)
	}
}

// TestCheckNoLoopHidesAKeyInTheName checks that a key pasted into the
// looping endpoint's Name is shown as a short prefix and its length.
func TestCheckNoLoopHidesAKeyInTheName(t *testing.T) {
	const key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	err := CheckNoLoop([]failover.Endpoint{{Name: key, BaseURL: "http://127.0.0.1:8080/v1"}},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080})
	if err == nil {
		t.Fatal("no loop found")
	}
	if strings.Contains(err.Error(), key[4:]) {
		t.Errorf("the error prints the key pasted into the name: %v", err)
	}
	if !strings.Contains(err.Error(), `endpoint "sk-"... (44 bytes)`) {
		t.Errorf("the error %q does not name the endpoint by its name's prefix and length", err)
	}
}

func TestLooped(t *testing.T) {
	const id = "0123456789abcdef"
	many := strings.TrimSuffix(strings.Repeat("other, ", maxHops+1), ", ")
	for _, tc := range []struct {
		name   string
		values []string
		want   bool
	}{
		{"none", nil, false},
		{"another proxy", []string{"fedcba9876543210"}, false},
		{"ours", []string{id}, true},
		{"ours after another", []string{"fedcba9876543210, " + id}, true},
		{"ours in a second header", []string{"fedcba9876543210", id}, true},
		{"a prefix of ours", []string{id[:8]}, false},
		{"as many hops as allowed", []string{strings.TrimSuffix(strings.Repeat("other,", maxHops), ",")}, false},
		{"too many hops", []string{many}, true},
	} {
		r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		for _, v := range tc.values {
			r.Header.Add(HopHeader, v)
		}
		if got := looped(r, id); got != tc.want {
			t.Errorf("%s: looped = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// servedProxy is a Proxy serving on a loopback listener of its own until
// the test ends.
type servedProxy struct {
	*Proxy
	url string // http://127.0.0.1:port
}

// serveOn serves a proxy of cfg on ln until the test ends.
func serveOn(t *testing.T, ln net.Listener, cfg Config) *servedProxy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		p.Close()
	})
	return &servedProxy{Proxy: p, url: "http://" + ln.Addr().String()}
}

// listenLoopback listens on a free loopback port.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// endpointsAt configures one endpoint per base URL, each tried once.
func endpointsAt(urls ...string) failover.Config {
	cfg := failover.Config{MaxRetries: -1}
	for _, u := range urls {
		cfg.Endpoints = append(cfg.Endpoints, failover.Endpoint{BaseURL: u, APIKey: "sk-endpoint-key-0000"})
	}
	return cfg
}

// TestHopHeaderStopsLoops sends a request to a proxy whose endpoint leads
// back to it, directly or through a second proxy: the proxy refuses its
// own request when it comes back (508), instead of sending it round until
// the file descriptors run out; the client gets that 508.
func TestHopHeaderStopsLoops(t *testing.T) {
	t.Run("self", func(t *testing.T) {
		ln := listenLoopback(t)
		// An address the start-up check of the command would catch; a DNS
		// name leading back would not be caught, and the hop header
		// does not care how the request came back.
		a := serveOn(t, ln, Config{Failover: endpointsAt("http://" + ln.Addr().String() + "/v1")})
		checkLoopDetected(t, a.url)
	})
	t.Run("through another proxy", func(t *testing.T) {
		lnA, lnB := listenLoopback(t), listenLoopback(t)
		a := serveOn(t, lnA, Config{Failover: endpointsAt("http://" + lnB.Addr().String() + "/v1")})
		serveOn(t, lnB, Config{Failover: endpointsAt("http://" + lnA.Addr().String() + "/v1")})
		checkLoopDetected(t, a.url)
	})
}

// checkLoopDetected posts a chat request to the proxy at url and checks
// that it ends in a 508 loop_detected.
func checkLoopDetected(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("the looping request did not end: %v", err)
	}
	defer resp.Body.Close()
	checkError(t, resp, http.StatusLoopDetected, "loop_detected")
}

// TestHopHeaderChain checks that a chain of two proxies is no loop: the
// request reaches the upstream, which sees both proxies' hop IDs.
func TestHopHeaderChain(t *testing.T) {
	up := fakeopenai.New()
	defer up.Close()
	lnB := listenLoopback(t)
	b := serveOn(t, lnB, Config{Failover: endpointsAt(up.URL())})
	a := serveOn(t, listenLoopback(t), Config{Failover: endpointsAt(b.url + "/v1")})
	resp := postJSON(t, a.url+"/v1/chat/completions", `{"model":"m","messages":[]}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d through two proxies", resp.StatusCode)
	}
	last, _ := up.Last()
	if got, want := last.Header.Values(HopHeader), []string{a.hopID, b.hopID}; !slices.Equal(got, want) {
		t.Errorf("the upstream saw %s %q, want %q", HopHeader, got, want)
	}
}
