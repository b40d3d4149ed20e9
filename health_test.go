package failover

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthHandler(t *testing.T) {
	script := func(req *http.Request, n int) (*http.Response, error) {
		return reply(401, `{"error":{"code":"invalid_api_key"}}`), nil
	}
	cases := []struct {
		name       string
		requests   int // chat requests sent first; each 401 opens one breaker
		disabled   bool
		wantCode   int
		wantStatus string
		wantElig   int
	}{
		{"all healthy", 0, false, http.StatusOK, "ok", 2},
		{"one key revoked", 1, false, http.StatusOK, "ok", 1},
		{"every key revoked", 2, false, http.StatusServiceUnavailable, "unavailable", 0},
		{"one revoked, the other disabled", 1, true, http.StatusServiceUnavailable, "unavailable", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := hostEndpoint("a", 0), hostEndpoint("b", 1)
			a.APIKey, b.APIKey = "sk-health-SECRET-a", "sk-health-SECRET-b"
			b.Disabled = tc.disabled
			tr, _ := newTestTransport(t, Config{Base: newScriptedBase(script), MaxRetries: -1, Endpoints: []Endpoint{a, b}})
			for range tc.requests {
				chat(t, tr)
			}
			rec := httptest.NewRecorder()
			tr.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.wantCode, rec.Body)
			}
			if strings.Contains(rec.Body.String(), "SECRET") {
				t.Fatalf("health body carries a key: %s", rec.Body)
			}
			var rep HealthReport
			if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
				t.Fatalf("body is not a HealthReport: %v\n%s", err, rec.Body)
			}
			if rep.Status != tc.wantStatus || rep.Eligible != tc.wantElig || len(rep.Endpoints) != 2 {
				t.Fatalf("report %+v, want status %q with %d eligible of 2", rep, tc.wantStatus, tc.wantElig)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	t.Run("method not allowed", func(t *testing.T) {
		tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Endpoints: []Endpoint{hostEndpoint("a", 0)}})
		rec := httptest.NewRecorder()
		tr.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("POST got %d, want 405", rec.Code)
		}
	})
}
