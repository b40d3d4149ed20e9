package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// 1. Routing.

func TestRoutingRewritesOntoEndpoint(t *testing.T) {
	a := upstream(t, "a", fakeopenai.WithPrefix("/openai/v1"))
	e := ep(a, 0)
	e.Header = http.Header{"x-extra": {"1"}}
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{e}})

	req := chatRequest(t, context.Background(), clientBase, false)
	req.URL.RawQuery = "api-version=7&x=%2F"
	before := snapshot(req)
	status, body := roundTrip(t, tr, req)
	if status != 200 || !strings.Contains(body, fakeopenai.Reply("a")) {
		t.Fatalf("got %d %q, want 200 from a", status, body)
	}
	got, ok := a.Last()
	if !ok {
		t.Fatal("upstream a saw no request")
	}
	if got.Path != "/openai/v1/chat/completions" {
		t.Errorf("path = %q, want /openai/v1/chat/completions", got.Path)
	}
	if got.RawQuery != "api-version=7&x=%2F" {
		t.Errorf("query = %q, want it kept", got.RawQuery)
	}
	if auth := got.Header.Get("Authorization"); auth != "Bearer key-a" {
		t.Errorf("Authorization = %q, want the endpoint's key", auth)
	}
	if x := got.Header.Get("X-Extra"); x != "1" {
		t.Errorf("X-Extra = %q, want the endpoint's extra header", x)
	}
	if string(got.Body) != chatBody(false) {
		t.Errorf("body = %q, want %q", got.Body, chatBody(false))
	}
	if after := snapshot(req); after != before {
		t.Errorf("caller's request modified:\nbefore %s\nafter  %s", before, after)
	}
}

func TestRoutingEndpointQueryAndNoKey(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
		{Name: "azure", BaseURL: "https://azure.test/openai/deployments/d1?api-version=2024-10-21"},
	}})
	req := chatRequest(t, context.Background(), clientBase, false)
	req.URL.RawQuery = "x=1"
	roundTrip(t, tr, req)
	seen := base.Seen()
	if len(seen) != 1 {
		t.Fatalf("base saw %d requests, want 1", len(seen))
	}
	s := seen[0]
	if s.path != "/openai/deployments/d1/chat/completions" || s.query != "api-version=2024-10-21&x=1" {
		t.Errorf("got %s?%s", s.path, s.query)
	}
	if s.auth != "Bearer caller-token" {
		t.Errorf("Authorization = %q, want the caller's kept when APIKey is empty", s.auth)
	}
}

func TestRoutingMatchesClientAndEndpointBases(t *testing.T) {
	rec := &recordingBase{}
	tr, _ := newTestTransport(t, Config{
		Base:           rec,
		ClientBaseURLs: []string{clientBase, "http://localhost:8080/proxy/v1"},
		Endpoints:      []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)},
	})
	for _, tc := range []struct {
		url      string
		wantPath string // "" means passed through untouched
	}{
		{"https://api.openai.com/v1/chat/completions", "/v1/chat/completions"},
		{"https://API.OpenAI.com:443/v1/models", "/v1/models"},
		{"https://api.openai.com/v1", "/v1"},
		{"http://localhost:8080/proxy/v1/embeddings", "/v1/embeddings"},
		{"https://b.test/v1/chat/completions", "/v1/chat/completions"}, // an endpoint's own URL: routed, to the preferred a
		{"https://a.test/v1/files/f-1?purpose=x", "/v1/files/f-1"},
		{"https://api.openai.com/v10/chat/completions", ""}, // not at a segment boundary
		{"https://api.openai.com/v2/chat/completions", ""},
		{"http://api.openai.com/v1/chat/completions", ""}, // another scheme
		{"https://example.com/v1/chat/completions", ""},
		{"https://a.test/v2/x", ""},
	} {
		t.Run(tc.url, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			req.Header.Set("Authorization", "Bearer caller-token")
			before := snapshot(req)
			roundTrip(t, tr, req)
			got := rec.req
			if tc.wantPath == "" {
				if got != req {
					t.Fatalf("base got %v, want the caller's own request passed through", got.URL)
				}
				if auth := got.Header.Get("Authorization"); auth != "Bearer caller-token" {
					t.Fatalf("Authorization = %q: an endpoint key was attached", auth)
				}
			} else {
				if got == req {
					t.Fatal("routed request passed through unrewritten")
				}
				if got.URL.Host != "a.test" || got.URL.Path != tc.wantPath || got.Header.Get("Authorization") != "Bearer key-a" {
					t.Fatalf("sent to %s%s with %q, want a.test%s with key-a", got.URL.Host, got.URL.Path, got.Header.Get("Authorization"), tc.wantPath)
				}
				if got.Host != "" {
					t.Fatalf("outgoing Host = %q, want empty so the URL's host is used", got.Host)
				}
			}
			if after := snapshot(req); after != before {
				t.Fatalf("caller's request modified:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// recordingBase remembers the last request and answers 200.
type recordingBase struct{ req *http.Request }

func (r *recordingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	r.req = req
	return reply(200, "ok"), nil
}

func TestRoutingEndpointOwnURLFailsOver(t *testing.T) {
	// openai-go may read OPENAI_BASE_URL and send to an endpoint's own
	// URL: such a request must still fail over.
	a := upstream(t, "a")
	b := upstream(t, "b")
	a.SetFault(fakeopenai.Refuse())
	tr, clk := newTestTransport(t, Config{Endpoints: []Endpoint{ep(a, 0), ep(b, 1)}})
	status, body := roundTrip(t, tr, chatRequest(t, context.Background(), a.URL(), false))
	if status != 200 || !strings.Contains(body, fakeopenai.Reply("b")) {
		t.Fatalf("got %d %q, want b's answer", status, body)
	}
	if got, _ := b.Last(); got.Header.Get("Authorization") != "Bearer key-b" {
		t.Errorf("b saw Authorization %q, want its own key", got.Header.Get("Authorization"))
	}
	if s := clk.Sleeps(); len(s) != 0 {
		t.Errorf("slept %v before failing over, want no sleep", s)
	}
}

// 2. Priority.

func TestPriorityPrefersLowestEligible(t *testing.T) {
	eps := []Endpoint{hostEndpoint("p0", 0), hostEndpoint("p1", 1), hostEndpoint("p2", 2)}

	t.Run("all healthy", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 20 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 20 || base.Hits("p1.test")+base.Hits("p2.test") != 0 {
			t.Fatalf("hits %v, want all 20 on p0", base.hits)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		eps := append([]Endpoint(nil), eps...)
		eps[0].Disabled = true
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 0 || base.Hits("p1.test") != 5 {
			t.Fatalf("hits %v, want all 5 on p1", base.hits)
		}
	})
	t.Run("breaker open", func(t *testing.T) {
		base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
			if req.URL.Host == "p0.test" {
				return reply(401, `{"error":{"code":"invalid_api_key"}}`), nil
			}
			return reply(200, "ok"), nil
		})
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 1 || base.Hits("p1.test") != 5 {
			t.Fatalf("hits %v, want p0 once (then open), p1 all 5", base.hits)
		}
	})
	t.Run("cooling down", func(t *testing.T) {
		base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
			if req.URL.Host == "p0.test" && n == 1 {
				return reply(429, "slow down", "Retry-After", "30"), nil
			}
			return reply(200, "ok"), nil
		})
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 1 || base.Hits("p1.test") != 5 {
			t.Fatalf("hits %v, want p0 once then cooling, p1 all 5", base.hits)
		}
		clk.Advance(31 * time.Second)
		chat(t, tr)
		if base.Hits("p0.test") != 2 {
			t.Fatalf("p0 hits %d after its cooldown, want traffic back", base.Hits("p0.test"))
		}
	})
	t.Run("rate capacity", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		eps := append([]Endpoint(nil), eps...)
		eps[0].MaxRPS, eps[0].Burst = 1, 1
		tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
		for range 5 {
			chat(t, tr)
		}
		if base.Hits("p0.test") != 1 || base.Hits("p1.test") != 4 {
			t.Fatalf("hits %v, want p0 once (its burst), p1 the other 4", base.hits)
		}
	})
}

// 3. Weights.

func TestWeightsSplitTraffic(t *testing.T) {
	for _, weights := range [][]int{{1, 1}, {1, 2, 7}, {3, 0, 5}, {100, 1}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			base := newScriptedBase(alwaysOK)
			var eps []Endpoint
			total := 0
			for i, w := range weights {
				e := hostEndpoint(fmt.Sprintf("w%d", i), 0)
				e.Weight = w
				eps = append(eps, e)
				total += max(w, 1)
			}
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
			const n = 2000
			for range n {
				req, _ := http.NewRequest(http.MethodGet, clientBase+"/models", nil)
				roundTrip(t, tr, req)
			}
			for i, w := range weights {
				want := float64(n) * float64(max(w, 1)) / float64(total)
				got := float64(base.Hits(fmt.Sprintf("w%d.test", i)))
				if math.Abs(got-want) > 0.02*n {
					t.Errorf("endpoint %d (weight %d): %v requests, want %.0f ± 2%%", i, w, got, want)
				}
			}
		})
	}
}

func TestSWRRScheduleIsSmooth(t *testing.T) {
	got := swrrSchedule([]int{5, 1, 1})
	want := []uint16{0, 0, 1, 0, 2, 0, 0} // nginx's classic example: a a b a c a a
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	long := swrrSchedule([]int{1 << 20, 1})
	if len(long) > maxSchedule {
		t.Fatalf("schedule of %d entries, want at most %d", len(long), maxSchedule)
	}
	ones := 0
	for _, i := range long {
		if i == 1 {
			ones++
		}
	}
	if ones != 1 {
		t.Fatalf("weight-1 endpoint appears %d times in the scaled schedule, want 1", ones)
	}
}

// 4. Failover.

func TestFailoverClassification(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fault      fakeopenai.Fault
		timeout    time.Duration
		wantFailed bool // true: b answers; false: a's response returned at once
	}{
		{"500", fakeopenai.StatusFault(500), 0, true},
		{"502", fakeopenai.StatusFault(502), 0, true},
		{"503", fakeopenai.StatusFault(503), 0, true},
		{"504", fakeopenai.StatusFault(504), 0, true},
		{"408", fakeopenai.StatusFault(408), 0, true},
		{"409", fakeopenai.StatusFault(409), 0, true},
		{"429", fakeopenai.RateLimited("5"), 0, true},
		{"401", fakeopenai.StatusFault(401), 0, true},
		{"403", fakeopenai.StatusFault(403), 0, true},
		{"connection refused", fakeopenai.Refuse(), 0, true},
		{"connection reset", fakeopenai.Reset(), 0, true},
		{"per-attempt timeout", fakeopenai.Hang(), 100 * time.Millisecond, true},
		{"400", fakeopenai.StatusFault(400), 0, false},
		{"404", fakeopenai.StatusFault(404), 0, false},
		{"422", fakeopenai.StatusFault(422), 0, false},
		{"400 with x-should-retry true", fakeopenai.StatusFault(400).WithHeader("X-Should-Retry", "true"), 0, true},
		{"500 with x-should-retry false", fakeopenai.StatusFault(500).WithHeader("X-Should-Retry", "false"), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := upstream(t, "a")
			b := upstream(t, "b")
			a.SetFault(tc.fault)
			ea := ep(a, 0)
			ea.Timeout = tc.timeout
			tr, clk := newTestTransport(t, Config{Endpoints: []Endpoint{ea, ep(b, 1)}})
			status, body := chat(t, tr)
			if tc.wantFailed {
				if status != 200 || !strings.Contains(body, fakeopenai.Reply("b")) {
					t.Fatalf("got %d %q, want b's answer after failing over", status, body)
				}
				if s := clk.Sleeps(); len(s) != 0 {
					t.Fatalf("slept %v before failing over to an untried endpoint", s)
				}
				return
			}
			if b.Hits() != 0 {
				t.Fatalf("b got %d requests; a caller error must not fail over", b.Hits())
			}
			if want, _ := strconv.Atoi(tc.name); status != want {
				t.Fatalf("status %d, want a's %s returned", status, tc.name)
			}
			if a.Hits() != 1 {
				t.Fatalf("a hits %d, want 1", a.Hits())
			}
		})
	}
}

func TestFailoverOrderSamePriorityFirst(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "c.test" {
			return reply(200, "c"), nil
		}
		return reply(500, "down"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{
		hostEndpoint("a", 0), hostEndpoint("b", 0), hostEndpoint("c", 1), hostEndpoint("d", 2),
	}})
	for i := range 4 {
		if status, body := chat(t, tr); status != 200 || body != "c" {
			t.Fatalf("request %d: got %d %q, want c's answer", i, status, body)
		}
	}
	seen := base.Seen()
	for i := 0; i < len(seen); i += 3 {
		hosts := []string{seen[i].host, seen[i+1].host, seen[i+2].host}
		if !(hosts[0] == "a.test" && hosts[1] == "b.test" || hosts[0] == "b.test" && hosts[1] == "a.test") || hosts[2] != "c.test" {
			t.Fatalf("attempt order %v, want a and b (either order) then c", hosts)
		}
	}
	if base.Hits("d.test") != 0 {
		t.Fatal("d (a later priority) was tried before c")
	}
	if len(clk.Sleeps()) != 0 {
		t.Fatalf("slept %v while untried endpoints remained", clk.Sleeps())
	}
}

func TestBackoffOnlyWhenRetryingSameEndpoint(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if n <= 2 {
			return reply(500, "down"), nil
		}
		return reply(200, "ok"), nil
	})
	var rounds []int
	tr, clk := newTestTransport(t, Config{
		Base:      base,
		Endpoints: []Endpoint{hostEndpoint("only", 0)},
		Backoff: func(min, max time.Duration, n int, _ *http.Response) time.Duration {
			rounds = append(rounds, n)
			return DefaultBackoff(min, max, n, nil)
		},
		BackoffMin: 100 * time.Millisecond,
		BackoffMax: time.Second,
	})
	if status, _ := chat(t, tr); status != 200 {
		t.Fatalf("status %d, want 200 on the third attempt", status)
	}
	sleeps := clk.Sleeps()
	if len(sleeps) != 2 || fmt.Sprint(rounds) != "[0 1]" {
		t.Fatalf("sleeps %v for rounds %v, want two backoffs for rounds 0 and 1", sleeps, rounds)
	}
	if sleeps[0] < 50*time.Millisecond || sleeps[0] > 100*time.Millisecond ||
		sleeps[1] < 100*time.Millisecond || sleeps[1] > 200*time.Millisecond {
		t.Fatalf("sleeps %v, want exponential with equal jitter: [50ms,100ms] then [100ms,200ms]", sleeps)
	}
}

func TestShouldRetryFalseAvoidsSameEndpoint(t *testing.T) {
	base := newScriptedBase(func(*http.Request, int) (*http.Response, error) {
		return reply(500, "no", "X-Should-Retry", "false"), nil
	})
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("only", 0)}})
	if status, _ := chat(t, tr); status != 500 {
		t.Fatalf("status %d, want the 500 back", status)
	}
	if base.Hits("only.test") != 1 || len(clk.Sleeps()) != 0 {
		t.Fatalf("%d attempts and sleeps %v, want exactly one attempt", base.Hits("only.test"), clk.Sleeps())
	}
}

func TestMaxRetriesBoundsAttempts(t *testing.T) {
	down := func(*http.Request, int) (*http.Response, error) { return reply(503, "down"), nil }
	for _, tc := range []struct {
		retries, want int
	}{{0, 4}, {-1, 1}, {1, 2}, {6, 7}} {
		t.Run(fmt.Sprint(tc.retries), func(t *testing.T) {
			base := newScriptedBase(down)
			tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: tc.retries,
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)},
				Breaker:   BreakerConfig{FailureThreshold: 100}})
			chat(t, tr)
			if got := len(base.Seen()); got != tc.want {
				t.Fatalf("%d attempts, want %d", got, tc.want)
			}
		})
	}
}

// 5. Rate limits.

func TestRateLimitSpillsOverWithoutWaiting(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxRPS, a.Burst = 2, 3
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, hostEndpoint("b", 5)}})
	for range 10 {
		chat(t, tr)
	}
	if base.Hits("a.test") != 3 || base.Hits("b.test") != 7 {
		t.Fatalf("hits %v, want a its burst of 3 and b the other 7", base.hits)
	}
	if len(clk.Sleeps()) != 0 {
		t.Fatalf("slept %v while another endpoint could take the request", clk.Sleeps())
	}
	clk.Advance(time.Second) // two tokens back
	for range 4 {
		chat(t, tr)
	}
	if base.Hits("a.test") != 5 {
		t.Fatalf("a hits %d after one second at 2 rps, want 5", base.Hits("a.test"))
	}
}

func TestRateLimitNeverExceeded(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxRPS, a.Burst = 10, 4
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, hostEndpoint("b", 1)}})
	// 50 steps of 100ms, 5 requests each: 25 rps offered for 5 s.
	for range 50 {
		for range 5 {
			chat(t, tr)
		}
		clk.Advance(100 * time.Millisecond)
	}
	if got, limit := base.Hits("a.test"), 4+10*5; got > limit {
		t.Fatalf("a got %d requests in 5s, more than its burst plus rate allow (%d)", got, limit)
	} else if got < limit-2 {
		t.Fatalf("a got %d requests in 5s, want close to its capacity %d", got, limit)
	}
}

func TestRateLimitWaitsWhenAllSaturated(t *testing.T) {
	t.Run("waits for the soonest", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		a, b := hostEndpoint("a", 0), hostEndpoint("b", 1)
		a.MaxRPS, a.Burst = 1, 1
		b.MaxRPS, b.Burst = 4, 1
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, b}})
		chat(t, tr)
		chat(t, tr)
		chat(t, tr) // both empty: waits about 250ms for b's next token
		s := clk.Sleeps()
		if len(s) != 1 || s[0] < 200*time.Millisecond || s[0] > 300*time.Millisecond {
			t.Fatalf("sleeps %v, want one wait of about 250ms for b", s)
		}
		if base.Hits("b.test") != 2 {
			t.Fatalf("b hits %d, want 2", base.Hits("b.test"))
		}
	})
	t.Run("bounded by MaxWait", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		a := hostEndpoint("a", 0)
		a.MaxRPS, a.Burst = 1, 1
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}, MaxWait: 100 * time.Millisecond})
		chat(t, tr)
		_, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if !errors.Is(err, ErrNoEndpointAvailable) {
			t.Fatalf("err = %v, want ErrNoEndpointAvailable", err)
		}
		if len(clk.Sleeps()) != 0 {
			t.Fatalf("slept %v beyond MaxWait", clk.Sleeps())
		}
	})
	t.Run("bounded by the context", func(t *testing.T) {
		base := newScriptedBase(alwaysOK)
		a := hostEndpoint("a", 0)
		a.MaxRPS, a.Burst = 1, 1
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}})
		tr.now = time.Now // the deadline is on the real clock
		chat(t, tr)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := tr.RoundTrip(chatRequest(t, ctx, clientBase, false))
		if !errors.Is(err, ErrNoEndpointAvailable) {
			t.Fatalf("err = %v, want ErrNoEndpointAvailable without waiting past the deadline", err)
		}
		if len(clk.Sleeps()) != 0 {
			t.Fatalf("slept %v past the context's deadline", clk.Sleeps())
		}
	})
}

// 6. 429 and Retry-After.

func TestCooldownFromHeaders(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name   string
		status int
		kv     []string
		want   time.Duration
	}{
		{"retry-after-ms", 429, []string{"Retry-After-Ms", "1500"}, 1500 * time.Millisecond},
		{"retry-after seconds", 429, []string{"Retry-After", "7"}, 7 * time.Second},
		{"retry-after date", 429, []string{"Retry-After", now.Add(20 * time.Second).UTC().Format(http.TimeFormat)}, 20 * time.Second},
		{"ms before seconds", 429, []string{"Retry-After", "9", "retry-after-ms", "250"}, 250 * time.Millisecond},
		{"x-ratelimit-reset-requests", 429, []string{"X-Ratelimit-Reset-Requests", "6s"}, 6 * time.Second},
		{"capped", 429, []string{"X-Ratelimit-Reset-Requests", "6m0s"}, time.Minute},
		{"none: default", 429, nil, time.Second},
		{"503 with retry-after", 503, []string{"Retry-After", "3"}, 3 * time.Second},
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
			if got := h.CooldownUntil.Sub(clk.Now()); got != tc.want {
				t.Fatalf("cooldown %v, want %v", got, tc.want)
			}
			if tc.status == 429 && h.State != StateCoolingDown {
				t.Fatalf("state %v, want cooling-down (a 429 drives the cooldown, not the breaker)", h.State)
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

func TestAllCoolingDown(t *testing.T) {
	script := func(req *http.Request, n int) (*http.Response, error) {
		if n == 1 {
			ra := map[string]string{"a.test": "2", "b.test": "3"}[req.URL.Host]
			return reply(429, "busy "+req.URL.Host, "Retry-After", ra), nil
		}
		return reply(200, "ok "+req.URL.Host), nil
	}
	t.Run("waits for the earliest", func(t *testing.T) {
		base := newScriptedBase(script)
		tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
		status, body := chat(t, tr)
		if status != 200 || body != "ok a.test" {
			t.Fatalf("got %d %q, want a's answer after its cooldown", status, body)
		}
		if s := clk.Sleeps(); len(s) != 1 || s[0] != 2*time.Second {
			t.Fatalf("sleeps %v, want one wait of 2s for a's cooldown", s)
		}
	})
	t.Run("returns the last 429 when the wait does not fit", func(t *testing.T) {
		base := newScriptedBase(script)
		tr, clk := newTestTransport(t, Config{Base: base, MaxWait: time.Second,
			Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
		resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || string(body) != "busy b.test" || resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("got %d %q %v, want b's 429 itself", resp.StatusCode, body, resp.Header)
		}
		if len(clk.Sleeps()) != 0 {
			t.Fatalf("slept %v though no wait fits MaxWait", clk.Sleeps())
		}
	})
}

func TestInsufficientQuotaTakesEndpointOut(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return reply(429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`), nil
		}
		return reply(200, "ok"), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	for range 3 {
		chat(t, tr)
	}
	h := tr.Health()[0]
	if h.State != StateOpen || !h.CooldownUntil.IsZero() {
		t.Fatalf("state %v cooldown %v, want the breaker open and no cooldown", h.State, h.CooldownUntil)
	}
	if base.Hits("a.test") != 1 {
		t.Fatalf("a hits %d, want 1: a spent key is taken out at once", base.Hits("a.test"))
	}
}

func TestRetryDelayParsing(t *testing.T) {
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
	} {
		h := http.Header{}
		for i := 0; i+1 < len(tc.kv); i += 2 {
			h.Set(tc.kv[i], tc.kv[i+1])
		}
		got, ok := retryDelay(h, now, time.Minute)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("retryDelay(%v) = %v, %v; want %v, %v", tc.kv, got, ok, tc.want, tc.wantOK)
		}
	}
}
