package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// twoEndpoints is the environment of two numbered endpoints: first
// (preferred) and second, under the path prefix /proxy/v1.
func twoEndpoints(first, second *fakeopenai.Server) []string {
	return []string{
		"OPENAI_BASE_URL_1=" + first.URL(),
		"OPENAI_API_KEY_1=" + firstKey,
		"OPENAI_NAME_1=first",
		"OPENAI_BASE_URL_2=" + second.URL(),
		"OPENAI_API_KEY_2=" + secondKey,
		"OPENAI_NAME_2=second",
	}
}

// openAIError is the error body the OpenAI API (and the proxy) sends.
type openAIError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// checkOpenAIError checks that resp has status and an OpenAI-format error
// body with code, and returns that error.
func checkOpenAIError(t *testing.T, resp *http.Response, status int, code string) openAIError {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	var e openAIError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" {
		t.Fatalf("body %q is not an OpenAI error (%v)", body, err)
	}
	if e.Error.Code != code {
		t.Errorf("error code %q, want %q", e.Error.Code, code)
	}
	return e
}

// checkAuthorization checks the Authorization header an upstream saw.
func checkAuthorization(t *testing.T, who string, r fakeopenai.Request, want []string) {
	t.Helper()
	if got := r.Header.Values("Authorization"); !slices.Equal(got, want) {
		t.Errorf("%s saw Authorization %q, want %q", who, got, want)
	}
}

func TestProxyFailsOver(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	second := startUpstream(t, fakeopenai.WithName("second"), fakeopenai.WithPrefix("/proxy/v1"))
	first.SetFault(fakeopenai.Refuse())
	p := startProxy(t, twoEndpoints(first, second))

	resp := post(t, newClient(t), p.url+"/v1/chat/completions?trace=1", clientToken, chatBody)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if !strings.Contains(body, fakeopenai.Reply("second")) {
		t.Errorf("reply %s does not name the second upstream", body)
	}
	if got := resp.Header.Get("Failover-Endpoint"); got != "second" {
		t.Errorf("Failover-Endpoint %q, want second", got)
	}
	if got := first.Hits(); got != 0 {
		t.Errorf("the refusing upstream got %d request(s)", got)
	}
	last, ok := second.Last()
	if !ok {
		t.Fatal("the second upstream got no request")
	}
	if last.Path != "/proxy/v1/chat/completions" || last.RawQuery != "trace=1" {
		t.Errorf("second upstream saw %s?%s, want /proxy/v1/chat/completions?trace=1", last.Path, last.RawQuery)
	}
	if string(last.Body) != chatBody {
		t.Errorf("second upstream saw body %q, want %q", last.Body, chatBody)
	}
	checkAuthorization(t, "second upstream", last, []string{"Bearer " + secondKey})
}

// TestProxyNeverForwardsClientToken sends a client token through the proxy
// to an endpoint with a key (which replaces the token) and to one without
// (which then gets no Authorization at all).
func TestProxyNeverForwardsClientToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		want []string
	}{
		{"endpoint key", firstKey, []string{"Bearer " + firstKey}},
		{"no endpoint key", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, fakeopenai.WithName("up"))
			env := []string{"OPENAI_BASE_URL_1=" + up.URL()}
			if tc.key != "" {
				env = append(env, "OPENAI_API_KEY_1="+tc.key)
			}
			p := startProxy(t, env)
			resp := post(t, newClient(t), p.url+"/v1/chat/completions", clientToken, chatBody)
			if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			last, _ := up.Last()
			checkAuthorization(t, "the upstream", last, tc.want)
			for k, vs := range last.Header {
				if strings.Contains(strings.Join(vs, " "), clientToken) {
					t.Errorf("the upstream saw the client's token in %s", k)
				}
			}
		})
	}
}

func TestProxyKey(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	p := startProxy(t, []string{
		"OPENAI_BASE_URL_1=" + up.URL(),
		"OPENAI_API_KEY_1=" + firstKey,
		"FAILOVER_PROXY_KEY=" + proxyKey,
	})
	c := newClient(t)
	for _, token := range []string{"", "wrong-key", proxyKey + "x", strings.TrimSuffix(proxyKey, "d")} {
		resp := post(t, c, p.url+"/v1/chat/completions", token, chatBody)
		checkOpenAIError(t, resp, http.StatusUnauthorized, "invalid_api_key")
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("401 with WWW-Authenticate %q", got)
		}
	}
	if got := up.Hits(); got != 0 {
		t.Fatalf("the upstream got %d request(s) without the proxy key", got)
	}

	resp := post(t, c, p.url+"/v1/chat/completions", proxyKey, chatBody)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("with the proxy key: status %d: %s", resp.StatusCode, body)
	}
	last, _ := up.Last()
	checkAuthorization(t, "the upstream", last, []string{"Bearer " + firstKey})
}

// blockingStream is an upstream that answers a chat completion with one
// SSE event, flushed, then waits for release before sending the rest: a
// client can see the first event through the proxy only if the proxy does
// not buffer.
type blockingStream struct {
	srv      *httptest.Server
	release  chan struct{}
	once     sync.Once
	sawAuth  chan []string
	started  chan struct{}
	startOne sync.Once
}

const (
	firstEvent = `data: {"choices":[{"delta":{"content":"first"}}]}`
	restEvents = "data: {\"choices\":[{\"delta\":{\"content\":\"second\"}}]}\n\ndata: [DONE]\n\n"
)

func newBlockingStream(t *testing.T) *blockingStream {
	t.Helper()
	b := &blockingStream{release: make(chan struct{}), sawAuth: make(chan []string, 1), started: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case b.sawAuth <- r.Header.Values("Authorization"):
		default:
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, "%s\n\n", firstEvent)
		_ = http.NewResponseController(w).Flush()
		b.startOne.Do(func() { close(b.started) })
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, restEvents)
	}))
	// Closed after the proxy stops (cleanups run last first): release the
	// handler, then close the server.
	t.Cleanup(b.srv.Close)
	t.Cleanup(b.Release)
	return b
}

// Release lets the handler send the rest of the stream.
func (b *blockingStream) Release() { b.once.Do(func() { close(b.release) }) }

// readEvent reads lines up to the next non-empty one.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (got %q)", err, line)
		}
		if line = strings.TrimRight(line, "\r\n"); line != "" {
			return line
		}
	}
}

func TestProxyStreamsChunkByChunk(t *testing.T) {
	up := newBlockingStream(t)
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.srv.URL + "/v1", "OPENAI_API_KEY_1=" + firstKey})

	resp := post(t, newClient(t), p.url+"/v1/chat/completions", clientToken, streamBody)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	// The upstream holds the rest back until this first event has come
	// through the proxy: had the proxy buffered, this read would block.
	if got := readEvent(t, r); got != firstEvent {
		t.Fatalf("first event %q, want %q", got, firstEvent)
	}
	up.Release()
	rest, err := r.ReadString(0)
	if !strings.Contains(rest, `"second"`) || !strings.HasSuffix(rest, "data: [DONE]\n\n") {
		t.Errorf("rest of the stream %q (%v), want the second event and [DONE]", rest, err)
	}
	if got := <-up.sawAuth; !slices.Equal(got, []string{"Bearer " + firstKey}) {
		t.Errorf("the upstream saw Authorization %q", got)
	}
}

var drainingRE = regexp.MustCompile(`stopped accepting connections`)

func TestProxyShutdownCompletesStream(t *testing.T) {
	up := newBlockingStream(t)
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.srv.URL + "/v1"})

	resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", streamBody)
	r := bufio.NewReader(resp.Body)
	if got := readEvent(t, r); got != firstEvent {
		t.Fatalf("first event %q, want %q", got, firstEvent)
	}

	p.stop() // SIGINT
	p.logs.waitFor(t, drainingRE, p.exited)
	if c, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://")); err == nil {
		c.Close()
		t.Error("the proxy still accepts connections while shutting down")
	}
	select {
	case code := <-p.exited:
		t.Fatalf("the proxy exited (%d) with a stream in flight", code)
	default:
	}

	up.Release()
	rest, err := r.ReadString(0)
	if !strings.HasSuffix(rest, "data: [DONE]\n\n") {
		t.Errorf("the stream in flight ended with %q (%v), want the rest and [DONE]", rest, err)
	}
	if code := p.wait(t); code != exitOK {
		t.Errorf("exit code %d after a graceful shutdown; output:\n%s", code, p.logs)
	}
	if !strings.Contains(p.logs.String(), "msg=\"shut down\"") {
		t.Errorf("no \"shut down\" in the output:\n%s", p.logs)
	}
}

func TestProxyAdmin(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	env := []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey, "OPENAI_NAME_1=up", "FAILOVER_PROXY_KEY=" + proxyKey}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"same listener", nil},
		{"admin listener", []string{"-admin-listen", "127.0.0.1:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, env, tc.args...)
			c := newClient(t)
			if resp := post(t, c, p.url+"/v1/chat/completions", proxyKey, chatBody); resp.StatusCode != http.StatusOK {
				t.Fatalf("chat: status %d", resp.StatusCode)
			}
			// Answered without the proxy key.
			resp, err := c.Get(p.adminURL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"status": "ok"`) {
				t.Errorf("/healthz: status %d, body %s", resp.StatusCode, body)
			}
			resp, err = c.Get(p.adminURL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body = readAll(t, resp)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `failover_attempts_total{endpoint="up",outcome="200"} 1`) {
				t.Errorf("/metrics: status %d, no failover_attempts_total in:\n%.2000s", resp.StatusCode, body)
			}
			if strings.Contains(body, firstKey) {
				t.Error("/metrics shows an endpoint key")
			}
			if p.adminURL != p.url {
				resp, err := c.Get(p.url + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				checkOpenAIError(t, resp, http.StatusNotFound, "unknown_url")
				resp.Body.Close()
			}
		})
	}
}

func TestProxyNotFoundOutsideBasePath(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL()}, "-base-path", "/openai/v1")
	c := newClient(t)
	for _, path := range []string{"/v1/chat/completions", "/openai/v10/models", "/"} {
		resp := post(t, c, p.url+path, "", chatBody)
		checkOpenAIError(t, resp, http.StatusNotFound, "unknown_url")
	}
	if got := up.Hits(); got != 0 {
		t.Errorf("the upstream got %d request(s) from outside the base path", got)
	}
	resp := post(t, c, p.url+"/openai/v1/chat/completions", "", chatBody)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("under the base path: status %d: %s", resp.StatusCode, body)
	}
	if last, _ := up.Last(); last.Path != "/v1/chat/completions" {
		t.Errorf("the upstream saw path %q, want /v1/chat/completions", last.Path)
	}
}

func TestProxyAllUpstreamsDown(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	second := startUpstream(t, fakeopenai.WithName("second"))
	first.SetFault(fakeopenai.Refuse())
	second.SetFault(fakeopenai.Refuse())
	p := startProxy(t, twoEndpoints(first, second))
	resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", chatBody)
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 502 or 503", resp.StatusCode)
	}
	var e openAIError
	body := readAll(t, resp)
	if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error.Message, `"first"`) {
		t.Errorf("body %s: want an OpenAI error naming the endpoints tried", body)
	}
	if strings.Contains(body, "127.0.0.1") {
		t.Errorf("the client's error names an upstream address: %s", body)
	}
}

func TestProxyStartupLog(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	second := startUpstream(t, fakeopenai.WithName("second"))
	p := startProxy(t, []string{
		"OPENAI_BASE_URL_1=" + first.URL() + "?api-version=2024-10-21&sig=query-secret",
		"OPENAI_API_KEY_1=" + firstKey,
		"OPENAI_NAME_1=first",
		"OPENAI_BASE_URL_2=" + second.URL(),
		"OPENAI_NAME_2=second",
		"OPENAI_PRIORITY_2=7",
	})
	logs := p.logs.String()
	for _, want := range []string{
		"msg=endpoint name=first url=" + first.URL() + " priority=1 weight=1 key=…1111",
		"msg=endpoint name=second url=" + second.URL() + " priority=7 weight=1 key=(none)",
		"access: no FAILOVER_PROXY_KEY, so loopback only",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the start-up output lacks %q:\n%s", want, logs)
		}
	}
	for _, secret := range []string{firstKey, "query-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the start-up output shows %q:\n%s", secret, logs)
		}
	}
}

func TestProxyBadConfiguration(t *testing.T) {
	const secret = "sk-very-secret-key-0000"
	for _, tc := range []struct {
		name    string
		env     []string
		args    []string
		mention string
	}{
		{"no endpoint", nil, nil, "OPENAI_BASE_URL_1"},
		{"bad URL", []string{"OPENAI_BASE_URL_1=ftp://example.com/v1", "OPENAI_API_KEY_1=" + secret}, nil, "OPENAI_BASE_URL_1"},
		{"key with a line break", []string{"OPENAI_API_KEY_2=" + secret + "\nx"}, nil, "OPENAI_API_KEY_2"},
		{"bad weight", []string{"OPENAI_API_KEY_1=" + secret, "OPENAI_WEIGHT_1=-1"}, nil, "OPENAI_WEIGHT_1"},
		{"key as URL", []string{"OPENAI_BASE_URL_1=" + secret + ":x", "OPENAI_API_KEY_1=" + secret}, nil, "OPENAI_BASE_URL_1"},
		{"bad base path", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-base-path", "/a/../v1"}, "base path"},
		{"bad shutdown timeout", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-shutdown-timeout", "0s"}, "-shutdown-timeout"},
		{"bad log level", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-log-level", "loud"}, "-log-level"},
		{"stray argument", []string{"OPENAI_API_KEY_1=" + secret}, []string{"serve"}, `"serve"`},
		{"bad endpoint header", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-endpoint-header", "Failover Endpoint"}, "EndpointHeader"},
		{"any origin without a proxy key", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-allow-origin", "*"}, "FAILOVER_PROXY_KEY"},
		{"origin with a path", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-allow-origin", "https://app.example/ui"}, `"https://app.example/ui"`},
		{"bad max body", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-max-body", "lots"}, "-max-body"},
		{"max body too large", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-max-body", "2GiB"}, "1GiB"},
		{"bad read timeout", []string{"OPENAI_API_KEY_1=" + secret}, []string{"-read-timeout", "0s"}, "-read-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"proxy", "-listen", "127.0.0.1:0"}, tc.args...)
			code, _, stderr := runCommand(t, tc.env, args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr, tc.mention) {
				t.Errorf("the error does not mention %q:\n%s", tc.mention, stderr)
			}
			if strings.Contains(stderr, secret) || strings.Contains(stderr, "sk-very") {
				t.Errorf("the error shows the key:\n%s", stderr)
			}
			if strings.Contains(stderr, "msg=listening") {
				t.Errorf("the proxy listened despite the bad configuration:\n%s", stderr)
			}
		})
	}
}

func TestProxyRefusesRemoteWithoutKey(t *testing.T) {
	env := []string{"OPENAI_API_KEY_1=" + firstKey}
	for _, tc := range []struct {
		name    string
		env     []string
		args    []string
		mention string
	}{
		{"API without a proxy key", env, []string{"-listen", "0.0.0.0:0"}, "FAILOVER_PROXY_KEY"},
		{"admin even with a proxy key", append(env, "FAILOVER_PROXY_KEY="+proxyKey), []string{"-admin-listen", "0.0.0.0:0"}, "-allow-remote"},
		// Without -admin-listen, /metrics and /healthz are on -listen.
		{"admin on the API listener with a proxy key", append(env, "FAILOVER_PROXY_KEY="+proxyKey), []string{"-listen", "0.0.0.0:0"}, "-admin-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"proxy", "-listen", "127.0.0.1:0"}, tc.args...)
			code, _, stderr := runCommand(t, tc.env, args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			for _, want := range []string{"not a loopback address", tc.mention, "-allow-remote"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("the refusal does not mention %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stderr, "msg=listening") {
				t.Errorf("the proxy listened:\n%s", stderr)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"serve"}, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"proxy", "-h"}, exitOK},
		{[]string{"demo", "-h"}, exitOK},
		{[]string{"demo", "-duration", "0s"}, exitUsage},
	} {
		code, stdout, stderr := runCommand(t, nil, tc.args...)
		if code != tc.code {
			t.Errorf("%q: exit code %d, want %d", tc.args, code, tc.code)
		}
		if !strings.Contains(stdout+stderr, "Usage") && !strings.Contains(stderr, "-duration") {
			t.Errorf("%q: no usage in the output:\n%s%s", tc.args, stdout, stderr)
		}
	}
}

// TestRemotePolicy checks which listeners the proxy refuses to serve on a
// non-loopback address: the API without a proxy key, and /metrics and
// /healthz (which never ask for it) whether on -admin-listen or, without
// it, on -listen; -allow-remote lifts both.
func TestRemotePolicy(t *testing.T) {
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	wildcard := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	lan := &net.TCPAddr{IP: net.IPv4(192, 168, 1, 2), Port: 8080}
	for _, tc := range []struct {
		name       string
		pol        remotePolicy
		bound      net.Addr
		api, admin bool
		refused    bool
		mention    string
	}{
		{"loopback, API and admin, no key", remotePolicy{}, loopback, true, true, false, ""},
		{"API without key", remotePolicy{}, wildcard, true, false, true, envProxyKey},
		{"API with key", remotePolicy{haveKey: true}, lan, true, false, false, ""},
		{"API with key, admin on it", remotePolicy{haveKey: true}, wildcard, true, true, true, "-admin-listen"},
		{"API without key, admin on it", remotePolicy{}, lan, true, true, true, "-admin-listen"},
		{"admin listener with key", remotePolicy{haveKey: true}, wildcard, false, true, true, "-allow-remote"},
		{"admin listener on loopback", remotePolicy{}, loopback, false, true, false, ""},
		{"allow remote, no key", remotePolicy{allowRemote: true}, wildcard, true, true, false, ""},
		{"allow remote, admin listener", remotePolicy{allowRemote: true, haveKey: true}, lan, false, true, false, ""},
	} {
		err := tc.pol.check("-listen", "addr", tc.bound, tc.api, tc.admin)
		if (err != nil) != tc.refused {
			t.Errorf("%s: error %v, want refused: %v", tc.name, err, tc.refused)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, errRemote) {
			t.Errorf("%s: error %v is not errRemote", tc.name, err)
		}
		for _, want := range []string{tc.mention, "-allow-remote"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, want)
			}
		}
	}
}

// rawRequest sends a request with the request target written as is (no
// client normalises it) to the proxy at addr and returns the response.
func rawRequest(t *testing.T, addr, method, target string) *http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return resp
}

// TestProxyRefusesDotSegments sends paths that climb out of the base path
// with dot segments, plain or escaped: an upstream that resolves them
// would serve /admin/keys instead of /openai/v1/..., with the endpoint's
// key. The proxy answers 400 itself, without naming the path, and logs
// the request.
func TestProxyRefusesDotSegments(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"), fakeopenai.WithPrefix("/openai/v1"))
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey})
	addr := strings.TrimPrefix(p.url, "http://")
	for _, target := range []string{
		"/v1/../../admin/keys",
		"/v1/%2e%2e/%2e%2e/admin/keys",
		"/v1/..%2f..%2fadmin%2fkeys",
		"/v1/./models",
		"/v1/models/..",
		"/elsewhere/../v1/models",
		"/v1/%252e%252e/admin/keys",
		"/v1/models%5c..%5c..%5cadmin",
		"/v1/models;/../admin",
		"/v1/files/%c0%ae%c0%ae/admin",
	} {
		resp := rawRequest(t, addr, http.MethodGet, target)
		e := checkOpenAIError(t, resp, http.StatusBadRequest, "invalid_path")
		resp.Body.Close()
		if strings.Contains(e.Error.Message, "admin") || strings.Contains(e.Error.Message, "models") {
			t.Errorf("%s: the error message names the path: %q", target, e.Error.Message)
		}
	}
	if got := up.Hits(); got != 0 {
		t.Errorf("the upstream got %d request(s) with dot segments", got)
	}
	p.logs.waitFor(t, regexp.MustCompile(regexp.QuoteMeta("msg=request method=GET path=/v1/../../admin/keys status=400 ")), p.exited)

	// A clean path still goes through.
	resp := rawRequest(t, addr, http.MethodGet, "/v1/models")
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/models: status %d: %s", resp.StatusCode, body)
	}
	if last, _ := up.Last(); last.Path != "/openai/v1/models" {
		t.Errorf("the upstream saw %q, want /openai/v1/models", last.Path)
	}
}

// TestProxyDropsClientOrganization sends the OpenAI-Organization and
// OpenAI-Project headers that qualify a client's own key: the proxy never
// forwards that key, so it drops them too, for an endpoint with a key of
// its own (to which OpenAI would answer 401 mismatched_organization,
// opening its breaker) and without one.
func TestProxyDropsClientOrganization(t *testing.T) {
	for name, key := range map[string]string{"no endpoint key": "", "endpoint key": firstKey} {
		t.Run(name, func(t *testing.T) {
			up := startUpstream(t, fakeopenai.WithName("up"))
			env := []string{"OPENAI_BASE_URL_1=" + up.URL()}
			if key != "" {
				env = append(env, "OPENAI_API_KEY_1="+key)
			}
			p := startProxy(t, env)
			ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/chat/completions", strings.NewReader(chatBody))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("OpenAI-Organization", "org-client")
			req.Header.Set("OpenAI-Project", "proj_client")
			req.Header.Set("OpenAI-Beta", "assistants=v2")
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			last, _ := up.Last()
			for _, h := range []string{"OpenAI-Organization", "OpenAI-Project"} {
				if v := last.Header.Values(h); v != nil {
					t.Errorf("the upstream saw %s %q", h, v)
				}
			}
			if last.Header.Get("OpenAI-Beta") == "" {
				t.Error("the upstream did not see OpenAI-Beta; other headers must pass")
			}
		})
	}
}

// TestProxyLogsBrokenStreams checks that a stream cut by the upstream, or
// abandoned by the client, still gets its access-log line, marked
// aborted: the ReverseProxy ends such a response by panicking.
func TestProxyLogsBrokenStreams(t *testing.T) {
	abortedRE := regexp.MustCompile(`msg=request method=POST path=/v1/chat/completions status=200 bytes=\d+ duration=\S+ aborted=true`)

	t.Run("upstream cuts", func(t *testing.T) {
		up := startUpstream(t, fakeopenai.WithName("up"))
		up.SetFault(fakeopenai.StreamCut(1))
		p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL()})
		resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", streamBody)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("the cut stream reached the client whole")
		}
		p.logs.waitFor(t, abortedRE, p.exited)
	})

	t.Run("client leaves", func(t *testing.T) {
		up := newBlockingStream(t)
		p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.srv.URL + "/v1"})
		ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/chat/completions", strings.NewReader(streamBody))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := readEvent(t, bufio.NewReader(resp.Body)); got != firstEvent {
			t.Fatalf("first event %q, want %q", got, firstEvent)
		}
		cancel() // the client goes away mid-stream
		resp.Body.Close()
		p.logs.waitFor(t, abortedRE, p.exited)
	})
}

// TestProxyAllAttemptsTimedOut checks that a request whose every attempt
// ran into its endpoint's timeout gets a 504, not a 502.
func TestProxyAllAttemptsTimedOut(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	second := startUpstream(t, fakeopenai.WithName("second"), fakeopenai.WithPrefix("/proxy/v1"))
	first.SetFault(fakeopenai.Hang())
	second.SetFault(fakeopenai.Hang())
	// The timeouts are what the test is about, not a synchronisation:
	// the upstreams never answer.
	env := append(twoEndpoints(first, second), "OPENAI_TIMEOUT_1=100ms", "OPENAI_TIMEOUT_2=100ms")
	p := startProxy(t, env)
	resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", chatBody)
	e := checkOpenAIError(t, resp, http.StatusGatewayTimeout, "upstream_timeout")
	if !strings.Contains(e.Error.Message, `"first": timed out`) || !strings.Contains(e.Error.Message, `"second": timed out`) {
		t.Errorf("the error %q does not say each endpoint timed out", e.Error.Message)
	}
}

// TestProxyStartupLogShowsModels: the start-up line of an endpoint with
// OPENAI_MODELS_N shows its models and names (never a key), and that of an
// Azure endpoint its type and api-version.
func TestProxyStartupLogShowsModels(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	az := startUpstream(t, fakeopenai.WithName("az"), fakeopenai.WithAzure(fakeopenai.Azure{APIKey: firstKey}))
	p := startProxy(t, []string{
		"OPENAI_BASE_URL_1=" + first.URL(), "OPENAI_NAME_1=first", "OPENAI_MODELS_1=gpt-4o-mini=local-mini, gpt-4o",
		"OPENAI_BASE_URL_2=" + az.URL(), "OPENAI_NAME_2=az", "OPENAI_API_KEY_2=" + firstKey,
		"OPENAI_API_TYPE_2=azure", "OPENAI_API_VERSION_2=2024-10-21",
	})
	logs := p.logs.String()
	for _, want := range []string{
		"msg=endpoint name=first url=" + first.URL() + ` priority=1 weight=1 key=(none) models="gpt-4o,gpt-4o-mini=local-mini"`,
		"msg=endpoint name=az url=" + az.URL() + " priority=2 weight=1 key=…1111 api_type=azure api_version=2024-10-21",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the start-up output lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, firstKey) {
		t.Errorf("the start-up output shows the key:\n%s", logs)
	}
}
