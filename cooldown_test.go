package failover

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestCooldownFromHeaders: a failed response cools its endpoint for the
// delay its headers give, capped at MaxCooldown, while the request fails
// over at once. A 429 without such a header cools for the default; a 503
// cools only with Retry-After (or retry-after-ms): its x-ratelimit-reset
// headers are about the rate limits, not the outage.
func TestCooldownFromHeaders(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name   string
		status int
		kv     []string
		want   time.Duration // 0: no cooldown
	}{
		{"retry-after-ms", 429, []string{"Retry-After-Ms", "1500"}, 1500 * time.Millisecond},
		{"retry-after seconds", 429, []string{"Retry-After", "7"}, 7 * time.Second},
		{"retry-after date", 429, []string{"Retry-After", now.Add(20 * time.Second).UTC().Format(http.TimeFormat)}, 20 * time.Second},
		{"ms before seconds", 429, []string{"Retry-After", "9", "retry-after-ms", "250"}, 250 * time.Millisecond},
		{"x-ratelimit-reset-requests", 429, []string{"X-Ratelimit-Reset-Requests", "6s"}, 6 * time.Second},
		{"capped", 429, []string{"X-Ratelimit-Reset-Requests", "6m0s"}, time.Minute},
		{"none: default", 429, nil, time.Second},
		{"503 with retry-after", 503, []string{"Retry-After", "3"}, 3 * time.Second},
		{"503 with retry-after and resets", 503, []string{"Retry-After", "7", "X-Ratelimit-Reset-Requests", "6m0s"}, 7 * time.Second},
		{"503 with resets only: none", 503, []string{"X-Ratelimit-Reset-Requests", "6m0s"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				if req.URL.Host == "a.test" {
					return reply(tc.status, "busy", tc.kv...), nil
				}
				return reply(200, "ok"), nil
			})
			tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			if status, body := chat(t, tr); status != 200 || body != "ok" {
				t.Fatalf("got %d %q, want b's answer at once", status, body)
			}
			if len(clk.Sleeps()) != 0 {
				t.Fatalf("slept %v instead of failing over", clk.Sleeps())
			}
			h := tr.Health()[0]
			if tc.want == 0 {
				if !h.CooldownUntil.IsZero() {
					t.Fatalf("cooling down until %v, want no cooldown", h.CooldownUntil)
				}
			} else if got := h.CooldownUntil.Sub(clk.Now()); got != tc.want {
				t.Fatalf("cooldown %v, want %v", got, tc.want)
			}
			if tc.status == 429 && h.State != StateCoolingDown {
				t.Fatalf("state %v, want cooling-down (a 429 drives the cooldown, not the breaker)", h.State)
			}
		})
	}
}

// TestCooldownLaterOfTwoResets: a 429 carrying both
// x-ratelimit-reset-requests and x-ratelimit-reset-tokens cools the
// endpoint until the later of the two resets: it is skipped past the
// earlier one and until just before the later, and chosen again at it.
func TestCooldownLaterOfTwoResets(t *testing.T) {
	for _, tc := range []struct {
		name             string
		requests, tokens string
		earlier, later   time.Duration
	}{
		{"tokens later", "2s", "6s", 2 * time.Second, 6 * time.Second},
		{"requests later", "6s", "2s", 2 * time.Second, 6 * time.Second},
		{"plain seconds later", "3", "250ms", 250 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
				switch {
				case req.URL.Host != "a.test":
					return reply(200, "b"), nil
				case n == 1:
					return reply(429, "busy", "X-Ratelimit-Reset-Requests", tc.requests, "X-Ratelimit-Reset-Tokens", tc.tokens), nil
				}
				return reply(200, "a"), nil
			})
			tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
			start := clk.Now()
			want := func(step, from string, aHits int) {
				t.Helper()
				if code, body := chat(t, tr); code != 200 || body != from {
					t.Fatalf("%s: got %d %q, want 200 from %s", step, code, body, from)
				}
				if got := base.Hits("a.test"); got != aHits {
					t.Fatalf("%s: a hits %d, want %d", step, got, aHits)
				}
			}
			want("the 429", "b", 1)
			h := healthOf(t, tr, "a")
			if got := h.CooldownUntil.Sub(start); got != tc.later || h.State != StateCoolingDown {
				t.Errorf("a: %v, cooling down for %v; want cooling-down for %v (the later reset)", h.State, got, tc.later)
			}
			clk.Advance(tc.earlier)
			want("at the earlier reset", "b", 1)
			clk.Advance(tc.later - tc.earlier - time.Millisecond)
			want("just before the later reset", "b", 1)
			clk.Advance(time.Millisecond)
			want("at the later reset", "a", 2)
			if s := clk.Sleeps(); len(s) != 0 {
				t.Errorf("slept %v; b could take every request at once", s)
			}
		})
	}
}

func TestCooldownDefaultDoubles(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return reply(429, "busy"), nil
		}
		return reply(200, "ok"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, Cooldown: time.Second, MaxCooldown: 5 * time.Second,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	var got []time.Duration
	for range 5 {
		chat(t, tr)
		until := tr.Health()[0].CooldownUntil
		got = append(got, until.Sub(clk.Now()))
		clk.Advance(until.Sub(clk.Now()))
	}
	if fmt.Sprint(got) != "[1s 2s 4s 5s 5s]" {
		t.Fatalf("cooldowns %v, want 1s 2s 4s then capped at 5s", got)
	}
	if st := tr.Health()[0].State; st == StateOpen {
		t.Fatal("five 429s opened the breaker; a 429 must drive the cooldown only")
	}
}

// TestCooldownDoublingSaturates: the doubling default for 429s without a
// delay header stops at MaxCooldown, even where the shift would overflow.
func TestCooldownDoublingSaturates(t *testing.T) {
	base := newScriptedBase(func(*http.Request, int) (*http.Response, error) { return reply(429, "slow down"), nil })
	tr, clk := newTestTransport(t, Config{Base: base, MaxRetries: -1, Cooldown: 1<<34 + 1, MaxCooldown: time.Hour,
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	endpointsOf(tr)[0].cooling.throttled.Store(30) // 30 consecutive 429s already
	chat(t, tr)
	if got, want := healthOf(t, tr, "a").CooldownUntil, clk.Now().Add(time.Hour); !got.Equal(want) {
		t.Errorf("cooldown until %v, want MaxCooldown from now (%v)", got, want)
	}
}

func TestCooldownRetryDelayParsing(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		kv     []string
		want   time.Duration
		wantOK bool
	}{
		{nil, 0, false},
		{[]string{"Retry-After", "0"}, 0, true},
		{[]string{"Retry-After", "-5"}, 0, false},
		{[]string{"Retry-After", "soon"}, 0, false},
		{[]string{"Retry-After", "99999999999999999999"}, 0, false},
		{[]string{"Retry-After", "86401"}, time.Minute, true},
		{[]string{"Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{[]string{"Retry-After-Ms", "20.5"}, 20500 * time.Microsecond, true},
		{[]string{"Retry-After-Ms", "NaN"}, 0, false},
		{[]string{"Retry-After-Ms", "1e300"}, time.Minute, true},
		{[]string{"X-Ratelimit-Reset-Requests", "20ms"}, 20 * time.Millisecond, true},
		{[]string{"X-Ratelimit-Reset-Requests", "1m30s"}, time.Minute, true},
		{[]string{"X-Ratelimit-Reset-Requests", "-1s"}, 0, false},
		{[]string{"X-Ratelimit-Reset-Tokens", "0.5"}, 500 * time.Millisecond, true},
		// A 429 does not say which limit it hit: the later reset.
		{[]string{"X-Ratelimit-Reset-Requests", "12ms", "X-Ratelimit-Reset-Tokens", "7.66s"}, 7660 * time.Millisecond, true},
		{[]string{"X-Ratelimit-Reset-Requests", "2s", "X-Ratelimit-Reset-Tokens", "1s"}, 2 * time.Second, true},
		{[]string{"X-Ratelimit-Reset-Requests", "bad", "X-Ratelimit-Reset-Tokens", "1s"}, time.Second, true},
		{[]string{"Retry-After", "3", "X-Ratelimit-Reset-Tokens", "9s"}, 3 * time.Second, true},
	} {
		h := http.Header{}
		for i := 0; i+1 < len(tc.kv); i += 2 {
			h.Set(tc.kv[i], tc.kv[i+1])
		}
		got, ok := retryDelay(h, now, time.Minute, true)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("retryDelay(%v) = %v, %v; want %v, %v", tc.kv, got, ok, tc.want, tc.wantOK)
		}
	}
	// Without resets (a 503), only Retry-After and retry-after-ms count.
	h := http.Header{"X-Ratelimit-Reset-Requests": {"6m0s"}}
	if got, ok := retryDelay(h, now, time.Minute, false); ok {
		t.Errorf("retryDelay of rate limit resets for a 503 = %v, want none", got)
	}
}
