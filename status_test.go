package failover

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// Keys of the status tests' endpoints: no page or document may show them.
const (
	statusDownKey = "sk-status-down-key-0123456789"
	statusUpKey   = "sk-status-up-key-9876543210"
)

// statusTransport returns a Transport over two fake upstreams: "down"
// (priority 1) answering 500, whose breaker opens at its first failure,
// and "up" (priority 2), healthy; downName names the first. It sends one
// chat request, which fails over from down to up.
func statusTransport(t *testing.T, downName string) *Transport {
	t.Helper()
	down := fakeopenai.New(fakeopenai.WithName("down"))
	t.Cleanup(down.Close)
	down.SetFault(fakeopenai.StatusFault(http.StatusInternalServerError))
	up := fakeopenai.New(fakeopenai.WithName("up"))
	t.Cleanup(up.Close)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	tr, err := New(Config{
		Endpoints: []Endpoint{
			{Name: downName, BaseURL: down.URL(), APIKey: statusDownKey, Priority: 1},
			{Name: "up", BaseURL: up.URL(), APIKey: statusUpKey, Priority: 2, MaxRPS: 100},
		},
		Base:    base,
		Breaker: BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, DefaultClientBaseURL+"/chat/completions",
		strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: status %d, want 200 from up", resp.StatusCode)
	}
	return tr
}

// getStatus serves one request to h and returns the response and body.
func getStatus(t *testing.T, h http.Handler, method, target string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), method, target, nil))
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// checkNoKey fails t if text shows either endpoint's key.
func checkNoKey(t *testing.T, what, text string) {
	t.Helper()
	for _, key := range []string{statusDownKey, statusUpKey} {
		if strings.Contains(text, key) {
			t.Errorf("%s shows a key", what)
		}
	}
}

// rowRE matches an endpoint's row and captures its name, state and cells.
var rowRE = regexp.MustCompile(`(?s)<tr data-endpoint="([^"]*)" data-state="([^"]*)" class="state-[^"]*">(.*?)</tr>`)

// cell returns the text of a row's cell data-field=field.
func cell(t *testing.T, row, field string) string {
	t.Helper()
	m := regexp.MustCompile(`data-field="` + field + `"[^>]*>([^<]*)<`).FindStringSubmatch(row)
	if m == nil {
		t.Fatalf("no cell %q in row %s", field, row)
	}
	return m[1]
}

func TestStatusHandlerPage(t *testing.T) {
	tr := statusTransport(t, "down")
	resp, body := getStatus(t, tr.StatusHandler(), http.MethodGet, "/status")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	checkNoKey(t, "the page", body)
	rows := rowRE.FindAllStringSubmatch(body, -1)
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2:\n%s", len(rows), body)
	}
	for _, tc := range []struct {
		name, state, requests, failures, lastError, tokens string
	}{
		{"down", "open", "1", "1 (1 in a row)", "status 500, ", "no limit"},
		{"up", "closed", "1", "0", "-", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var row []string
			for _, r := range rows {
				if r[1] == tc.name {
					row = r
				}
			}
			if row == nil {
				t.Fatalf("no row for %s", tc.name)
			}
			if row[2] != tc.state {
				t.Errorf("state %q, want %q", row[2], tc.state)
			}
			if got := cell(t, row[3], "requests"); got != tc.requests {
				t.Errorf("requests %q, want %q", got, tc.requests)
			}
			if got := cell(t, row[3], "failures"); got != tc.failures {
				t.Errorf("failures %q, want %q", got, tc.failures)
			}
			if got := cell(t, row[3], "last_error"); !strings.HasPrefix(got, tc.lastError) {
				t.Errorf("last error %q, want it to begin %q", got, tc.lastError)
			}
			if got := cell(t, row[3], "since"); !strings.HasPrefix(got, "for ") {
				t.Errorf("since %q, want \"for ...\"", got)
			}
			if got := cell(t, row[3], "tokens"); tc.tokens != "" && got != tc.tokens {
				t.Errorf("tokens %q, want %q", got, tc.tokens)
			}
		})
	}
	if !strings.Contains(body, `data-status="ok"`) || !strings.Contains(body, "1 of 2 endpoints eligible") {
		t.Error("the page does not say the transport is ok with 1 of 2 endpoints eligible")
	}
}

// TestStatusHandlerCSP checks that the page's Content-Security-Policy
// allows exactly the inline script and style it serves: a page whose
// script the browser refused would never refresh.
func TestStatusHandlerCSP(t *testing.T) {
	tr := statusTransport(t, "down")
	resp, body := getStatus(t, tr.StatusHandler(), http.MethodGet, "/status")
	csp := resp.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no <%s> in the page", tag)
		}
		if want := tag + "-src '" + cspHash(m[1]) + "'"; !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	// No external asset: the only reference is the empty icon, which
	// keeps the browser from asking for /favicon.ico.
	for _, m := range regexp.MustCompile(`(?:src|href)=["']?([^"' >]*)`).FindAllStringSubmatch(body, -1) {
		if m[1] != "data:," {
			t.Errorf("the page refers to %q", m[1])
		}
	}
}

// TestStatusHandlerEscapes checks that an endpoint's name reaches the page
// as text, never as markup.
func TestStatusHandlerEscapes(t *testing.T) {
	const name = `<img src=x onerror="alert(1)">&`
	tr := statusTransport(t, name)
	_, body := getStatus(t, tr.StatusHandler(), http.MethodGet, "/status")
	if strings.Contains(body, "<img") {
		t.Errorf("the page holds the name as markup:\n%s", body)
	}
	if !strings.Contains(body, "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;") {
		t.Errorf("the page lacks the escaped name:\n%s", body)
	}
}

func TestStatusHandlerJSON(t *testing.T) {
	tr := statusTransport(t, "down")
	before := time.Now()
	resp, body := getStatus(t, tr.StatusHandler(), http.MethodGet, "/status?format=json")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	checkNoKey(t, "the JSON", body)
	var doc struct {
		HealthReport
		Now time.Time `json:"now"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if doc.Status != "ok" || doc.Eligible != 1 || len(doc.Endpoints) != 2 {
		t.Errorf("status %q, eligible %d, %d endpoints; want ok, 1, 2", doc.Status, doc.Eligible, len(doc.Endpoints))
	}
	if doc.Now.Before(before) || doc.Now.After(time.Now()) {
		t.Errorf("now %v is not the time of the request", doc.Now)
	}
	if len(doc.Endpoints) == 2 && (doc.Endpoints[0].State != StateOpen || doc.Endpoints[1].State != StateClosed) {
		t.Errorf("states %v, %v; want open, closed", doc.Endpoints[0].State, doc.Endpoints[1].State)
	}
}

// TestStatusHandlerUnavailable checks that the JSON answers 503 when no
// endpoint is eligible, and the page still 200, saying so.
func TestStatusHandlerUnavailable(t *testing.T) {
	// One endpoint disabled, the other's key refused: its breaker opens.
	base := newScriptedBase(statusScript(map[string][]int{"open": {401}}))
	tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: -1, Endpoints: []Endpoint{
		hostEndpoint("open", 0), {Name: "off", BaseURL: "https://off.test/v1", Disabled: true}}})
	chat(t, tr)
	h := tr.StatusHandler()
	if resp, body := getStatus(t, h, http.MethodGet, "/status?format=json"); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"status": "unavailable"`) {
		t.Errorf("JSON: status %d, body %s; want 503, unavailable", resp.StatusCode, body)
	}
	resp, body := getStatus(t, h, http.MethodGet, "/status")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-status="unavailable"`) || !strings.Contains(body, `data-state="disabled"`) ||
		!strings.Contains(body, `data-state="open"`) {
		t.Errorf("page: status %d; want 200, unavailable, an open and a disabled row:\n%s", resp.StatusCode, body)
	}
}

func TestStatusHandlerMethods(t *testing.T) {
	tr, err := New(Config{Endpoints: []Endpoint{{Name: "e", BaseURL: "http://127.0.0.1:1/v1"}}})
	if err != nil {
		t.Fatal(err)
	}
	h := tr.StatusHandler()
	for _, tc := range []struct {
		method, target string
		status         int
		wantBody       bool
	}{
		{http.MethodGet, "/status", http.StatusOK, true},
		{http.MethodHead, "/status", http.StatusOK, false},
		{http.MethodHead, "/status?format=json", http.StatusOK, false},
		{http.MethodPost, "/status", http.StatusMethodNotAllowed, true},
		{http.MethodDelete, "/status?format=json", http.StatusMethodNotAllowed, true},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			resp, body := getStatus(t, h, tc.method, tc.target)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if (body != "") != tc.wantBody {
				t.Errorf("body %q; want one: %v", body, tc.wantBody)
			}
			if tc.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q, want GET, HEAD", resp.Header.Get("Allow"))
			}
			if tc.method == http.MethodHead && resp.Header.Get("Content-Length") == "0" {
				t.Error("HEAD: Content-Length 0, want the GET body's length")
			}
		})
	}
}

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0ms"},
		{0, "0ms"},
		{849 * time.Millisecond, "849ms"},
		{time.Second, "1s"},
		{59*time.Second + 999*time.Millisecond, "59s"},
		{time.Minute, "1m"},
		{3*time.Minute + 5*time.Second, "3m 5s"},
		{2*time.Hour + time.Minute + 30*time.Second, "2h 1m"},
		{49 * time.Hour, "2d 1h"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{400 * time.Microsecond, "<1ms"},
		{183 * time.Millisecond, "183ms"},
		{2500 * time.Millisecond, "2500ms"},
	} {
		if got := humanLatency(tc.d); got != tc.want {
			t.Errorf("humanLatency(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestStatusHandlerModels: the Models cell shows each endpoint's models
// and the names it sends them under ("all" without Models) and how many
// requests skipped it for another model; the JSON carries the same.
func TestStatusHandlerModels(t *testing.T) {
	log := &sendLog{}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
		{Name: "router", BaseURL: "https://router.test/v1", Priority: 1, Models: map[string]string{"gpt-4o-mini": "openai/gpt-4o-mini", "gpt-4o": ""}},
		{Name: "openai", BaseURL: "https://openai.test/v1", Priority: 2},
	}})
	sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("o1"), false))
	_, page := getStatus(t, tr.StatusHandler(), http.MethodGet, "/status")
	want := map[string]string{"router": "gpt-4o, gpt-4o-mini \u2192 openai/gpt-4o-mini (1 skipped)", "openai": "all"}
	rows := rowRE.FindAllStringSubmatch(page, -1)
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for _, row := range rows {
		if got := cell(t, row[3], "models"); got != want[row[1]] {
			t.Errorf("%s: models cell %q, want %q", row[1], got, want[row[1]])
		}
	}
	_, doc := getStatus(t, tr.StatusHandler(), http.MethodGet, "/status?format=json")
	if !strings.Contains(doc, `"models": {`) || !strings.Contains(doc, `"gpt-4o": "gpt-4o"`) || !strings.Contains(doc, `"model_skips": 1`) {
		t.Errorf("JSON lacks the models or the skips:\n%s", doc)
	}
}

// TestStatusHealCells: the cells of recovery probes, slow start and the
// latency estimate, as the page shows them (its script formats the JSON
// the same way, which the browser test checks).
func TestStatusHealCells(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name                   string
		h                      EndpointHealth
		probe, slow, latencyEs string
	}{
		{"none", EndpointHealth{}, "-", "-", "-"},
		{"scheduled", EndpointHealth{ProbeState: ProbeStateScheduled, NextProbeAt: now.Add(12 * time.Second),
			LastProbeResult: "failure", LastProbeAt: now.Add(-3 * time.Second)}, "next in 12s; last failure 3s ago", "-", "-"},
		{"probing", EndpointHealth{ProbeState: ProbeStateProbing}, "probing", "-", "-"},
		{"recovered", EndpointHealth{LastProbeResult: "success", LastProbeAt: now.Add(-90 * time.Second),
			SlowStart: 0.255, LatencyEstimate: 1500 * time.Microsecond}, "last success 1m 30s ago", "26%", "2ms"},
		{"fast", EndpointHealth{LatencyEstimate: 300 * time.Microsecond}, "-", "-", "<1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStatusRow(tc.h, now)
			if r.Probe != tc.probe || r.SlowStart != tc.slow || r.LatencyEst != tc.latencyEs {
				t.Fatalf("cells %q, %q, %q; want %q, %q, %q", r.Probe, r.SlowStart, r.LatencyEst, tc.probe, tc.slow, tc.latencyEs)
			}
		})
	}
}
