package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// echoUpgrader is an upstream that switches a request carrying
// "Upgrade: websocket" to a raw line echo (what the Realtime API's
// WebSocket needs of the path in between: a 101 and then both directions
// of the connection). It sends each request's Authorization to auth.
func echoUpgrader(t *testing.T, auth chan<- string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth <- r.Header.Get("Authorization")
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		if rw.Flush() != nil {
			return
		}
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = rw.WriteString("echo: " + line)
			if rw.Flush() != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestProxyUpgradedConnection opens a WebSocket-style upgraded connection
// through the proxy, whose preferred endpoint refuses connections: the
// upgrade fails over to the second endpoint, which sees its own key (not
// the client's token), and bytes then flow both ways. With an endpoint
// timeout set the upgraded connection must stay writable too.
func TestProxyUpgradedConnection(t *testing.T) {
	for _, timeout := range []string{"", "30s"} {
		t.Run("timeout="+timeout, func(t *testing.T) {
			auth := make(chan string, 4)
			up := echoUpgrader(t, auth)
			dead := closedPortURL(t)
			env := []string{
				"OPENAI_BASE_URL_1=" + dead + "/v1",
				"OPENAI_API_KEY_1=" + firstKey,
				"OPENAI_BASE_URL_2=" + up.URL + "/v1",
				"OPENAI_API_KEY_2=" + secondKey,
			}
			if timeout != "" {
				env = append(env, "OPENAI_TIMEOUT_2="+timeout)
			}
			p := startProxy(t, env)

			conn, br := openUpgraded(t, p.url)
			if got := <-auth; got != "Bearer "+secondKey {
				t.Errorf("the upstream saw Authorization %q, want the second endpoint's key", got)
			}
			for _, msg := range []string{"hello", "second message"} {
				checkEcho(t, conn, br, msg)
			}
		})
	}
}

// closedPortURL returns an http URL on loopback where nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

// openUpgraded opens an upgraded connection through the proxy at proxyURL,
// sending the client's own token (which must not travel on), and checks
// that it echoes.
func openUpgraded(t *testing.T, proxyURL string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(proxyURL, "http://"), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v1/realtime?model=m HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer %s\r\n\r\n", clientToken)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	checkEcho(t, conn, br, "before")
	return conn, br
}

// checkEcho sends msg on an upgraded connection and checks its echo.
func checkEcho(t *testing.T, conn net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	if _, err := fmt.Fprintf(conn, "%s\n", msg); err != nil {
		t.Fatalf("writing %q: %v", msg, err)
	}
	got, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the echo of %q: %v", msg, err)
	}
	if want := "echo: " + msg + "\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

var waitingUpgradesRE = regexp.MustCompile(`msg="waiting for upgraded connections" count=1`)

// TestProxyShutdownWaitsForUpgradedConnection checks that SIGINT lets an
// upgraded connection in flight go on (http.Server.Shutdown alone forgets
// hijacked connections) and that the proxy exits 0 once the client closes
// it; its access-log line shows 101.
func TestProxyShutdownWaitsForUpgradedConnection(t *testing.T) {
	up := echoUpgrader(t, make(chan string, 4))
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL + "/v1", "OPENAI_API_KEY_1=" + firstKey})
	conn, br := openUpgraded(t, p.url)

	p.stop() // SIGINT; the shutdown timeout is 50s
	p.logs.waitFor(t, waitingUpgradesRE, p.exited)
	select {
	case code := <-p.exited:
		p.exitedYet, p.exitCode = true, code
		t.Fatalf("the proxy exited (%d) with an upgraded connection in flight", code)
	default:
	}
	checkEcho(t, conn, br, "after SIGINT")

	conn.Close() // the client ends the session
	if code := p.wait(t); code != exitOK {
		t.Errorf("exit code %d after a graceful shutdown; output:\n%s", code, p.logs)
	}
	logs := p.logs.String()
	for _, want := range []string{"msg=request method=GET path=/v1/realtime status=101 ", `msg="shut down"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the output:\n%s", want, logs)
		}
	}
}

// TestProxyShutdownTimeoutCutsUpgradedConnection checks that an upgraded
// connection still open at the end of -shutdown-timeout is cut, and that
// the proxy then exits 1 as for any shutdown that timed out.
func TestProxyShutdownTimeoutCutsUpgradedConnection(t *testing.T) {
	up := echoUpgrader(t, make(chan string, 4))
	// The shutdown timeout is what the test is about: the client never
	// closes its connection.
	p := startProxy(t, []string{"OPENAI_BASE_URL_1=" + up.URL + "/v1"}, "-shutdown-timeout", "200ms")
	_, br := openUpgraded(t, p.url)

	p.stop()
	if code := p.wait(t); code != exitFailure {
		t.Errorf("exit code %d, want %d after a shutdown that timed out; output:\n%s", code, exitFailure, p.logs)
	}
	if line, err := br.ReadString('\n'); err == nil {
		t.Errorf("the upgraded connection is still open after the shutdown (read %q)", line)
	}
	if !strings.Contains(p.logs.String(), "shutdown timed out") {
		t.Errorf("no \"shutdown timed out\" in the output:\n%s", p.logs)
	}
}
