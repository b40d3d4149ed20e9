package failover

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// metricValue gathers reg and returns the value of the sample of family
// name whose labels are exactly labels: a counter's or gauge's value, or a
// histogram's sample count.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !labelsEqual(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("%s has no sample labelled %v", name, labels)
	}
	t.Fatalf("%s is not registered", name)
	return 0
}

func labelsEqual(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, p := range got {
		if want[p.GetName()] != p.GetValue() {
			return false
		}
	}
	return true
}

func TestMetricsByNameAndValue(t *testing.T) {
	script := func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "throttled.test" {
			return reply(429, "busy", "Retry-After", "30"), nil
		}
		return reply(200, "ok"), nil
	}
	limited := hostEndpoint("limited", 0)
	limited.MaxRPS, limited.Burst = 1, 1
	reg := prometheus.NewRegistry()
	tr, _ := newTestTransport(t, Config{
		Base:       newScriptedBase(script),
		Registerer: reg,
		Endpoints:  []Endpoint{limited, hostEndpoint("throttled", 1), hostEndpoint("spare", 2)},
	})
	// 1: limited takes it. 2: limited is spent, throttled answers 429 and
	// cools down, spare takes it. 3: limited spent, throttled cooling,
	// spare takes it.
	for range 3 {
		if code, _ := chat(t, tr); code != 200 {
			t.Fatalf("status %d, want 200", code)
		}
	}
	ep := func(name string) map[string]string { return map[string]string{"endpoint": name} }
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"failover_attempts_total", map[string]string{"endpoint": "limited", "outcome": "200"}, 1},
		{"failover_attempts_total", map[string]string{"endpoint": "throttled", "outcome": "429"}, 1},
		{"failover_attempts_total", map[string]string{"endpoint": "spare", "outcome": "200"}, 2},
		{"failover_attempt_duration_seconds", ep("limited"), 1},
		{"failover_attempt_duration_seconds", ep("spare"), 2},
		{"failover_rate_limit_spillovers_total", ep("limited"), 2},
		{"failover_cooldowns_total", ep("throttled"), 1},
		{"failover_attempts_in_flight", ep("spare"), 0},
		{"failover_breaker_state", ep("throttled"), 0},
		{"failover_requests_failed_over_total", nil, 1},
		{"failover_requests_exhausted_total", nil, 0},
	} {
		if got := metricValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// With its only endpoint spent, a request waits for the limiter's
	// next token, and the wait is observed with its reason.
	reg2 := prometheus.NewRegistry()
	tr2, clk2 := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Registerer: reg2, Endpoints: []Endpoint{limited}})
	chat(t, tr2)
	chat(t, tr2)
	if s := clk2.Sleeps(); len(s) != 1 {
		t.Fatalf("sleeps %v, want one wait for the limiter", s)
	}
	for reason, want := range map[string]float64{"rate_limit": 1, "cooldown": 0, "backoff": 0} {
		if got := metricValue(t, reg2, "failover_wait_seconds", map[string]string{"reason": reason}); got != want {
			t.Errorf("failover_wait_seconds{reason=%s} count = %v, want %v", reason, got, want)
		}
	}
}

func TestMetricsCountAttempts(t *testing.T) {
	hosts := newHostReplies()
	hosts.set("a", 500, "down")
	reg := prometheus.NewRegistry()
	tr, _ := newTestTransport(t, Config{
		Base:       newScriptedBase(hosts.script),
		Registerer: reg,
		Endpoints:  []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
		Breaker:    BreakerConfig{FailureThreshold: 100},
		MaxRetries: 1,
	})
	for range 3 {
		answeredBy(t, tr, "b")
	}
	hosts.healthy("a")
	for range 2 {
		answeredBy(t, tr, "a")
	}
	hosts.set("a", 503, "overloaded")
	hosts.set("b", 500, "down")
	if code, _ := chat(t, tr); code != 500 {
		t.Fatalf("status %d, want b's 500 when both fail", code)
	}

	for _, c := range []struct {
		name string
		got  prometheus.Collector
		want float64
	}{
		{`failover_attempts_total{endpoint="a",outcome="500"}`, tr.metrics.attempts.WithLabelValues("a", "500"), 3},
		{`failover_attempts_total{endpoint="a",outcome="200"}`, tr.metrics.attempts.WithLabelValues("a", "200"), 2},
		{`failover_attempts_total{endpoint="b",outcome="200"}`, tr.metrics.attempts.WithLabelValues("b", "200"), 3},
		{`failover_attempts_total{endpoint="a",outcome="503"}`, tr.metrics.attempts.WithLabelValues("a", "503"), 1},
		{`failover_attempts_total{endpoint="b",outcome="500"}`, tr.metrics.attempts.WithLabelValues("b", "500"), 1},
		{`failover_requests_failed_over_total`, tr.metrics.failedOver, 3},
		{`failover_requests_exhausted_total`, tr.metrics.exhausted, 1},
	} {
		if got := testutil.ToFloat64(c.got); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"failover_attempts_total", "failover_attempt_duration_seconds",
		"failover_breaker_state", "failover_requests_failed_over_total"} {
		if !names[want] {
			t.Errorf("%s not registered on the given registry", want)
		}
	}

	global, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range global {
		if strings.HasPrefix(f.GetName(), "failover_") {
			t.Errorf("%s registered on the default registry", f.GetName())
		}
	}
}

func TestMetricsInFlightDuringAttempt(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		close(started)
		<-release
		return reply(200, "ok"), nil
	})
	reg := prometheus.NewRegistry()
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		chat(t, tr)
	}()
	select {
	case <-started:
	case <-time.After(waitBound):
		t.Fatal("attempt never started")
	}
	inflight := metricValue(t, reg, "failover_attempts_in_flight", map[string]string{"endpoint": "a"})
	health := healthOf(t, tr, "a").InFlight
	close(release)
	<-done
	if inflight != 1 || health != 1 {
		t.Fatalf("in flight during the attempt: metric %v, health %v; want 1 and 1", inflight, health)
	}
	if got := metricValue(t, reg, "failover_attempts_in_flight", map[string]string{"endpoint": "a"}); got != 0 {
		t.Fatalf("in flight after the attempt = %v, want 0", got)
	}
}

func TestMetricsSecondTransportOnSameRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	before, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Base: newScriptedBase(alwaysOK), Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("second New on the same registry: err = %v, want AlreadyRegisteredError", err)
	}
	after, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("registry had %d families before the failed New and %d after", len(before), len(after))
	}
	chat(t, first)
	if got := metricValue(t, reg, "failover_attempts_total", map[string]string{"endpoint": "a", "outcome": "200"}); got != 1 {
		t.Fatalf("first transport's attempts = %v after the failed New, want 1", got)
	}
}

func TestMetricsFailedRegistrationLeavesRegistryUnchanged(t *testing.T) {
	reg := prometheus.NewRegistry()
	// A family of the same name as one registered late in New.
	clash := prometheus.NewCounter(prometheus.CounterOpts{Name: "failover_cooldowns_total", Help: "someone else's"})
	reg.MustRegister(clash)
	clash.Inc()
	_, err := New(Config{Base: newScriptedBase(alwaysOK), Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if err == nil {
		t.Fatal("New succeeded on a registry holding a clashing family")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || families[0].GetName() != "failover_cooldowns_total" {
		names := []string{}
		for _, f := range families {
			names = append(names, f.GetName())
		}
		t.Fatalf("registry holds %v after the failed New, want only the clashing family", names)
	}
}

func TestMetricsTwoTransportsWrappedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, client := range []string{"a", "b"} {
		wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"client": client}, reg)
		tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Registerer: wrapped, Endpoints: []Endpoint{hostEndpoint("e", 0)}})
		chat(t, tr)
	}
	for _, client := range []string{"a", "b"} {
		labels := map[string]string{"client": client, "endpoint": "e", "outcome": "200"}
		if got := metricValue(t, reg, "failover_attempts_total", labels); got != 1 {
			t.Errorf("attempts%v = %v, want 1", labels, got)
		}
	}
}

// TestMetricsBreakerStateNotStale: once an open breaker's timeout has
// passed, a scrape reports it half-open although no request (and no call to
// Health) has come since, as Health would.
func TestMetricsBreakerStateNotStale(t *testing.T) {
	reg := prometheus.NewRegistry()
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { return reply(500, "down"), nil })
	tr, clk := newTestTransport(t, Config{Base: base, Registerer: reg, MaxRetries: -1,
		Breaker:   BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Minute},
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	chat(t, tr)
	state := func() float64 {
		return metricValue(t, reg, "failover_breaker_state", map[string]string{"endpoint": "a"})
	}
	if got := state(); got != float64(StateOpen) {
		t.Fatalf("breaker state %v after the failure, want %v (open)", got, float64(StateOpen))
	}
	clk.Advance(time.Minute)
	if got := state(); got != float64(StateHalfOpen) {
		t.Fatalf("breaker state %v once the open timeout passed, want %v (half-open)", got, float64(StateHalfOpen))
	}
}

// TestMetricsCountCanceledAttempt: an attempt sent and then given up by
// the caller is counted, with outcome canceled, as Health counts it.
func TestMetricsCountCanceledAttempt(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		cancel()
		<-req.Context().Done()
		return nil, req.Context().Err()
	})
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if _, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, false)); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if got := metricValue(t, reg, "failover_attempts_total", map[string]string{"endpoint": "a", "outcome": "canceled"}); got != 1 {
		t.Errorf("canceled attempts = %v, want 1", got)
	}
	if got := healthOf(t, tr, "a").Requests; got != 1 {
		t.Errorf("Health requests = %d, want 1", got)
	}
}

// TestMetricsAttemptEndsAtHeaders: an attempt stops being in flight when
// its response headers arrive, before its error body is read for
// classification.
func TestMetricsAttemptEndsAtHeaders(t *testing.T) {
	reg := prometheus.NewRegistry()
	var inflightAtRead []float64
	base := roundTripFunc(func(*http.Request) (*http.Response, error) {
		resp := reply(400, "")
		resp.Body = io.NopCloser(readFunc(func(p []byte) (int, error) {
			inflightAtRead = append(inflightAtRead, metricValue(t, reg, "failover_attempts_in_flight", map[string]string{"endpoint": "a"}))
			return copy(p, "bad request"), io.EOF
		}))
		return resp, nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, MaxRetries: -1, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	if status, _ := chat(t, tr); status != 400 {
		t.Fatalf("status %d, want 400", status)
	}
	if len(inflightAtRead) == 0 || inflightAtRead[0] != 0 {
		t.Fatalf("in flight while the error body was read: %v, want 0", inflightAtRead)
	}
}

// readFunc adapts a function to io.Reader.
type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// attemptCounts gathers reg and returns failover_attempts_total as a map
// from "endpoint outcome" to its value, every series it has.
func attemptCounts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "failover_attempts_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var endpoint, outcome string
			for _, p := range m.GetLabel() {
				switch p.GetName() {
				case "endpoint":
					endpoint = p.GetValue()
				case "outcome":
					outcome = p.GetValue()
				}
			}
			got[endpoint+" "+outcome] = m.GetCounter().GetValue()
		}
	}
	return got
}

// TestMetricsTimeoutOutcome: an attempt cut by its endpoint's Timeout is
// counted under outcome "timeout", not "error".
func TestMetricsTimeoutOutcome(t *testing.T) {
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			<-req.Context().Done() // hangs until the attempt's timeout
			return nil, req.Context().Err()
		}
		return reply(200, "ok"), nil
	})
	a := hostEndpoint("a", 0)
	a.Timeout = 10 * time.Millisecond
	reg := prometheus.NewRegistry()
	tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{a, hostEndpoint("b", 1)}})
	if code, body := chat(t, tr); code != 200 || body != "ok" {
		t.Fatalf("got %d %q, want b's answer after a timed out", code, body)
	}
	want := map[string]float64{"a timeout": 1, "b 200": 1}
	if got := attemptCounts(t, reg); !maps.Equal(got, want) {
		t.Fatalf("failover_attempts_total %v, want %v", got, want)
	}
}

// TestMetricsStatusOutcomeLabels: every status in 100-599 is counted under
// its own code, whether or not it is one of the cached commonCodes; a
// status outside that range is counted as "other".
func TestMetricsStatusOutcomeLabels(t *testing.T) {
	for _, tc := range []struct {
		status    int
		wantLabel string
		failover  bool // the status fails over to b
	}{
		{503, "503", true}, // a cached common code
		{529, "529", true}, // not cached
		{599, "599", true},
		{302, "302", false},
		{101, "101", false},
		{600, "other", true},
		{99, "other", false},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				if req.URL.Host == "a.test" {
					return reply(tc.status, "a"), nil
				}
				return reply(200, "ok"), nil
			})
			reg := prometheus.NewRegistry()
			tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := map[string]float64{"a " + tc.wantLabel: 1}
			if tc.failover {
				want["b 200"] = 1
			}
			if got := attemptCounts(t, reg); !maps.Equal(got, want) {
				t.Fatalf("failover_attempts_total %v, want %v", got, want)
			}
		})
	}
}
