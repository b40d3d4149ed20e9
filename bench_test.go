package failover

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/cputime"
	"github.com/prometheus/client_golang/prometheus"
)

// Benchmarks compare the transport with the bare base in the same run:
//
//	go test -run '^$' -bench . -benchmem
//
// Sub-benchmarks named "base" are the floor: the same base RoundTripper
// called directly. Those named "copy-floor" add only the copy of the
// request that any rewriting RoundTripper must make (see copyFloor), so
// that the Transport's own logic reads as its difference from them.

// cannedBase answers every request with a fresh 200 and an empty body,
// with no network: what remains is the transport's own cost.
type cannedBase struct{}

func (cannedBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// benchRateHeaders are OpenAI's rate limit headers, plenty left (more
// than a benchmark spends between two responses the pacing takes as news,
// 20ms apart): one map that every response of rateHeaderBase shares (read
// only).
var benchRateHeaders = http.Header{
	hdrLimitRequests: {"10000000"}, hdrRemainingRequests: {"9999999"}, hdrResetRequests: {"6ms"},
	hdrLimitTokens: {"10000000000"}, hdrRemainingTokens: {"9999999000"}, hdrResetTokens: {"30ms"},
}

// rateHeaderBase is cannedBase with OpenAI's rate limit headers.
type rateHeaderBase struct{}

func (rateHeaderBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req, Header: benchRateHeaders}, nil
}

// failingBase answers 503 for host "down.test" and 200 for the rest.
type failingBase struct{}

func (failingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	code := http.StatusOK
	if req.URL.Host == "down.test" {
		code = http.StatusServiceUnavailable
	}
	return &http.Response{StatusCode: code, Body: http.NoBody, Request: req}, nil
}

// copyFloor is the least any RoundTripper that sends a request to another
// host with another key must do without breaking the RoundTripper contract
// (which forbids changing the caller's request): copy the request, its URL
// and its header map, set the new host and Authorization, call the base.
// Benchmarked beside the Transport, it splits the Transport's cost into
// this unavoidable copy and the failover logic on top of it.
type copyFloor struct {
	base   http.RoundTripper
	scheme string
	host   string
	auth   []string
}

func (f copyFloor) RoundTrip(in *http.Request) (*http.Response, error) {
	o := &outgoing{req: *in, url: *in.URL}
	o.url.Scheme, o.url.Host = f.scheme, f.host
	o.req.URL, o.req.Host = &o.url, ""
	h := http.Header(maps.Clone(in.Header))
	h["Authorization"] = f.auth
	o.req.Header = h
	return f.base.RoundTrip(&o.req)
}

// benchRequestBody is a chat completion request like an SDK's, with the
// body body: GetBody, JSON content type and an Authorization header.
func benchRequestBody(b *testing.B, url, body string) *http.Request {
	b.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sdk-key")
	req.Header.Set("User-Agent", "bench")
	return req
}

// benchEndpoints returns n endpoints on distinct hosts and priorities, the
// first preferred.
func benchEndpoints(n int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Name: fmt.Sprintf("e%d", i), BaseURL: fmt.Sprintf("https://e%d.test/v1", i), APIKey: "sk-bench", Priority: i}
	}
	return eps
}

func mustNew(b *testing.B, cfg Config) *Transport {
	b.Helper()
	t, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// send1 sends req through rt once with a fresh body (as a caller does for
// each request), drains and closes the response body.
func send1(rt http.RoundTripper, req *http.Request) error {
	req.Body, _ = req.GetBody()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// runRT sends a request through rt b.N times, serially or in parallel.
func runRT(b *testing.B, rt http.RoundTripper, url string, parallel bool) {
	runRTBody(b, rt, url, chatBody(false), parallel)
}

// runRTBody is runRT with requests of body body. It also reports the
// process's CPU time per request (cpu-ns/op): on a machine shared with
// other work, it moves less than the time per request, which grows with
// what the other tenants take.
func runRTBody(b *testing.B, rt http.RoundTripper, url, body string, parallel bool) {
	b.ReportAllocs()
	cpu0, cpuOK := cputime.Process()
	defer func() {
		if cpu1, ok := cputime.Process(); ok && cpuOK && b.N > 0 {
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
		}
	}()
	if !parallel {
		req := benchRequestBody(b, url, body)
		b.ResetTimer()
		for range b.N {
			if err := send1(rt, req); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequestBody(b, url, body)
		for pb.Next() {
			if err := send1(rt, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRoundTrip is the happy path: the preferred endpoint healthy.
func BenchmarkRoundTrip(b *testing.B) {
	url := clientBase + "/chat/completions"
	for _, mode := range []string{"serial", "parallel"} {
		parallel := mode == "parallel"
		b.Run(mode+"/base", func(b *testing.B) { runRT(b, cannedBase{}, url, parallel) })
		b.Run(mode+"/copy-floor", func(b *testing.B) {
			runRT(b, copyFloor{base: cannedBase{}, scheme: "https", host: "e0.test", auth: []string{"Bearer sk-bench"}}, url, parallel)
		})
		for _, n := range []int{1, 3, 10, 100} {
			b.Run(fmt.Sprintf("%s/endpoints=%d", mode, n), func(b *testing.B) {
				runRT(b, mustNew(b, Config{Base: cannedBase{}, Endpoints: benchEndpoints(n)}), url, parallel)
			})
		}
		b.Run(mode+"/endpoints=3/metrics", func(b *testing.B) {
			tr := mustNew(b, Config{Base: cannedBase{}, Endpoints: benchEndpoints(3), Registerer: prometheus.NewRegistry()})
			runRT(b, tr, url, parallel)
		})
		// Issue 12's budgets, on: the provider's headers on every
		// response (pacing reads them), a MaxTPM (the estimate reads
		// the body through GetBody; the usage tap wraps the body), and
		// a Shared state in memory (leases spent locally; no call on
		// the request's path).
		b.Run(mode+"/endpoints=1/pacing", func(b *testing.B) {
			runRT(b, mustNew(b, Config{Base: rateHeaderBase{}, Endpoints: benchEndpoints(1)}), url, parallel)
		})
		b.Run(mode+"/endpoints=1/max-tpm", func(b *testing.B) {
			eps := benchEndpoints(1)
			eps[0].MaxTPM = 1e9
			runRT(b, mustNew(b, Config{Base: cannedBase{}, Endpoints: eps}), url, parallel)
		})
		b.Run(mode+"/endpoints=1/shared", func(b *testing.B) {
			eps := benchEndpoints(1)
			eps[0].MaxRPS, eps[0].Burst = 1e7, 1e7
			tr := mustNew(b, Config{Base: cannedBase{}, Endpoints: eps, Shared: newMemHub(newFakeClock()).join()})
			settle(tr)
			runRT(b, tr, url, parallel)
			settle(tr)
		})
		b.Run(mode+"/endpoints=3/weighted", func(b *testing.B) {
			eps := benchEndpoints(3)
			for i := range eps {
				eps[i].Priority, eps[i].Weight = 0, i+1
			}
			runRT(b, mustNew(b, Config{Base: cannedBase{}, Endpoints: eps}), url, parallel)
		})
		benchHealing(b, mode, url, parallel)
		benchModels(b, mode, url, parallel)
	}
}

// benchModels adds BenchmarkRoundTrip's cases of routing by model: three
// endpoints with Models, and a 100 KiB chat body, its model last (as
// openai-go and the Python SDK write it), through a base that reads the
// body as a real one sends it: without Models the Transport passes the
// caller's body on untouched; with them it reads it once, finds the model
// and sends it renamed.
func benchModels(b *testing.B, mode, url string, parallel bool) {
	b.Run(mode+"/endpoints=3/models", func(b *testing.B) {
		runRT(b, mustNew(b, Config{Base: cannedBase{}, Endpoints: modelEndpoints(3)}), url, parallel)
	})
	body := bigChatBody(100 << 10)
	b.Run(mode+"/100KiB/base", func(b *testing.B) { runRTBody(b, drainingBase{}, url, body, parallel) })
	b.Run(mode+"/100KiB/copy-floor", func(b *testing.B) {
		runRTBody(b, copyFloor{base: drainingBase{}, scheme: "https", host: "e0.test", auth: []string{"Bearer sk-bench"}}, url, body, parallel)
	})
	b.Run(mode+"/100KiB/endpoints=3", func(b *testing.B) {
		runRTBody(b, mustNew(b, Config{Base: drainingBase{}, Endpoints: benchEndpoints(3)}), url, body, parallel)
	})
	b.Run(mode+"/100KiB/endpoints=3/models", func(b *testing.B) {
		runRTBody(b, mustNew(b, Config{Base: drainingBase{}, Endpoints: modelEndpoints(3)}), url, body, parallel)
	})
}

// benchHealing adds BenchmarkRoundTrip's cases of the healing features,
// over three endpoints of one tier (as the weighted case): probes and slow
// start configured (and idle, as on a healthy fleet), the least-latency
// balancer, and affinity for requests with and without a key.
func benchHealing(b *testing.B, mode, url string, parallel bool) {
	sameTier := func() []Endpoint {
		eps := benchEndpoints(3)
		for i := range eps {
			eps[i].Priority = 0
		}
		return eps
	}
	keyed := `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"prompt_cache_key":"conversation-1234"}`
	for _, tc := range []struct {
		name string
		cfg  Config
		body string
	}{
		{"probes+slow_start", Config{Probe: ProbeConfig{Interval: 10 * time.Second}, SlowStart: time.Minute}, ""},
		{"least_latency", Config{Balancer: BalancerLeastLatency}, ""},
		{"affinity/no-key", Config{Affinity: AffinityPromptCacheKey}, ""},
		{"affinity/key", Config{Affinity: AffinityPromptCacheKey}, keyed},
	} {
		b.Run(mode+"/endpoints=3/"+tc.name, func(b *testing.B) {
			cfg := tc.cfg
			cfg.Base, cfg.Endpoints = cannedBase{}, sameTier()
			tr := mustNew(b, cfg)
			defer tr.Close()
			body := cmp.Or(tc.body, chatBody(false))
			runRTBody(b, tr, url, body, parallel)
		})
	}
}

// BenchmarkUnhappy measures the paths where the preferred endpoint cannot
// serve: its breaker open (skipped), its rate spent (spill-over), or
// answering 503 (one failover per request).
func BenchmarkUnhappy(b *testing.B) {
	url := clientBase + "/chat/completions"
	b.Run("base", func(b *testing.B) { runRT(b, cannedBase{}, url, false) })
	b.Run("breaker-open", func(b *testing.B) {
		eps := benchEndpoints(2)
		tr := mustNew(b, Config{Base: cannedBase{}, Endpoints: eps})
		openBreaker(b, endpointsOf(tr)[0])
		runRT(b, tr, url, false)
		if got := endpointsOf(tr)[0].hot.started.Load(); got != 0 {
			b.Fatalf("the open endpoint got %d requests", got)
		}
	})
	b.Run("spill-over", func(b *testing.B) {
		eps := benchEndpoints(2)
		eps[0].MaxRPS, eps[0].Burst = minRPS, 1
		tr := mustNew(b, Config{Base: cannedBase{}, Endpoints: eps})
		runRT(b, tr, url, false)
		if got := endpointsOf(tr)[0].hot.started.Load(); got > 1 {
			b.Fatalf("the limited endpoint got %d requests", got)
		}
	})
	b.Run("failover-503", func(b *testing.B) {
		eps := []Endpoint{{Name: "down", BaseURL: "https://down.test/v1"}, {Name: "up", BaseURL: "https://up.test/v1", Priority: 1}}
		tr := mustNew(b, Config{Base: failingBase{}, Endpoints: eps, Breaker: BreakerConfig{FailureThreshold: 1 << 30}})
		runRT(b, tr, url, false)
	})
}

// BenchmarkLoopback sends through a real http.Transport to a local
// upstream, directly and through the failover transport, from 32 parallel
// clients; it reports requests per second. The upstream is a minimal
// handler so that the comparison is not diluted by upstream work.
func BenchmarkLoopback(b *testing.B) {
	body := `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	benchLoopbackCases(b, srv.URL, loopbackCase{"failover", nil})
}

// BenchmarkLoopbackStream is BenchmarkLoopback for streamed chat
// completions: each answer is 20 content events and [DONE], flushed one by
// one as a provider sends tokens. "failover" watches the stream for its end
// (truncation), "failover-timeouts" also for its first token and stalls.
func BenchmarkLoopbackStream(b *testing.B) {
	const events = 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for range events {
			_, _ = w.Write(benchChunk)
			_ = rc.Flush()
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()
	benchLoopbackCases(b, srv.URL, loopbackCase{"failover", nil}, loopbackCase{"failover-timeouts", func(cfg *Config) {
		cfg.FirstTokenTimeout, cfg.StreamIdleTimeout = time.Minute, time.Minute
	}})
}

// loopbackCase is a loopback benchmark's case through the transport: its
// name and what it changes in the configuration (nil: nothing).
type loopbackCase struct {
	name  string
	tweak func(*Config)
}

// benchLoopbackCases runs a loopback benchmark against the upstream at
// srvURL: "direct" (its own http.Transport), "copy-floor", and each of
// failovers through a transport with one endpoint, the upstream; then
// "paired", all of them again taking turns (see runLoopbackPaired).
func benchLoopbackCases(b *testing.B, srvURL string, failovers ...loopbackCase) {
	direct := loopbackCase{name: "direct"}
	floor := loopbackCase{name: "copy-floor"}
	all := append([]loopbackCase{direct, floor}, failovers...)
	for _, c := range all {
		b.Run(c.name, func(b *testing.B) {
			base := newLoopbackBase()
			defer base.CloseIdleConnections()
			rt, url := c.sender(b, srvURL, base)
			runLoopback(b, rt, url)
		})
	}
	b.Run("paired", func(b *testing.B) { runLoopbackPaired(b, srvURL, all) })
}

// newLoopbackBase is the http.Transport a loopback case sends through:
// enough idle connections for its 32 clients.
func newLoopbackBase() *http.Transport {
	return &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
}

// sender returns the RoundTripper of case c around base, and the URL to
// send to, for the upstream at srvURL.
func (c loopbackCase) sender(b *testing.B, srvURL string, base *http.Transport) (http.RoundTripper, string) {
	switch c.name {
	case "direct":
		return base, srvURL + "/v1/chat/completions"
	case "copy-floor":
		host := strings.TrimPrefix(srvURL, "http://")
		return copyFloor{base: base, scheme: "http", host: host, auth: []string{"Bearer sk-bench"}}, clientBase + "/chat/completions"
	}
	cfg := Config{Base: base, Endpoints: []Endpoint{{Name: "up", BaseURL: srvURL + "/v1", APIKey: "sk-bench"}}}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	return mustNew(b, cfg), clientBase + "/chat/completions"
}

// loopbackPhase is how many requests one case sends in its turn in a
// paired loopback run: about 30 to 100 ms, longer than a garbage
// collection cycle of these benchmarks, so that what one case allocates is
// mostly collected in its own turn.
const loopbackPhase = 1024

// runLoopbackPaired sends b.N requests through each of cases, from 32
// goroutines, in turns of loopbackPhase requests, the case that starts a
// round turning with each round. It reports each case's throughput over
// its turns as a percentage of the first case's ("direct"): the machine's
// drift, which moves one run's req/s by several percent, then touches
// every case alike, where a case run after another sees another machine.
func runLoopbackPaired(b *testing.B, srvURL string, cases []loopbackCase) {
	const workers = 32
	type sender struct {
		rt   http.RoundTripper
		reqs []*http.Request
		busy time.Duration
	}
	senders := make([]*sender, len(cases))
	for i, c := range cases {
		base := newLoopbackBase()
		defer base.CloseIdleConnections()
		rt, url := c.sender(b, srvURL, base)
		s := &sender{rt: rt, reqs: make([]*http.Request, workers)}
		for w := range s.reqs {
			s.reqs[w] = benchRequestBody(b, url, chatBody(false))
		}
		senders[i] = s
	}
	b.ResetTimer()
	for round := 0; round*loopbackPhase < b.N; round++ {
		for k := range senders {
			s := senders[(round+k)%len(senders)]
			var left atomic.Int64
			left.Store(loopbackPhase)
			start := time.Now()
			var wg sync.WaitGroup
			for _, req := range s.reqs {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if err := send1(s.rt, req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			s.busy += time.Since(start)
		}
	}
	b.StopTimer()
	for i, c := range cases[1:] {
		b.ReportMetric(100*senders[0].busy.Seconds()/senders[i+1].busy.Seconds(), c.name+"-%direct")
	}
}

// runLoopback sends to url through rt, from 32 goroutines at
// GOMAXPROCS=2, and reports requests per second and the CPU time per
// request, client and upstream together: on a shared machine it varies
// less than req/s, which also moves with the CPU other tenants take.
func runLoopback(b *testing.B, rt http.RoundTripper, url string) {
	b.SetParallelism(16)
	start := time.Now()
	cpu0, cpuOK := cputime.Process()
	runRT(b, rt, url, true)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	if cpu1, ok := cputime.Process(); ok && cpuOK {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
}

// benchChunk is a chat completion chunk as OpenAI streams it.
var benchChunk = []byte(`data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}` + "\n\n")

// eventReader yields a stream of n chunks and [DONE], one event per Read,
// as a network connection flushed after each event delivers it.
type eventReader struct{ left int }

func (r *eventReader) Read(p []byte) (int, error) {
	switch {
	case r.left > 0:
		r.left--
		return copy(p, benchChunk), nil
	case r.left == 0:
		r.left--
		return copy(p, "data: [DONE]\n\n"), nil
	}
	return 0, io.EOF
}

func (r *eventReader) Close() error { return nil }

// streamBase answers every request with a 20-chunk event stream, with no
// network.
type streamBase struct{}

func (streamBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	h := http.Header{"Content-Type": {"text/event-stream"}}
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: &eventReader{left: 20}, Request: req}, nil
}

// BenchmarkStream is BenchmarkLoopbackStream without the network: the
// transport's whole cost for a streamed chat completion of 20 chunks read
// one event per Read (the choice, the copy, and watching the stream for
// its first token, its terminal event and, with the timeouts, stalls),
// beside the same stream read from the base directly.
func BenchmarkStream(b *testing.B) {
	url := clientBase + "/chat/completions"
	body := chatBody(true)
	b.Run("base", func(b *testing.B) { runRTBody(b, streamBase{}, url, body, false) })
	b.Run("failover", func(b *testing.B) {
		runRTBody(b, mustNew(b, Config{Base: streamBase{}, Endpoints: benchEndpoints(1)}), url, body, false)
	})
	b.Run("failover-timeouts", func(b *testing.B) {
		cfg := Config{Base: streamBase{}, Endpoints: benchEndpoints(1), FirstTokenTimeout: time.Minute, StreamIdleTimeout: time.Minute}
		runRTBody(b, mustNew(b, cfg), url, body, false)
	})
}

// BenchmarkFailoverRefused measures a request whose preferred endpoint
// refuses connections on loopback (a closed port) and fails over to a
// healthy one, against a request to the healthy endpoint alone. The
// breaker threshold is raised so that every request pays the failover.
func BenchmarkFailoverRefused(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/v1"
	_ = ln.Close()
	up := Endpoint{Name: "up", BaseURL: srv.URL + "/v1", Priority: 1}
	for _, tc := range []struct {
		name string
		eps  []Endpoint
	}{
		{"healthy-only", []Endpoint{up}},
		{"refused-then-healthy", []Endpoint{{Name: "dead", BaseURL: dead}, up}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			base := &http.Transport{DisableCompression: true}
			defer base.CloseIdleConnections()
			tr := mustNew(b, Config{Base: base, Endpoints: tc.eps, Breaker: BreakerConfig{FailureThreshold: 1 << 30}})
			runRT(b, tr, clientBase+"/chat/completions", false)
		})
	}
}

// BenchmarkModelScan is the scan that finds the model of a 100 KiB chat
// body (its model last) and the splice that renames it, alone: prose, and
// the worst case of an escaped quote every 18 bytes.
func BenchmarkModelScan(b *testing.B) {
	for _, tc := range []struct {
		name string
		body []byte
	}{{"prose", []byte(bigChatBody(100 << 10))}, {"escaped", []byte(escapedChatBody(100 << 10))}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for range b.N {
				var m bodyModel
				if !m.find("application/json", tc.body) || m.name != "gpt-test" {
					b.Fatal("no model")
				}
				_, _ = io.Copy(io.Discard, newSplice(tc.body, m.spans, []byte(`"vendor/gpt-test"`)).reader())
			}
		})
	}
}

// bigChatBody returns a chat completion body of about size bytes: many
// messages of prose (a line break escaped every 100 bytes, a quoted word
// in each), then the model.
func bigChatBody(size int) string {
	return chatBodyOf(size, `{"role":"user","content":"`+
		strings.Repeat(`Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.\n`, 9)+
		`As \"they\" say."}`)
}

// chatBodyOf returns a chat completion body of about size bytes: the
// message msg repeated, then the model.
func chatBodyOf(size int, msg string) string {
	var b strings.Builder
	b.WriteString(`{"messages":[`)
	for i := 0; b.Len() < size-64; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(msg)
	}
	b.WriteString(`],"temperature":0.2,"model":"gpt-test"}`)
	return b.String()
}

// escapedChatBody is bigChatBody with an escaped quote every 18 bytes
// (code or JSON in a prompt): the scan's worst case.
func escapedChatBody(size int) string {
	return chatBodyOf(size, `{"role":"user","content":"`+strings.Repeat(`lorem \"ipsum\" dolor,\n `, 32)+`"}`)
}

// modelEndpoints is benchEndpoints(n), each with Models mapping the bench
// request's model to a name of its own, so that every request is read,
// scanned and sent renamed.
func modelEndpoints(n int) []Endpoint {
	eps := benchEndpoints(n)
	for i := range eps {
		eps[i].Models = map[string]string{"gpt-test": fmt.Sprintf("vendor-%d/gpt-test", i), "other": ""}
	}
	return eps
}

// drainingBase is cannedBase that reads the request body to its end
// through a buffer, as a base that writes it to a connection does (with a
// buffer of the connection's, reused).
type drainingBase struct{}

var drainBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (drainingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		buf := drainBuffers.Get().(*[32 << 10]byte)
		for {
			if _, err := req.Body.Read(buf[:]); err != nil {
				break
			}
		}
		drainBuffers.Put(buf)
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}
