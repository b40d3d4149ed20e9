package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestProxyMethods checks that only GET, POST and DELETE reach an
// endpoint: TRACE (which an upstream may echo, key and all), CONNECT and
// every other method get a 405 in OpenAI's format with an Allow header,
// on API paths and elsewhere.
func TestProxyMethods(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey})
	addr := strings.TrimPrefix(p.url, "http://")

	refused := []struct {
		method, target, allow string
	}{
		{"TRACE", "/v1/models", "GET, POST, DELETE"},
		{"PUT", "/v1/files/file-1", "GET, POST, DELETE"},
		{"PATCH", "/v1/files/file-1", "GET, POST, DELETE"},
		{"OPTIONS", "/v1/models", "GET, POST, DELETE"},
		{"PROPFIND", "/v1/models", "GET, POST, DELETE"},
		{"CONNECT", "api.openai.com:443", "GET, POST, DELETE"},
		{"TRACE", "/", "GET, POST, DELETE"},
		{"POST", "/healthz", "GET, HEAD"},
		{"DELETE", "/metrics", "GET, HEAD"},
	}
	for _, tc := range refused {
		resp := rawRequest(t, addr, tc.method, tc.target)
		checkOpenAIError(t, resp, http.StatusMethodNotAllowed, "method_not_allowed")
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.target, got, tc.allow)
		}
		resp.Body.Close()
	}
	resp := send(t, http.MethodHead, p.url+"/v1/models", "", nil, "")
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, POST, DELETE" {
		t.Errorf("HEAD /v1/models: status %d, Allow %q; want 405 with GET, POST, DELETE", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if got := up.Hits(); got != 0 {
		t.Fatalf("the upstream got %d request(s) of refused methods", got)
	}

	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		resp := send(t, m, p.url+"/v1/models", "", nil, "")
		readAll(t, resp)
		if resp.StatusCode == http.StatusMethodNotAllowed {
			t.Errorf("%s: 405", m)
		}
	}
	if got := up.Hits(); got != 2 {
		t.Errorf("the upstream got %d request(s), want the GET and the DELETE", got)
	}
}

// TestProxyBadListen checks that an address the proxy cannot listen on
// exits 2, like every other bad configuration.
func TestProxyBadListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	env := []string{"OPENAI_API_KEY_1=" + firstKey}
	for _, args := range [][]string{
		{"-listen", "nonsense"},
		{"-listen", "127.0.0.1:99999"},
		{"-listen", busy.Addr().String()},
		{"-admin-listen", "127.0.0.1:notaport"},
		{"-admin-listen", busy.Addr().String()},
	} {
		code, _, stderr := runCommand(t, env, append([]string{"proxy", "-listen", "127.0.0.1:0"}, args...)...)
		if code != exitUsage {
			t.Errorf("%q: exit code %d, want %d", args, code, exitUsage)
		}
		if !strings.Contains(stderr, args[0]+":") {
			t.Errorf("%q: the error does not name %s:\n%s", args, args[0], stderr)
		}
		if strings.Contains(stderr, "msg=listening") {
			t.Errorf("%q: the proxy listened:\n%s", args, stderr)
		}
	}
}

// TestProxyLogCutsLongPaths checks that the access log shows at most 256
// bytes of a path, marked as cut, with its length.
func TestProxyLogCutsLongPaths(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL()})
	path := "/v1/" + strings.Repeat("a", 5000)
	readAll(t, send(t, http.MethodGet, p.url+path, "", nil, ""))
	line := p.logs.waitFor(t, regexp.MustCompile(`msg=request method=GET path=\S+ .*`), p.exited)[0]
	want := "path=" + path[:256] + "… path_bytes=5004 status=404 "
	if !strings.Contains(line, want) {
		t.Errorf("access log line %q\nwant it to contain %q", line, want)
	}
	if strings.Contains(p.logs.String(), path[:257]) {
		t.Error("the log holds more than 256 bytes of the path")
	}
}

// trickle opens a connection to the proxy at addr and sends a POST whose
// headers announce length bytes of body, then only the first sent bytes of
// it; it returns the connection for the response.
func trickle(t *testing.T, addr string, length, sent int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", addr, length)
	if _, err := c.Write([]byte(strings.Repeat(" ", sent))); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// endpointHealth is one endpoint of /healthz.
type endpointHealth struct {
	Name                string `json:"name"`
	State               string `json:"state"`
	Requests            int64  `json:"requests"`
	Failures            int64  `json:"failures"`
	ConsecutiveFailures int64  `json:"consecutive_failures"`
}

// health reads /healthz of the proxy p.
func health(t *testing.T, p *runningProxy) []endpointHealth {
	t.Helper()
	resp := send(t, http.MethodGet, p.adminURL+"/healthz", "", nil, "")
	var h struct {
		Endpoints []endpointHealth `json:"endpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	return h.Endpoints
}

// TestProxySlowClientBody checks -read-timeout: a client that sends part
// of its body and stalls gets a 408, and the endpoint is not charged with
// a failure, whether the body was still being buffered or an attempt was
// already sending it on (a body over -max-body).
func TestProxySlowClientBody(t *testing.T) {
	t.Run("buffering", func(t *testing.T) {
		up := startUpstream(t, fakeopenai.WithName("up"))
		// The read timeout is what the test is about: the client stalls.
		p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_NAME_1=up"}, "-read-timeout", "300ms")
		c, br := trickle(t, strings.TrimPrefix(p.url, "http://"), 100, 10)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no response to the stalled body: %v", err)
		}
		e := checkOpenAIError(t, resp, http.StatusRequestTimeout, "request_timeout")
		if !strings.Contains(e.Error.Message, "300ms") {
			t.Errorf("the error %q does not name the read timeout", e.Error.Message)
		}
		c.Close()
		if got := up.Hits(); got != 0 {
			t.Errorf("the upstream got %d request(s)", got)
		}
		if h := health(t, p); h[0].Requests != 0 || h[0].Failures != 0 {
			t.Errorf("health %+v: want no attempt charged", h[0])
		}
	})

	t.Run("streaming to an endpoint", func(t *testing.T) {
		started := make(chan struct{}, 1)
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var b [1]byte
			if _, err := io.ReadFull(r.Body, b[:]); err == nil {
				started <- struct{}{}
			}
			_, _ = io.Copy(io.Discard, r.Body)
		}))
		t.Cleanup(up.Close)
		p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL + "/v1", "OPENAI_NAME_1=up"},
			"-read-timeout", "500ms", "-max-body", "1KiB")
		_, br := trickle(t, strings.TrimPrefix(p.url, "http://"), 1<<20, 64<<10)
		select {
		case <-started:
		case <-time.After(waitLimit):
			t.Fatal("no attempt began sending the body")
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no response to the stalled body: %v", err)
		}
		checkOpenAIError(t, resp, http.StatusRequestTimeout, "request_timeout")
		if h := health(t, p); h[0].Failures != 0 || h[0].ConsecutiveFailures != 0 || h[0].State != "closed" {
			t.Errorf("health %+v: want the endpoint not charged", h[0])
		}
	})
}

// TestProxyReadTimeoutSparesStreams checks that -read-timeout bounds the
// request body only: a stream that lasts longer still reaches its end.
func TestProxyReadTimeoutSparesStreams(t *testing.T) {
	up := newBlockingStream(t)
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.srv.URL + "/v1"}, "-read-timeout", "200ms")
	resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", streamBody)
	r := bufio.NewReader(resp.Body)
	if got := readEvent(t, r); got != firstEvent {
		t.Fatalf("first event %q, want %q", got, firstEvent)
	}
	// What is tested is the passage of time: the stream outlasts the
	// read timeout several times over.
	<-time.After(time.Second)
	up.Release()
	rest, err := r.ReadString(0)
	if !strings.HasSuffix(rest, "data: [DONE]\n\n") {
		t.Errorf("the stream ended with %q (%v), want the rest and [DONE]", rest, err)
	}
}

// TestProxyBodyTooLargeToFailOver checks the client's error when failover
// was impossible because the body was over -max-body: the endpoint read
// the body and reset the connection, and the body could not be replayed
// to the second; the error says why and names the limit.
func TestProxyBodyTooLargeToFailOver(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	second := startUpstream(t, fakeopenai.WithName("second"))
	first.SetFault(fakeopenai.Reset())
	p := startProxy(t, twoEndpoints(first, second), "-max-body", "1KiB")
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 4<<10) + `"}]}`
	resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", body)
	e := checkOpenAIError(t, resp, http.StatusBadGateway, "upstream_unavailable")
	for _, want := range []string{`"first"`, "-max-body 1 KiB", "without failover"} {
		if !strings.Contains(e.Error.Message, want) {
			t.Errorf("the error %q does not mention %q", e.Error.Message, want)
		}
	}
	if got := second.Hits(); got != 0 {
		t.Errorf("the second upstream got %d request(s)", got)
	}

	// A body within the limit fails over as usual.
	resp = post(t, newClient(t), p.url+"/v1/chat/completions", "", chatBody)
	if b := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("a small body: status %d: %s", resp.StatusCode, b)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"32MiB", 32 << 20, true},
		{"25MB", 25_000_000, true},
		{"512 KiB", 512 << 10, true},
		{"1048576", 1 << 20, true},
		{"1GiB", 1 << 30, true},
		{"0", -1, true},
		{"", 0, false},
		{"lots", 0, false},
		{"-1", 0, false},
		{"2GiB", 0, false},
		{"32 parsecs", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
