package failover

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzRewrite checks the URL rewrite: for any request URL and endpoint base
// URL, a routed request goes to the endpoint's scheme and host and nowhere
// else, keeps its query, and leaves the caller's request unchanged; nothing
// panics.
func FuzzRewrite(f *testing.F) {
	for _, seed := range [][2]string{
		{"https://api.openai.com/v1/chat/completions?x=1", "https://proxy.example/openai/v1"},
		{"https://api.openai.com/v1", "http://127.0.0.1:8080"},
		{"https://api.openai.com/v1/files/a%2Fb?purpose=x#frag", "https://proxy.example/a%20b/v1/"},
		{"https://API.OPENAI.COM:443/v1/models", "https://h.example/v1?api-version=2024-10-21"},
		{"https://proxy.example/openai/v1/embeddings", "https://proxy.example/openai/v1"},
		{"https://api.openai.com/v1/../../etc/passwd", "https://proxy.example/v1"},
		{"https://api.openai.com/v1//double", "https://proxy.example"},
		{"https://user:pass@api.openai.com/v1/x", "https://proxy.example/v1"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, reqURL, baseURL string) {
		p, err := prepare(Config{Endpoints: []Endpoint{{BaseURL: baseURL, APIKey: "sk-fuzz"}}})
		if err != nil {
			return
		}
		e, rt := &p.targets[0], p.router
		in, err := http.NewRequest(http.MethodGet, reqURL, nil)
		if err != nil {
			return
		}
		before := in.URL.String()
		m, ok := rt.match(in.URL)
		if !ok {
			return
		}
		out := rewrite(context.Background(), in, e, m)
		if out.URL.Scheme != e.scheme || out.URL.Host != e.host {
			t.Fatalf("%q via %q went to %s://%s, want %s://%s", reqURL, baseURL, out.URL.Scheme, out.URL.Host, e.scheme, e.host)
		}
		if out.URL.User != nil {
			t.Fatalf("user information carried to the endpoint: %v", out.URL.User)
		}
		if out.Host != "" {
			t.Fatalf("outgoing Host %q, want empty", out.Host)
		}
		// Re-parsing the outgoing URL must land on the same host: no
		// path or query can smuggle another authority in.
		back, err := url.Parse(out.URL.String())
		if err != nil {
			t.Fatalf("outgoing URL %q does not parse: %v", out.URL.String(), err)
		}
		if back.Host != e.host {
			t.Fatalf("outgoing URL %q re-parses to host %q, want %q", out.URL.String(), back.Host, e.host)
		}
		gotQ, wantQ := out.URL.Query(), in.URL.Query()
		for k, vs := range wantQ {
			if _, set := e.query[k]; set {
				continue // the endpoint's own parameter wins
			}
			if len(gotQ[k]) != len(vs) {
				t.Fatalf("query parameter %q lost: in %q, out %q", k, in.URL.RawQuery, out.URL.RawQuery)
			}
		}
		// The caller's pairs travel verbatim, even those ParseQuery
		// rejects, unless the endpoint sets the same parameter.
		outPairs := strings.Split(out.URL.RawQuery, "&")
		for _, pair := range strings.Split(in.URL.RawQuery, "&") {
			key, _, _ := strings.Cut(pair, "=")
			if k, err := url.QueryUnescape(key); err == nil {
				if _, set := e.query[k]; set {
					continue
				}
			}
			if pair != "" && !slices.Contains(outPairs, pair) {
				t.Fatalf("query pair %q lost: in %q, out %q", pair, in.URL.RawQuery, out.URL.RawQuery)
			}
		}
		if e.query == nil && out.URL.RawQuery != in.URL.RawQuery {
			t.Fatalf("query changed: in %q, out %q", in.URL.RawQuery, out.URL.RawQuery)
		}
		if in.URL.String() != before {
			t.Fatalf("caller's URL changed from %q to %q", before, in.URL.String())
		}
	})
}

// FuzzRetryDelay checks the parsing of retry-after-ms, Retry-After and
// x-ratelimit-reset-*: it never panics and never returns a negative wait
// or one above its cap.
func FuzzRetryDelay(f *testing.F) {
	for _, seed := range [][4]string{
		{"1500", "", "", ""},
		{"", "7", "", ""},
		{"", "Wed, 21 Oct 2015 07:28:00 GMT", "", ""},
		{"", "", "6m0s", ""},
		{"", "", "1s", "20ms"},
		{"-1", "-5", "-1s", "NaN"},
		{"1e308", "99999999999999999999", "2562047h47m16.854775807s", "Inf"},
		{"0.5", "0", "0s", "0.25"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	const limit = time.Minute
	f.Fuzz(func(t *testing.T, ms, ra, resetReq, resetTok string) {
		h := http.Header{}
		for k, v := range map[string]string{"Retry-After-Ms": ms, "Retry-After": ra,
			"X-Ratelimit-Reset-Requests": resetReq, "X-Ratelimit-Reset-Tokens": resetTok} {
			if v != "" {
				h.Set(k, v)
			}
		}
		d, ok := retryDelay(h, now, limit, true)
		if d < 0 || d > limit {
			t.Fatalf("retryDelay(%v) = %v, outside [0, %v]", h, d, limit)
		}
		if !ok && d != 0 {
			t.Fatalf("retryDelay(%v) = %v without ok", h, d)
		}
	})
}
