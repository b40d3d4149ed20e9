package failover

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthStates(t *testing.T) {
	const secret = "sk-test-SECRET-health"
	hosts := newHostReplies()
	hosts.set("key", 401, `{"error":{"code":"invalid_api_key"}}`)
	hosts.set("cool", 429, `{"error":{"code":"rate_limit_exceeded"}}`, "Retry-After", "30")
	var eps []Endpoint
	for i, name := range []string{"key", "cool", "ok", "off"} {
		e := hostEndpoint(name, i)
		e.APIKey = secret
		e.Disabled = name == "off"
		eps = append(eps, e)
	}

	t.Run("closed open cooling-down disabled", func(t *testing.T) {
		tr, clk := newTestTransport(t, Config{Base: newScriptedBase(hosts.script), Endpoints: eps})
		answeredBy(t, tr, "ok")
		now := clk.Now()
		for _, want := range []struct {
			name                       string
			state                      State
			requests, failures, consec uint64
			lastErr                    string
		}{
			{"key", StateOpen, 1, 1, 1, "401"},
			{"cool", StateCoolingDown, 1, 1, 1, "429"},
			{"ok", StateClosed, 1, 0, 0, ""},
			{"off", StateDisabled, 0, 0, 0, ""},
		} {
			h := healthOf(t, tr, want.name)
			if h.State != want.state || h.Requests != want.requests || h.Failures != want.failures || h.ConsecutiveFailures != want.consec {
				t.Errorf("%s: %v, requests %d, failures %d, consecutive %d; want %v, %d, %d, %d", want.name,
					h.State, h.Requests, h.Failures, h.ConsecutiveFailures, want.state, want.requests, want.failures, want.consec)
			}
			if (want.lastErr == "") != (h.LastError == "") || !strings.Contains(h.LastError, want.lastErr) {
				t.Errorf("%s: last error %q, want one mentioning %q", want.name, h.LastError, want.lastErr)
			}
			if want.lastErr != "" && !h.LastErrorAt.Equal(now) {
				t.Errorf("%s: last error at %v, want %v", want.name, h.LastErrorAt, now)
			}
			if strings.Contains(h.LastError, "SECRET") || strings.Contains(h.BaseURL, "SECRET") {
				t.Errorf("%s: health carries the key: %+v", want.name, h)
			}
		}
		if h := healthOf(t, tr, "cool"); !h.CooldownUntil.Equal(now.Add(30 * time.Second)) {
			t.Errorf("cool: cooldown until %v, want %v", h.CooldownUntil, now.Add(30*time.Second))
		}
		clk.Advance(31 * time.Second)
		if s := healthOf(t, tr, "cool").State; s != StateClosed {
			t.Errorf("cool is %v after its cooldown, want closed", s)
		}
	})

	t.Run("half-open", func(t *testing.T) {
		tr, clk := newTestTransport(t, Config{Base: newScriptedBase(hosts.script), Endpoints: eps, Breaker: BreakerConfig{OpenTimeout: time.Minute}})
		answeredBy(t, tr, "ok")
		passOpenTimeout(t, tr, clk, "key", time.Minute)
	})
}

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

// TestHealthFleetReopened: once this process's open period is over (its
// own breaker half-open), a trial that failed in another process reopens
// the endpoint for the fleet: Health shows it open until the fleet's
// period ends, as the choice skips it, not half-open and eligible.
func TestHealthFleetReopened(t *testing.T) {
	clk, repA, repB, baseA, baseB, a, b := newFleetPair(t)
	repA.set("x", 500, `{}`)
	repB.set("x", 500, `{}`)
	answeredBy(t, a, "y") // a's breaker opens
	settle(a)

	clk.Advance(10 * time.Second) // the open period ends; b claims the trial and wins
	ex := endpointsOf(b)[0]
	ex.bud.fleet.gate(ex, b.fleet, clk.Now().UnixNano())
	settle(b)
	answeredBy(t, b, "y") // the fleet's trial fails on x
	settle(b)
	if got := baseB.Hits("x.test"); got != 1 {
		t.Fatalf("b sent %d requests to x, want its one trial", got)
	}

	want := clk.Now().Add(10 * time.Second)
	if h := healthOf(t, a, "x"); h.State != StateOpen || !h.FleetOpenUntil.Equal(want) || h.Eligible() {
		t.Fatalf("a's x: %v (fleet open until %v, eligible %v), want open until %v by the fleet", h.State, h.FleetOpenUntil, h.Eligible(), want)
	}
	answeredBy(t, a, "y")
	if got := baseA.Hits("x.test"); got != 1 {
		t.Fatalf("a sent %d requests to x, want only its first failure", got)
	}
}
