// Package redistest runs a real redis-server (Debian's package) for the
// tests of the shared state: URL returns the server named by
// FAILOVER_TEST_REDIS_URL (as .ci/run starts one for the whole run), or
// starts one; Start always starts one of the test's own, for tests that
// stop and restart it. Without redis-server on the PATH, the test is
// skipped with a message, unless CI is set: then it fails.
package redistest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvURL names the variable holding the URL of a running Redis for the
// tests.
const EnvURL = "FAILOVER_TEST_REDIS_URL"

// startBound bounds the wait for a redis-server to accept connections.
const startBound = 10 * time.Second

// Server is a redis-server process on a loopback port, stopped at the
// end of the test that started it. The zero value is not usable: Start
// one.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// URL returns a Redis URL for t: FAILOVER_TEST_REDIS_URL when set, else
// that of a redis-server started for t.
func URL(t testing.TB) string {
	t.Helper()
	if u := strings.TrimSpace(os.Getenv(EnvURL)); u != "" {
		return u
	}
	return Start(t).URL()
}

// Prefix returns a key prefix of t's own, so that tests sharing a server
// never see each other's keys.
func Prefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test:" + hex.EncodeToString(b[:]) + ":"
}

// Start starts a redis-server of t's own on a free loopback port, with
// the extra arguments args (such as "--requirepass", "secret").
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is not on the PATH and CI is set: .ci/run installs it (apt-get install redis-server)")
		}
		t.Skipf("redis-server is not on the PATH (apt-get install redis-server), and %s is not set: skipping the real-Redis test", EnvURL)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: freePort(t), args: args}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// URL returns the server's redis:// URL (without a password).
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs redis-server and waits until it answers PING.
func (s *Server) start() {
	s.t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"), "--protected-mode", "no"}, s.args...)
	cmd := exec.Command(s.bin, args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(startBound)
	for {
		if s.ping() {
			return
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server did not answer within %v", startBound)
		}
		time.Sleep(10 * time.Millisecond) // polling the server's start
	}
}

// ping reports whether the server answers a PING (or asks for a password).
func (s *Server) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := fmt.Fprint(c, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// Stop kills the server (SIGKILL: as a crash, no shutdown) and waits for
// it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}
