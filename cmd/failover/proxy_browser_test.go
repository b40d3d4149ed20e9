package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// send sends a request to the proxy with the given Host (none: the URL's)
// and headers, bounded by waitLimit; its body is closed with the test.
func send(t *testing.T, method, url, host string, h http.Header, body string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if host != "" {
		req.Host = host
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// corsUpstream is an upstream that answers every request 200 with
// "Access-Control-Allow-Origin: *", as some OpenAI-compatible servers do.
func corsUpstream(t *testing.T) *fakeopenai.Server {
	t.Helper()
	up := startUpstream(t, fakeopenai.WithName("up"))
	up.SetFault(fakeopenai.StatusFault(http.StatusOK).WithBody(`{"object":"list","data":[]}`).
		WithHeader("Access-Control-Allow-Origin", "*").
		WithHeader("Access-Control-Allow-Credentials", "true"))
	return up
}

// TestProxyHostCheck checks the defence against DNS rebinding: without a
// proxy key, only a loopback Host reaches an endpoint (or /healthz); with
// a key the API takes any Host, but /healthz and /metrics, which never ask
// for the key, still do not; -allow-remote lifts the check.
func TestProxyHostCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     bool
		args    []string
		host    string
		api     bool // the API answers
		healthz bool // /healthz answers
	}{
		{"no key, rebinding name", false, nil, "evil.example:8080", false, false},
		{"no key, name with localhost in it", false, nil, "localhost.evil.example", false, false},
		{"no key, LOCALHOST", false, nil, "LOCALHOST:%p", true, true},
		{"no key, 127.0.0.1", false, nil, "", true, true},
		{"no key, 127.9.9.9", false, nil, "127.9.9.9:%p", true, true},
		{"no key, [::1]", false, nil, "[::1]:%p", true, true},
		{"key, any name", true, nil, "proxy.internal.example", true, false},
		{"allow-remote, any name", false, []string{"-allow-remote"}, "proxy.internal.example", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, fakeopenai.WithName("up"))
			env := []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey}
			h := http.Header{}
			if tc.key {
				env = append(env, "FAILOVER_PROXY_KEY="+proxyKey)
				h.Set("Authorization", "Bearer "+proxyKey)
			}
			p := startProxy(t, env, tc.args...)
			host := strings.ReplaceAll(tc.host, "%p", p.url[strings.LastIndex(p.url, ":")+1:])

			resp := send(t, http.MethodPost, p.url+"/v1/chat/completions", host, h, chatBody)
			if tc.api {
				if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
					t.Errorf("API: status %d, want 200: %s", resp.StatusCode, body)
				}
			} else {
				checkOpenAIError(t, resp, http.StatusForbidden, "host_not_allowed")
				if got := up.Hits(); got != 0 {
					t.Errorf("the upstream got %d request(s) for Host %q", got, host)
				}
			}

			resp = send(t, http.MethodGet, p.adminURL+"/healthz", host, nil, "")
			if tc.healthz {
				if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
					t.Errorf("/healthz: status %d, want 200: %s", resp.StatusCode, body)
				}
			} else {
				checkOpenAIError(t, resp, http.StatusForbidden, "host_not_allowed")
			}
		})
	}
}

// TestProxyOrigin checks requests from web pages: an Origin the proxy does
// not allow gets a 403 and reaches no endpoint, key or no key; an allowed
// one gets its response with Access-Control-Allow-Origin naming it alone;
// and an endpoint's own Access-Control-* headers never reach the client.
func TestProxyOrigin(t *testing.T) {
	const app, evil = "https://app.example", "https://evil.example"
	for _, tc := range []struct {
		name    string
		key     bool
		args    []string
		origin  string
		allowed bool
	}{
		{"no list, a page", false, nil, evil, false},
		{"no list, no Origin", false, nil, "", true},
		{"listed", false, []string{"-allow-origin", "http://localhost:3000, " + app}, app, true},
		{"listed, other page", false, []string{"-allow-origin", app}, evil, false},
		{"listed, other scheme", false, []string{"-allow-origin", app}, "http://app.example", false},
		{"key, no list, a page", true, nil, evil, false},
		{"key, any origin", true, []string{"-allow-origin", "*"}, evil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := corsUpstream(t)
			env := []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey}
			h := http.Header{}
			if tc.key {
				env = append(env, "FAILOVER_PROXY_KEY="+proxyKey)
				h.Set("Authorization", "Bearer "+proxyKey)
			}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			p := startProxy(t, env, tc.args...)
			resp := send(t, http.MethodGet, p.url+"/v1/models", "", h, "")
			if !tc.allowed {
				checkOpenAIError(t, resp, http.StatusForbidden, "origin_not_allowed")
				if got := up.Hits(); got != 0 {
					t.Errorf("the upstream got %d request(s) from origin %s", got, tc.origin)
				}
				if got := resp.Header.Values("Access-Control-Allow-Origin"); got != nil {
					t.Errorf("refused with Access-Control-Allow-Origin %q", got)
				}
				return
			}
			if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var want []string
			if tc.origin != "" {
				want = []string{tc.origin}
			}
			if got := resp.Header.Values("Access-Control-Allow-Origin"); !slices.Equal(got, want) {
				t.Errorf("Access-Control-Allow-Origin %q, want %q (the upstream sent *)", got, want)
			}
			if got := resp.Header.Values("Access-Control-Allow-Credentials"); got != nil {
				t.Errorf("the upstream's Access-Control-Allow-Credentials %q passed", got)
			}
		})
	}
}

// TestProxyPreflight checks that the proxy answers every CORS preflight
// itself (never forwarding it with an endpoint's key): 204 with the right
// headers for an allowed origin, 403 otherwise, and no 401 for lack of the
// proxy key, which a preflight never carries.
func TestProxyPreflight(t *testing.T) {
	const app = "https://app.example"
	for _, tc := range []struct {
		name   string
		key    bool
		args   []string
		origin string
		method string
		status int
	}{
		{"no list", false, nil, app, "POST", http.StatusForbidden},
		{"listed", false, []string{"-allow-origin", app}, app, "POST", http.StatusNoContent},
		{"listed, other page", false, []string{"-allow-origin", app}, "https://evil.example", "POST", http.StatusForbidden},
		{"listed, PUT", false, []string{"-allow-origin", app}, app, "PUT", http.StatusForbidden},
		{"key, listed", true, []string{"-allow-origin", app}, app, "DELETE", http.StatusNoContent},
		{"key, any origin", true, []string{"-allow-origin", "*"}, "https://other.example", "GET", http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := corsUpstream(t)
			env := []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey}
			if tc.key {
				env = append(env, "FAILOVER_PROXY_KEY="+proxyKey)
			}
			p := startProxy(t, env, tc.args...)
			h := http.Header{
				"Origin":                         {tc.origin},
				"Access-Control-Request-Method":  {tc.method},
				"Access-Control-Request-Headers": {"authorization,content-type,openai-beta"},
			}
			resp := send(t, http.MethodOptions, p.url+"/v1/chat/completions", "", h, "")
			if got := up.Hits(); got != 0 {
				t.Errorf("the preflight reached the upstream (%d request(s))", got)
			}
			if tc.status != http.StatusNoContent {
				checkOpenAIError(t, resp, tc.status, map[bool]string{true: "method_not_allowed", false: "origin_not_allowed"}[tc.method == "PUT"])
				if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
					t.Errorf("refused with Access-Control-Allow-Origin %q", got)
				}
				return
			}
			readAll(t, resp)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("status %d, want 204", resp.StatusCode)
			}
			for k, want := range map[string]string{
				"Access-Control-Allow-Origin":  tc.origin,
				"Access-Control-Allow-Methods": "GET, POST, DELETE",
				"Access-Control-Allow-Headers": "authorization,content-type,openai-beta",
				"Access-Control-Max-Age":       "600",
			} {
				if got := resp.Header.Values(k); !slices.Equal(got, []string{want}) {
					t.Errorf("%s %q, want %q", k, got, want)
				}
			}
			if v := resp.Header.Get("Vary"); !strings.Contains(v, "Origin") {
				t.Errorf("Vary %q does not name Origin", v)
			}
		})
	}
}
