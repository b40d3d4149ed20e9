package failover

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHealthShowsBudgets: Health, /healthz and the status page show what
// the provider said is left, the MaxTPM budget, a paced state and the
// shared state.
func TestHealthShowsBudgets(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		return reply(200, "ok", hdrRemainingRequests, "0", hdrResetRequests, "3s",
			hdrRemainingTokens, "5000", hdrResetTokens, "20s", hdrLimitRequests, "60", hdrLimitTokens, "90000"), nil
	})
	a := hostEndpoint("a", 0)
	a.MaxTPM = 60000
	hub := newMemHub(newFakeClock())
	tr, clk := newTestTransport(t, Config{Base: base, Shared: hub.join(), Endpoints: []Endpoint{a, hostEndpoint("b", 1)}})
	settle(tr)
	chat(t, tr)
	settle(tr)
	now := clk.Now()
	h := healthOf(t, tr, "a")
	want := ProviderLimits{RemainingRequests: 0, RemainingTokens: 5000, LimitRequests: 60, LimitTokens: 90000,
		RequestsReset: now.Add(3 * time.Second), TokensReset: now.Add(20 * time.Second)}
	if h.Provider == nil || *h.Provider != want {
		t.Fatalf("provider limits %+v, want %+v", h.Provider, want)
	}
	est := estimateTokens([]byte(chatBody(false)), "/chat/completions")
	if h.State != StatePaced || h.TokenBudget != float64(60000-est) {
		t.Fatalf("state %v, token budget %v; want paced, %d", h.State, h.TokenBudget, 60000-est)
	}
	if healthOf(t, tr, "b").TokenBudget != -1 {
		t.Fatal("b has no MaxTPM, and its token budget is not -1")
	}

	rec := httptest.NewRecorder()
	tr.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var rep HealthReport
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Shared != "connected" || rep.Endpoints[0].State != StatePaced || rep.Endpoints[0].Provider == nil {
		t.Fatalf("/healthz: shared %q, a %v %+v; want connected, paced, with its limits", rep.Shared, rep.Endpoints[0].State, rep.Endpoints[0].Provider)
	}

	rec = httptest.NewRecorder()
	tr.StatusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	page, _ := io.ReadAll(rec.Body)
	for _, s := range []string{`data-state="paced"`, "0 req, 5000 tok left (resets in 3s); TPM budget", ">connected<"} {
		if !strings.Contains(string(page), s) {
			t.Errorf("the status page lacks %q", s)
		}
	}
}
