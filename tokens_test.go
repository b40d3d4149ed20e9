package failover

import (
	"bytes"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"
)

func TestEstimateTokens(t *testing.T) {
	chat := func(extra string) string {
		return `{"model":"m","messages":[{"role":"user","content":"hello"}]` + extra + `}`
	}
	q := func(s string) int64 { return quarter(len([]rune(s))) }
	for _, tc := range []struct {
		name string
		rest string
		body string
		want int64
	}{
		{"default completion", "/chat/completions", chat(""), q(chat("")) + DefaultCompletionTokens},
		{"max_tokens", "/chat/completions", chat(`,"max_tokens":100`), q(chat(`,"max_tokens":100`)) + 100},
		{"max_completion_tokens wins over max_tokens", "/chat/completions", chat(`,"max_tokens":100,"max_completion_tokens":7`),
			q(chat(`,"max_tokens":100,"max_completion_tokens":7`)) + 7},
		{"max_completion_tokens wins, in any order", "/chat/completions", chat(`,"max_completion_tokens":7,"max_tokens":100`),
			q(chat(`,"max_completion_tokens":7,"max_tokens":100`)) + 7},
		{"times n", "/chat/completions", chat(`,"max_tokens":100,"n":3`), q(chat(`,"max_tokens":100,"n":3`)) + 300},
		{"Responses API max_output_tokens", "/responses", `{"input":"hi","max_output_tokens":50}`, q(`{"input":"hi","max_output_tokens":50}`) + 50},
		{"embeddings: input only", "/embeddings", `{"model":"e","input":"abcdefgh"}`, q(`"abcdefgh"`)},
		{"characters, not bytes", "/embeddings", `{"input":"ééééééééé"}`, q(`"ééééééééé"`)},
		{"a max_tokens in a message is not the member", "/chat/completions", `{"messages":[{"content":"\"max_tokens\":5"}]}`,
			q(`{"messages":[{"content":"\"max_tokens\":5"}]}`) + DefaultCompletionTokens},
		{"not JSON: an upload", "/audio/transcriptions", "--boundary\r\ncontent", 0},
		{"empty", "/chat/completions", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := estimateTokens([]byte(tc.body), tc.rest); got != tc.want {
				t.Fatalf("estimateTokens = %d, want %d", got, tc.want)
			}
		})
	}
}

// countingGetBody returns a request whose GetBody counts its calls.
func countingGetBody(t *testing.T, body string, calls *atomic.Int64) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, clientBase+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	get := req.GetBody
	req.GetBody = func() (io.ReadCloser, error) {
		calls.Add(1)
		return get()
	}
	return req
}

// TestEstimateReadsTheBodyOnlyWhenNeeded: a request to endpoints with no
// token limit and no provider token window never reads its body again; one
// to an endpoint with MaxTPM reads it once, however many attempts it makes.
func TestEstimateReadsTheBodyOnlyWhenNeeded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxTPM float64
		want   int64
	}{
		{"no token limit", 0, 0},
		{"MaxTPM", 1e6, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(statusScript(map[string][]int{"a": {500}}))
			a, b := hostEndpoint("a", 0), hostEndpoint("b", 1)
			a.MaxTPM, b.MaxTPM = tc.maxTPM, tc.maxTPM
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, b}})
			var calls atomic.Int64
			code, _ := roundTrip(t, tr, countingGetBody(t, chatBody(false), &calls))
			if code != 200 || base.Hits("a.test") != 1 || base.Hits("b.test") != 1 {
				t.Fatalf("status %d, hits a=%d b=%d; want a failover from a to b", code, base.Hits("a.test"), base.Hits("b.test"))
			}
			// The second attempt replays the body through GetBody: one
			// call is the replay's.
			if got := calls.Load() - 1; got != tc.want {
				t.Fatalf("GetBody called %d times for the estimate, want %d", got, tc.want)
			}
		})
	}
}

// TestMaxTPM: an endpoint spends its tokens per minute on the requests'
// estimates, then the requests go to the next endpoint, and it refills on
// the clock.
func TestMaxTPM(t *testing.T) {
	base := newScriptedBase(alwaysOK)
	a := hostEndpoint("a", 0)
	a.MaxTPM = 6000 // 100 a second, burst 6000
	est := estimateTokens([]byte(chatBody(false)), "/chat/completions")
	a.TokenBurst = int(3 * est)
	tr, clk := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, hostEndpoint("b", 1)}})
	for range 5 {
		chat(t, tr)
	}
	if got := base.Hits("a.test"); got != 3 {
		t.Fatalf("a took %d requests of %d tokens with a burst of %d, want 3", got, est, a.TokenBurst)
	}
	if h := healthOf(t, tr, "a"); h.TokenBudget < 0 || h.TokenBudget >= 1 {
		t.Fatalf("a's token budget %v, want spent", h.TokenBudget)
	}
	clk.Advance(time.Duration(float64(est) / 100 * float64(time.Second)))
	chat(t, tr)
	if got := base.Hits("a.test"); got != 4 {
		t.Fatalf("a took %d requests once its tokens refilled, want 4", got)
	}
}

// TestUsageCorrectsTheCharge: once the caller has read a response, the
// request's charge becomes the usage the provider counted, streamed
// (stream_options.include_usage) or not; the estimate's error is a
// metric.
func TestUsageCorrectsTheCharge(t *testing.T) {
	const usage = 20
	for _, tc := range []struct {
		name   string
		stream bool
		body   string
		ctype  string
	}{
		{"JSON", false, `{"id":"x","choices":[],"usage":{"prompt_tokens":15,"completion_tokens":5,"total_tokens":20},"system_fingerprint":"fp"}`, "application/json"},
		{"stream with usage", true, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":15,\"completion_tokens\":5,\"total_tokens\":20}}\n\ndata: [DONE]\n\n", "text/event-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := newScriptedBase(func(*http.Request, int) (*http.Response, error) {
				return reply(200, tc.body, "Content-Type", tc.ctype), nil
			})
			a := hostEndpoint("a", 0)
			a.MaxTPM = 60000
			a.TokenBurst = 10000
			reg := prometheus.NewRegistry()
			tr, _ := newTestTransport(t, Config{Base: base, Registerer: reg, Endpoints: []Endpoint{a}})
			est := estimateTokens([]byte(chatBody(tc.stream)), "/chat/completions")
			resp, err := tr.RoundTrip(chatRequest(t, t.Context(), clientBase, tc.stream))
			if err != nil {
				t.Fatal(err)
			}
			if h := healthOf(t, tr, "a"); h.TokenBudget != float64(10000-est) {
				t.Fatalf("budget %v before the body was read, want %d charged", h.TokenBudget, est)
			}
			got, err := io.ReadAll(iotest.HalfReader(resp.Body))
			if err != nil || string(got) != tc.body {
				t.Fatalf("body %q, %v: the caller must get it whole", got, err)
			}
			resp.Body.Close()
			if h := healthOf(t, tr, "a"); h.TokenBudget != 10000-usage {
				t.Fatalf("budget %v after the body, want the charge corrected to the usage, %d", h.TokenBudget, usage)
			}
			if n := testutil.CollectAndCount(reg, "failover_token_estimate_ratio"); n != 1 {
				t.Fatalf("%d estimate ratio series, want 1", n)
			}
		})
	}
}

// TestUsageBodyFindsTotalsSplitAcrossReads: the usage member is found
// whatever the reads' boundaries, and the last one counts.
func TestUsageBodyFindsTotalsSplitAcrossReads(t *testing.T) {
	body := `{"a":"` + strings.Repeat("x", 200) + `","usage":{"total_tokens": 1234},"b":{"usage":{"total_tokens":42}}}`
	for _, tc := range []struct {
		name string
		r    func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"byte by byte", iotest.OneByteReader},
		{"halves", iotest.HalfReader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUsageBody(io.NopCloser(tc.r(strings.NewReader(body))), nil, 0)
			var out bytes.Buffer
			buf := make([]byte, 7)
			for {
				n, err := u.Read(buf)
				out.Write(buf[:n])
				if err != nil {
					break
				}
			}
			if out.String() != body || u.total != 42 {
				t.Fatalf("total %d, body intact %v; want 42 and intact", u.total, out.String() == body)
			}
		})
	}
}

// TestTokenLimiterAdjust guards what the usage correction relies on:
// rate.Limiter takes a positive count into debt and gives back a negative
// one, up to its burst.
func TestTokenLimiterAdjust(t *testing.T) {
	clk := newFakeClock()
	lim := rate.NewLimiter(1, 100)
	var l tokenLimiter
	if !l.take(lim, clk, 60) {
		t.Fatal("60 of 100 tokens refused")
	}
	l.adjust(lim, clk, -50)
	if got := lim.TokensAt(clk.Now()); got != 90 {
		t.Fatalf("tokens %v after giving back 50 of 60, want 90", got)
	}
	l.adjust(lim, clk, 120)
	if got := lim.TokensAt(clk.Now()); got != -10 {
		t.Fatalf("tokens %v after a charge of 120 more (capped at the burst, 100), want -10", got)
	}
	l.adjust(lim, clk, -100)
	l.adjust(lim, clk, -50)
	if got := lim.TokensAt(clk.Now()); got != 100 {
		t.Fatalf("tokens %v after giving back more than the burst holds, want the burst, 100", got)
	}
}

// TestMaxTPMSettings: MaxTPM and TokenBurst come from OPENAI_MAX_TPM_N and
// OPENAI_TOKEN_BURST_N, and New refuses bad values naming the field.
func TestMaxTPMSettings(t *testing.T) {
	cfg, err := ConfigFromEnviron([]string{"OPENAI_API_KEY_1=k", "OPENAI_MAX_TPM_1=90000", "OPENAI_TOKEN_BURST_1=5000"})
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Endpoints[0]; e.MaxTPM != 90000 || e.TokenBurst != 5000 {
		t.Fatalf("MaxTPM %v, TokenBurst %d; want 90000 and 5000", e.MaxTPM, e.TokenBurst)
	}
	for _, tc := range []struct {
		name string
		e    func(*Endpoint)
		want string
	}{
		{"negative MaxTPM", func(e *Endpoint) { e.MaxTPM = -1 }, "MaxTPM -1"},
		{"NaN MaxTPM", func(e *Endpoint) { e.MaxTPM = math.NaN() }, "MaxTPM NaN"},
		{"negative TokenBurst", func(e *Endpoint) { e.TokenBurst = -2 }, "TokenBurst -2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := hostEndpoint("a", 0)
			tc.e(&e)
			if _, err := New(Config{Endpoints: []Endpoint{e}}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{SharedTimeout: -time.Second, Endpoints: []Endpoint{hostEndpoint("a", 0)}}); err == nil ||
		!strings.Contains(err.Error(), "SharedTimeout") {
		t.Fatalf("New with a negative SharedTimeout: %v, want an error naming it", err)
	}
}

// TestUpgradeWritableWithTokenBudget: an endpoint with a MaxTPM
// hands a 101 Switching Protocols (the Realtime API's WebSocket) to the
// caller with a body that is still the connection's writer. The token
// budget's usage tap must not hide the Write method: net/http and
// httputil.ReverseProxy need an io.ReadWriteCloser to use the upgraded
// connection.
func TestUpgradeWritableWithTokenBudget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*Endpoint)
	}{
		{"MaxTPM", func(e *Endpoint) { e.MaxTPM = 600_000 }},
		{"MaxTPM and Timeout", func(e *Endpoint) { e.MaxTPM = 600_000; e.Timeout = 60e9 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Upgrade": {"websocket"}},
					Body: client, Request: req}, nil
			})
			a := hostEndpoint("a", 0)
			tc.setup(&a)
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}})
			req, _ := http.NewRequest(http.MethodGet, clientBase+"/realtime", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			rw, ok := resp.Body.(io.ReadWriteCloser)
			if !ok {
				t.Fatalf("101 body %T is not writable: the upgraded connection cannot be used", resp.Body)
			}
			go func() { _, _ = rw.Write([]byte("ping")) }()
			got := make([]byte, 4)
			if _, err := io.ReadFull(server, got); err != nil || string(got) != "ping" {
				t.Fatalf("read %q, %v through the upgraded body, want ping", got, err)
			}
		})
	}
}
