package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestLogsJSONRecordsCarryFieldsNotKeys: over real connections (refused,
// failing, revoked, rate limited, hanging past its Timeout), slog's JSON
// handler at Debug gets a breaker change and a cooldown at WARN and failed
// attempts at DEBUG, each with its fields, and never an API key.
func TestLogsJSONRecordsCarryFieldsNotKeys(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	faults := []struct {
		name  string
		fault fakeopenai.Fault
	}{
		{"refused", fakeopenai.Refuse()},
		{"failing", fakeopenai.StatusFault(500)},
		{"revoked", fakeopenai.StatusFault(401)},
		{"limited", fakeopenai.RateLimited("2")},
		{"hanging", fakeopenai.Hang()},
		{"healthy", fakeopenai.Healthy()},
	}
	var eps []Endpoint
	for i, f := range faults {
		s := upstream(t, f.name)
		s.SetFault(f.fault)
		e := Endpoint{Name: f.name, BaseURL: s.URL(), APIKey: fmt.Sprintf("sk-test-SECRET-%d", i+1), Priority: i}
		if f.name == "hanging" {
			e.Timeout = 100 * time.Millisecond
		}
		eps = append(eps, e)
	}
	tr, _ := newTestTransport(t, Config{Endpoints: eps, Logger: logger, MaxRetries: 10, Breaker: BreakerConfig{FailureThreshold: 1}})
	chatOK(t, tr, "healthy")

	// And a request that fails everywhere, for the error path.
	eps[len(eps)-1].Disabled = true
	tr2, _ := newTestTransport(t, Config{Endpoints: eps, Logger: logger, MaxRetries: 10})
	if resp, err := tr2.RoundTrip(chatRequest(t, context.Background(), clientBase, false)); err == nil {
		resp.Body.Close()
	} else if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error carries a key: %v", err)
	}

	logs := buf.String()
	var breaker, cooldown, failed bool
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		has := func(keys ...string) bool {
			for _, k := range keys {
				if _, ok := rec[k]; !ok {
					return false
				}
			}
			return true
		}
		switch rec["msg"] {
		case "failover: circuit breaker state changed":
			breaker = breaker || rec["level"] == "WARN" && has("endpoint", "from", "to")
		case "failover: endpoint cooling down":
			cooldown = cooldown || rec["level"] == "WARN" && has("endpoint", "status", "for")
		case "failover: attempt failed":
			failed = failed || rec["level"] == "DEBUG" && has("endpoint", "attempt", "outcome", "result")
		}
	}
	if !breaker || !cooldown || !failed {
		t.Errorf("logs lack a breaker change (%v), a cooldown (%v) or a debug line (%v):\n%s", breaker, cooldown, failed, logs)
	}
	if strings.Contains(logs, "SECRET") {
		t.Errorf("logs carry a key:\n%s", logs)
	}
}

// fmtHandler is a slog.Handler that writes each record with every
// attribute's value printed by %v, %+v and %#v, as a careless handler
// might: whatever a value holds, the output shows.
type fmtHandler struct {
	w     *syncBuffer
	attrs []slog.Attr
}

func (h *fmtHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *fmtHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%v %q", r.Level, r.Message)
	write := func(a slog.Attr) bool {
		v := a.Value.Resolve().Any()
		fmt.Fprintf(&b, " %s=%v %s=%+v %s=%#v", a.Key, v, a.Key, v, a.Key, v)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	_, err := h.w.Write([]byte(b.String()))
	return err
}

func (h *fmtHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &fmtHandler{w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *fmtHandler) WithGroup(string) slog.Handler { return h }

// TestLogsNeverCarryKeysAnyHandler: with Debug on, through slog's text
// handler, its JSON handler and a handler printing every value with %v,
// %+v and %#v, a run with failures, cooldowns and breaker changes logs
// those events and never an API key nor a secret in a BaseURL's query.
func TestLogsNeverCarryKeysAnyHandler(t *testing.T) {
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	for _, tc := range []struct {
		name    string
		handler func(*syncBuffer) slog.Handler
		// want are substrings the logs must have, as this handler
		// writes them.
		want []string
	}{
		{"text", func(w *syncBuffer) slog.Handler { return slog.NewTextHandler(w, opts) }, []string{
			`level=WARN msg="failover: circuit breaker state changed" endpoint=revoked from=closed to=open`,
			`level=WARN msg="failover: endpoint cooling down" endpoint=limited status=429 for=2s`,
			`level=DEBUG msg="failover: attempt failed" endpoint=refused attempt=1 outcome=failure result=error`,
			`level=DEBUG msg="failover: attempt failed" endpoint=failing attempt=2 outcome=failure result=500`,
			`level=DEBUG msg="failover: attempt failed" endpoint=revoked attempt=3 outcome=key-rejected result=401`,
			`level=DEBUG msg="failover: attempt failed" endpoint=limited attempt=4 outcome=throttled result=429`,
		}},
		{"json", func(w *syncBuffer) slog.Handler { return slog.NewJSONHandler(w, opts) }, []string{
			`"level":"WARN","msg":"failover: circuit breaker state changed","endpoint":"revoked","from":"closed","to":"open"`,
			`"level":"WARN","msg":"failover: endpoint cooling down","endpoint":"limited","status":429,"for":2000000000`,
			`"level":"DEBUG","msg":"failover: attempt failed","endpoint":"refused","attempt":1,"outcome":"failure","result":"error"`,
		}},
		{"fmt %v %+v %#v", func(w *syncBuffer) slog.Handler { return &fmtHandler{w: w} }, []string{
			`WARN "failover: circuit breaker state changed" endpoint=revoked endpoint=revoked endpoint="revoked" from=closed`,
			`WARN "failover: endpoint cooling down" endpoint=limited endpoint=limited endpoint="limited" status=429`,
			`DEBUG "failover: attempt failed" endpoint=refused endpoint=refused endpoint="refused" attempt=1`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			logger := slog.New(tc.handler(&buf))
			script := func(req *http.Request, n int) (*http.Response, error) {
				switch req.URL.Host {
				case "refused.test":
					// As http.Client reports it: the whole URL, query
					// and all.
					return nil, &url.Error{Op: "Post", URL: req.URL.String(), Err: errors.New("connection refused")}
				case "failing.test":
					return reply(500, "down"), nil
				case "revoked.test":
					return reply(401, "revoked"), nil
				case "limited.test":
					return reply(429, "busy", "Retry-After", "2"), nil
				}
				return reply(200, "ok"), nil
			}
			var eps []Endpoint
			for i, name := range []string{"refused", "failing", "revoked", "limited", "healthy"} {
				eps = append(eps, Endpoint{
					Name:     name,
					BaseURL:  fmt.Sprintf("https://%s.test/v1?api-key=QUERY-SECRET-%d", name, i),
					APIKey:   fmt.Sprintf("sk-test-SECRET-%d", i),
					Priority: i,
				})
			}
			cfg := Config{Base: newScriptedBase(script), Endpoints: eps, Logger: logger, MaxRetries: 4,
				Breaker: BreakerConfig{FailureThreshold: 1}}
			tr, _ := newTestTransport(t, cfg)
			if code, body := chat(t, tr); code != 200 || body != "ok" {
				t.Fatalf("got %d %q, want healthy's answer", code, body)
			}

			// And a request that fails on every endpoint.
			cfg.Endpoints = append([]Endpoint(nil), eps...)
			cfg.Endpoints[len(eps)-1].Disabled = true
			tr2, _ := newTestTransport(t, cfg)
			resp, err := tr2.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
			if err == nil {
				resp.Body.Close()
			} else if strings.Contains(fmt.Sprintf("%v %+v", err, err), "SECRET") {
				t.Errorf("error carries a secret: %v", err)
			}

			logs := buf.String()
			if strings.Contains(logs, "SECRET") {
				t.Errorf("logs carry a key or a query secret:\n%s", logs)
			}
			for _, w := range tc.want {
				if !strings.Contains(logs, w) {
					t.Errorf("logs lack %s\nin:\n%s", w, logs)
				}
			}
		})
	}
}
