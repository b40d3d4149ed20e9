package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestCleanBasePath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "/v1", true},
		{"/v1", "/v1", true},
		{"/v1/", "/v1", true},
		{"v1", "/v1", true},
		{"/openai/v1", "/openai/v1", true},
		{"/", "", true},
		{"//v1", "", false},
		{"/a/../v1", "", false},
		{"/v1?x=1", "", false},
		{"/v%31", "", false},
	} {
		got, err := cleanBasePath(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("cleanBasePath(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestKeyFingerprint(t *testing.T) {
	for key, want := range map[string]string{
		"":                         "(none)",
		"short-key":                "(set)",
		"sk-proj-abcdefghijklWXYZ": "…WXYZ",
		"ключ-длинный-ключ-ёжик": "…ёжик",
	} {
		if got := KeyFingerprint(key); got != want {
			t.Errorf("KeyFingerprint(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		base, in, want string
	}{
		{"/v1", "/v1/chat/completions?x=1", "http://failover.internal/v1/chat/completions?x=1"},
		{"/v1", "/v1", "http://failover.internal/v1"},
		{"/", "/chat/completions", "http://failover.internal/v1/chat/completions"},
		{"/openai/v1", "/openai/v1/files/a%2Fb/content", "http://failover.internal/v1/files/a%2Fb/content"},
	} {
		base, err := cleanBasePath(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		p := &Proxy{basePath: base, hopID: "0123456789abcdef"}
		p.internal, _ = p.internal.Parse(InternalBaseURL)
		in := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080"+tc.in, strings.NewReader("{}"))
		in.Header.Set("Authorization", "Bearer client")
		in.Header.Set("Accept-Encoding", "br")
		in.Header.Set("OpenAI-Beta", "assistants=v2")
		// They qualify the client's own key, never forwarded.
		in.Header.Set("OpenAI-Organization", "org-client")
		in.Header.Set("OpenAI-Project", "proj_client")
		// A header map written to directly keeps any spelling.
		in.Header["openai-organization"] = []string{"org-client-2"}
		in.Header["OPENAI-PROJECT"] = []string{"proj_client_2"}
		in.Header["authorization"] = []string{"Bearer client-2"}
		in.Header.Set(HopHeader, "fedcba9876543210") // a proxy before this one
		pr := &httputil.ProxyRequest{In: in, Out: in.Clone(context.Background())}
		p.rewrite(pr)
		if got := pr.Out.URL.String(); got != tc.want {
			t.Errorf("base %q: %s -> %s, want %s", tc.base, tc.in, got, tc.want)
		}
		if pr.Out.Host != "" {
			t.Errorf("Out.Host = %q, want empty", pr.Out.Host)
		}
		for k := range pr.Out.Header {
			switch strings.ToLower(k) {
			case "authorization", "accept-encoding", "openai-organization", "openai-project":
				t.Errorf("outgoing header %q kept; want it dropped", k)
			}
		}
		if pr.Out.Header.Get("OpenAI-Beta") == "" {
			t.Error("OpenAI-Beta dropped; want other headers kept")
		}
		if got, want := pr.Out.Header.Values(HopHeader), []string{"fedcba9876543210", "0123456789abcdef"}; !slices.Equal(got, want) {
			t.Errorf("outgoing %s %q, want %q", HopHeader, got, want)
		}
		if got := in.Header.Values(HopHeader); len(got) != 1 {
			t.Errorf("rewrite added to the inbound %s: %q", HopHeader, got)
		}
		if in.Header.Get("Authorization") == "" || in.URL.Host != "127.0.0.1:8080" {
			t.Error("rewrite modified the inbound request")
		}
	}
}

// TestErrorStatus checks the status of a request that got no upstream
// response: 504 when every attempt timed out, whatever ended the request.
func TestErrorStatus(t *testing.T) {
	timedOut := func(name string) error {
		return &failover.AttemptError{Endpoint: name, Outcome: failover.OutcomeFailure,
			Err: fmt.Errorf("attempt: %w", failover.ErrAttemptTimeout)}
	}
	refused := &failover.AttemptError{Endpoint: "r", Outcome: failover.OutcomeFailure,
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"every attempt timed out", &failover.Error{Err: failover.ErrAttemptsExhausted,
			Attempts: []error{timedOut("a"), timedOut("b"), timedOut("a")}}, 504, "upstream_timeout"},
		{"timed out, then none available", &failover.Error{Err: fmt.Errorf("%w (2 open)", failover.ErrNoEndpointAvailable),
			Attempts: []error{timedOut("a"), timedOut("b")}}, 504, "upstream_timeout"},
		{"deadline", &failover.Error{Err: context.DeadlineExceeded}, 504, "upstream_timeout"},
		{"one refused", &failover.Error{Err: failover.ErrAttemptsExhausted,
			Attempts: []error{timedOut("a"), refused}}, 502, "upstream_unavailable"},
		{"none available", &failover.Error{Err: failover.ErrNoEndpointAvailable}, 503, "no_endpoint_available"},
		{"refused, then none available", &failover.Error{Err: failover.ErrNoEndpointAvailable,
			Attempts: []error{refused}}, 503, "no_endpoint_available"},
		{"exhausted without attempts", &failover.Error{Err: failover.ErrAttemptsExhausted}, 502, "upstream_unavailable"},
		{"other error", errors.New("boom"), 502, "upstream_unavailable"},
	} {
		status, code := errorStatus(tc.err)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
}

func TestDescribe(t *testing.T) {
	err := &failover.Error{
		Err: failover.ErrAttemptsExhausted,
		Attempts: []error{
			&failover.AttemptError{Endpoint: "a", Attempt: 1, Outcome: failover.OutcomeFailure,
				Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}},
			&failover.AttemptError{Endpoint: "b", Attempt: 2, Outcome: failover.OutcomeFailure, StatusCode: 503},
		},
	}
	want := `failover: attempts exhausted. Attempts: "a": no response; "b": status 503.`
	if got := describe(err); got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}

// TestServeShutdownTimeout shows that a request that outlasts the shutdown
// timeout is cut, and Serve says so.
func TestServeShutdownTimeout(t *testing.T) {
	up := fakeopenai.New()
	defer up.Close()
	up.SetFault(fakeopenai.Hang())
	p, err := New(Config{
		Failover:        failover.Config{Endpoints: []failover.Endpoint{{BaseURL: up.URL()}}},
		ShutdownTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln, nil) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	answered := make(chan error, 1)
	go func() {
		resp, err := client.Post(fmt.Sprintf("http://%s/v1/chat/completions", ln.Addr()), "application/json",
			strings.NewReader(`{"model":"m","messages":[]}`))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		answered <- err
	}()
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := up.WaitHits(wctx, 1); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case err := <-served:
		if !errors.Is(err, ErrShutdownTimeout) {
			t.Errorf("Serve = %v, want ErrShutdownTimeout", err)
		}
	case <-wctx.Done():
		t.Fatal("Serve did not return")
	}
	select {
	case <-answered:
	case <-wctx.Done():
		t.Fatal("the client's request did not end")
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, true},
		{&net.TCPAddr{IP: net.IPv6loopback}, true},
		{&net.TCPAddr{IP: net.IPv4zero}, false},
		{&net.TCPAddr{IP: net.IPv6unspecified}, false},
		{&net.TCPAddr{IP: net.IPv4(192, 168, 1, 2)}, false},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, true},
	} {
		if got := IsLoopback(tc.addr); got != tc.want {
			t.Errorf("IsLoopback(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func TestCutPath(t *testing.T) {
	long := "/v1/" + strings.Repeat("a", 300)
	// A two-byte rune straddles byte maxLoggedPath: the cut goes before it.
	utf := "/v1/" + strings.Repeat("a", maxLoggedPath-5) + "é" + strings.Repeat("b", 10)
	for _, tc := range []struct{ in, want string }{
		{"/v1/models", "/v1/models"},
		{long[:maxLoggedPath], long[:maxLoggedPath]},
		{long, long[:maxLoggedPath] + "…"},
		{utf, utf[:maxLoggedPath-1] + "…"},
	} {
		if got := cutPath(tc.in); got != tc.want {
			t.Errorf("cutPath(%d bytes) = %q, want %q", len(tc.in), got, tc.want)
		}
	}
}

func TestBodyHint(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  string
	}{
		{32 << 20, "-max-body 32 MiB"},
		{1 << 10, "-max-body 1 KiB"},
		{25_000_000, "-max-body 25000000 bytes"},
		{1 << 30, "-max-body 1 GiB"},
		{-1, "-max-body 0"},
	} {
		if got := bodyHint(tc.limit); !strings.Contains(got, tc.want) {
			t.Errorf("bodyHint(%d) = %q, want it to mention %q", tc.limit, got, tc.want)
		}
	}
}

// TestCloseStopsProbes: Close stops the transport's recovery probes; no
// goroutine of the proxy's outlives it.
func TestCloseStopsProbes(t *testing.T) {
	before := goleak.IgnoreCurrent()
	down := fakeopenai.New(fakeopenai.WithName("down"))
	down.SetFault(fakeopenai.StatusFault(http.StatusInternalServerError))
	up := fakeopenai.New(fakeopenai.WithName("up"))
	p, err := New(Config{Failover: failover.Config{
		Endpoints: []failover.Endpoint{{Name: "down", BaseURL: down.URL()}, {Name: "up", BaseURL: up.URL(), Priority: 1}},
		Breaker:   failover.BreakerConfig{FailureThreshold: 1},
		Probe:     failover.ProbeConfig{Interval: 100 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, InternalBaseURL+"/chat/completions",
		strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 from up", resp.StatusCode)
	}
	// The chat that failed, then a probe.
	if err := down.WaitHits(ctx, 2); err != nil {
		t.Fatalf("no probe reached the endpoint that is down: %v", err)
	}
	p.Close()
	down.Close()
	up.Close()
	goleak.VerifyNone(t, before)
}
