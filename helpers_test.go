package failover

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clientBase is the client-side base URL the tests send to.
const clientBase = "https://api.openai.com/v1"

// upstream starts a fake OpenAI upstream closed with the test.
func upstream(t testing.TB, name string, opts ...fakeopenai.Option) *fakeopenai.Server {
	t.Helper()
	s := fakeopenai.New(append([]fakeopenai.Option{fakeopenai.WithName(name)}, opts...)...)
	t.Cleanup(s.Close)
	return s
}

// ep returns an endpoint for s named after it, with key "key-<name>".
func ep(s *fakeopenai.Server, priority int) Endpoint {
	return Endpoint{Name: s.Name(), BaseURL: s.URL(), APIKey: "key-" + s.Name(), Priority: priority}
}

// newTestTransport builds a Transport over cfg with a fresh base
// http.Transport closed with the test, and a clock that records sleeps
// instead of sleeping unless the test replaces it.
func newTestTransport(t testing.TB, cfg Config) (*Transport, *fakeClock) {
	t.Helper()
	if cfg.Base == nil {
		base := &http.Transport{DisableCompression: true}
		t.Cleanup(base.CloseIdleConnections)
		cfg.Base = base
	}
	clk := newFakeClock()
	tr, err := newTransport(cfg, clk)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, clk
}

// fakeClock is a clock whose Sleep records the duration and advances the
// clock instead of sleeping.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	epoch  time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	start := time.Unix(1_800_000_000, 0)
	return &fakeClock{t: start, epoch: start}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// now, since and sleep make fakeClock the Transport's clock.
func (c *fakeClock) now() time.Time { return c.Now() }

func (c *fakeClock) since() time.Duration { return c.Now().Sub(c.epoch) }

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error { return c.Sleep(ctx, d) }

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	return nil
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// chatBody is a chat completion request body.
func chatBody(stream bool) string {
	if stream {
		return `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"stream":true}`
	}
	return `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}`
}

// chatRequest builds a POST of a chat completion to base (GetBody set, as
// http.NewRequest sets it for a strings.Reader).
func chatRequest(t testing.TB, ctx context.Context, base string, stream bool) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/chat/completions", strings.NewReader(chatBody(stream)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer caller-token")
	return req
}

// roundTrip sends req through rt and returns the status and the whole body.
func roundTrip(t testing.TB, rt http.RoundTripper, req *http.Request) (int, string) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp.StatusCode, string(b)
}

// chat sends one chat completion through rt to the client base URL and
// returns the status and body.
func chat(t testing.TB, rt http.RoundTripper) (int, string) {
	t.Helper()
	return roundTrip(t, rt, chatRequest(t, context.Background(), clientBase, false))
}

// scriptedBase is an http.RoundTripper with no network: it answers each
// request with the response its script gives for the request's host, and
// records the requests it saw.
type scriptedBase struct {
	mu     sync.Mutex
	script func(req *http.Request, n int) (*http.Response, error) // n counts requests to that host, from 1
	hits   map[string]int
	seen   []seenRequest
	closed atomic.Int64 // response bodies closed
}

type seenRequest struct {
	host, path, query, auth string
	body                    string
}

func newScriptedBase(script func(req *http.Request, n int) (*http.Response, error)) *scriptedBase {
	return &scriptedBase{script: script, hits: map[string]int{}}
}

func (s *scriptedBase) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	s.mu.Lock()
	s.hits[req.URL.Host]++
	n := s.hits[req.URL.Host]
	s.seen = append(s.seen, seenRequest{host: req.URL.Host, path: req.URL.Path, query: req.URL.RawQuery,
		auth: req.Header.Get("Authorization"), body: string(body)})
	s.mu.Unlock()
	resp, err := s.script(req, n)
	if resp != nil {
		resp.Request = req
		if resp.Body == nil {
			resp.Body = http.NoBody
		}
		resp.Body = &closeCounter{ReadCloser: resp.Body, n: &s.closed}
	}
	return resp, err
}

func (s *scriptedBase) Hits(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[host]
}

func (s *scriptedBase) Seen() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.seen...)
}

// reply returns a response with status code, body and header pairs.
func reply(code int, body string, kv ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &http.Response{StatusCode: code, Status: http.StatusText(code), Header: h,
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		ProtoMajor: 1, ProtoMinor: 1}
}

// alwaysOK answers 200 "ok" to everything.
func alwaysOK(*http.Request, int) (*http.Response, error) { return reply(200, "ok"), nil }

// hostEndpoint is an endpoint for the scripted base, at https://<name>.test/v1.
func hostEndpoint(name string, priority int) Endpoint {
	return Endpoint{Name: name, BaseURL: "https://" + name + ".test/v1", APIKey: "key-" + name, Priority: priority}
}

// closeCounter counts Close calls into n.
type closeCounter struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *closeCounter) Close() error {
	c.n.Add(1)
	return c.ReadCloser.Close()
}

// countingBody is a request body without GetBody that counts its closes.
type countingBody struct {
	r      io.Reader
	closes atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *countingBody) Close() error {
	b.closes.Add(1)
	return nil
}

// post builds a POST to u with body as a reader without GetBody.
func post(t testing.TB, u string, body io.ReadCloser) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// reqSnapshot captures what RoundTrip must not change on a request.
func reqSnapshot(req *http.Request) string {
	var b bytes.Buffer
	b.WriteString(req.Method + " " + req.URL.String() + " host=" + req.Host + "\n")
	_ = req.Header.Write(&b)
	return b.String()
}

// waitBound bounds every wait of these tests for a real-time transition:
// generous, as the machines are shared and slow.
const waitBound = 5 * time.Second

// healthOf returns the health of tr's endpoint named name.
func healthOf(t testing.TB, tr *Transport, name string) EndpointHealth {
	t.Helper()
	for _, h := range tr.Health() {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no endpoint named %q in Health", name)
	return EndpointHealth{}
}

// eventually polls cond until it holds, failing the test after waitBound.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, waitBound)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitState polls tr.Health until the endpoint name is in state want.
func waitState(t testing.TB, tr *Transport, name string, want State) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %v", name, want), func() bool { return healthOf(t, tr, name).State == want })
}

// httpBase returns a fresh http.Transport whose idle connections are closed
// with the test, for configs that wrap it.
func httpBase(t testing.TB) *http.Transport {
	t.Helper()
	base := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	t.Cleanup(base.CloseIdleConnections)
	return base
}

// chatOK sends one chat completion and fails unless it is answered 200 by
// the upstream named want.
func chatOK(t testing.TB, tr *Transport, want string) {
	t.Helper()
	code, body := chat(t, tr)
	if code != 200 || !strings.Contains(body, fakeopenai.Reply(want)) {
		t.Fatalf("got %d %q, want 200 from %s", code, body, want)
	}
}

// startSignal is a base RoundTripper that closes started when its first
// request begins, then passes every request to base.
type startSignal struct {
	base    http.RoundTripper
	started chan struct{}
	once    sync.Once
}

func (s *startSignal) RoundTrip(req *http.Request) (*http.Response, error) {
	s.once.Do(func() { close(s.started) })
	return s.base.RoundTrip(req)
}

// syncBuffer is an io.Writer safe for concurrent use, for a log handler.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorder is a base RoundTripper that records the requests it sees and
// answers 200 "ok".
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	resp := reply(200, "ok")
	resp.Request = req
	return resp, nil
}

func (r *recorder) Requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.reqs...)
}

// statusScript answers each host with the status its list gives for the
// n-th request (the last entry repeats); unknown hosts get 200.
func statusScript(codes map[string][]int) func(*http.Request, int) (*http.Response, error) {
	return func(req *http.Request, n int) (*http.Response, error) {
		cs, ok := codes[strings.TrimSuffix(req.URL.Host, ".test")]
		if !ok || len(cs) == 0 {
			return reply(200, "ok"), nil
		}
		code := cs[min(n, len(cs))-1]
		return reply(code, fmt.Sprintf(`{"status":%d}`, code)), nil
	}
}

// newTestTransportOn is newTestTransport on the clock c.
func newTestTransportOn(t testing.TB, cfg Config, c clock) *Transport {
	t.Helper()
	if cfg.Base == nil {
		base := &http.Transport{DisableCompression: true}
		t.Cleanup(base.CloseIdleConnections)
		cfg.Base = base
	}
	tr, err := newTransport(cfg, c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// funcClock is a clock made of a now function (the real clock by default)
// and a sleep function (really sleeping by default), for tests that need
// a clock of their own.
type funcClock struct {
	nowFn   func() time.Time
	sleepFn func(ctx context.Context, d time.Duration) error
	epoch   time.Time
}

func (c *funcClock) now() time.Time {
	if c.nowFn == nil {
		return time.Now()
	}
	return c.nowFn()
}

func (c *funcClock) since() time.Duration { return c.now().Sub(c.epoch) }

func (c *funcClock) sleep(ctx context.Context, d time.Duration) error {
	if c.sleepFn == nil {
		return newRealClock().sleep(ctx, d)
	}
	return c.sleepFn(ctx, d)
}

// endpointsOf returns tr's endpoints in its current configuration.
func endpointsOf(tr *Transport) []*endpoint {
	return tr.snap.Load().endpoints
}

// openBreaker reports failures to e's breaker until it opens.
func openBreaker(tb testing.TB, e *endpoint) {
	tb.Helper()
	for range 1000 {
		if e.breaker.openUntil.Load() != 0 {
			return
		}
		clk := lazyClock{c: e.clock}
		done, ok := e.breaker.allow(&clk)
		if !ok {
			continue
		}
		e.breaker.settle(done, errFailed)
	}
	tb.Fatal("breaker did not open")
}

// passOpenTimeout advances clk by d, an open breaker's timeout, and fails
// the test unless tr's endpoint name is then half-open.
func passOpenTimeout(t testing.TB, tr *Transport, clk *fakeClock, name string, d time.Duration) {
	t.Helper()
	if st := healthOf(t, tr, name).State; st != StateOpen {
		t.Fatalf("%s is %v before its open timeout passed, want open", name, st)
	}
	clk.Advance(d)
	if st := healthOf(t, tr, name).State; st != StateHalfOpen {
		t.Fatalf("%s is %v once its open timeout passed, want half-open", name, st)
	}
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// recordingBase remembers the last request and answers 200.
type recordingBase struct{ req *http.Request }

func (r *recordingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	r.req = req
	return reply(200, "ok"), nil
}

// hostReplies is the script of a scripted base whose answers a test
// changes as it goes: each host answers 200 with its name (the host
// without ".test") as the body, unless set gave it another reply. set and
// healthy are safe to call while requests run.
type hostReplies struct {
	mu      sync.Mutex
	replies map[string]cannedReply
}

// cannedReply is the status, body and header pairs of a reply.
type cannedReply struct {
	code int
	body string
	kv   []string
}

func newHostReplies() *hostReplies {
	return &hostReplies{replies: map[string]cannedReply{}}
}

// set makes the host name answer with code, body and the header pairs kv.
func (h *hostReplies) set(name string, code int, body string, kv ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.replies[name] = cannedReply{code, body, kv}
}

// healthy makes the host name answer 200 with its name again.
func (h *hostReplies) healthy(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.replies, name)
}

func (h *hostReplies) script(req *http.Request, _ int) (*http.Response, error) {
	name := strings.TrimSuffix(req.URL.Host, ".test")
	h.mu.Lock()
	r, ok := h.replies[name]
	h.mu.Unlock()
	if !ok {
		return reply(200, name), nil
	}
	return reply(r.code, r.body, r.kv...), nil
}

// answeredBy sends one chat completion and fails unless it is answered 200
// by the scripted host name, whose body hostReplies makes its name.
func answeredBy(t testing.TB, tr *Transport, name string) {
	t.Helper()
	if code, body := chat(t, tr); code != 200 || body != name {
		t.Fatalf("got %d %q, want 200 from %s", code, body, name)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// stepClock is a clock whose sleeps block until the test advances it past
// their end (a clockwork fake clock): a goroutine that waits through it,
// as the probe loops do, runs only when the test says. Its Advance wakes
// the sleeps it passes; BlockUntil waits until n goroutines sleep on it.
type stepClock struct {
	fc    *clockwork.FakeClock
	epoch time.Time
}

func newStepClock() *stepClock {
	start := time.Unix(1_800_000_000, 0)
	return &stepClock{fc: clockwork.NewFakeClockAt(start), epoch: start}
}

func (c *stepClock) now() time.Time { return c.fc.Now() }

func (c *stepClock) since() time.Duration { return c.fc.Since(c.epoch) }

func (c *stepClock) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := c.fc.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Advance moves the clock on by d, waking the sleeps that end by then.
func (c *stepClock) Advance(d time.Duration) { c.fc.Advance(d) }

// AdvanceTo moves the clock on to t.
func (c *stepClock) AdvanceTo(t time.Time) { c.fc.Advance(t.Sub(c.fc.Now())) }

// BlockUntil waits, at most waitBound, until exactly n goroutines sleep on
// the clock.
func (c *stepClock) BlockUntil(tb testing.TB, n int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := c.fc.BlockUntilContext(ctx, n); err != nil {
		tb.Fatalf("waiting for %d sleeping goroutines: %v", n, err)
	}
}
