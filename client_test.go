package failover

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestWrapClient(t *testing.T) {
	cfg := func() Config { return Config{Endpoints: []Endpoint{hostEndpoint("up", 0)}} }

	t.Run("client transport becomes Base", func(t *testing.T) {
		rec := &recorder{}
		orig := &http.Client{Transport: rec, Timeout: 7 * time.Second}
		c, err := WrapClient(orig, cfg())
		if err != nil {
			t.Fatalf("WrapClient: %v", err)
		}
		if c == orig || orig.Transport != rec || orig.Timeout != 7*time.Second {
			t.Fatalf("the original client was modified: %+v", orig)
		}
		if c.Timeout != 7*time.Second {
			t.Errorf("timeout %v, want the original's 7s", c.Timeout)
		}
		if _, ok := c.Transport.(*Transport); !ok {
			t.Fatalf("wrapped transport is %T, want *Transport", c.Transport)
		}
		resp, err := c.Get(clientBase + "/models")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		resp.Body.Close()
		reqs := rec.Requests()
		if len(reqs) != 1 {
			t.Fatalf("base saw %d requests, want 1", len(reqs))
		}
		if got := reqs[0]; got.URL.String() != "https://up.test/v1/models" || got.Header.Get("Authorization") != "Bearer key-up" {
			t.Errorf("base saw %s with Authorization %q, want the rewritten request", got.URL, got.Header.Get("Authorization"))
		}
	})

	t.Run("explicit Base wins", func(t *testing.T) {
		own, explicit := &recorder{}, &recorder{}
		conf := cfg()
		conf.Base = explicit
		c, err := WrapClient(&http.Client{Transport: own}, conf)
		if err != nil {
			t.Fatalf("WrapClient: %v", err)
		}
		resp, err := c.Get(clientBase + "/models")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		resp.Body.Close()
		if len(own.Requests()) != 0 || len(explicit.Requests()) != 1 {
			t.Errorf("client's transport saw %d, cfg.Base %d; want 0 and 1", len(own.Requests()), len(explicit.Requests()))
		}
	})

	t.Run("nil client", func(t *testing.T) {
		s := upstream(t, "a")
		t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
		before := *http.DefaultClient
		c, err := WrapClient(nil, Config{Endpoints: []Endpoint{ep(s, 0)}})
		if err != nil {
			t.Fatalf("WrapClient(nil): %v", err)
		}
		if c == http.DefaultClient || http.DefaultClient.Transport != before.Transport {
			t.Fatal("http.DefaultClient was modified")
		}
		tr, ok := c.Transport.(*Transport)
		if !ok || tr.base != http.DefaultTransport {
			t.Fatalf("transport %T, want a *Transport over http.DefaultTransport", c.Transport)
		}
		resp, err := c.Post(clientBase+"/chat/completions", "application/json", strings.NewReader(chatBody(false)))
		if err != nil {
			t.Fatalf("Post: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), fakeopenai.Reply("a")) {
			t.Errorf("got %d %q, want a's answer", resp.StatusCode, body)
		}
	})
}

func TestWrapReturnsTheTransport(t *testing.T) {
	rec := &recorder{}
	orig := &http.Client{Transport: rec, Timeout: 7 * time.Second}
	c, tr, err := Wrap(orig, Config{Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Transport != tr || c.Timeout != 7*time.Second || orig.Transport != rec {
		t.Fatalf("Wrap gave client %+v and transport %p; want the transport in a copy of orig", c, tr)
	}
	if err := tr.Update(Config{Endpoints: []Endpoint{hostEndpoint("b", 0)}}); err != nil {
		t.Fatalf("Update through Wrap's transport: %v", err)
	}
	resp, err := c.Post(clientBase+"/chat/completions", "application/json", strings.NewReader(chatBody(false)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	reqs := rec.Requests()
	if len(reqs) != 1 || reqs[0].URL.Host != "b.test" {
		t.Fatalf("requests reached %v, want one to b.test (the updated endpoint) through the client's own transport", reqs)
	}
}
