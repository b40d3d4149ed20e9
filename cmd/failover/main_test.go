package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestMain(m *testing.M) {
	if os.Getenv(asCommandEnv) == "1" {
		main() // a test started this binary as the command (see startCommand)
		return
	}
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait of the tests: generous, for slow shared
// machines. No assertion depends on timing.
const waitLimit = time.Minute

// Keys of the endpoints the proxy tests configure; long enough to be
// fingerprinted by their last four characters.
const (
	firstKey  = "sk-first-endpoint-key-1111"
	secondKey = "sk-second-endpoint-key-2222"
	// clientToken is what a client sends as its own API key when the
	// proxy has no key; no upstream may ever see it.
	clientToken = "sk-client-own-token-9999"
	// proxyKey is FAILOVER_PROXY_KEY where a test sets it.
	proxyKey = "proxy-access-key-abcd"
)

// logBuffer is an io.Writer safe for concurrent use whose content a test
// can wait on.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at each write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer matches re and returns the submatches of
// the first match. It fails the test if exited sends first (putting the
// code back for runningProxy.wait), or after waitLimit.
func (b *logBuffer) waitFor(t *testing.T, re *regexp.Regexp, exited chan int) []string {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		changed := b.changed
		b.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-changed:
		case code := <-exited:
			exited <- code // buffered: for runningProxy.wait
			t.Fatalf("the command exited with %d before logging %q; its output:\n%s", code, re, b)
		case <-timeout.C:
			t.Fatalf("no %q in the output within %v:\n%s", re, waitLimit, b)
		}
	}
}

// runningProxy is "failover proxy" running in the test's process.
type runningProxy struct {
	url       string // http://127.0.0.1:port, the API listener
	adminURL  string // where /metrics and /healthz are served
	logs      *logBuffer
	stop      context.CancelFunc // as SIGINT does
	exited    chan int           // receives the exit code
	exitCode  int
	exitedYet bool
}

var (
	listeningRE = regexp.MustCompile(`msg=listening addr=(\S+) .*metrics=http://(\S+)/metrics`)
)

// startProxy runs "failover proxy -listen 127.0.0.1:0 args..." with environ
// until the test ends, and waits until it listens.
func startProxy(t *testing.T, environ []string, args ...string) *runningProxy {
	t.Helper()
	return startProxyWith(t, nil, environ, args...)
}

// startProxyWith is startProxy with hangup as the command's SIGHUP.
func startProxyWith(t *testing.T, hangup hangupFunc, environ []string, args ...string) *runningProxy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &runningProxy{logs: newLogBuffer(), stop: cancel, exited: make(chan int, 1)}
	args = append([]string{"proxy", "-listen", "127.0.0.1:0", "-shutdown-timeout", "50s"}, args...)
	go func() { p.exited <- runWith(ctx, args, environ, hangup, io.Discard, p.logs) }()
	t.Cleanup(func() {
		cancel()
		p.wait(t)
	})
	m := p.logs.waitFor(t, listeningRE, p.exited)
	p.url, p.adminURL = "http://"+m[1], "http://"+m[2]
	return p
}

// wait waits for the proxy to exit and returns its exit code.
func (p *runningProxy) wait(t *testing.T) int {
	t.Helper()
	if p.exitedYet {
		return p.exitCode
	}
	select {
	case p.exitCode = <-p.exited:
		p.exitedYet = true
	case <-time.After(waitLimit):
		t.Fatalf("the proxy did not exit within %v; its output:\n%s", waitLimit, p.logs)
	}
	return p.exitCode
}

// runCommand runs the command to its end and returns its exit code,
// stdout and stderr.
func runCommand(t *testing.T, environ []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, environ, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// newClient returns an HTTP client of the test's own, its connections
// closed with the test.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// startUpstream starts a fake upstream closed with the test.
func startUpstream(t *testing.T, opts ...fakeopenai.Option) *fakeopenai.Server {
	t.Helper()
	s := fakeopenai.New(opts...)
	t.Cleanup(s.Close)
	return s
}

// post sends a POST with a JSON body and the bearer token (none if
// empty) to url, bounded by waitLimit and the test.
func post(t *testing.T, c *http.Client, url, token, body string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readAll reads a response body to its end.
func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return string(b)
}

const (
	chatBody   = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	streamBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}`
)
