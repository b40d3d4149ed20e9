package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// Keys of the attempt tests' endpoints; no log line may show them.
const (
	attemptKey1 = "sk-attempt-test-key-one-1111"
	attemptKey2 = "sk-attempt-test-key-two-2222"
)

// syncBuffer is a bytes.Buffer safe for concurrent use, for a logger,
// whose content a test can wait on.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at each write; nil until waited on
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	return b.buf.Write(p)
}

// waitFor waits until the buffer matches re, at most a minute, and returns
// the submatches of the first match.
func (b *syncBuffer) waitFor(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		changed := b.changed
		b.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("no %q in the log within a minute:\n%s", re, b.String())
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serveProxy serves a proxy over eps (two attempts per request at most),
// logging at Debug to logs, on a
// loopback port until the test ends, and returns its base URL.
func serveProxy(t *testing.T, eps []failover.Endpoint, logs io.Writer) string {
	t.Helper()
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return serveOn(t, listenLoopback(t), Config{
		Failover: failover.Config{Endpoints: eps, Base: base, MaxRetries: 1}, // one try per endpoint
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}).url
}

// postChat posts a chat completion with a secret in its query and returns
// the status.
func postChat(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions?sig=query-secret",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"body-secret"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestProxyLogsAttempts checks the access line (the endpoint that answered
// and the number of attempts) and the debug line of each failed attempt
// (its endpoint, outcome and result), for each way the first endpoint
// fails, and that no line shows a key, the query or the body.
func TestProxyLogsAttempts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first       fakeopenai.Fault
		second      fakeopenai.Fault
		firstTO     time.Duration // the first endpoint's Timeout
		status      int
		access      string   // the access line's end, after duration=...
		debug       []string // the debug lines' ends, after path=...
		noDebugLine bool
	}{
		{
			name: "healthy", status: http.StatusOK,
			access: `endpoint=first attempts=1`, noDebugLine: true,
		},
		{
			name: "refused", first: fakeopenai.Refuse(), status: http.StatusOK,
			access: `endpoint=second attempts=2`,
			debug:  []string{`attempt=1 endpoint=first outcome=failure result="connection refused"`},
		},
		{
			name: "key rejected", first: fakeopenai.StatusFault(http.StatusUnauthorized), status: http.StatusOK,
			access: `endpoint=second attempts=2`,
			debug:  []string{`attempt=1 endpoint=first outcome=key-rejected result="status 401"`},
		},
		{
			name: "timed out", first: fakeopenai.Hang(), firstTO: 50 * time.Millisecond, status: http.StatusOK,
			access: `endpoint=second attempts=2`,
			debug:  []string{`attempt=1 endpoint=first outcome=failure result="timed out"`},
		},
		{
			name: "caller error", first: fakeopenai.StatusFault(http.StatusBadRequest), status: http.StatusBadRequest,
			access: `endpoint=first attempts=1`, noDebugLine: true,
		},
		{
			name: "both fail", first: fakeopenai.StatusFault(http.StatusServiceUnavailable), second: fakeopenai.StatusFault(http.StatusInternalServerError),
			status: http.StatusInternalServerError,
			access: `endpoint=second attempts=2`,
			debug: []string{
				`attempt=1 endpoint=first outcome=failure result="status 503"`,
				`attempt=2 endpoint=second outcome=failure result="status 500"`,
			},
		},
		{
			name: "no response", first: fakeopenai.Refuse(), second: fakeopenai.Refuse(), status: http.StatusBadGateway,
			access: `attempts=2`,
			debug: []string{
				`attempt=1 endpoint=first outcome=failure result="connection refused"`,
				`attempt=2 endpoint=second outcome=failure result="connection refused"`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := fakeopenai.New(fakeopenai.WithName("first"))
			t.Cleanup(first.Close)
			first.SetFault(tc.first)
			second := fakeopenai.New(fakeopenai.WithName("second"))
			t.Cleanup(second.Close)
			second.SetFault(tc.second)
			var logs syncBuffer
			url := serveProxy(t, []failover.Endpoint{
				{Name: "first", BaseURL: first.URL(), APIKey: attemptKey1, Priority: 1, Timeout: tc.firstTO},
				{Name: "second", BaseURL: second.URL(), APIKey: attemptKey2, Priority: 2},
			}, &logs)

			if got := postChat(t, url); got != tc.status {
				t.Fatalf("status %d, want %d", got, tc.status)
			}
			// The access line follows the response, and the debug
			// lines come just before it.
			access := logs.waitFor(t, regexp.MustCompile(`(?m)^.*msg=request method=POST path=/v1/chat/completions status=(\d+) bytes=\d+ duration=\S+ (.*)$`))
			out := logs.String()
			if access[2] != tc.access {
				t.Errorf("access line ends %q, want %q", access[2], tc.access)
			}
			debug := regexp.MustCompile(`(?m)msg="attempt failed" method=POST path=/v1/chat/completions (.*)$`).FindAllStringSubmatch(out, -1)
			var got []string
			for _, m := range debug {
				got = append(got, m[1])
			}
			if strings.Join(got, "\n") != strings.Join(tc.debug, "\n") {
				t.Errorf("debug lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.debug, "\n"))
			}
			if tc.noDebugLine && strings.Contains(out, "attempt failed") {
				t.Errorf("a debug line for a request that did not fail:\n%s", out)
			}
			for _, secret := range []string{attemptKey1, attemptKey2, "query-secret", "body-secret"} {
				if strings.Contains(out, secret) {
					t.Errorf("the log shows %q:\n%s", secret, out)
				}
			}
		})
	}
}

// TestStreamOutcomeNames checks the name the access log gives each way a
// stream the client got can end.
func TestStreamOutcomeNames(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{io.EOF, "complete"},
		{fmt.Errorf("endpoint a: %w", failover.ErrStreamStalled), "stalled"},
		{fmt.Errorf("endpoint a: %w", failover.ErrFirstTokenTimeout), "first_token_timeout"},
		{fmt.Errorf("cut: %w", io.ErrUnexpectedEOF), "truncated"},
		{context.Canceled, "canceled"},
		{errors.New("connection reset by peer"), "error"},
	} {
		if got := streamOutcome(tc.err); got != tc.want {
			t.Errorf("streamOutcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
