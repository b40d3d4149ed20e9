package failover

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// keyedRequest is a chat completion whose body carries the extra members
// of extra (JSON, without braces), sent with GetBody unless noGetBody.
func keyedRequest(t testing.TB, extra string, noGetBody bool) *http.Request {
	t.Helper()
	body := `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]` + extra + `}`
	var r io.Reader = strings.NewReader(body)
	if noGetBody {
		r = io.MultiReader(r) // hides the type: no GetBody
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, clientBase+"/chat/completions", r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

// servedBy sends req through tr and returns the name of the scripted host
// that answered it (its body).
func servedBy(t testing.TB, tr *Transport, req *http.Request) string {
	t.Helper()
	code, body := roundTrip(t, tr, req)
	if code != 200 {
		t.Fatalf("got %d %q, want 200", code, body)
	}
	return body
}

// affinitySetup is a Transport with affinity over the scripted hosts of
// names, all of one tier.
func affinitySetup(t *testing.T, names ...string) (*Transport, *fakeClock, *hostReplies, Config) {
	t.Helper()
	hosts := newHostReplies()
	cfg := Config{Base: newScriptedBase(hosts.script), Affinity: AffinityPromptCacheKey, MaxWait: -1}
	for _, n := range names {
		cfg.Endpoints = append(cfg.Endpoints, hostEndpoint(n, 0))
	}
	tr, clk := newTestTransport(t, cfg)
	return tr, clk, hosts, cfg
}

// TestAffinityKeepsKey: a thousand requests with one prompt_cache_key all
// go to one endpoint, with or without GetBody; requests without a key are
// balanced as usual.
func TestAffinityKeepsKey(t *testing.T) {
	tr, _, _, _ := affinitySetup(t, "a", "b", "c")
	for _, noGetBody := range []bool{false, true} {
		served := map[string]int{}
		for range 1000 {
			served[servedBy(t, tr, keyedRequest(t, `,"prompt_cache_key":"conv-42"`, noGetBody))]++
		}
		if len(served) != 1 {
			t.Fatalf("one key (GetBody %v) went to %v, want one endpoint", !noGetBody, served)
		}
	}
	served := map[string]int{}
	for range 300 {
		served[servedBy(t, tr, keyedRequest(t, "", false))]++
	}
	for _, n := range []string{"a", "b", "c"} {
		if served[n] != 100 {
			t.Fatalf("without a key: %v, want 100 each (round robin)", served)
		}
	}
}

// TestAffinityKeyMembers: prompt_cache_key wins over user, which wins
// over safety_identifier; an escaped key is the same key as the plain one.
func TestAffinityKeyMembers(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want string // the member whose value is the key
	}{
		{`{"prompt_cache_key":"k","user":"u","safety_identifier":"s"}`, "k"},
		{`{"safety_identifier":"s","user":"u"}`, "u"},
		{`{"safety_identifier":"s"}`, "s"},
		{`{"prompt_cache_key":"","user":"u"}`, "u"},
		{`{"prompt_cache_key":7,"user":"u"}`, "u"},
		{`{"prompt_cache_key":"\u006b"}`, "k"},
		{`{"messages":[{"user":"x","prompt_cache_key":"y"}]}`, ""},
		{`not json`, ""},
	} {
		want := uint64(0)
		if tc.want != "" {
			want = keyOf([]byte(`{"prompt_cache_key":"` + tc.want + `"}`))
		}
		if got := keyOf([]byte(tc.doc)); got != want {
			t.Errorf("keyOf(%s) = %x, want the hash of %q (%x)", tc.doc, got, tc.want, want)
		}
	}
}

// TestAffinityYields: while a key's endpoint is not eligible (open,
// cooling down after a 429, at its own MaxRPS, or paced by the provider's
// x-ratelimit-remaining-requests: 0), its requests go at once, without an
// error, to one other endpoint, and come back when it is eligible again.
func TestAffinityYields(t *testing.T) {
	const key = `,"prompt_cache_key":"conv-7"`
	// The key's home, as the consistent hash over a, b and c places it.
	probe, _, _, _ := affinitySetup(t, "a", "b", "c")
	home := servedBy(t, probe, keyedRequest(t, key, false))
	for _, tc := range []struct {
		name string
		// configure changes the configuration of home's endpoint.
		configure func(e *Endpoint)
		// leave makes home ineligible; it may send the key's requests.
		leave func(t *testing.T, tr *Transport, hosts *hostReplies, e *endpoint) (sent string)
		// back is how long until home is eligible again.
		back time.Duration
	}{
		{"open", nil, func(t *testing.T, _ *Transport, _ *hostReplies, e *endpoint) string {
			openBreaker(t, e)
			return ""
		}, time.Minute},
		{"cooling", nil, func(t *testing.T, tr *Transport, hosts *hostReplies, _ *endpoint) string {
			hosts.set(home, http.StatusTooManyRequests, `{"error":{"message":"slow down"}}`, "retry-after", "20")
			defer hosts.healthy(home)
			return servedBy(t, tr, keyedRequest(t, key, false)) // the 429 is retried elsewhere
		}, 21 * time.Second},
		{"rate-limited", func(e *Endpoint) { e.MaxRPS, e.Burst = 1, 1 }, func(t *testing.T, tr *Transport, _ *hostReplies, _ *endpoint) string {
			if got := servedBy(t, tr, keyedRequest(t, key, false)); got != home { // spends home's one token
				t.Fatalf("the key went to %s, want %s", got, home)
			}
			return ""
		}, time.Second},
		{"paced", nil, func(t *testing.T, tr *Transport, hosts *hostReplies, _ *endpoint) string {
			hosts.set(home, http.StatusOK, home, "x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "10s")
			defer hosts.healthy(home)
			if got := servedBy(t, tr, keyedRequest(t, key, false)); got != home { // spends home's window
				t.Fatalf("the key went to %s, want %s", got, home)
			}
			return ""
		}, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := newHostReplies()
			cfg := Config{Base: newScriptedBase(hosts.script), Affinity: AffinityPromptCacheKey, MaxWait: -1}
			for _, n := range []string{"a", "b", "c"} {
				ep := hostEndpoint(n, 0)
				if n == home && tc.configure != nil {
					tc.configure(&ep)
				}
				cfg.Endpoints = append(cfg.Endpoints, ep)
			}
			tr, clk := newTestTransport(t, cfg)
			var e *endpoint
			for _, x := range endpointsOf(tr) {
				if x.name == home {
					e = x
				}
			}
			if tc.configure == nil { // else leave's first request is home's
				if got := servedBy(t, tr, keyedRequest(t, key, false)); got != home {
					t.Fatalf("the key went to %s, want %s", got, home)
				}
			}
			second := tc.leave(t, tr, hosts, e)
			if second == "" {
				second = servedBy(t, tr, keyedRequest(t, key, false))
			}
			if second == home {
				t.Fatalf("with %s %s, the key still went there", home, tc.name)
			}
			for range 50 {
				if got := servedBy(t, tr, keyedRequest(t, key, false)); got != second {
					t.Fatalf("with %s %s, the key went to %s and %s, want one endpoint", home, tc.name, second, got)
				}
			}
			clk.Advance(tc.back)
			if got := servedBy(t, tr, keyedRequest(t, key, false)); got != home {
				t.Fatalf("%v after %s was %s, the key went to %s, want it back home", tc.back, home, tc.name, got)
			}
		})
	}
}

// TestAffinityMovesThird: adding a third endpoint to two moves about a
// third of the keys, all to the new one; removing it moves them back.
func TestAffinityMovesThird(t *testing.T) {
	tr, _, _, cfg := affinitySetup(t, "a", "b")
	const keys = 1500
	assign := func() []string {
		out := make([]string, keys)
		for i := range out {
			out[i] = servedBy(t, tr, keyedRequest(t, fmt.Sprintf(`,"user":"user-%d"`, i), false))
		}
		return out
	}
	before := assign()
	cfg.Endpoints = append(cfg.Endpoints, hostEndpoint("c", 0))
	if err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	after := assign()
	moved := 0
	for i := range after {
		if after[i] != before[i] {
			moved++
			if after[i] != "c" {
				t.Fatalf("key %d moved from %s to %s, want only moves to the new endpoint", i, before[i], after[i])
			}
		}
	}
	if share := float64(moved) / keys; math.Abs(share-1.0/3) > 0.05 {
		t.Fatalf("adding a third endpoint moved %.3f of the keys, want about a third", share)
	}
	cfg.Endpoints = cfg.Endpoints[:2]
	if err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if again := assign(); !equalStrings(again, before) {
		t.Fatal("removing the third endpoint did not give every key its first endpoint back")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAffinityWeighted: each endpoint takes a share of the keys in
// proportion to its Weight.
func TestAffinityWeighted(t *testing.T) {
	hosts := newHostReplies()
	eps := []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)}
	eps[1].Weight = 3
	tr, _ := newTestTransport(t, Config{Base: newScriptedBase(hosts.script), Affinity: AffinityPromptCacheKey, Endpoints: eps})
	const keys = 2000
	b := 0
	for i := range keys {
		if servedBy(t, tr, keyedRequest(t, fmt.Sprintf(`,"prompt_cache_key":"k%d"`, i), false)) == "b" {
			b++
		}
	}
	if share := float64(b) / keys; math.Abs(share-0.75) > 0.04 {
		t.Fatalf("b, of weight 3, took %.3f of the keys, want 0.75", share)
	}
}

// TestAffinityNotRead: without Affinity the body of a request with GetBody
// is never read by the Transport (only the base reads it, once); with it,
// a body that is not JSON, or a GET, is not read either.
func TestAffinityNotRead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		affinity Affinity
		ctype    string
		want     int // GetBody calls
	}{
		{"off", AffinityNone, "application/json", 0},
		{"on", AffinityPromptCacheKey, "application/json", 1},
		{"on, charset", AffinityPromptCacheKey, "application/json; charset=utf-8", 1},
		{"on, multipart", AffinityPromptCacheKey, "multipart/form-data; boundary=x", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, _ := newTestTransport(t, Config{Base: newScriptedBase(alwaysOK), Affinity: tc.affinity,
				Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)}})
			req := keyedRequest(t, `,"prompt_cache_key":"k"`, false)
			req.Header.Set("Content-Type", tc.ctype)
			calls := 0
			getBody := req.GetBody
			req.GetBody = func() (io.ReadCloser, error) { calls++; return getBody() }
			roundTrip(t, tr, req)
			if calls != tc.want {
				t.Fatalf("GetBody called %d times, want %d", calls, tc.want)
			}
		})
	}
}

// TestAffinityBodyIntact: the request body the endpoint receives is whole
// after the key was read from it, with GetBody and without.
func TestAffinityBodyIntact(t *testing.T) {
	for _, noGetBody := range []bool{false, true} {
		base := newScriptedBase(alwaysOK)
		tr, _ := newTestTransport(t, Config{Base: base, Affinity: AffinityPromptCacheKey,
			Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0)}})
		extra := `,"prompt_cache_key":"k"`
		roundTrip(t, tr, keyedRequest(t, extra, noGetBody))
		want := `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]` + extra + `}`
		if seen := base.Seen(); len(seen) != 1 || !bytes.Equal([]byte(seen[0].body), []byte(want)) {
			t.Fatalf("GetBody %v: the endpoint got %+v, want the body whole", !noGetBody, seen)
		}
	}
}

// TestAffinitySlowStart: during its slow start, an endpoint takes back a
// share of its keys that grows with its factor, always the same keys
// first; the others go to their next endpoint meanwhile.
func TestAffinitySlowStart(t *testing.T) {
	const window = 100 * time.Second
	hosts := newHostReplies()
	cfg := Config{Base: newScriptedBase(hosts.script), Affinity: AffinityPromptCacheKey, SlowStart: window,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 0), hostEndpoint("c", 0)}}
	tr, clk := newTestTransport(t, cfg)
	const keys = 1200
	homes := func() []string {
		out := make([]string, keys)
		for i := range out {
			out[i] = servedBy(t, tr, keyedRequest(t, fmt.Sprintf(`,"prompt_cache_key":"k%d"`, i), false))
		}
		return out
	}
	settled := homes()
	c := endpointsOf(tr)[2]
	openBreaker(t, c)
	clk.Advance(time.Minute)
	recoverTrial(t, c)
	var prev []string
	for _, f := range []float64{0.1, 0.5, 1} {
		clk.Advance(time.Duration(f*float64(window)) - clk.Now().Sub(time.Unix(0, c.slow.since.Load())))
		now := homes()
		ofC, back := 0, 0
		for i := range now {
			if settled[i] != "c" {
				if now[i] != settled[i] {
					t.Fatalf("factor %v: key %d of %s moved to %s", f, i, settled[i], now[i])
				}
				continue
			}
			ofC++
			if now[i] == "c" {
				back++
			} else if prev != nil && prev[i] == "c" {
				t.Fatalf("factor %v: key %d had come back to c and left again", f, i)
			}
		}
		if share := float64(back) / float64(ofC); math.Abs(share-f) > 0.06 {
			t.Errorf("factor %v: c took back %.3f of its %d keys", f, share, ofC)
		}
		prev = now
	}
}

// TestAffinityAndTokensReadTheBodyOnce: with affinity on and a MaxTPM to
// charge, the body is read once through GetBody, for both; the first
// attempt still gets the caller's own body.
func TestAffinityAndTokensReadTheBodyOnce(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxTPM = 1e6
	tr, _ := newTestTransport(t, Config{Base: base, Affinity: AffinityPromptCacheKey, Endpoints: []Endpoint{a}})
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"prompt_cache_key":"conv-1","max_tokens":10}`
	req := mustRequest(t, http.MethodPost, clientBase+"/chat/completions")
	req.Header.Set("Content-Type", "application/json")
	req.Body = io.NopCloser(strings.NewReader(body))
	req.ContentLength = int64(len(body))
	var gets atomic.Int64
	req.GetBody = func() (io.ReadCloser, error) {
		gets.Add(1)
		return io.NopCloser(strings.NewReader(body)), nil
	}
	if code, _ := roundTrip(t, tr, req); code != 200 {
		t.Fatalf("status %d", code)
	}
	if n := gets.Load(); n != 1 {
		t.Errorf("GetBody called %d times, want once for affinity and the token estimate together", n)
	}
	if h := healthOf(t, tr, "a"); h.TokenBudget >= 1e6 {
		t.Errorf("token budget %v, want the request charged", h.TokenBudget)
	}
	if seen := base.Seen(); len(seen) != 1 || seen[0].body != body {
		t.Errorf("upstream saw %+v, want the body whole", seen)
	}
}
