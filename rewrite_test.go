package failover

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// sendVia sends a GET for rawURL (with header h, if any) through a
// Transport with the single endpoint e and returns what the base saw.
func sendVia(t *testing.T, e Endpoint, rawURL string, h http.Header) *http.Request {
	t.Helper()
	rec := &recordingBase{}
	tr, _ := newTestTransport(t, Config{Base: rec, Endpoints: []Endpoint{e}})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h != nil {
		req.Header = h
	}
	before := reqSnapshot(req)
	roundTrip(t, tr, req)
	if rec.req == nil {
		t.Fatalf("%s was not sent", rawURL)
	}
	if after := reqSnapshot(req); after != before {
		t.Errorf("caller's request modified:\nbefore %s\nafter  %s", before, after)
	}
	return rec.req
}

func TestRewriteOntoEndpoint(t *testing.T) {
	a := upstream(t, "a", fakeopenai.WithPrefix("/openai/v1"))
	e := ep(a, 0)
	e.Header = http.Header{"x-extra": {"1"}}
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{e}})

	req := chatRequest(t, context.Background(), clientBase, false)
	req.URL.RawQuery = "api-version=7&x=%2F"
	before := reqSnapshot(req)
	status, body := roundTrip(t, tr, req)
	if status != 200 || !strings.Contains(body, fakeopenai.Reply("a")) {
		t.Fatalf("got %d %q, want 200 from a", status, body)
	}
	got, ok := a.Last()
	if !ok {
		t.Fatal("upstream a saw no request")
	}
	if got.Path != "/openai/v1/chat/completions" {
		t.Errorf("path = %q, want /openai/v1/chat/completions", got.Path)
	}
	if got.RawQuery != "api-version=7&x=%2F" {
		t.Errorf("query = %q, want it kept", got.RawQuery)
	}
	if auth := got.Header.Get("Authorization"); auth != "Bearer key-a" {
		t.Errorf("Authorization = %q, want the endpoint's key", auth)
	}
	if x := got.Header.Get("X-Extra"); x != "1" {
		t.Errorf("X-Extra = %q, want the endpoint's extra header", x)
	}
	if string(got.Body) != chatBody(false) {
		t.Errorf("body = %q, want %q", got.Body, chatBody(false))
	}
	if after := reqSnapshot(req); after != before {
		t.Errorf("caller's request modified:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRewriteEndpointQueryAndNoKey(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
		{Name: "azure", BaseURL: "https://azure.test/openai/deployments/d1?api-version=2024-10-21"},
	}})
	req := chatRequest(t, context.Background(), clientBase, false)
	req.URL.RawQuery = "x=1"
	roundTrip(t, tr, req)
	seen := base.Seen()
	if len(seen) != 1 {
		t.Fatalf("base saw %d requests, want 1", len(seen))
	}
	s := seen[0]
	if s.path != "/openai/deployments/d1/chat/completions" || s.query != "api-version=2024-10-21&x=1" {
		t.Errorf("got %s?%s", s.path, s.query)
	}
	if s.auth != "" {
		t.Errorf("Authorization = %q, want none: an endpoint without APIKey gets no caller credentials", s.auth)
	}
}

func TestRewriteEndpointQueryKeepsCallersParametersVerbatim(t *testing.T) {
	e := Endpoint{Name: "az", BaseURL: "https://az.test/openai/v1?api-version=1&b=%2F", APIKey: "k"}
	for _, tc := range []struct{ query, want string }{
		{"", "api-version=1&b=%2F"},
		{"x=1", "api-version=1&b=%2F&x=1"},
		// Pairs url.ParseQuery rejects are kept; the endpoint's
		// parameters replace the caller's of the same name.
		{"filter=a;b&x=%zz&ok=1&api-version=9&b=3&c=%2F", "api-version=1&b=%2F&filter=a;b&x=%zz&ok=1&c=%2F"},
		{"a&&b=", "api-version=1&b=%2F&a"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			u := clientBase + "/models"
			if tc.query != "" {
				u += "?" + tc.query
			}
			if got := sendVia(t, e, u, nil).URL.RawQuery; got != tc.want {
				t.Errorf("sent query %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRewriteKeepsEscaping(t *testing.T) {
	for _, tc := range []struct {
		name, base, url, want string
	}{
		{"escaped slash in the endpoint's path", "https://gw.test/models/org%2Fmodel/v1", clientBase + "/chat/completions",
			"/models/org%2Fmodel/v1/chat/completions"},
		{"escaped slash in both", "https://gw.test/models/org%2Fmodel/v1", clientBase + "/files/a%2Fb",
			"/models/org%2Fmodel/v1/files/a%2Fb"},
		{"space in the endpoint's path, escaped slash in the request's", "https://gw.test/my%20proxy/v1", clientBase + "/files/a%2Fb",
			"/my%20proxy/v1/files/a%2Fb"},
		{"escaped slash in the request's only", "https://gw.test/v1", clientBase + "/files/a%2Fb",
			"/v1/files/a%2Fb"},
		{"nothing escaped", "https://gw.test/openai/v1", clientBase + "/chat/completions",
			"/openai/v1/chat/completions"},
		{"the base itself", "https://gw.test/models/org%2Fmodel/v1", clientBase,
			"/models/org%2Fmodel/v1"},
		{"a base ending in an escaped slash", "https://gw.test/a%2Fb/v1%2F", clientBase + "/x",
			"/a%2Fb/v1%2F/x"},
		{"a base ending in a slash", "https://gw.test/a%2Fb/v1/", clientBase + "/x",
			"/a%2Fb/v1/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := sendVia(t, Endpoint{Name: "gw", BaseURL: tc.base, APIKey: "k"}, tc.url, nil)
			if got := out.URL.EscapedPath(); got != tc.want {
				t.Errorf("sent to %q, want %q", got, tc.want)
			}
			if got := out.URL.String(); !strings.HasPrefix(got, "https://gw.test"+tc.want) {
				t.Errorf("outgoing URL %q, want it to start with https://gw.test%s", got, tc.want)
			}
		})
	}
}

// TestRewriteBaseURLWithoutPath: an endpoint whose BaseURL has no path
// (http://host:port, with or without a trailing slash or a query) serves
// the API at its root: the client's /v1 is replaced by the endpoint's
// empty prefix, so /v1/chat/completions arrives as /chat/completions.
func TestRewriteBaseURLWithoutPath(t *testing.T) {
	for _, tc := range []struct {
		name, suffix string // suffix follows http://<addr> in the BaseURL
		callerQuery  string
		wantQuery    string
	}{
		{"no path", "", "", ""},
		{"trailing slash", "/", "", ""},
		{"query", "?api-version=1", "", "api-version=1"},
		{"trailing slash and query", "/?api-version=1", "x=2", "api-version=1&x=2"},
		{"caller's query only", "", "x=2", "x=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := upstream(t, "root", fakeopenai.WithPrefix(""))
			e := Endpoint{Name: "root", BaseURL: "http://" + root.Addr() + tc.suffix, APIKey: "key-root"}
			tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{e}})
			req := chatRequest(t, context.Background(), clientBase, false)
			req.URL.RawQuery = tc.callerQuery
			status, body := roundTrip(t, tr, req)
			if status != 200 || !strings.Contains(body, fakeopenai.Reply("root")) {
				t.Fatalf("got %d %q, want 200 from root", status, body)
			}
			got, ok := root.Last()
			if !ok {
				t.Fatal("upstream saw no request")
			}
			if got.Path != "/chat/completions" || got.RawQuery != tc.wantQuery {
				t.Errorf("upstream got %s?%s, want /chat/completions?%s", got.Path, got.RawQuery, tc.wantQuery)
			}
		})
	}
	// The rest keeps the caller's escaping; the base itself goes to the
	// root.
	for _, tc := range []struct{ name, url, want string }{
		{"escaped rest", clientBase + "/files/a%2Fb", "/files/a%2Fb"},
		{"plain rest", clientBase + "/models", "/models"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := sendVia(t, Endpoint{Name: "gw", BaseURL: "http://gw.test:8080", APIKey: "k"}, tc.url, nil)
			if got := out.URL.String(); got != "http://gw.test:8080"+tc.want {
				t.Errorf("sent to %q, want http://gw.test:8080%s", got, tc.want)
			}
		})
	}
}

// TestRewriteDropsCallersCredentials checks that a caller's Authorization
// (in any spelling), OpenAI-Organization and OpenAI-Project never reach an
// endpoint with its own key, and that an endpoint's extra header replaces
// the caller's of any spelling.
func TestRewriteDropsCallersCredentials(t *testing.T) {
	const secret = "sk-caller-SECRET"
	caller := func() http.Header {
		return http.Header{
			"Authorization":       {"Bearer " + secret},
			"authorization":       {"Bearer " + secret},
			"Openai-Organization": {"org-caller"},
			"openai-project":      {"proj-caller"},
			"x-extra":             {"caller"},
			"Content-Type":        {"application/json"},
		}
	}
	t.Run("endpoint with key", func(t *testing.T) {
		out := sendVia(t, Endpoint{Name: "p", BaseURL: "https://p.test/v1", APIKey: "ep-key", Header: http.Header{"X-Extra": {"ep"}}},
			clientBase+"/models", caller())
		want := http.Header{
			"Authorization": {"Bearer ep-key"},
			"X-Extra":       {"ep"},
			"Content-Type":  {"application/json"},
		}
		if !headersEqual(out.Header, want) {
			t.Errorf("sent headers %v, want %v", out.Header, want)
		}
	})
	t.Run("endpoint sets its own organization", func(t *testing.T) {
		out := sendVia(t, Endpoint{Name: "p", BaseURL: "https://p.test/v1", APIKey: "ep-key", Header: http.Header{"OpenAI-Organization": {"org-ep"}}},
			clientBase+"/models", caller())
		if got := out.Header.Values("Openai-Organization"); !slices.Equal(got, []string{"org-ep"}) {
			t.Errorf("OpenAI-Organization %q, want the endpoint's", got)
		}
		if got := out.Header.Values("Openai-Project"); got != nil {
			t.Errorf("OpenAI-Project %q, want none", got)
		}
	})
	t.Run("endpoint without key drops the caller's", func(t *testing.T) {
		h := caller()
		h["api-key"] = []string{secret}
		out := sendVia(t, Endpoint{Name: "p", BaseURL: "https://p.test/v1"}, clientBase+"/models", h)
		want := http.Header{"x-extra": {"caller"}, "Content-Type": {"application/json"}}
		if !headersEqual(out.Header, want) {
			t.Errorf("sent headers %v, want %v: no credential of the caller's", out.Header, want)
		}
	})
	t.Run("endpoint without key forwarding the caller's", func(t *testing.T) {
		h := caller()
		h["Api-Key"] = []string{secret}
		out := sendVia(t, Endpoint{Name: "p", BaseURL: "https://p.test/v1", ForwardCallerAuth: true}, clientBase+"/models", h)
		if !headersEqual(out.Header, h) {
			t.Errorf("sent headers %v, want the caller's %v", out.Header, h)
		}
	})
	t.Run("endpoint with key and ForwardCallerAuth still drops the caller's", func(t *testing.T) {
		h := caller()
		h["Api-Key"] = []string{secret}
		out := sendVia(t, Endpoint{Name: "p", BaseURL: "https://p.test/v1", APIKey: "ep-key", ForwardCallerAuth: true}, clientBase+"/models", h)
		want := http.Header{"Authorization": {"Bearer ep-key"}, "x-extra": {"caller"}, "Content-Type": {"application/json"}}
		if !headersEqual(out.Header, want) {
			t.Errorf("sent headers %v, want %v", out.Header, want)
		}
	})
}

func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, vs := range a {
		if !slices.Equal(vs, b[k]) {
			return false
		}
	}
	return true
}

// TestRewriteKeyStaysWithEndpointOnRedirect: an endpoint that redirects to
// another host does not send its key (nor its extra headers) there: the
// client follows the redirect from the caller's request, and a URL under no
// routed base passes to the base transport untouched.
func TestRewriteKeyStaysWithEndpointOnRedirect(t *testing.T) {
	const key, headerKey = "sk-edge-SECRET-redirect", "azure-SECRET-redirect"
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			type seen struct {
				method, path string
				header       http.Header
				body         string
			}
			var (
				mu     sync.Mutex
				atEp   []seen
				atDest []seen
			)
			record := func(list *[]seen, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				*list = append(*list, seen{r.Method, r.URL.Path, r.Header.Clone(), string(b)})
				mu.Unlock()
			}
			dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				record(&atDest, r)
				_, _ = io.WriteString(w, "redirected")
			}))
			t.Cleanup(dest.Close)
			epSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				record(&atEp, r)
				http.Redirect(w, r, dest.URL+"/elsewhere?x=1", code)
			}))
			t.Cleanup(epSrv.Close)
			tr, _ := newTestTransport(t, Config{Base: httpBase(t), Endpoints: []Endpoint{{
				Name: "a", BaseURL: epSrv.URL + "/v1", APIKey: key, Header: http.Header{"Api-Key": {headerKey}},
			}}})
			client := &http.Client{Transport: tr}

			resp, err := client.Do(chatRequest(t, context.Background(), clientBase, false))
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "redirected" {
				t.Fatalf("got %d %q, want the redirect target's answer", resp.StatusCode, body)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(atEp) != 1 || atEp[0].header.Get("Authorization") != "Bearer "+key || atEp[0].header.Get("Api-Key") != headerKey {
				t.Fatalf("endpoint saw %d requests (%+v), want one with its key and header", len(atEp), atEp)
			}
			if len(atDest) != 1 {
				t.Fatalf("redirect target saw %d requests, want 1", len(atDest))
			}
			d := atDest[0]
			for k, vs := range d.header {
				for _, v := range vs {
					if strings.Contains(v, "SECRET") {
						t.Errorf("redirect target received the endpoint's secret in %s: %q", k, v)
					}
				}
			}
			if d.path != "/elsewhere" {
				t.Errorf("redirect target saw path %q, want /elsewhere untouched", d.path)
			}
			if code != http.StatusFound && (d.method != http.MethodPost || d.body != chatBody(false)) {
				t.Errorf("redirect target saw %s with body %q, want the POST replayed", d.method, d.body)
			}
			if h := healthOf(t, tr, "a"); h.Requests != 1 || h.Failures != 0 {
				t.Errorf("a: %d attempts, %d failures; want 1 and none (a redirect is an answer)", h.Requests, h.Failures)
			}
		})
	}
}
