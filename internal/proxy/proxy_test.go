package proxy

import (
	"context"
	"io"
	"net/http"
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
