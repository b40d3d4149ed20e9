package redisshare

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/redistest"
)

// cannedBase answers every request with a fresh 200 and an empty body,
// with no network: what remains is the transport's own cost.
type cannedBase struct{}

func (cannedBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// benchTransport returns a Transport over cannedBase with one endpoint of
// MaxRPS rps (never reached in a benchmark when high), sharing sh (nil:
// none), and its registry.
func benchTransport(b *testing.B, sh failover.Shared, rps float64) (*failover.Transport, *prometheus.Registry) {
	b.Helper()
	reg := prometheus.NewRegistry()
	tr, err := failover.New(failover.Config{Base: cannedBase{}, Shared: sh, Registerer: reg,
		Endpoints: []failover.Endpoint{{Name: "e0", BaseURL: "https://e0.test/v1", APIKey: "sk-bench", MaxRPS: rps, Burst: int(rps)}}})
	if err != nil {
		b.Fatal(err)
	}
	return tr, reg
}

// send sends one chat request through rt.
func send(b *testing.B, rt http.RoundTripper) {
	req, _ := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// BenchmarkShared is the cost per request of a shared rate budget on a
// real Redis, beside the same Transport without Shared, in one run; it
// reports the Redis calls per request. The rate is far above what the
// benchmark reaches, so that it measures the leases, not the limit.
//
//	go test -run '^$' -bench Shared -benchmem ./redisshare/
func BenchmarkShared(b *testing.B) {
	url := redistest.URL(b)
	b.Run("without", func(b *testing.B) {
		tr, _ := benchTransport(b, nil, 1e6)
		b.ReportAllocs()
		for b.Loop() {
			send(b, tr)
		}
	})
	b.Run("shared", func(b *testing.B) {
		st := open(b, url, redistest.Prefix(b), Options{})
		tr, reg := benchTransport(b, st, 1e6)
		b.ReportAllocs()
		for b.Loop() {
			send(b, tr)
		}
		b.ReportMetric(gauge(b, reg, "failover_shared_calls_total")/float64(b.N), "redis-calls/op")
	})
}

// BenchmarkSharedSteadyLoad sends at a steady 1,000 requests a second
// through a Transport whose endpoint has MaxRPS 1,000 shared on a real
// Redis, and reports the Redis calls per request (every call: leases,
// and nothing else on a healthy endpoint). Run it with a fixed count:
//
//	go test -run '^$' -bench SteadyLoad -benchtime 3000x ./redisshare/
func BenchmarkSharedSteadyLoad(b *testing.B) {
	st := open(b, redistest.URL(b), redistest.Prefix(b), Options{})
	tr, reg := benchTransport(b, st, 1000)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for b.Loop() {
		<-tick.C
		send(b, tr)
	}
	b.ReportMetric(gauge(b, reg, "failover_shared_calls_total")/float64(b.N), "redis-calls/op")
}
