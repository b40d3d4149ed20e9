package failover

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
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

// TestUnsafePathsRefused: routed paths an upstream could resolve outside
// the endpoint's base path are refused before any attempt; ordinary API
// paths pass.
func TestUnsafePathsRefused(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("p", 0)}})
	for _, path := range []string{
		"/%252e%252e/admin", "/files/%252E%252e", "/..%252fadmin", "/files\\..\\admin", "/files%5c..%5cadmin",
		"/files;/../admin", "/models%3b.json", "/files/%00", "/files/%c0%ae%c0%ae/admin", "/files/%25c0%25ae",
		"/files/a%0d%0ab",
	} {
		t.Run(path, func(t *testing.T) {
			req := mustRequest(t, http.MethodGet, clientBase+path)
			_, err := tr.RoundTrip(req)
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("error %v, want ErrUnsafePath", err)
			}
		})
	}
	if n := len(base.Seen()); n != 0 {
		t.Fatalf("%d unsafe request(s) sent", n)
	}
	for _, path := range []string{"/chat/completions", "/files/file-abc123/content", "/models/ft:gpt-4o:org:x:1", "/files/a.b.c", "/responses/resp_1?include=x"} {
		if code, _ := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+path)); code != 200 {
			t.Errorf("%s: status %d, want 200", path, code)
		}
	}
}

// TestOpaqueURLRefused: an opaque URL would bypass the base path rewrite
// and the path checks; a routed one is refused, an unrouted one passes.
func TestOpaqueURLRefused(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("p", 0)}})
	req := mustRequest(t, http.MethodGet, clientBase+"/models")
	req.URL.Opaque = "//api.openai.com/admin/keys"
	if _, err := tr.RoundTrip(req); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("error %v, want ErrUnsafePath", err)
	}
	other := mustRequest(t, http.MethodGet, "https://elsewhere.test/x")
	other.URL.Opaque = "//elsewhere.test/x"
	if code, _ := roundTrip(t, tr, other); code != 200 {
		t.Fatalf("an unrouted opaque request: status %d, want 200 from the base", code)
	}
	if seen := base.Seen(); len(seen) != 1 || seen[0].host != "elsewhere.test" || seen[0].auth != "" {
		t.Fatalf("base saw %+v, want only the unrouted request, without a key", seen)
	}
}

// TestUnroutedAPIRequestWarnsOncePerHost: a request to an OpenAI API route
// under a base URL that is not routed (openai-go sends to OPENAI_BASE_URL)
// passes untouched, and the logger hears of it once per host.
func TestUnroutedAPIRequestWarnsOncePerHost(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Logger: logger, Endpoints: []Endpoint{hostEndpoint("p", 0)}})
	for range 2 {
		roundTrip(t, tr, chatRequest(t, context.Background(), "https://gateway.test/v1", false))
	}
	roundTrip(t, tr, mustRequest(t, http.MethodGet, "https://static.test/logo.png"))
	roundTrip(t, tr, chatRequest(t, context.Background(), "https://other.test/openai", false))
	out := buf.String()
	if n := strings.Count(out, "not routed"); n != 2 {
		t.Errorf("%d warnings, want one for gateway.test and one for other.test:\n%s", n, out)
	}
	for _, want := range []string{"host=gateway.test", "host=other.test", "client_base_urls=[https://api.openai.com/v1]"} {
		if !strings.Contains(out, want) {
			t.Errorf("the warnings do not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "static.test") {
		t.Errorf("a request outside the API warned:\n%s", out)
	}
	if got := base.Hits("gateway.test"); got != 2 {
		t.Errorf("gateway.test got %d requests, want both, untouched", got)
	}
}

// TestRewriteRefusesDotSegments: a routed path with a . or .. segment,
// escaped or not, is never sent; an upstream that cleans paths would serve
// it from outside the endpoint's base path, with the endpoint's key.
func TestRewriteRefusesDotSegments(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{{Name: "p", BaseURL: "https://p.test/openai/v1", APIKey: "k"}}})
	for _, path := range []string{"/../../admin", "/%2e%2e/%2E%2E/admin", "/..%2f..%2fadmin", "/files/./x", "/files/.."} {
		t.Run(path, func(t *testing.T) {
			body := &countingBody{r: strings.NewReader(chatBody(false))}
			req := post(t, clientBase+path, body)
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				_ = resp.Body.Close()
			}
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("error %v, want ErrUnsafePath", err)
			}
			if body.closes.Load() != 1 {
				t.Errorf("request body closed %d times, want 1", body.closes.Load())
			}
		})
	}
	if n := len(base.Seen()); n != 0 {
		t.Fatalf("%d request(s) with dot segments sent", n)
	}
	// A segment that merely starts with a dot is an ordinary name.
	if status, _ := roundTrip(t, tr, post(t, clientBase+"/files/.well-known", nil)); status != 200 {
		t.Errorf("/files/.well-known: status %d, want 200", status)
	}
}
