package failover

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestParseRateHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   []string
		want rateHeaders
		ok   bool
	}{
		{"none", nil, rateHeaders{}, false},
		{"openai", []string{
			"x-ratelimit-limit-requests", "500", "x-ratelimit-remaining-requests", "499", "x-ratelimit-reset-requests", "120ms",
			"x-ratelimit-limit-tokens", "30000", "x-ratelimit-remaining-tokens", "29000", "x-ratelimit-reset-tokens", "6m0s",
		}, rateHeaders{limitReq: 500, limitTok: 30000, leftReq: 499, leftTok: 29000, resetReq: 120 * time.Millisecond, resetTok: 6 * time.Minute}, true},
		{"azure, remaining only", []string{"x-ratelimit-remaining-requests", "3", "x-ratelimit-remaining-tokens", "1200"},
			rateHeaders{limitReq: -1, limitTok: -1, leftReq: 3, leftTok: 1200}, true},
		{"a fraction is cut", []string{"x-ratelimit-remaining-tokens", "99.7"},
			rateHeaders{limitReq: -1, limitTok: -1, leftReq: -1, leftTok: 99}, true},
		{"garbage remaining is no figure", []string{"x-ratelimit-remaining-requests", "lots", "x-ratelimit-remaining-tokens", "-5"}, rateHeaders{}, false},
		{"a bad reset is no reset", []string{"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "soon"},
			rateHeaders{limitReq: -1, limitTok: -1, leftReq: 0, leftTok: -1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for i := 0; i+1 < len(tc.kv); i += 2 {
				h.Set(tc.kv[i], tc.kv[i+1])
			}
			got, ok := parseRateHeaders(h)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("parseRateHeaders = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// limitedReply answers 200 with the provider's headers: leftReq requests
// left until resetReq, leftTok tokens left until resetTok ("" leaves a
// header out).
func limitedReply(code int, leftReq, resetReq, leftTok, resetTok string) *http.Response {
	var kv []string
	for _, p := range [][2]string{{hdrRemainingRequests, leftReq}, {hdrResetRequests, resetReq},
		{hdrRemainingTokens, leftTok}, {hdrResetTokens, resetTok}} {
		if p[1] != "" {
			kv = append(kv, p[0], p[1])
		}
	}
	return reply(code, `{"ok":true}`, kv...)
}

// TestPacingSkipsSpentEndpoint: a response saying no request is left sends
// the next requests to the next endpoint at once, without a 429, a
// cooldown or a breaker failure, until its reset; then the endpoint takes
// traffic again.
func TestPacingSkipsSpentEndpoint(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return limitedReply(200, "0", "2s", "", ""), nil
		}
		return reply(200, "b"), nil
	})
	reg := prometheus.NewRegistry()
	tr, clk := newTestTransport(t, Config{Base: base, Registerer: reg,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	chat(t, tr) // a answers: its window is spent
	for range 3 {
		chat(t, tr)
	}
	if a, b := base.Hits("a.test"), base.Hits("b.test"); a != 1 || b != 3 {
		t.Fatalf("hits a=%d b=%d, want 1 and 3: a spent endpoint must be skipped", a, b)
	}
	h := healthOf(t, tr, "a")
	if h.State != StatePaced || h.Failures != 0 || !h.CooldownUntil.IsZero() {
		t.Fatalf("a: state %v, failures %d, cooldown %v; want paced, 0, none", h.State, h.Failures, h.CooldownUntil)
	}
	if want := clk.Now().Add(2 * time.Second); !h.PacedUntil.Equal(want) || h.Provider == nil || h.Provider.RemainingRequests != 0 {
		t.Fatalf("a: paced until %v (provider %+v), want %v with 0 left", h.PacedUntil, h.Provider, want)
	}
	if got := testutil.ToFloat64(tr.metrics.budget.paced.WithLabelValues("a")); got != 3 {
		t.Fatalf("failover_pacing_skips_total{a} = %v, want 3", got)
	}
	clk.Advance(2 * time.Second)
	chat(t, tr)
	if a := base.Hits("a.test"); a != 2 {
		t.Fatalf("a got %d requests after its reset, want 2 in all", a)
	}
}

// TestPacingWaitsForTheSoonestReset: with no other endpoint, a request
// waits for the reset within MaxWait, and fails at once when the reset is
// beyond it, naming why.
func TestPacingWaitsForTheSoonestReset(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxWait time.Duration
		wantErr bool
	}{
		{"reset within MaxWait", 10 * time.Second, false},
		{"reset beyond MaxWait", time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(func(*http.Request, int) (*http.Response, error) {
				return limitedReply(200, "0", "1500ms", "", ""), nil
			})
			tr, clk := newTestTransport(t, Config{Base: base, MaxWait: tc.maxWait, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
			chat(t, tr)
			resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
			if tc.wantErr {
				if !errors.Is(err, ErrNoEndpointAvailable) || !strings.Contains(err.Error(), "provider's rate limit") {
					t.Fatalf("err = %v, want ErrNoEndpointAvailable naming the provider's rate limit", err)
				}
				if base.Hits("a.test") != 1 {
					t.Fatalf("a got %d requests, want 1", base.Hits("a.test"))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			closeBody(resp)
			if sleeps := clk.Sleeps(); len(sleeps) != 1 || sleeps[0] != 1500*time.Millisecond {
				t.Fatalf("sleeps %v, want one of 1.5s, until the reset", sleeps)
			}
		})
	}
}

// TestPacingTokens: an endpoint with fewer tokens left than a request's
// estimate is skipped for that request, not for a smaller one.
func TestPacingTokens(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return limitedReply(200, "100", "1s", "300", "1m"), nil
		}
		return reply(200, "b"), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	send := func(maxTokens string) {
		body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":` + maxTokens + `}`
		req, err := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, tr, req)
	}
	send("10") // a: 300 tokens left
	send("500")
	if a, b := base.Hits("a.test"), base.Hits("b.test"); a != 1 || b != 1 {
		t.Fatalf("hits a=%d b=%d, want the 500-token request on b", a, b)
	}
	send("10")
	if a := base.Hits("a.test"); a != 2 {
		t.Fatalf("a got %d requests, want the small one too", a)
	}
}

// TestPacingOrdersResponses: a response to a request sent well after the
// one applied last replaces the counts, so a window the provider reopened
// early is used at once; one sent at about the same time, or before, may
// only lower them (the provider counts requests sent together in any
// order), never raise them or move the reset.
func TestPacingOrdersResponses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ns := now.UnixNano()
	resp := func(left, reset string) *http.Response { return limitedReply(200, left, reset, "", "") }
	t.Run("older or together: lower only", func(t *testing.T) {
		var p pacing
		p.observe(rhOf(resp("5", "10s")), 2*time.Second, now, time.Minute, 0, 0)
		p.observe(rhOf(resp("9", "30s")), 1*time.Second, now, time.Minute, 0, 0)
		p.observe(rhOf(resp("7", "30s")), 2*time.Second+time.Millisecond, now, time.Minute, 0, 0)
		if got, reset := p.leftReq.Load(), p.resetReq.Load(); got != 5 || reset != now.Add(10*time.Second).UnixNano() {
			t.Fatalf("count %d until %v, want 5 until the first response's 10s", got, time.Unix(0, reset))
		}
		p.observe(rhOf(resp("0", "30s")), 1*time.Second, now, time.Minute, 0, 0)
		if until := p.block(ns, nil); until != now.Add(10*time.Second).UnixNano() {
			t.Fatalf("blocked until %v, want the 10s the applied window says (an older 0 lowers the count, not the reset)", time.Unix(0, until))
		}
	})
	t.Run("newer: replaces", func(t *testing.T) {
		var p pacing
		p.observe(rhOf(resp("0", "10s")), 2*time.Second, now, time.Minute, 0, 0)
		if p.block(ns, nil) == 0 {
			t.Fatal("a 0 was not applied")
		}
		p.observe(rhOf(resp("7", "10s")), 3*time.Second, now, time.Minute, 0, 0)
		if p.block(ns, nil) != 0 {
			t.Fatal("a newer response's 7 left the endpoint blocked")
		}
	})
	t.Run("in flight", func(t *testing.T) {
		var p pacing
		if until := p.observe(rhOf(resp("3", "10s")), time.Second, now, time.Minute, 3, 0); until == 0 || p.block(ns, nil) == 0 {
			t.Fatal("3 left with 3 requests in flight did not block the endpoint")
		}
	})
}

// TestPacingNeverExtendsAReset: headers, from a success or a failure,
// block exactly as long as they say (capped at MaxCooldown), and a
// count spent locally ends with its window.
func TestPacingNeverExtendsAReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  int
		reset string
		want  time.Duration
	}{
		{"success", 200, "1s", time.Second},
		{"failure", 500, "1s", time.Second},
		{"no reset header: the default", 200, "", defaultPacingReset},
		{"capped at MaxCooldown", 200, "10m", time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p pacing
			now := time.Unix(1_800_000_000, 0)
			until := p.observe(rhOf(limitedReply(tc.code, "0", tc.reset, "", "")), time.Second, now, time.Minute, 0, 0)
			if want := now.Add(tc.want).UnixNano(); until != want {
				t.Fatalf("blocked until %v, want %v", time.Unix(0, until), time.Unix(0, want))
			}
			if p.block(now.Add(tc.want).UnixNano()-1, nil) == 0 || p.block(now.Add(tc.want).UnixNano(), nil) != 0 {
				t.Fatal("the block did not end exactly at the reset")
			}
		})
	}
	t.Run("spent locally", func(t *testing.T) {
		var p pacing
		now := time.Unix(1_800_000_000, 0)
		p.observe(rhOf(limitedReply(200, "1", "1s", "", "")), time.Second, now, time.Minute, 0, 0)
		p.spend(now.UnixNano(), 0)
		if p.block(now.UnixNano(), nil) == 0 {
			t.Fatal("the last request left was sent, and the endpoint still takes more")
		}
	})
}

// stripRemaining is a base that removes the provider's remaining counts
// from every response, so that a Transport over it cannot pace: only its
// cooldowns after a 429 hold it back.
type stripRemaining struct{ base http.RoundTripper }

func (s stripRemaining) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if resp != nil {
		resp.Header.Del(hdrRemainingRequests)
		resp.Header.Del(hdrRemainingTokens)
	}
	return resp, err
}

// TestPacingTurnsA429StormIntoAHandful: 16 clients send for three
// windows through one Transport to an upstream that allows 20 requests
// per 200ms window and says so in OpenAI's headers, with a backup for the
// rest (both answer in 2ms). Without the remaining counts (only the
// cooldown after each 429 to hold it back) the upstream throttles a storm
// of requests at each window's end; with them, a handful.
func TestPacingTurnsA429StormIntoAHandful(t *testing.T) {
	const window = 200 * time.Millisecond
	run := func(pace bool) (throttled, served int64) {
		limited := upstream(t, "limited", fakeopenai.WithRateLimits(fakeopenai.RateLimits{Requests: 20, Window: window}))
		backup := upstream(t, "backup")
		limited.SetFault(fakeopenai.Fault{Delay: 2 * time.Millisecond})
		backup.SetFault(fakeopenai.Fault{Delay: 2 * time.Millisecond})
		var base http.RoundTripper = httpBase(t)
		if !pace {
			base = stripRemaining{base}
		}
		tr, err := New(Config{Base: base, Endpoints: []Endpoint{ep(limited, 0), ep(backup, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		const workers, most = 16, 500
		deadline := time.Now().Add(3 * window)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := 0; i < most && time.Now().Before(deadline); i++ {
					ctx, cancel := context.WithTimeout(context.Background(), waitBound)
					resp, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, false))
					if err != nil {
						t.Errorf("request failed: %v", err)
					} else {
						closeBody(resp)
					}
					cancel()
				}
			})
		}
		wg.Wait()
		return limited.Throttled(), limited.Hits() - limited.Throttled()
	}
	stormed, _ := run(false)
	paced, served := run(true)
	t.Logf("429s from the limited upstream: %d without pacing, %d with (%d served)", stormed, paced, served)
	if paced > 5 || stormed < 3*max(paced, 5) {
		t.Fatalf("429s: %d without pacing, %d with; want a handful (at most 5) with, and at least three times as many without", stormed, paced)
	}
	if served < 30 {
		t.Fatalf("the limited upstream served %d requests in three windows of 20 with pacing, want at least half", served)
	}
}

// rhOf is what resp's rate limit headers say.
func rhOf(resp *http.Response) rateHeaders {
	rh, _ := parseRateHeaders(resp.Header)
	return rh
}
