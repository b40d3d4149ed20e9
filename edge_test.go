package failover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestEdgeEarlyCloseDuringStream: a caller that closes the body of a stream
// part-way through releases the upstream connection, leaves no goroutine
// behind, and the transport serves later requests.
func TestEdgeEarlyCloseDuringStream(t *testing.T) {
	for _, timeout := range []time.Duration{0, 5 * time.Second} {
		t.Run("timeout="+timeout.String(), func(t *testing.T) {
			released := make(chan struct{})
			var streams atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if !strings.Contains(r.Header.Get("X-Test"), "stream-forever") {
					_, _ = io.WriteString(w, `{"ok":true}`)
					return
				}
				streams.Add(1)
				w.Header().Set("Content-Type", "text/event-stream")
				rc := http.NewResponseController(w)
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for {
					// An endless stream: only the caller going away ends it.
					if _, err := io.WriteString(w, "data: {\"chunk\":1}\n\n"); err != nil || rc.Flush() != nil {
						close(released)
						return
					}
					select {
					case <-r.Context().Done():
						close(released)
						return
					case <-tick.C:
					}
				}
			}))
			defer srv.Close()
			base := &http.Transport{DisableCompression: true}
			defer base.CloseIdleConnections()
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
				{Name: "s", BaseURL: srv.URL + "/v1", APIKey: "key-s", Timeout: timeout},
			}})

			req := chatRequest(t, context.Background(), clientBase, true)
			req.Header.Set("X-Test", "stream-forever")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "data: ") {
				t.Fatalf("first line %q, %v", line, err)
			}
			if err := resp.Body.Close(); err != nil {
				t.Errorf("closing the body early: %v", err)
			}
			select {
			case <-released:
			case <-time.After(waitBound):
				t.Fatalf("the upstream still streams %v after the caller closed the body", waitBound)
			}

			// Later requests work, streaming or not.
			code, body := roundTrip(t, tr, chatRequest(t, context.Background(), clientBase, false))
			if code != 200 || body != `{"ok":true}` {
				t.Errorf("later request: %d %q", code, body)
			}
			if h := healthOf(t, tr, "s"); h.InFlight != 0 || h.Failures != 0 || h.State != StateClosed {
				t.Errorf("health after an early close: %+v, want nothing in flight and no failure", h)
			}
			if streams.Load() != 1 {
				t.Errorf("upstream saw %d streams, want 1: a stream is never retried", streams.Load())
			}

			srv.Close()
			base.CloseIdleConnections()
			goleak.VerifyNone(t)
		})
	}
}

// TestEdgeTimeoutShorterThanDial: an endpoint whose connection cannot be
// established within its Timeout fails over to the next.
func TestEdgeTimeoutShorterThanDial(t *testing.T) {
	b := upstream(t, "b")
	const slowAddr = "slow.test:80"
	dialing := make(chan struct{}, 1)
	dialReturned := make(chan struct{})
	var d net.Dialer
	base := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != slowAddr {
				return d.DialContext(ctx, network, addr)
			}
			// A dial that never completes on its own: it ends only
			// when its context does.
			defer close(dialReturned)
			dialing <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
	t.Cleanup(base.CloseIdleConnections)
	const timeout = 100 * time.Millisecond
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
		{Name: "slow", BaseURL: "http://" + slowAddr + "/v1", APIKey: "key-slow", Timeout: timeout},
		ep(b, 1),
	}})
	start := time.Now()
	chatOK(t, tr, "b")
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("answered after %v, before the slow endpoint's timeout %v", elapsed, timeout)
	}
	select {
	case <-dialing:
	default:
		t.Fatal("the slow endpoint was never dialled")
	}
	h := healthOf(t, tr, "slow")
	if h.Requests != 1 || h.Failures != 1 || !strings.Contains(h.LastError, "timed out after "+timeout.String()) {
		t.Errorf("slow: %d attempts, %d failures, last error %q; want one attempt timed out", h.Requests, h.Failures, h.LastError)
	}
	if b.Hits() != 1 {
		t.Errorf("b hits %d, want 1", b.Hits())
	}
	// net/http lets a dial outlive the request that started it, for a
	// later request to use; closing the idle connections ends it.
	base.CloseIdleConnections()
	select {
	case <-dialReturned:
	case <-time.After(waitBound):
		t.Fatalf("the dial still runs %v after CloseIdleConnections", waitBound)
	}
	b.Close()
	goleak.VerifyNone(t)
}

// idleCloser is a base that counts CloseIdleConnections calls.
type idleCloser struct {
	http.RoundTripper
	closed atomic.Int64
}

func (c *idleCloser) CloseIdleConnections() { c.closed.Add(1) }

func TestEdgeCloseIdleConnectionsReachesBase(t *testing.T) {
	base := &idleCloser{RoundTripper: newScriptedBase(alwaysOK)}
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	(&http.Client{Transport: tr}).CloseIdleConnections()
	if got := base.closed.Load(); got != 1 {
		t.Fatalf("base's CloseIdleConnections called %d times, want 1", got)
	}
}

// TestBrokenBaseContract: a base that returns a response without a body,
// or neither a response nor an error, does not make RoundTrip panic.
func TestBrokenBaseContract(t *testing.T) {
	t.Run("nil body with a timeout", func(t *testing.T) {
		base := roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}}, nil
		})
		a := hostEndpoint("a", 0)
		a.Timeout = time.Minute
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}})
		if status, body := roundTrip(t, tr, chatRequest(t, context.Background(), clientBase, false)); status != 200 || body != "" {
			t.Errorf("got %d %q, want 200 with an empty body", status, body)
		}
	})
	t.Run("nil response and nil error", func(t *testing.T) {
		base := roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, nil })
		tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: -1, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if resp != nil || !errors.Is(err, errNilResponse) {
			t.Errorf("got %v, %v; want errNilResponse", resp, err)
		}
	})
}

// TestResponseRequestIsTheCallers: the returned response's Request is the
// caller's, not the attempt's, which carries the endpoint's key.
func TestResponseRequestIsTheCallers(t *testing.T) {
	for _, code := range []int{200, 503} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			base := newScriptedBase(func(*http.Request, int) (*http.Response, error) { return reply(code, "x"), nil })
			tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: -1, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
			req := chatRequest(t, context.Background(), clientBase, false)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Request != req {
				t.Errorf("resp.Request is %v %v, want the caller's request", resp.Request.URL, resp.Request.Header)
			}
		})
	}
}

// TestEndpointHeader: with Config.EndpointHeader set, each response of a
// routed request names the endpoint that sent it, whether it succeeded
// or was the last failure; without it, responses are left as they are.
func TestEndpointHeader(t *testing.T) {
	script := func(codes map[string]int) func(*http.Request, int) (*http.Response, error) {
		return func(req *http.Request, _ int) (*http.Response, error) {
			resp := reply(codes[req.URL.Host], "x")
			resp.Header = nil // a base may leave it nil
			return resp, nil
		}
	}
	for _, tc := range []struct {
		name   string
		header string
		codes  map[string]int
		want   []string
	}{
		{"after a failover", "failover-endpoint", map[string]int{"a.test": 503, "b.test": 200}, []string{"b"}},
		{"the last failure", "Failover-Endpoint", map[string]int{"a.test": 503, "b.test": 502}, []string{"b"}},
		{"first try", "Failover-Endpoint", map[string]int{"a.test": 200}, []string{"a"}},
		{"not asked for", "", map[string]int{"a.test": 200}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(script(tc.codes))
			tr, _ := newTestTransport(t, Config{Base: base, EndpointHeader: tc.header,
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Values("Failover-Endpoint"); !slices.Equal(got, tc.want) {
				t.Errorf("Failover-Endpoint %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSlowBodyOfFailedRedirectIsTimed: a redirect that fails the attempt
// (x-should-retry: true) but whose body never ends must not hold up the
// failover beyond the endpoint's Timeout: its body is read for the
// classifier within the attempt, like an error body.
func TestSlowBodyOfFailedRedirectIsTimed(t *testing.T) {
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Should-Retry", "true")
		w.Header().Set("Location", "/elsewhere")
		w.WriteHeader(http.StatusFound)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the body never ends
	}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer b.Close()
	tr, _ := newTestTransport(t, Config{MaxRetries: 1, Endpoints: []Endpoint{
		{Name: "a", BaseURL: a.URL + "/v1", APIKey: "ka", Timeout: 100 * time.Millisecond},
		{Name: "b", BaseURL: b.URL + "/v1", APIKey: "kb", Priority: 1},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	status, body := roundTrip(t, tr, chatRequest(t, ctx, clientBase, false))
	if status != 200 || body != `{"ok":true}` {
		t.Errorf("got %d %q, want b's answer", status, body)
	}
	if h := healthOf(t, tr, "a"); !strings.Contains(h.LastError, "timed out") {
		t.Errorf("a's last error %q, want its timeout", h.LastError)
	}
}

// TestHTTP2Upstreams runs a failover over HTTP/2 over TLS, as the OpenAI
// API speaks it: the first endpoint answers 503, the second a chat
// completion and then a stream, whose events must reach the caller one
// at a time, each before the upstream writes the next.
func TestHTTP2Upstreams(t *testing.T) {
	newH2 := func(h http.HandlerFunc) *httptest.Server {
		srv := httptest.NewUnstartedServer(h)
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	var aHits atomic.Int32
	a := newH2(func(w http.ResponseWriter, r *http.Request) {
		aHits.Add(1)
		http.Error(w, `{"error":{"message":"overloaded"}}`, http.StatusServiceUnavailable)
	})
	next := make(chan struct{}) // the caller got the last event
	type seen struct {
		proto, auth, body string
	}
	bSaw := make(chan seen, 2)
	b := newH2(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		bSaw <- seen{r.Proto, r.Header.Get("Authorization"), string(body)}
		if !strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"choices":[{"message":{"content":"hi"}}]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	})
	// Both servers use httptest's certificate: one client trusts both.
	base := b.Client().Transport.(*http.Transport)
	t.Cleanup(base.CloseIdleConnections)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
		{Name: "a", BaseURL: a.URL + "/v1", APIKey: "ka"},
		{Name: "b", BaseURL: b.URL + "/v1", APIKey: "kb", Priority: 1},
	}})

	for _, stream := range []bool{false, true} {
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, stream))
		if err != nil {
			t.Fatalf("stream=%v: %v", stream, err)
		}
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("stream=%v: %d over %s, want 200 over HTTP/2", stream, resp.StatusCode, resp.Proto)
		}
		s := <-bSaw
		if s.proto != "HTTP/2.0" || s.auth != "Bearer kb" || s.body != chatBody(stream) {
			t.Errorf("stream=%v: b saw %+v, want HTTP/2.0, its own key and the request's body", stream, s)
		}
		if !stream {
			got, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(got), `"hi"`) {
				t.Errorf("body %q, want b's completion", got)
			}
			resp.Body.Close()
			continue
		}
		events := bufio.NewScanner(resp.Body)
		for i := range 3 {
			line := ""
			for line == "" && events.Scan() {
				line = events.Text()
			}
			if want := fmt.Sprintf("data: {\"n\":%d}", i); line != want {
				t.Fatalf("event %d: %q, want %q", i, line, want)
			}
			next <- struct{}{} // b writes the next event only now
		}
		resp.Body.Close()
	}
	if got := aHits.Load(); got != 2 {
		t.Errorf("a got %d requests, want 2 (each request tried it first)", got)
	}
}
