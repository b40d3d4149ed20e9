package failover

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHealingMetrics: probes counted by result, the probe state, the
// slow-start factor and the latency estimate as gauges read at scrape
// time; a removed endpoint's probe series are deleted.
func TestHealingMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ps := newProbeSetup(t, Config{Probe: ProbeConfig{Interval: 10 * time.Second}, Registerer: reg,
		SlowStart: 100 * time.Second, Balancer: BalancerLeastLatency})
	a := map[string]string{"endpoint": "a"}
	ps.openA(t)
	next := ps.nextProbe(t)
	if v := metricValue(t, reg, "failover_probe_state", a); v != 1 {
		t.Fatalf("probe state %v while a probe is scheduled, want 1", v)
	}
	ps.clk.AdvanceTo(next) // fails
	next = ps.nextProbe(t)
	ps.hosts.set("a", 200)
	ps.clk.AdvanceTo(next) // succeeds
	waitState(t, ps.tr, "a", StateClosed)
	ps.clk.BlockUntil(t, 0)
	for result, want := range map[string]float64{"failure": 1, "success": 1} {
		if v := metricValue(t, reg, "failover_probes_total", map[string]string{"endpoint": "a", "result": result}); v != want {
			t.Errorf("probes %s: %v, want %v", result, v, want)
		}
	}
	eventually(t, "a's loop ended", func() bool { return metricValue(t, reg, "failover_probe_state", a) == 0 })
	ps.clk.Advance(30 * time.Second)
	if v := metricValue(t, reg, "failover_slow_start_factor", a); math.Abs(v-0.3) > 1e-9 {
		t.Errorf("slow-start factor %v 30s into a 100s window, want 0.3", v)
	}
	if v := metricValue(t, reg, "failover_slow_start_factor", map[string]string{"endpoint": "b"}); v != 1 {
		t.Errorf("b's slow-start factor %v, want 1", v)
	}
	answeredBy(t, ps.tr, "a")
	if v := metricValue(t, reg, "failover_latency_estimate_seconds", a); v <= 0 {
		t.Errorf("latency estimate %v after an answer, want a sample", v)
	}

	if err := ps.tr.Update(Config{Endpoints: []Endpoint{hostEndpoint("b", 0)}}); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" && l.GetValue() == "a" {
					t.Errorf("%s still has a series of the removed endpoint a", f.GetName())
				}
			}
		}
	}
}

// TestHealingHealthJSON: the health report's fields of the healing
// features round-trip through JSON, and are absent when unset.
func TestHealingHealthJSON(t *testing.T) {
	now := time.Unix(1_800_000_000, 0).UTC()
	h := EndpointHealth{Name: "a", ProbeState: ProbeStateScheduled, NextProbeAt: now, LastProbeAt: now.Add(-time.Second),
		LastProbeResult: "failure", SlowStart: 0.5, LatencyEstimate: 20 * time.Millisecond}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var back EndpointHealth
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, h) {
		t.Fatalf("round trip: %+v, want %+v", back, h)
	}
	var m map[string]any
	b, _ = json.Marshal(EndpointHealth{Name: "a"})
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"probe_state", "next_probe_at", "last_probe_at", "last_probe_result", "slow_start", "latency_estimate_ns"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s present when unset: %s", k, b)
		}
	}
}
