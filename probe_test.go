package failover

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
	"go.uber.org/goleak"
)

// probeHosts is the script of a scripted base for the probe tests: each
// host answers with the status set for it (200 and its name when none),
// and a probe of a host (GET .../models) whose gate is set waits until the
// gate closes or the probe's context ends.
type probeHosts struct {
	mu     sync.Mutex
	status map[string]int
	header map[string][]string
	gate   map[string]chan struct{}
}

func newProbeHosts() *probeHosts {
	return &probeHosts{status: map[string]int{}, header: map[string][]string{}, gate: map[string]chan struct{}{}}
}

// set makes host name answer code, with the header pairs kv.
func (h *probeHosts) set(name string, code int, kv ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[name], h.header[name] = code, kv
}

// hold makes the probes of host name wait until the returned function is
// called.
func (h *probeHosts) hold(name string) (release func()) {
	ch := make(chan struct{})
	h.mu.Lock()
	h.gate[name] = ch
	h.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (h *probeHosts) script(req *http.Request, _ int) (*http.Response, error) {
	name := strings.TrimSuffix(req.URL.Host, ".test")
	h.mu.Lock()
	code, ok := h.status[name]
	kv := h.header[name]
	gate := h.gate[name]
	h.mu.Unlock()
	if gate != nil && isProbe(req) {
		select {
		case <-gate:
		case <-req.Context().Done():
			return nil, context.Cause(req.Context())
		}
	}
	if !ok {
		code = 200
	}
	body := name
	if code != 200 {
		body = `{"error":{"message":"scripted"}}`
	}
	return reply(code, body, kv...), nil
}

// isProbe reports whether req is a default recovery probe.
func isProbe(req *http.Request) bool {
	return req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/models")
}

// probesOf returns the probes the base saw for host name, and chatsOf the
// other requests.
func probesOf(b *scriptedBase, name string) (probes []seenRequest) {
	for _, r := range b.Seen() {
		if r.host == name+".test" && strings.HasSuffix(r.path, "/models") {
			probes = append(probes, r)
		}
	}
	return probes
}

func chatsOf(b *scriptedBase, name string) int {
	n := 0
	for _, r := range b.Seen() {
		if r.host == name+".test" && strings.HasSuffix(r.path, "/chat/completions") {
			n++
		}
	}
	return n
}

// probeSetup is a Transport on a step clock over two scripted endpoints,
// a preferred and b its backup, with probes every interval, a breaker
// that opens at the second failure, and no waiting.
type probeSetup struct {
	tr    *Transport
	clk   *stepClock
	base  *scriptedBase
	hosts *probeHosts
}

func newProbeSetup(t *testing.T, cfg Config) *probeSetup {
	t.Helper()
	hosts := newProbeHosts()
	base := newScriptedBase(hosts.script)
	if cfg.Endpoints == nil {
		cfg.Endpoints = []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}
	}
	cfg.Base = base
	cfg.MaxWait = -1
	if cfg.Breaker.FailureThreshold == 0 {
		cfg.Breaker.FailureThreshold = 2
	}
	clk := newStepClock()
	tr := newTestTransportOn(t, cfg, clk)
	return &probeSetup{tr: tr, clk: clk, base: base, hosts: hosts}
}

// openA makes a fail until its breaker opens (every request answered by
// b), and returns when that happened.
func (ps *probeSetup) openA(t *testing.T) time.Time {
	t.Helper()
	ps.hosts.set("a", 500)
	for range 10 {
		answeredBy(t, ps.tr, "b")
		if healthOf(t, ps.tr, "a").State == StateOpen {
			return ps.clk.now()
		}
	}
	t.Fatal("a did not open")
	return time.Time{}
}

// nextProbe waits until a's probe loop sleeps, and returns when it plans
// the next probe.
func (ps *probeSetup) nextProbe(t *testing.T) time.Time {
	t.Helper()
	ps.clk.BlockUntil(t, 1)
	h := healthOf(t, ps.tr, "a")
	if h.ProbeState != ProbeStateScheduled || h.NextProbeAt.IsZero() {
		t.Fatalf("a: probe state %q, next probe %v; want one scheduled", h.ProbeState, h.NextProbeAt)
	}
	return h.NextProbeAt
}

// within fails unless got-from is in [d, d+10%]: a probe wait and its
// jitter.
func within(t *testing.T, what string, from, got time.Time, d time.Duration) {
	t.Helper()
	if wait := got.Sub(from); wait < d || wait > d+d/10 {
		t.Fatalf("%s: %v after, want %v to %v", what, wait, d, d+d/10)
	}
}

// TestProbeClosesRecoveredEndpoint: an endpoint that died and came back is
// closed by a probe in the background. No user request is its trial: a
// request that comes while the probe is under way goes to the backup at
// once, without waiting for it, and the first user request a gets after
// the probe succeeds.
func TestProbeClosesRecoveredEndpoint(t *testing.T) {
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: 10 * time.Second}})
	opened := ps.openA(t)
	failedChats := chatsOf(ps.base, "a")
	next := ps.nextProbe(t)
	within(t, "first probe", opened, next, 10*time.Second)

	ps.hosts.set("a", 200) // a is back, but nobody knows yet
	release := ps.hosts.hold("a")
	ps.clk.AdvanceTo(next)
	eventually(t, "a probed", func() bool { return healthOf(t, ps.tr, "a").ProbeState == ProbeStateProbing })
	// The open period is over and the probe is the trial: users go to b.
	for range 3 {
		answeredBy(t, ps.tr, "b")
	}
	release()
	waitState(t, ps.tr, "a", StateClosed)

	probes := probesOf(ps.base, "a")
	if len(probes) != 1 || probes[0].auth != "Bearer key-a" || probes[0].path != "/v1/models" {
		t.Fatalf("probes of a: %+v, want one GET /v1/models with a's key", probes)
	}
	if got := chatsOf(ps.base, "a"); got != failedChats {
		t.Fatalf("a got %d user requests while out, want none after the %d that failed", got-failedChats, failedChats)
	}
	answeredBy(t, ps.tr, "a")
	h := healthOf(t, ps.tr, "a")
	if h.LastProbeResult != "success" || h.ProbeState != "" || !h.NextProbeAt.IsZero() {
		t.Fatalf("a after its probe: result %q, state %q, next %v", h.LastProbeResult, h.ProbeState, h.NextProbeAt)
	}
}

// TestProbeBackoff: each failed probe doubles the wait before the next, up
// to MaxInterval, and the open period lasts until then; a probe that
// succeeds resets it, so that the next time the endpoint opens, it is
// probed Interval later again.
func TestProbeBackoff(t *testing.T) {
	const interval = 10 * time.Second
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: interval, MaxInterval: 40 * time.Second}})
	opened := ps.openA(t)
	next := ps.nextProbe(t)
	within(t, "first probe", opened, next, interval)
	for i, want := range []time.Duration{20 * time.Second, 40 * time.Second, 40 * time.Second} {
		ps.clk.AdvanceTo(next)
		probed := ps.clk.now()
		next = ps.nextProbe(t)
		within(t, "probe after a failed one", probed, next, want)
		if got := len(probesOf(ps.base, "a")); got != i+1 {
			t.Fatalf("%d probes, want %d", got, i+1)
		}
		h := healthOf(t, ps.tr, "a")
		if h.State != StateOpen || h.LastProbeResult != "failure" {
			t.Fatalf("a after a failed probe: %v, result %q; want open, failure", h.State, h.LastProbeResult)
		}
		answeredBy(t, ps.tr, "b")
	}

	ps.hosts.set("a", 200)
	ps.clk.AdvanceTo(next)
	waitState(t, ps.tr, "a", StateClosed)
	ps.clk.BlockUntil(t, 0)

	ps.clk.Advance(time.Minute)
	opened = ps.openA(t)
	within(t, "first probe after it opened again", opened, ps.nextProbe(t), interval)
}

// TestProbeKeyRejectedWaitsOpenTimeout: an endpoint that refused its key
// (401) is first probed when its breaker's open timeout ends, not at the
// probe interval; a probe refused again doubles that wait.
func TestProbeKeyRejectedWaitsOpenTimeout(t *testing.T) {
	const openTimeout = time.Minute
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: 5 * time.Second},
		Breaker: BreakerConfig{OpenTimeout: openTimeout}})
	ps.hosts.set("a", 401)
	answeredBy(t, ps.tr, "b")
	opened := ps.clk.now()
	if st := healthOf(t, ps.tr, "a").State; st != StateOpen {
		t.Fatalf("a is %v after a 401, want open", st)
	}
	next := ps.nextProbe(t)
	if !next.Equal(opened.Add(openTimeout)) {
		t.Fatalf("first probe %v after the 401, want at the open timeout, %v", next.Sub(opened), openTimeout)
	}
	for range 11 { // the probe interval passes, again and again
		ps.clk.Advance(5 * time.Second)
		answeredBy(t, ps.tr, "b")
	}
	ps.clk.BlockUntil(t, 1)
	if n := len(probesOf(ps.base, "a")); n != 0 {
		t.Fatalf("a was probed %d times before its open timeout ended", n)
	}
	ps.clk.AdvanceTo(next)
	probed := ps.clk.now()
	next = ps.nextProbe(t)
	within(t, "probe after a refused one", probed, next, 2*openTimeout)
	if h := healthOf(t, ps.tr, "a"); len(probesOf(ps.base, "a")) != 1 || h.LastProbeResult != "key_rejected" {
		t.Fatalf("after the open timeout: %d probes, result %q; want 1, key_rejected", len(probesOf(ps.base, "a")), h.LastProbeResult)
	}
}

// TestProbeNeverHealthy: probes never reach an endpoint that is healthy,
// nor one cooling down for the delay its server named; no probe loop runs
// for them.
func TestProbeNeverHealthy(t *testing.T) {
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: time.Second}})
	for range 5 {
		answeredBy(t, ps.tr, "a")
	}
	ps.hosts.set("a", 429, "Retry-After", "30")
	answeredBy(t, ps.tr, "b")
	if st := healthOf(t, ps.tr, "a").State; st != StateCoolingDown {
		t.Fatalf("a is %v after a 429, want cooling-down", st)
	}
	a := endpointsOf(ps.tr)[0]
	for range 40 {
		eventually(t, "no probe loop for a", func() bool { return !a.probe.running.Load() })
		ps.clk.Advance(time.Second)
	}
	for _, name := range []string{"a", "b"} {
		if n := len(probesOf(ps.base, name)); n != 0 {
			t.Errorf("%s was probed %d times", name, n)
		}
		if h := healthOf(t, ps.tr, name); h.ProbeState != "" {
			t.Errorf("%s: probe state %q, want none", name, h.ProbeState)
		}
	}
}

// TestProbeEndsGuessedCooldown: an endpoint cooling down after a 429 that
// named no delay (the doubling Cooldown) is probed every Interval while
// its cooldown lasts, and a probe that succeeds ends the cooldown.
func TestProbeEndsGuessedCooldown(t *testing.T) {
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: 5 * time.Second}, Cooldown: 40 * time.Second})
	ps.hosts.set("a", 429)
	answeredBy(t, ps.tr, "b")
	cooled := ps.clk.now()
	if st := healthOf(t, ps.tr, "a").State; st != StateCoolingDown {
		t.Fatalf("a is %v after a 429, want cooling-down", st)
	}
	next := ps.nextProbe(t)
	within(t, "first probe of a cooldown", cooled, next, 5*time.Second)
	ps.clk.AdvanceTo(next) // still throttled: the cooldown goes on
	probed := ps.clk.now()
	next = ps.nextProbe(t)
	within(t, "second probe", probed, next, 10*time.Second)
	if st := healthOf(t, ps.tr, "a").State; st != StateCoolingDown {
		t.Fatalf("a is %v after a throttled probe, want cooling-down", st)
	}
	ps.hosts.set("a", 200)
	ps.clk.AdvanceTo(next)
	eventually(t, "a's cooldown ended", func() bool { return healthOf(t, ps.tr, "a").State == StateClosed })
	ps.clk.BlockUntil(t, 0)
	answeredBy(t, ps.tr, "a")
	if n := len(probesOf(ps.base, "a")); n != 2 {
		t.Fatalf("%d probes of a, want 2", n)
	}
}

// TestProbeUpdateTurnsOn: Update turning probes on probes an endpoint that
// is already open; Update turning them off stops its loop, and its open
// breaker lets a user request through as its trial again.
func TestProbeUpdateTurnsOn(t *testing.T) {
	ps := newProbeSetup(t, Config{Breaker: BreakerConfig{OpenTimeout: time.Hour}})
	cfg := Config{Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
		Breaker: BreakerConfig{FailureThreshold: 2, OpenTimeout: time.Hour}, MaxWait: -1}
	ps.openA(t)
	on := cfg
	on.Probe = ProbeConfig{Interval: 10 * time.Second}
	if err := ps.tr.Update(on); err != nil {
		t.Fatal(err)
	}
	updated := ps.clk.now()
	next := ps.nextProbe(t)
	if next.Before(updated) || next.After(updated.Add(11*time.Second)) {
		t.Fatalf("first probe %v after Update, want within the interval", next.Sub(updated))
	}
	if err := ps.tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	ps.clk.AdvanceTo(next)
	ps.clk.BlockUntil(t, 0)
	if n := len(probesOf(ps.base, "a")); n != 0 {
		t.Fatalf("a was probed %d times after probes were turned off", n)
	}
	ps.hosts.set("a", 200)
	ps.clk.Advance(time.Hour)
	answeredBy(t, ps.tr, "a") // its trial
}

// TestProbeRefusedUntilProbed: while probes watch an endpoint, its open
// breaker refuses user requests even after its open period, while a probe
// is its trial: a request with nowhere else to go fails at once (MaxWait
// negative) instead of being a trial too.
func TestProbeRefusedUntilProbed(t *testing.T) {
	// Two trials would be let through: the probe takes one, and no user
	// request may take the other.
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: 10 * time.Second},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}, Breaker: BreakerConfig{HalfOpenRequests: 2}})
	ps.hosts.set("a", 500)
	for range 2 {
		if code, _ := chat(t, ps.tr); code != 500 {
			t.Fatalf("got %d, want a's 500", code)
		}
	}
	release := ps.hosts.hold("a")
	defer release()
	ps.clk.AdvanceTo(ps.nextProbe(t))
	eventually(t, "a probed", func() bool { return healthOf(t, ps.tr, "a").ProbeState == ProbeStateProbing })
	_, err := ps.tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if !errors.Is(err, ErrNoEndpointAvailable) {
		t.Fatalf("error %v, want ErrNoEndpointAvailable", err)
	}
	if got := chatsOf(ps.base, "a"); got != 2 {
		t.Fatalf("a got %d user requests, want the 2 that failed", got)
	}
}

// TestCloseStopsProbes: Close ends every probe loop, one sleeping and one
// in the middle of a probe, and returns once they are gone; afterwards an
// open breaker lets a user request through as its trial again.
func TestCloseStopsProbes(t *testing.T) {
	before := goleak.IgnoreCurrent()
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: 10 * time.Second},
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0), hostEndpoint("c", 1)}})
	for _, name := range []string{"a", "b"} {
		ps.hosts.set(name, 500)
	}
	for range 6 {
		answeredBy(t, ps.tr, "c")
	}
	for _, name := range []string{"a", "b"} {
		if st := healthOf(t, ps.tr, name).State; st != StateOpen {
			t.Fatalf("%s is %v, want open", name, st)
		}
	}
	ps.clk.BlockUntil(t, 2)
	_ = ps.hosts.hold("a") // never released: Close must cut it
	ps.clk.AdvanceTo(healthOf(t, ps.tr, "a").NextProbeAt)
	eventually(t, "a probed", func() bool { return healthOf(t, ps.tr, "a").ProbeState == ProbeStateProbing })

	if err := ps.tr.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before)
	if err := ps.tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if h := healthOf(t, ps.tr, "a"); h.LastProbeResult != "" {
		t.Fatalf("the probe cut by Close was recorded: %q", h.LastProbeResult)
	}
	ps.hosts.set("b", 200)
	ps.clk.Advance(time.Hour)
	// b's open period is over and no probe runs: a user request is its
	// trial (c is in a later tier).
	eventually(t, "b back", func() bool {
		code, body := chat(t, ps.tr)
		return code == 200 && body == "b"
	})
}

// TestProbeRequest: the probe is built as a routed request to its
// endpoint would be: under its BaseURL with its query, its key under the
// header its requests use, its headers, and a body's model sent as the
// endpoint sends that model (renamed by Models; for an Azure endpoint with
// an APIVersion, under /deployments/<deployment>). Before the fix, a chat
// probe of an Azure classic endpoint went to /openai/chat/completions with
// the caller's name (Azure's 404: the endpoint never came back), and a
// mapped endpoint's probe kept the caller's name.
func TestProbeRequest(t *testing.T) {
	const ver = "2024-10-21"
	chat := func(model string) string {
		return `{"max_tokens":1,"messages":[{"content":"ping","role":"user"}],"model":"` + model + `"}`
	}
	for _, tc := range []struct {
		name       string
		ep         Endpoint
		method     string
		url        string
		body       string
		hasContent bool
	}{
		{"default", Endpoint{BaseURL: "https://x.test/v1", APIKey: "k"}, "GET", "https://x.test/v1/models", "", false},
		{"query in the base URL", Endpoint{BaseURL: "https://x.test/openai/deployments/d?api-version=2024-10-21", Header: http.Header{"Api-Key": {"k"}}},
			"GET", "https://x.test/openai/deployments/d/models?api-version=2024-10-21", "", false},
		{"chat", Endpoint{BaseURL: "https://x.test/v1/", APIKey: "k", Probe: ChatProbe("m-1")}, "POST",
			"https://x.test/v1/chat/completions", chat("m-1"), true},
		{"path", Endpoint{BaseURL: "https://x.test/v1", Probe: ProbeRequest{Path: "/health"}}, "GET", "https://x.test/v1/health", "", false},
		{"mapped chat", Endpoint{BaseURL: "https://x.test/api/v1", APIKey: "k", Probe: ChatProbe("gpt-4o-mini"),
			Models: map[string]string{"gpt-4o-mini": "openai/gpt-4o-mini"}}, "POST",
			"https://x.test/api/v1/chat/completions", chat("openai/gpt-4o-mini"), true},
		{"listed chat", Endpoint{BaseURL: "https://x.test/v1", APIKey: "k", Probe: ChatProbe("m-1"),
			Models: map[string]string{"m-1": "", "m-2": "up-2"}}, "POST", "https://x.test/v1/chat/completions", chat("m-1"), true},
		{"azure classic, mapped chat", Endpoint{BaseURL: "https://az.test", APIType: APITypeAzure, APIVersion: ver, APIKey: "k",
			Probe: ChatProbe("gpt-4o-mini"), Models: map[string]string{"gpt-4o-mini": "prod-4o-mini"}}, "POST",
			"https://az.test/openai/deployments/prod-4o-mini/chat/completions?api-version=" + ver, chat("prod-4o-mini"), true},
		{"azure classic, deployment chat", Endpoint{BaseURL: "https://az.test/openai", APIType: APITypeAzure, APIVersion: ver, APIKey: "k",
			Probe: ChatProbe("prod-x")}, "POST",
			"https://az.test/openai/deployments/prod-x/chat/completions?api-version=" + ver, chat("prod-x"), true},
		{"azure classic, models", Endpoint{BaseURL: "https://az.test", APIType: APITypeAzure, APIVersion: ver, APIKey: "k",
			Models: map[string]string{"gpt-4o-mini": "prod-4o-mini"}}, "GET", "https://az.test/openai/models?api-version=" + ver, "", false},
		{"azure v1, mapped chat", Endpoint{BaseURL: "https://az.test/openai/v1", APIType: APITypeAzure, APIKey: "k",
			Probe: ChatProbe("gpt-4o-mini"), Models: map[string]string{"gpt-4o-mini": "v1-4o-mini"}}, "POST",
			"https://az.test/openai/v1/chat/completions", chat("v1-4o-mini"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Endpoints: []Endpoint{tc.ep}})
			req, err := newProbeRequest(context.Background(), tr.snap.Load(), endpointsOf(tr)[0])
			if err != nil {
				t.Fatal(err)
			}
			if req.Method != tc.method || req.URL.String() != tc.url {
				t.Fatalf("%s %s, want %s %s", req.Method, req.URL, tc.method, tc.url)
			}
			authKey, auth := "Authorization", "Bearer "+tc.ep.APIKey
			if tc.ep.APIType == APITypeAzure {
				authKey, auth = "Api-Key", tc.ep.APIKey
				if got := req.Header.Get("Authorization"); got != "" {
					t.Errorf("Authorization %q on an Azure endpoint, want none", got)
				}
			}
			if got := req.Header.Get(authKey); tc.ep.APIKey != "" && got != auth {
				t.Errorf("%s %q, want %q", authKey, got, auth)
			}
			for k, vs := range tc.ep.Header {
				if got := req.Header.Get(k); got != vs[0] {
					t.Errorf("header %s = %q, want %q", k, got, vs[0])
				}
			}
			if got := req.Header.Get("User-Agent"); got != probeUserAgent {
				t.Errorf("User-Agent %q, want %q", got, probeUserAgent)
			}
			if got := req.Header.Get("Content-Type") == "application/json"; got != tc.hasContent {
				t.Errorf("Content-Type %q", req.Header.Get("Content-Type"))
			}
			var body string
			if req.Body != nil {
				b, _ := io.ReadAll(req.Body)
				body = string(b)
			}
			if body != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
			if tc.body != "" && req.ContentLength != int64(len(tc.body)) {
				t.Errorf("ContentLength %d, want %d", req.ContentLength, len(tc.body))
			}
		})
	}
}

// TestProbeConfigErrors: bad probe settings are refused by New, each named.
func TestProbeConfigErrors(t *testing.T) {
	ep := Endpoint{BaseURL: "https://x.test/v1"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative interval", Config{Probe: ProbeConfig{Interval: -time.Second}}, "Probe.Interval -1s is negative"},
		{"tiny interval", Config{Probe: ProbeConfig{Interval: time.Millisecond}}, "Probe.Interval 1ms is below 100ms"},
		{"max below interval", Config{Probe: ProbeConfig{Interval: time.Minute, MaxInterval: time.Second}}, "Probe.MaxInterval 1s is below Probe.Interval 1m0s"},
		{"negative timeout", Config{Probe: ProbeConfig{Timeout: -1}}, "Probe.Timeout -1ns is negative"},
		{"relative path", Config{Endpoints: []Endpoint{{BaseURL: ep.BaseURL, Probe: ProbeRequest{Path: "models"}}}}, "Probe.Path must begin with /"},
		{"dot path", Config{Endpoints: []Endpoint{{BaseURL: ep.BaseURL, Probe: ProbeRequest{Path: "/../x"}}}}, "Probe.Path has"},
		{"query path", Config{Endpoints: []Endpoint{{BaseURL: ep.BaseURL, Probe: ProbeRequest{Path: "/x?y=1"}}}}, "Probe.Path must not carry a query"},
		{"bad body", Config{Endpoints: []Endpoint{{BaseURL: ep.BaseURL, Probe: ProbeRequest{Body: "{"}}}}, "Probe.Body is not valid JSON"},
		{"bad method", Config{Endpoints: []Endpoint{{BaseURL: ep.BaseURL, Probe: ProbeRequest{Method: "GE T"}}}}, `Probe.Method "GE T"`},
		{"model not served", Config{Endpoints: []Endpoint{{BaseURL: ep.BaseURL, Probe: ChatProbe("openai/gpt-4o-mini"),
			Models: map[string]string{"gpt-4o-mini": "openai/gpt-4o-mini"}}}}, `Probe's model "openai/gpt-4o-mini" is not in Models`},
		{"model no deployment", Config{Endpoints: []Endpoint{{BaseURL: "https://az.test", APIType: APITypeAzure, APIVersion: "2024-10-21",
			Probe: ChatProbe("gpt 4o")}}}, `Probe's model "gpt 4o" is not an Azure deployment name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Endpoints == nil {
				tc.cfg.Endpoints = []Endpoint{ep}
			}
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestProbeClaim: with a claim hook (a fleet's shared state), a probe is
// sent only when this process wins the claim; a lost claim waits a period
// without doubling it.
func TestProbeClaim(t *testing.T) {
	const interval = 10 * time.Second
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: interval}})
	var mu sync.Mutex
	win := false
	var claims []string
	ps.tr.heal.claim = func(_ context.Context, endpoint string, ttl time.Duration) bool {
		mu.Lock()
		defer mu.Unlock()
		claims = append(claims, endpoint)
		if ttl != defaultProbeTimeout {
			t.Errorf("claim for %v, want the probe's timeout", ttl)
		}
		return win
	}
	ps.openA(t)
	ps.clk.AdvanceTo(ps.nextProbe(t))
	claimed := ps.clk.now()
	next := ps.nextProbe(t)
	within(t, "after a lost claim", claimed, next, interval)
	if n := len(probesOf(ps.base, "a")); n != 0 {
		t.Fatalf("%d probes sent after a lost claim", n)
	}
	mu.Lock()
	win = true
	mu.Unlock()
	ps.hosts.set("a", 200)
	ps.clk.AdvanceTo(next)
	waitState(t, ps.tr, "a", StateClosed)
	mu.Lock()
	defer mu.Unlock()
	if len(claims) != 2 || claims[0] != "a" || len(probesOf(ps.base, "a")) != 1 {
		t.Fatalf("claims %q and %d probes, want two claims for a and one probe", claims, len(probesOf(ps.base, "a")))
	}
}

// TestAzureProbeSendsAPIKey: a recovery probe carries the endpoint's
// key "as a routed request would carry it" (README): for an Azure OpenAI
// endpoint that is the api-key header, not Authorization. A probe that
// sends the key as Authorization gets Azure's 401, so the endpoint, back
// up, would never be brought back by its probes (each counted a refused
// key, the next one an OpenTimeout away).
func TestAzureProbeSendsAPIKey(t *testing.T) {
	hosts := newProbeHosts()
	var (
		mu     sync.Mutex
		probes []http.Header
	)
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if isProbe(req) {
			mu.Lock()
			probes = append(probes, req.Header.Clone())
			mu.Unlock()
		}
		return hosts.script(req, n)
	})
	az := Endpoint{Name: "a", BaseURL: "https://a.test/openai/v1", APIType: APITypeAzure, APIKey: "k-azure-a"}
	clk := newStepClock()
	tr := newTestTransportOn(t, Config{Base: base, MaxWait: -1, Breaker: BreakerConfig{FailureThreshold: 2},
		Probe: ProbeConfig{Interval: 10 * time.Second}, Endpoints: []Endpoint{az, hostEndpoint("b", 1)}}, clk)
	ps := &probeSetup{tr: tr, clk: clk, base: base, hosts: hosts}
	ps.openA(t)
	ps.clk.AdvanceTo(ps.nextProbe(t))
	eventually(t, "a probed", func() bool { mu.Lock(); defer mu.Unlock(); return len(probes) == 1 })
	mu.Lock()
	h := probes[0]
	mu.Unlock()
	if got := h.Get("Api-Key"); got != "k-azure-a" {
		t.Errorf("the probe's api-key is %q, want the endpoint's key", got)
	}
	if got := h.Get("Authorization"); got != "" {
		t.Errorf("the probe's Authorization is %q, want none: an Azure endpoint takes its key as api-key, as its routed requests do", got)
	}
}

// TestAzureChatProbeAgainstFake: over a real connection to a fake Azure
// resource that, as Azure does, answers a classic chat request without
// its deployments segment with 404, an endpoint whose chat probe names
// the caller's model (mapped by Models to its deployment) is closed by
// its first probe once it is back: the probe goes to the deployment's
// path, with the api-version, the api-key and the deployment's name.
// Before the fix the probe went to /openai/chat/completions, got 404 on
// every try, and the endpoint never came back.
func TestAzureChatProbeAgainstFake(t *testing.T) {
	const ver = "2024-10-21"
	az := upstream(t, "az", fakeopenai.WithAzure(fakeopenai.Azure{APIKey: "k-az", APIVersion: ver, Deployments: []string{"prod-4o-mini"}}))
	backup := upstream(t, "backup")
	a := Endpoint{Name: "a", BaseURL: az.URL(), APIType: APITypeAzure, APIVersion: ver, APIKey: "k-az",
		Models: map[string]string{"gpt-4o-mini": "prod-4o-mini"}, Probe: ChatProbe("gpt-4o-mini")}
	clk := newStepClock()
	tr := newTestTransportOn(t, Config{MaxWait: -1, Breaker: BreakerConfig{FailureThreshold: 2},
		Probe: ProbeConfig{Interval: 10 * time.Second}, Endpoints: []Endpoint{a, ep(backup, 1)}}, clk)
	az.SetFault(fakeopenai.StatusFault(http.StatusInternalServerError))
	for i := 0; healthOf(t, tr, "a").State != StateOpen; i++ {
		if i == 10 {
			t.Fatal("a did not open")
		}
		resp, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor("gpt-4o-mini"), false))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d, want the backup's 200", resp.StatusCode)
		}
	}
	az.SetFault(fakeopenai.Healthy())
	az.Reset()
	ps := &probeSetup{tr: tr, clk: clk}
	clk.AdvanceTo(ps.nextProbe(t))
	waitState(t, tr, "a", StateClosed)
	reqs := az.Requests()
	if len(reqs) != 1 {
		t.Fatalf("a got %d requests after it was back, want its one probe", len(reqs))
	}
	p := reqs[0]
	if p.Method != http.MethodPost || p.Path != "/openai/deployments/prod-4o-mini/chat/completions" || p.RawQuery != "api-version="+ver {
		t.Errorf("the probe was %s %s?%s, want POST /openai/deployments/prod-4o-mini/chat/completions?api-version=%s", p.Method, p.Path, p.RawQuery, ver)
	}
	if got := p.Header.Get("Api-Key"); got != "k-az" {
		t.Errorf("the probe's api-key is %q, want the endpoint's key", got)
	}
	if !strings.Contains(string(p.Body), `"model":"prod-4o-mini"`) {
		t.Errorf("the probe's body %s, want the deployment's name as its model", p.Body)
	}
	if h := healthOf(t, tr, "a"); h.LastProbeResult != "success" {
		t.Errorf("a's last probe %q, want success", h.LastProbeResult)
	}
}

// TestProbeClassifiedLikeRequests: a probe's answer is classified by the
// request rules (the Classifier), so that a refusal of the probe request
// only (a restricted key without the models scope: 401 missing_scope)
// does not count as the key refused: the endpoint answered and
// authenticated, and the trial succeeds. Before, every 401 to a probe was
// a refused key, and such an endpoint never came back.
func TestProbeClassifiedLikeRequests(t *testing.T) {
	const (
		missingScope = `{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: api.model.read.","type":"invalid_request_error","code":"missing_scope"}}`
		invalidKey   = `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`
		region       = `{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory"}}`
		forbidden    = `{"error":{"message":"Project does not have access to model","type":"invalid_request_error","code":"model_not_found"}}`
	)
	allRefused := func(resp *http.Response, body []byte, err error) Verdict {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return Verdict{Outcome: OutcomeRequestRefused}
		}
		return DefaultClassifier(resp, body, err)
	}
	for _, tc := range []struct {
		name       string
		code       int
		body       string
		classifier Classifier
		want       string // the probe's result
		wantState  State
	}{
		{"401 missing_scope", 401, missingScope, nil, "success", StateClosed},
		{"401 invalid_api_key", 401, invalidKey, nil, "key_rejected", StateOpen},
		{"401 without a body", 401, "", nil, "key_rejected", StateOpen},
		{"403 naming the account", 403, region, nil, "key_rejected", StateOpen},
		{"403 refusing the request", 403, forbidden, nil, "success", StateClosed},
		{"500", 500, `{"error":{"message":"boom"}}`, nil, "failure", StateOpen},
		{"401 refused by a custom Classifier", 401, invalidKey, allRefused, "success", StateClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := newProbeHosts()
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				if isProbe(req) && req.URL.Host == "a.test" {
					return reply(tc.code, tc.body, "Content-Type", "application/json"), nil
				}
				return hosts.script(req, n)
			})
			clk := newStepClock()
			tr := newTestTransportOn(t, Config{Base: base, MaxWait: -1, Classifier: tc.classifier,
				Breaker: BreakerConfig{FailureThreshold: 2}, Probe: ProbeConfig{Interval: 10 * time.Second},
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}}, clk)
			ps := &probeSetup{tr: tr, clk: clk, base: base, hosts: hosts}
			ps.openA(t)
			ps.clk.AdvanceTo(ps.nextProbe(t))
			if tc.wantState == StateClosed {
				waitState(t, tr, "a", StateClosed)
			} else {
				ps.nextProbe(t) // the probe settled, and the next is planned
			}
			h := healthOf(t, tr, "a")
			if h.LastProbeResult != tc.want || h.State != tc.wantState {
				t.Fatalf("after a probe answered %d %s: result %q, state %v; want %q, %v",
					tc.code, tc.body, h.LastProbeResult, h.State, tc.want, tc.wantState)
			}
		})
	}
}
