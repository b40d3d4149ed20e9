package failover

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

func TestRouteMatchesClientAndEndpointBases(t *testing.T) {
	rec := &recordingBase{}
	tr, _ := newTestTransport(t, Config{
		Base:           rec,
		ClientBaseURLs: []string{clientBase, "http://localhost:8080/proxy/v1"},
		Endpoints:      []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
	})
	for _, tc := range []struct {
		url      string
		wantPath string // "" means passed through untouched
	}{
		{"https://api.openai.com/v1/chat/completions", "/v1/chat/completions"},
		{"https://API.OpenAI.com:443/v1/models", "/v1/models"},
		{"https://api.openai.com/v1", "/v1"},
		{"http://localhost:8080/proxy/v1/embeddings", "/v1/embeddings"},
		{"https://b.test/v1/chat/completions", "/v1/chat/completions"}, // an endpoint's own URL: routed, to the preferred a
		{"https://a.test/v1/files/f-1?purpose=x", "/v1/files/f-1"},
		{"https://api.openai.com/v10/chat/completions", ""}, // not at a segment boundary
		{"https://api.openai.com/v2/chat/completions", ""},
		{"http://api.openai.com/v1/chat/completions", ""}, // another scheme
		{"https://example.com/v1/chat/completions", ""},
		{"https://a.test/v2/x", ""},
	} {
		t.Run(tc.url, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			req.Header.Set("Authorization", "Bearer caller-token")
			before := reqSnapshot(req)
			roundTrip(t, tr, req)
			got := rec.req
			if tc.wantPath == "" {
				if got != req {
					t.Fatalf("base got %v, want the caller's own request passed through", got.URL)
				}
				if auth := got.Header.Get("Authorization"); auth != "Bearer caller-token" {
					t.Fatalf("Authorization = %q: an endpoint key was attached", auth)
				}
			} else {
				if got == req {
					t.Fatal("routed request passed through unrewritten")
				}
				if got.URL.Host != "a.test" || got.URL.Path != tc.wantPath || got.Header.Get("Authorization") != "Bearer key-a" {
					t.Fatalf("sent to %s%s with %q, want a.test%s with key-a", got.URL.Host, got.URL.Path, got.Header.Get("Authorization"), tc.wantPath)
				}
				if got.Host != "" {
					t.Fatalf("outgoing Host = %q, want empty so the URL's host is used", got.Host)
				}
			}
			if after := reqSnapshot(req); after != before {
				t.Fatalf("caller's request modified:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestRouteEndpointOwnURLFailsOver(t *testing.T) {
	// openai-go may read OPENAI_BASE_URL and send to an endpoint's own
	// URL: such a request must still fail over.
	base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return nil, errors.New("connection refused")
		}
		return reply(200, "b"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	status, body := roundTrip(t, tr, chatRequest(t, context.Background(), "https://a.test/v1", false))
	if status != 200 || body != "b" {
		t.Fatalf("got %d %q, want b's answer", status, body)
	}
	seen := base.Seen()
	if len(seen) != 2 || seen[0].host != "a.test" || seen[1].host != "b.test" {
		t.Fatalf("attempts %+v, want a (refused) then b", seen)
	}
	if got := seen[1].auth; got != "Bearer key-b" {
		t.Errorf("b saw Authorization %q, want its own key", got)
	}
	if s := clk.Sleeps(); len(s) != 0 {
		t.Errorf("slept %v before failing over, want no sleep", s)
	}
}

func TestRouteCanonicalHost(t *testing.T) {
	for _, tc := range []struct{ scheme, host, want string }{
		{"https", "API.OpenAI.com", "api.openai.com"},
		{"https", "api.openai.com:443", "api.openai.com"},
		{"http", "LOCALHOST:80", "localhost"},
		{"http", "localhost:443", "localhost:443"},
		{"https", "[FE80::1%Eth0]:8443", "[fe80::1%Eth0]:8443"},
		{"http", "[FE80::1%Eth0]:80", "[fe80::1%Eth0]"},
	} {
		if got := canonicalHost(tc.scheme, tc.host); got != tc.want {
			t.Errorf("canonicalHost(%q, %q) = %q, want %q", tc.scheme, tc.host, got, tc.want)
		}
	}
	// As an endpoint's BaseURL spells it, escaped.
	p, err := prepare(Config{Endpoints: []Endpoint{{BaseURL: "http://[FE80::1%25Eth0]:8080/v1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.targets[0].host, "[fe80::1%Eth0]:8080"; got != want {
		t.Errorf("endpoint host %q, want %q", got, want)
	}
}
