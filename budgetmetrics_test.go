package failover

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsBudgets: failover_provider_remaining shows what the
// provider's headers said is left, per endpoint and budget, and
// failover_shared_leases_total the leases this process took from each of
// the fleet's budgets of an endpoint.
func TestMetricsBudgets(t *testing.T) {
	clk := newFakeClock()
	log := &leaseLog{memShared: newMemHub(clk).join()}
	// x counts down as the provider does: n requests in, 100-n requests
	// and 90000-n×est tokens are left.
	est := int(estimateTokens([]byte(chatBody(false)), "/chat/completions"))
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "y.test" {
			return reply(200, "ok"), nil
		}
		return reply(200, "ok", hdrRemainingRequests, strconv.Itoa(100-n), hdrResetRequests, "1s",
			hdrRemainingTokens, strconv.Itoa(90000-est*n), hdrResetTokens, "6s"), nil
	})
	x := hostEndpoint("x", 0)
	x.MaxRPS, x.Burst, x.MaxTPM = 100, 100, 60000
	reg := prometheus.NewRegistry()
	tr := newTestTransportOn(t, Config{Base: base, Shared: log, Registerer: reg, MaxWait: -1,
		Endpoints: []Endpoint{x, hostEndpoint("y", 1)}}, clk)
	settle(tr)
	for range 30 {
		if code, _ := chat(t, tr); code != 200 {
			t.Fatalf("status %d, want 200", code)
		}
		settle(tr)
		clk.Advance(10 * time.Millisecond)
	}
	log.mu.Lock()
	rps, tpm := log.byKey["rps:x"], log.byKey["tpm:x"]
	log.mu.Unlock()
	if got := base.Hits("x.test"); got != 30 {
		t.Fatalf("x got %d of the 30 requests, want all", got)
	}
	if rps < 2 || tpm < 2 {
		t.Fatalf("%d request leases and %d token leases were granted, want renewals of both", rps, tpm)
	}
	want := fmt.Sprintf(`
# HELP failover_provider_remaining The provider's remaining requests or tokens for the endpoint (budget), as its headers said, less what was sent since.
# TYPE failover_provider_remaining gauge
failover_provider_remaining{budget="requests",endpoint="x"} 70
failover_provider_remaining{budget="tokens",endpoint="x"} %d
# HELP failover_shared_leases_total Leases this process took from the fleet's shared budget of the endpoint (budget: requests or tokens).
# TYPE failover_shared_leases_total counter
failover_shared_leases_total{budget="requests",endpoint="x"} %d
failover_shared_leases_total{budget="tokens",endpoint="x"} %d
`, 90000-30*est, rps, tpm)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "failover_provider_remaining", "failover_shared_leases_total"); err != nil {
		t.Fatal(err)
	}
}
