package redisshare

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/redistest"
)

// The health tests run a fleet of Transports, each on a Store of its own
// (one process each), against one real Redis and one scripted provider.
// The Transport's clock cannot be injected from this package, and Redis's
// key expiries run on real time: the tests run on the real clock, with
// open periods and cooldowns of a few hundred milliseconds, and wait for
// conditions by polling them with a generous deadline (waitBound).

// endpointHeader names the response header that tells which endpoint
// answered.
const endpointHeader = "Failover-Endpoint"

// providerHit is one request the provider received.
type providerHit struct {
	host   string // the endpoint's host: "x.test", "y.test"
	proc   int    // the index of the process (Transport) that sent it
	at     time.Time
	status int
}

// healthProvider is a fake upstream for a whole fleet, as a base RoundTripper per
// process: it answers each host as scripted (200 by default) and records
// every request with the process that sent it and when it arrived.
type healthProvider struct {
	mu      sync.Mutex
	replies map[string]func() *http.Response
	hits    []providerHit
}

func newHealthProvider() *healthProvider {
	return &healthProvider{replies: map[string]func() *http.Response{}}
}

// set makes host answer each request with status and header pairs kv
// (status 200: a chat completion); it applies to the requests that arrive
// after it.
func (p *healthProvider) set(host string, status int, kv ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replies[host] = func() *http.Response {
		body := `{"error":{"message":"scripted failure"}}`
		if status == http.StatusOK {
			body = `{"id":"c","object":"chat.completion","choices":[]}`
		}
		h := http.Header{"Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h,
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	}
}

// base returns the RoundTripper of process proc.
func (p *healthProvider) base(proc int) http.RoundTripper {
	return baseFunc(func(req *http.Request) (*http.Response, error) {
		if req.Body != nil {
			_, _ = io.Copy(io.Discard, req.Body)
			_ = req.Body.Close()
		}
		p.mu.Lock()
		reply := p.replies[req.URL.Host]
		p.mu.Unlock()
		if reply == nil {
			p.set(req.URL.Host, http.StatusOK)
			p.mu.Lock()
			reply = p.replies[req.URL.Host]
			p.mu.Unlock()
		}
		resp := reply()
		resp.Request = req
		p.mu.Lock()
		p.hits = append(p.hits, providerHit{host: req.URL.Host, proc: proc, at: time.Now(), status: resp.StatusCode})
		p.mu.Unlock()
		return resp, nil
	})
}

// hitsOf returns the requests host received, in order of arrival.
func (p *healthProvider) hitsOf(host string) []providerHit {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []providerHit
	for _, h := range p.hits {
		if h.host == host {
			out = append(out, h)
		}
	}
	return out
}

type baseFunc func(*http.Request) (*http.Response, error)

func (f baseFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// healthEndpoints are the endpoints of every process: x, then y as the
// fallback at a lower priority.
var healthEndpoints = []failover.Endpoint{
	{Name: "x", BaseURL: "https://x.test/v1"},
	{Name: "y", BaseURL: "https://y.test/v1", Priority: 1},
}

// healthFleet returns n Transports, process i sending through p.base(i),
// each with a Store of its own on one Redis, configured as cfg with the
// healthEndpoints. It returns once every Store receives the fleet's
// events.
func healthFleet(t *testing.T, n int, p *healthProvider, cfg failover.Config) []*failover.Transport {
	t.Helper()
	return healthFleetOn(t, redistest.URL(t), redistest.Prefix(t), n, p, cfg)
}

// healthFleetOn is healthFleet on the Redis at url, under prefix.
func healthFleetOn(t *testing.T, url, prefix string, n int, p *healthProvider, cfg failover.Config) []*failover.Transport {
	t.Helper()
	var trs []*failover.Transport
	var stores []*Store
	for i := range n {
		st := open(t, url, prefix, Options{})
		c := cfg
		c.Base, c.Shared, c.EndpointHeader = p.base(i), st, endpointHeader
		c.Endpoints = slices.Clone(healthEndpoints)
		// A shared call slower than the default 10ms on these loaded
		// machines would count as an outage and make each breaker local:
		// these tests are about the fleet's health when Redis answers.
		c.SharedTimeout = time.Second
		tr, err := failover.New(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		trs, stores = append(trs, tr), append(stores, st)
	}
	awaitSubscribed(t, url, prefix, stores)
	return trs
}

// awaitSubscribed waits until each of stores receives the events published
// under prefix: a first event from another Store gets through to each.
func awaitSubscribed(t *testing.T, url, prefix string, stores []*Store) {
	t.Helper()
	warm := open(t, url, prefix, Options{})
	for i, st := range stores {
		got := make(chan struct{}, 1)
		name := fmt.Sprintf("warm-up-%d", i)
		stop := st.Subscribe(func(ev failover.SharedEvent) {
			if ev.Endpoint == name {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		})
		eventually(t, "subscribed", func() bool {
			if err := warm.Publish(ctx(t), failover.SharedEvent{Endpoint: name, Kind: failover.SharedBreakerClosed}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-got:
				return true
			case <-time.After(20 * time.Millisecond):
				return false
			}
		})
		stop()
	}
}

// sendVia sends one chat request through tr and returns the name of the
// endpoint that answered it with a 200.
func sendVia(t *testing.T, tr *failover.Transport) string {
	t.Helper()
	name, err := trySendVia(tr)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// trySendVia is send returning its error, for goroutines other than the
// test's.
func trySendVia(tr *failover.Transport) (string, error) {
	c, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, http.MethodPost, "https://api.openai.com/v1/chat/completions",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d from %s", resp.StatusCode, resp.Header.Get(endpointHeader))
	}
	return resp.Header.Get(endpointHeader), nil
}

// endpointHealth returns tr's health of the endpoint named name.
func endpointHealth(t *testing.T, tr *failover.Transport, name string) failover.EndpointHealth {
	t.Helper()
	for _, h := range tr.Health() {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no endpoint %q in the health", name)
	return failover.EndpointHealth{}
}

// watchHealth polls, in the background, the health of endpoint name in
// each of trs until cond holds for it, and returns a function that waits
// for every one and returns when each first saw cond hold (failing the
// test after waitBound). Polling every millisecond, the moment is late by
// at most about that.
func watchHealth(t *testing.T, trs []*failover.Transport, name string, cond func(failover.EndpointHealth) bool) func() []time.Time {
	t.Helper()
	seen := make([]time.Time, len(trs))
	last := make([]failover.EndpointHealth, len(trs))
	var wg sync.WaitGroup
	for i, tr := range trs {
		wg.Go(func() {
			deadline := time.Now().Add(waitBound)
			for time.Now().Before(deadline) {
				for _, h := range tr.Health() {
					if h.Name != name {
						continue
					}
					if last[i] = h; cond(h) {
						seen[i] = time.Now()
						return
					}
				}
				time.Sleep(time.Millisecond) // polling interval, not synchronisation
			}
		})
	}
	return func() []time.Time {
		t.Helper()
		wg.Wait()
		for i, at := range seen {
			if at.IsZero() {
				h := last[i]
				t.Fatalf("watched Transport %d (of %d) never saw the condition on %s within %v; last seen: %v since %v, fleet open until %v",
					i, len(trs), name, waitBound, h.State, h.StateSince, h.FleetOpenUntil)
			}
		}
		return seen
	}
}

// latencySpread formats a sorted copy of lat as its minimum, median, 90th
// percentile and maximum.
func latencySpread(lat []time.Duration) string {
	s := slices.Clone(lat)
	slices.Sort(s)
	if len(s) == 0 {
		return "none"
	}
	q := func(f float64) time.Duration { return s[int(f*float64(len(s)-1))] }
	return fmt.Sprintf("n=%d min=%v median=%v p90=%v max=%v", len(s), s[0], q(0.5), q(0.9), s[len(s)-1])
}

// learnedWithin100ms fails t unless nine in ten of the delays lat are
// within the 100ms and every one within a second (the machines are
// shared: one stall must not fail the run).
func learnedWithin100ms(t *testing.T, what string, lat []time.Duration) {
	t.Helper()
	s := slices.Clone(lat)
	slices.Sort(s)
	if p90 := s[len(s)*9/10]; p90 > 100*time.Millisecond || s[len(s)-1] > time.Second {
		t.Fatalf("%s: learned after %s; want nine in ten within 100ms, all within 1s", what, latencySpread(lat))
	}
}
