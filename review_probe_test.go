package failover

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestReviewAzureProbeSendsAPIKey: a recovery probe carries the endpoint's
// key "as a routed request would carry it" (README): for an Azure OpenAI
// endpoint that is the api-key header, not Authorization. A probe that
// sends the key as Authorization gets Azure's 401, so the endpoint, back
// up, would never be brought back by its probes (each counted a refused
// key, the next one an OpenTimeout away).
func TestReviewAzureProbeSendsAPIKey(t *testing.T) {
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
