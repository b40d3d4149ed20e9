package failover

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	const key = "sk-test-SECRET-validation"
	good := func(name string) Endpoint {
		return Endpoint{Name: name, BaseURL: "https://" + name + ".test/v1", APIKey: key}
	}
	for _, tc := range []newErrorCase{
		{name: "no endpoints", cfg: Config{}, wantIs: ErrNoEndpoints},
		{name: "bad ClientBaseURLs entry", cfg: Config{Endpoints: []Endpoint{good("e1")}, ClientBaseURLs: []string{"https://ok.test/v1", "mailto:x"}},
			wantIn: []string{"ClientBaseURLs[1]"}},
		{name: "negative breaker threshold", cfg: Config{Endpoints: []Endpoint{good("e1")}, Breaker: BreakerConfig{FailureThreshold: -1}},
			wantIn: []string{"Breaker.FailureThreshold"}},
		{name: "negative Cooldown", cfg: Config{Endpoints: []Endpoint{good("e1")}, Cooldown: -time.Second},
			wantIn: []string{"Cooldown"}},
		{name: "MaxRetries that would overflow", cfg: Config{Endpoints: []Endpoint{good("e1")}, MaxRetries: math.MaxInt},
			wantIn: []string{"MaxRetries"}},
		{name: "MaxRetries above the limit", cfg: Config{Endpoints: []Endpoint{good("e1")}, MaxRetries: 1001},
			wantIn: []string{"MaxRetries", "1000"}},
		{name: "bad EndpointHeader", cfg: Config{Endpoints: []Endpoint{good("e1")}, EndpointHeader: "Failover Endpoint"},
			wantIn: []string{"EndpointHeader"}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t) })
	}
}

// newErrorCase is a Config that New must refuse, and what its error must
// and must not say.
type newErrorCase struct {
	name    string
	cfg     Config
	wantIs  error
	wantIn  []string // substrings of the error
	wantOut []string // never in the error ("SECRET" always)
}

// check asserts that New refuses tc.cfg with an error as tc says.
func (tc newErrorCase) check(t *testing.T) {
	t.Helper()
	tr, err := New(tc.cfg)
	if err == nil {
		t.Fatalf("New succeeded (%d endpoints), want an error", len(endpointsOf(tr)))
	}
	if tr != nil {
		t.Errorf("New returned a Transport with its error")
	}
	if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
		t.Errorf("error %v does not match %v", err, tc.wantIs)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "failover: ") {
		t.Errorf("error %q lacks the failover: prefix", msg)
	}
	for _, s := range tc.wantIn {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %s", msg, s)
		}
	}
	for _, s := range append([]string{"SECRET"}, tc.wantOut...) {
		if strings.Contains(msg, s) {
			t.Errorf("error %q contains %q", msg, s)
		}
	}
}

// TestNewReportsEveryProblem: one error names every problem of every
// endpoint and of the rest of the Config, not just the first.
func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{
		Endpoints: []Endpoint{
			{BaseURL: "ftp://x.test", Weight: -1},
			{BaseURL: "https://y.test/v1", Timeout: -1, Burst: -2},
		},
		BackoffMin: -time.Second,
		MaxRetries: 5000,
	})
	if err == nil {
		t.Fatal("New accepted the config")
	}
	for _, want := range []string{"endpoint 0: BaseURL", "endpoint 0: Weight", "endpoint 1: Timeout", "endpoint 1: Burst", "BackoffMin", "MaxRetries"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %q:\n%v", want, err)
		}
	}
}

// TestNewUnaffectedByLaterConfigChanges: changing the Config, its Endpoints, an
// endpoint's Header map and the ClientBaseURLs slice after New changes
// nothing the Transport does.
func TestNewUnaffectedByLaterConfigChanges(t *testing.T) {
	rec := &recorder{}
	cfg := Config{
		Base:           rec,
		ClientBaseURLs: []string{"https://client.example/v1"},
		Endpoints: []Endpoint{{
			Name: "a", BaseURL: "https://a.test/v1?api-version=1", APIKey: "key-a",
			Header: http.Header{"X-Extra": {"one"}}, MaxRPS: 1000,
		}},
	}
	tr, _ := newTestTransport(t, cfg)

	e := &cfg.Endpoints[0]
	e.Name = "mutated"
	e.APIKey = "key-mutated"
	e.BaseURL = "https://mutated.test/v9?api-version=9"
	e.Header["X-Extra"][0] = "mutated"
	e.Header.Set("X-Added", "1")
	delete(e.Header, "X-Extra")
	e.Disabled = true
	e.MaxRPS = 0.001
	cfg.ClientBaseURLs[0] = "https://mutated-client.example/v1"
	cfg.ClientBaseURLs = append(cfg.ClientBaseURLs, "https://other.example/v1")
	cfg.Endpoints = append(cfg.Endpoints, hostEndpoint("b", 0))

	for range 3 {
		code, _ := roundTrip(t, tr, chatRequest(t, context.Background(), "https://client.example/v1", false))
		if code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	code, _ := roundTrip(t, tr, chatRequest(t, context.Background(), "https://mutated-client.example/v1", false))
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	reqs := rec.Requests()
	if len(reqs) != 4 {
		t.Fatalf("base saw %d requests, want 4", len(reqs))
	}
	for i, r := range reqs[:3] {
		got := r.URL.String() + " auth=" + r.Header.Get("Authorization") + " extra=" + r.Header.Get("X-Extra") + " added=" + r.Header.Get("X-Added")
		if want := "https://a.test/v1/chat/completions?api-version=1 auth=Bearer key-a extra=one added="; got != want {
			t.Errorf("request %d went out as %q, want %q", i, got, want)
		}
	}
	// The mutated client base was never configured: untouched, no key.
	if r := reqs[3]; r.URL.String() != "https://mutated-client.example/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer caller-token" {
		t.Errorf("unrouted request went out as %s with Authorization %q, want it untouched", r.URL, r.Header.Get("Authorization"))
	}
	hs := tr.Health()
	if len(hs) != 1 || hs[0].Name != "a" || hs[0].BaseURL != "https://a.test/v1" || hs[0].State != StateClosed || hs[0].Requests != 3 {
		t.Errorf("health %+v, want endpoint a as configured, with 3 attempts", hs)
	}
}

// TestNewRejectsUnusableConfigs: every endpoint disabled, or a rate below
// one request an hour.
func TestNewRejectsUnusableConfigs(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		want string
	}{
		{"all disabled", []Endpoint{{BaseURL: "https://a.test/v1", Disabled: true}, {BaseURL: "https://b.test/v1", Disabled: true}}, "every endpoint is Disabled"},
		{"rate below one an hour", []Endpoint{{BaseURL: "https://a.test/v1", MaxRPS: 1e-9}}, "below one request an hour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Endpoints: tc.eps})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{Endpoints: []Endpoint{{BaseURL: "https://a.test/v1", MaxRPS: minRPS}}}); err != nil {
		t.Errorf("New with one request an hour: %v", err)
	}
}

// TestNewIsNotQuadratic: New over many endpoints (same host, distinct
// paths, default names, equal weights) takes time about linear in their
// number: 16 times the endpoints must not take 64 times as long (a
// quadratic New takes 256 times).
func TestNewIsNotQuadratic(t *testing.T) {
	if testing.Short() {
		t.Skip("times New over 16,384 endpoints; skipped in -short mode")
	}
	build := func(n int) time.Duration {
		eps := make([]Endpoint, n)
		for i := range eps {
			eps[i] = Endpoint{BaseURL: fmt.Sprintf("https://api.test/p%d/v1", i)}
		}
		best := time.Duration(1<<63 - 1)
		for range 5 {
			start := time.Now()
			if _, err := New(Config{Endpoints: eps}); err != nil {
				t.Fatal(err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	// 16x the endpoints: about 16x the time when linear, 256x when
	// quadratic. The bound sits between them, far from both, since a
	// shared machine can stall either run (the best of five of each).
	small, large := build(1024), build(16384)
	if large > 100*small && large > 200*time.Millisecond {
		t.Fatalf("New: %v for 1,024 endpoints, %v for 16,384: %.0fx for 16x the endpoints", small, large, float64(large)/float64(small))
	}
}
