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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestFailoverOrderSamePriorityFirst(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "c.test" {
			return reply(200, "c"), nil
		}
		return reply(500, "down"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
		hostEndpoint("a", 0), hostEndpoint("b", 0), hostEndpoint("c", 1), hostEndpoint("d", 2),
	}})
	for i := range 4 {
		if status, body := chat(t, tr); status != 200 || body != "c" {
			t.Fatalf("request %d: got %d %q, want c's answer", i, status, body)
		}
	}
	seen := base.Seen()
	for i := 0; i < len(seen); i += 3 {
		hosts := []string{seen[i].host, seen[i+1].host, seen[i+2].host}
		if !(hosts[0] == "a.test" && hosts[1] == "b.test" || hosts[0] == "b.test" && hosts[1] == "a.test") || hosts[2] != "c.test" {
			t.Fatalf("attempt order %v, want a and b (either order) then c", hosts)
		}
	}
	if base.Hits("d.test") != 0 {
		t.Fatal("d (a later priority) was tried before c")
	}
	if len(clk.Sleeps()) != 0 {
		t.Fatalf("slept %v while untried endpoints remained", clk.Sleeps())
	}
}

func TestMaxRetriesBoundsAttempts(t *testing.T) {
	down := func(*http.Request, int) (*http.Response, error) { return reply(503, "down"), nil }
	for _, tc := range []struct {
		retries, want int
	}{{0, 4}, {-1, 1}, {1, 2}, {6, 7}} {
		t.Run(fmt.Sprint(tc.retries), func(t *testing.T) {
			base := newScriptedBase(down)
			tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: tc.retries,
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)},
				Breaker:   BreakerConfig{FailureThreshold: 100}})
			chat(t, tr)
			if got := len(base.Seen()); got != tc.want {
				t.Fatalf("%d attempts, want %d", got, tc.want)
			}
		})
	}
}

func TestAllFailReturnsLastResponse(t *testing.T) {
	var eps []Endpoint
	for i, name := range []string{"a", "b", "c"} {
		s := upstream(t, name)
		s.SetFault(fakeopenai.StatusFault(503).WithBody(`{"error":{"message":"overloaded `+name+`"}}`).WithHeader("X-Which", name))
		eps = append(eps, ep(s, i))
	}
	tr, _ := newTestTransport(t, Config{Endpoints: eps, MaxRetries: 2})
	resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	if resp.StatusCode != 503 {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if got := resp.Header.Get("X-Which"); got != "c" {
		t.Errorf("X-Which %q, want the last endpoint's, c", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q, want application/json", got)
	}
	if want := `{"error":{"message":"overloaded c"}}`; string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
}

func TestCallerDeadlineAfterFailedAttempts(t *testing.T) {
	alpha := upstream(t, "alpha")
	beta := upstream(t, "beta")
	alpha.SetFault(fakeopenai.Refuse())
	beta.SetFault(fakeopenai.Hang())
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{ep(alpha, 0), ep(beta, 1)}})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	resp, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, false))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not match context.DeadlineExceeded", err)
	}
	var fe *Error
	if !errors.As(err, &fe) || len(fe.Attempts) != 2 {
		t.Fatalf("error %v: want an *Error with the refused and the cut attempt", err)
	}
	var first *AttemptError
	if !errors.As(fe.Attempts[0], &first) || first.Endpoint != "alpha" || errors.Is(first, context.DeadlineExceeded) {
		t.Errorf("first attempt %v, want alpha's refusal", fe.Attempts[0])
	}
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

// TestEndpointHeaderNamesTheEndpoint: with Config.EndpointHeader set, each
// response of a routed request names the endpoint that sent it, whether it
// succeeded or was the last failure; without it, responses are left as
// they are.
func TestEndpointHeaderNamesTheEndpoint(t *testing.T) {
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

// idleCloser is a base that counts CloseIdleConnections calls.
type idleCloser struct {
	http.RoundTripper
	closed atomic.Int64
}

func (c *idleCloser) CloseIdleConnections() { c.closed.Add(1) }

func TestCloseIdleConnectionsReachesBase(t *testing.T) {
	base := &idleCloser{RoundTripper: newScriptedBase(alwaysOK)}
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	(&http.Client{Transport: tr}).CloseIdleConnections()
	if got := base.closed.Load(); got != 1 {
		t.Fatalf("base's CloseIdleConnections called %d times, want 1", got)
	}
}

func TestAttemptTimeoutFailsOver(t *testing.T) {
	a := upstream(t, "a")
	b := upstream(t, "b")
	a.SetFault(fakeopenai.Hang())
	ea := ep(a, 0)
	ea.Timeout = 100 * time.Millisecond
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{ea, ep(b, 1)}})
	chatOK(t, tr, "b")
	if a.Hits() != 1 || b.Hits() != 1 {
		t.Errorf("hits a=%d b=%d, want 1 each", a.Hits(), b.Hits())
	}
	h := healthOf(t, tr, "a")
	if h.Failures != 1 || !strings.Contains(h.LastError, "timed out after 100ms") {
		t.Errorf("a: failures %d, last error %q; want 1 and a timeout after 100ms", h.Failures, h.LastError)
	}
}

func TestAttemptTimeoutAllHanging(t *testing.T) {
	a := upstream(t, "a")
	b := upstream(t, "b")
	var eps []Endpoint
	for i, s := range []*fakeopenai.Server{a, b} {
		s.SetFault(fakeopenai.Hang())
		e := ep(s, i)
		e.Timeout = 100 * time.Millisecond
		eps = append(eps, e)
	}
	tr, _ := newTestTransport(t, Config{Endpoints: eps, MaxRetries: 1})
	resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error", resp.StatusCode)
	}
	if !errors.Is(err, ErrAttemptTimeout) {
		t.Errorf("error %v does not match ErrAttemptTimeout", err)
	}
	var fe *Error
	if !errors.As(err, &fe) || len(fe.Attempts) != 2 {
		t.Fatalf("error %v: want an *Error with 2 attempts", err)
	}
	for i, ae := range fe.Attempts {
		var a *AttemptError
		if !errors.As(ae, &a) || !errors.Is(a, ErrAttemptTimeout) || a.Endpoint != eps[i].Name {
			t.Errorf("attempt %d: %v, want a timeout on %s", i+1, ae, eps[i].Name)
		}
	}
}

// TestAttemptTimeoutShorterThanDial: an endpoint whose connection cannot be
// established within its Timeout fails over to the next.
func TestAttemptTimeoutShorterThanDial(t *testing.T) {
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

// TestAttemptTimeoutCoversSlowBodyOfFailedRedirect: a redirect that fails the attempt
// (x-should-retry: true) but whose body never ends must not hold up the
// failover beyond the endpoint's Timeout: its body is read for the
// classifier within the attempt, like an error body.
func TestAttemptTimeoutCoversSlowBodyOfFailedRedirect(t *testing.T) {
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

func TestAttemptTimeoutDoesNotCutBody(t *testing.T) {
	// Loose enough that the headers, sent at once, always beat it.
	const timeout = 250 * time.Millisecond
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			a := upstream(t, "a")
			// A stream has 6 events, a plain body 8 pieces: either
			// lasts over 3×timeout.
			a.SetFault(fakeopenai.SlowDrip(150 * time.Millisecond))
			e := ep(a, 0)
			e.Timeout = timeout
			tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{e}})
			start := time.Now()
			code, body := roundTrip(t, tr, chatRequest(t, context.Background(), clientBase, stream))
			if elapsed := time.Since(start); elapsed < 3*timeout {
				t.Fatalf("the body took %v, want over %v for the test to mean anything", elapsed, 3*timeout)
			}
			complete := strings.Contains(body, fakeopenai.Reply("a"))
			if stream {
				complete = strings.Count(body, "data: ") == 6 && strings.HasSuffix(body, "data: [DONE]\n\n")
			}
			if code != 200 || !complete {
				t.Errorf("got %d %q, want a's whole answer", code, body)
			}
			if a.Hits() != 1 {
				t.Errorf("a got %d hits, want 1", a.Hits())
			}
			if h := healthOf(t, tr, "a"); h.Requests != 1 || h.Failures != 0 {
				t.Errorf("a: %d attempts, %d failures (%s); want 1 and none", h.Requests, h.Failures, h.LastError)
			}
		})
	}
}

func TestCallerContextEndsHangingAttempt(t *testing.T) {
	for _, tc := range []struct {
		name string
		want error
	}{
		{"cancel", context.Canceled},
		{"deadline", context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := upstream(t, "a")
			b := upstream(t, "b")
			a.SetFault(fakeopenai.Hang())
			sig := &startSignal{base: httpBase(t), started: make(chan struct{})}
			tr, _ := newTestTransport(t, Config{Base: sig, Endpoints: []Endpoint{ep(a, 0), ep(b, 1)}})

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.want == context.DeadlineExceeded {
				ctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
			}
			type result struct {
				resp *http.Response
				err  error
			}
			req := chatRequest(t, ctx, clientBase, false)
			done := make(chan result, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				done <- result{resp, err}
			}()
			select {
			case <-sig.started:
			case <-time.After(waitBound):
				t.Fatal("no attempt started")
			}
			if tc.want == context.Canceled {
				wctx, wcancel := context.WithTimeout(context.Background(), waitBound)
				err := a.WaitHits(wctx, 1)
				wcancel()
				if err != nil {
					t.Fatalf("the attempt did not reach a: %v", err)
				}
				cancel()
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(waitBound):
				cancel()
				<-done
				t.Fatalf("RoundTrip still running %v after the context ended", waitBound)
			}
			if r.err == nil {
				r.resp.Body.Close()
				t.Fatalf("got status %d, want an error", r.resp.StatusCode)
			}
			if !errors.Is(r.err, tc.want) {
				t.Errorf("error %v does not match %v", r.err, tc.want)
			}
			if b.Hits() != 0 {
				t.Errorf("b got %d hits after the caller gave up, want 0", b.Hits())
			}
		})
	}
}

func TestStreamingFirstChunkUnbuffered(t *testing.T) {
	a := upstream(t, "a")
	a.SetFault(fakeopenai.Refuse())

	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before srv.Close, which waits for the handler

	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{
		ep(a, 0),
		{Name: "stream", BaseURL: srv.URL + "/v1", APIKey: "key-stream", Priority: 1},
	}})

	// A buffering transport would wait for the upstream to finish, which
	// it does only after the test reads the first chunk: the watchdog
	// ends that deadlock, and the test fails.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fired atomic.Bool
	watchdog := time.AfterFunc(waitBound, func() { fired.Store(true); cancel() })
	defer watchdog.Stop()

	resp, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, true))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	if fired.Load() {
		t.Fatalf("the first chunk did not reach the caller within %v while the upstream was still streaming", waitBound)
	}
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line %q, %v; want %q", line, err, "data: first\n")
	}
	unblock()
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading the rest: %v", err)
	}
	if string(rest) != "\ndata: [DONE]\n\n" {
		t.Errorf("rest of stream %q, want the blank line and [DONE]", rest)
	}
	if h := healthOf(t, tr, "a"); h.Requests != 1 || h.Failures != 1 {
		t.Errorf("a: requests %d, failures %d; want the refused attempt first", h.Requests, h.Failures)
	}
}

// TestStreamingEarlyCloseReleasesUpstream: a caller that closes the body of a stream
// part-way through releases the upstream connection, leaves no goroutine
// behind, and the transport serves later requests.
func TestStreamingEarlyCloseReleasesUpstream(t *testing.T) {
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

func TestConcurrentRequests(t *testing.T) {
	refusing := upstream(t, "refusing")
	flaky := upstream(t, "flaky", fakeopenai.WithSeed(42))
	healthy := upstream(t, "healthy")
	refusing.SetFault(fakeopenai.Refuse())
	flaky.SetFault(fakeopenai.Random(0.3, fakeopenai.StatusFault(500)))
	tr, _ := newTestTransport(t, Config{
		Base:      httpBase(t),
		Endpoints: []Endpoint{ep(refusing, 0), ep(flaky, 0), ep(healthy, 0)},
	})

	const goroutines, perG = 32, 25
	var ok, failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for i := range perG {
				if i%5 == 0 {
					_ = tr.Health() // concurrently with requests, for the race detector
				}
				req, err := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(chatBody(false)))
				if err != nil {
					panic(err)
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { t.Errorf("RoundTrip: %v", err) })
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.Do(func() { t.Errorf("status %d", resp.StatusCode) })
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != goroutines*perG {
		t.Errorf("%d of %d requests succeeded (%d failed)", ok.Load(), goroutines*perG, failed.Load())
	}
	if healthy.Hits() == 0 || flaky.Hits() == 0 || healthy.Hits()+flaky.Hits() < goroutines*perG {
		t.Errorf("hits flaky=%d healthy=%d, want both used and at least %d in all", flaky.Hits(), healthy.Hits(), goroutines*perG)
	}
	var attempts uint64
	for _, h := range tr.Health() {
		attempts += h.Requests
		if h.InFlight != 0 {
			t.Errorf("%s: %d in flight after all requests ended", h.Name, h.InFlight)
		}
	}
	if h := healthOf(t, tr, "flaky"); h.Requests != uint64(flaky.Hits()) {
		t.Errorf("flaky: health counts %d requests, upstream saw %d", h.Requests, flaky.Hits())
	}
	if attempts < goroutines*perG {
		t.Errorf("health counts %d attempts, want at least %d", attempts, goroutines*perG)
	}
}

// TestPanickingBaseLeavesNothingInFlight: a panic in the base ends the
// attempt's in-flight count.
func TestPanickingBaseLeavesNothingInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { panic("base bug") })
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	func() {
		defer func() {
			if r := recover(); r != "base bug" {
				t.Fatalf("recovered %v, want the base's panic", r)
			}
		}()
		_, _ = tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	}()
	if h := healthOf(t, tr, "a"); h.InFlight != 0 {
		t.Errorf("in flight %d after the panic, want 0", h.InFlight)
	}
	if got := metricValue(t, reg, "failover_attempts_in_flight", map[string]string{"endpoint": "a"}); got != 0 {
		t.Errorf("failover_attempts_in_flight = %v after the panic, want 0", got)
	}
}
