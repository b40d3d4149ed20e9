package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/cputime"
)

// benchEvents is how many content events a streamed answer has.
const benchEvents = 20

// benchUpstream answers a chat completion as JSON, or, for "stream":true,
// as benchEvents events and [DONE], flushed one by one as a provider sends
// tokens. It does as little as it can, so that the proxies' costs show.
func benchUpstream(b *testing.B) *httptest.Server {
	chunk := []byte(`data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}` + "\n\n")
	body := `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(req), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, body)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for range benchEvents {
			_, _ = w.Write(chunk)
			_ = rc.Flush()
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}))
	b.Cleanup(srv.Close)
	return srv
}

// bareProxy is httputil.ReverseProxy doing the same forwarding as the
// failover proxy for one endpoint: the path under /v1 onto the upstream's,
// the client's Authorization replaced by the endpoint's key, every write
// flushed at once.
func bareProxy(upstream string) http.Handler {
	target, _ := url.Parse(upstream)
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", "Bearer sk-bench")
		},
		Transport:     base,
		FlushInterval: -1,
	}
}

// BenchmarkProxy sends chat completions, plain and streamed, from 32
// parallel clients through a bare httputil.ReverseProxy and through the
// failover proxy, in one run, and reports the process's CPU time per
// request (client, proxy and upstream together) beside req/s.
func BenchmarkProxy(b *testing.B) {
	up := benchUpstream(b)
	failoverProxy := func(b *testing.B) http.Handler {
		p, err := New(Config{Failover: failover.Config{Endpoints: []failover.Endpoint{
			{Name: "up", BaseURL: up.URL + "/v1", APIKey: "sk-bench"}}}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		return p.Handler()
	}
	for _, kind := range []struct {
		name, body string
	}{
		{"plain", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`},
		{"stream", `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`},
	} {
		for _, proxy := range []struct {
			name    string
			handler func(b *testing.B) http.Handler
		}{
			{"bare", func(*testing.B) http.Handler { return bareProxy(up.URL + "/v1") }},
			{"failover", failoverProxy},
		} {
			b.Run(kind.name+"/"+proxy.name, func(b *testing.B) {
				srv := httptest.NewServer(proxy.handler(b))
				defer srv.Close()
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
				defer client.CloseIdleConnections()
				b.SetParallelism(16)
				b.ReportAllocs()
				start := time.Now()
				cpu0, cpuOK := cputime.Process()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := client.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(kind.body))
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							b.Errorf("status %d", resp.StatusCode)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
				if cpu1, ok := cputime.Process(); ok && cpuOK {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}
