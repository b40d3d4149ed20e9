package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

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
