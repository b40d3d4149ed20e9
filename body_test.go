package failover

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestBodyReplayedWithGetBody(t *testing.T) {
	var srvs []*fakeopenai.Server
	var eps []Endpoint
	for i, name := range []string{"a", "b", "c"} {
		s := upstream(t, name)
		if i < 2 {
			s.SetFault(fakeopenai.StatusFault(500))
		}
		srvs = append(srvs, s)
		eps = append(eps, ep(s, i))
	}
	tr, _ := newTestTransport(t, Config{Endpoints: eps})
	req := chatRequest(t, context.Background(), clientBase, false)
	if req.GetBody == nil {
		t.Fatal("test request has no GetBody")
	}
	code, body := roundTrip(t, tr, req)
	if code != 200 || !strings.Contains(body, fakeopenai.Reply("c")) {
		t.Fatalf("got %d %q, want c's answer", code, body)
	}
	for _, s := range srvs {
		got, ok := s.Last()
		if !ok || string(got.Body) != chatBody(false) {
			t.Errorf("%s saw body %q, want %q", s.Name(), got.Body, chatBody(false))
		}
	}
}

func TestBodyWithoutGetBodyClosedOnce(t *testing.T) {
	const payload = `{"model":"gpt-test","messages":[{"role":"user","content":"replay me"}]}`
	for _, tc := range []struct {
		name      string
		getBody   bool  // set a GetBody on the request
		codes     []int // per endpoint a, b, c; 0 means disabled
		wantCode  int   // 0: want ErrNoEndpointAvailable
		wantSeenN int
	}{
		{"fails over twice", false, []int{500, 500, 200}, 200, 3},
		{"first succeeds", false, []int{200, 200, 200}, 200, 1},
		{"no endpoint available", false, []int{0, 0, 0}, 0, 0},
		{"all fail", false, []int{500, 502, 503}, 503, 3},
		{"with GetBody, fails over", true, []int{500, 500, 200}, 200, 3},
		{"with GetBody, no endpoint available", true, []int{0, 0, 0}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codes := map[string][]int{}
			var eps []Endpoint
			for i, name := range []string{"a", "b", "c"} {
				e := hostEndpoint(name, i)
				if tc.codes[i] == 0 {
					// Never available: a rate that has no token yet.
					e.MaxRPS, e.Burst = minRPS, 1
				}
				codes[name] = []int{tc.codes[i]}
				eps = append(eps, e)
			}
			base := newScriptedBase(statusScript(codes))
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps, MaxRetries: 2, MaxWait: -1})
			for _, e := range endpointsOf(tr) {
				if e.limiter != nil {
					e.allowRate() // spend the only token
				}
			}
			body := &countingBody{r: strings.NewReader(payload)}
			req := post(t, clientBase+"/chat/completions", body)
			if tc.getBody {
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(payload)), nil }
			} else if req.GetBody != nil {
				t.Fatal("test request has a GetBody")
			}
			resp, err := tr.RoundTrip(req)
			switch {
			case tc.wantCode == 0:
				if !errors.Is(err, ErrNoEndpointAvailable) {
					t.Errorf("error %v, want ErrNoEndpointAvailable", err)
				}
			case err != nil:
				t.Fatalf("RoundTrip: %v", err)
			default:
				if resp.StatusCode != tc.wantCode {
					t.Errorf("status %d, want %d", resp.StatusCode, tc.wantCode)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			seen := base.Seen()
			if len(seen) != tc.wantSeenN {
				t.Errorf("%d attempts, want %d", len(seen), tc.wantSeenN)
			}
			for _, s := range seen {
				if s.body != payload {
					t.Errorf("%s saw body %q, want %q", s.host, s.body, payload)
				}
			}
			if n := body.closes.Load(); n != 1 {
				t.Errorf("caller's body closed %d times, want once", n)
			}
		})
	}
}

func TestBodyAboveMaxBodyBufferSentOnce(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{"a": {500}}))
	tr, _ := newTestTransport(t, Config{Base: base, MaxBodyBuffer: 16,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	payload := strings.Repeat("x", 100)
	body := &countingBody{r: strings.NewReader(payload)}
	resp, err := tr.RoundTrip(post(t, clientBase+"/chat/completions", body))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || string(got) != `{"status":500}` {
		t.Errorf("got %d %q, want a's 500", resp.StatusCode, got)
	}
	if base.Hits("a.test") != 1 || base.Hits("b.test") != 0 {
		t.Errorf("hits a=%d b=%d, want exactly one attempt, on a", base.Hits("a.test"), base.Hits("b.test"))
	}
	if seen := base.Seen(); len(seen) != 1 || seen[0].body != payload {
		t.Errorf("upstream saw %+v, want the whole 100-byte body once", seen)
	}
	if n := body.closes.Load(); n != 1 {
		t.Errorf("caller's body closed %d times, want once", n)
	}
}

func TestBodyGetBodyFailsOnSecondAttempt(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{"a": {500}}))
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	errGetBody := errors.New("test: GetBody exploded")
	body := &countingBody{r: strings.NewReader(chatBody(false))}
	req := post(t, clientBase+"/chat/completions", body)
	req.GetBody = func() (io.ReadCloser, error) { return nil, errGetBody }

	type result struct {
		resp  *http.Response
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			r.panic = recover()
			done <- r
		}()
		r.resp, r.err = tr.RoundTrip(req)
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(waitBound):
		t.Fatalf("RoundTrip still running after %v", waitBound)
	}
	if r.panic != nil {
		t.Fatalf("RoundTrip panicked: %v", r.panic)
	}
	switch {
	case r.err != nil:
		if !errors.Is(r.err, errGetBody) {
			t.Errorf("error %v does not wrap the GetBody error", r.err)
		}
	case r.resp.StatusCode != 500:
		t.Errorf("status %d, want the first attempt's 500", r.resp.StatusCode)
	}
	if r.resp != nil {
		r.resp.Body.Close()
	}
	if base.Hits("b.test") != 0 {
		t.Errorf("b got %d hits without a body to send, want 0", base.Hits("b.test"))
	}
	if n := body.closes.Load(); n != 1 {
		t.Errorf("caller's body closed %d times, want once", n)
	}
}

// TestBodyNoCopies checks the two promises the package makes about
// bodies: a request body with GetBody is handed to the first attempt
// as it is (GetBody runs only for later attempts), and a successful
// response body reaches the caller as the base returned it, unbuffered.
func TestBodyNoCopies(t *testing.T) {
	var (
		firstBody io.ReadCloser
		respBody  = io.NopCloser(strings.NewReader("streamed"))
	)
	base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return reply(503, "busy"), nil
		}
		resp := reply(200, "")
		resp.Body = respBody
		return resp, nil
	})
	seen := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if firstBody == nil {
			firstBody = req.Body
		}
		return base.RoundTrip(req)
	})
	tr, _ := newTestTransport(t, Config{Base: seen, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	req := chatRequest(t, context.Background(), clientBase, false)
	callerBody := req.Body
	getBodies := 0
	getBody := req.GetBody
	req.GetBody = func() (io.ReadCloser, error) { getBodies++; return getBody() }

	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if firstBody != callerBody {
		t.Error("the first attempt got a copy of the request body, not the caller's")
	}
	if getBodies != 1 {
		t.Errorf("GetBody ran %d times for 2 attempts, want 1", getBodies)
	}
	if got := unwrapCloseCounter(resp.Body); got != respBody {
		t.Errorf("the response body is %T, not the base's own", resp.Body)
	}
}

// unwrapCloseCounter returns the body scriptedBase wrapped.
func unwrapCloseCounter(rc io.ReadCloser) io.ReadCloser {
	if c, ok := rc.(*closeCounter); ok {
		return c.ReadCloser
	}
	return rc
}

func TestBodyDiscardedResponsesClosed(t *testing.T) {
	base := newScriptedBase(statusScript(map[string][]int{"a": {500}, "b": {502}, "c": {200}}))
	tr, _ := newTestTransport(t, Config{Base: base,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1), hostEndpoint("c", 2)}})
	resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if n := base.closed.Load(); n != 2 {
		t.Errorf("%d response bodies closed before the caller's, want the 2 discarded", n)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := base.closed.Load(); n != 3 {
		t.Errorf("%d response bodies closed in all, want 3", n)
	}
}

// TestBodyFinalErrorKeptWhole checks Config.MaxErrorBody's promise: an
// error body longer than MaxErrorBody is cut only when a later attempt ran;
// the response of the last attempt reaches the caller whole.
func TestBodyFinalErrorKeptWhole(t *testing.T) {
	long := `{"error":{"message":"` + strings.Repeat("x", 100) + `"}}`
	for _, tc := range []struct {
		name       string
		codes      []int
		maxRetries int
		wantHits   []int64
	}{
		{"caller error", []int{400}, 0, []int64{1}},
		{"only attempt fails", []int{500}, -1, []int64{1}},
		{"last of two attempts fails", []int{503, 500}, 1, []int64{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvs []*fakeopenai.Server
			var eps []Endpoint
			for i, code := range tc.codes {
				s := upstream(t, fmt.Sprintf("e%d", i))
				s.SetFault(fakeopenai.StatusFault(code).WithBody(long))
				srvs = append(srvs, s)
				eps = append(eps, ep(s, i))
			}
			tr, _ := newTestTransport(t, Config{Endpoints: eps, MaxRetries: tc.maxRetries, MaxErrorBody: 16})
			code, body := roundTrip(t, tr, chatRequest(t, context.Background(), clientBase, false))
			if want := tc.codes[len(tc.codes)-1]; code != want || body != long {
				t.Errorf("got %d with a %d-byte body %q, want %d with the whole %d-byte body", code, len(body), body, want, len(long))
			}
			for i, s := range srvs {
				if s.Hits() != tc.wantHits[i] {
					t.Errorf("%s got %d hits, want %d", s.Name(), s.Hits(), tc.wantHits[i])
				}
			}
		})
	}
}

// TestBodyFailedResponseBelow400Kept: a response that failed without
// an error status (x-should-retry on a redirect) and ends up returned after
// a later attempt failed too still has its body.
func TestBodyFailedResponseBelow400Kept(t *testing.T) {
	base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return reply(307, "moved-body", "X-Should-Retry", "true"), nil
		}
		return nil, errors.New("connection refused")
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: 1, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	status, body := roundTrip(t, tr, chatRequest(t, context.Background(), clientBase, false))
	if status != 307 || body != "moved-body" {
		t.Errorf("caller got %d %q, want a's 307 with its body", status, body)
	}
}

// TestBodyLimitsAtTheirMaximum: the largest MaxBodyBuffer and MaxErrorBody
// mean "no limit", not an overflow that empties the bodies.
func TestBodyLimitsAtTheirMaximum(t *testing.T) {
	payload := strings.Repeat("x", 100)
	const errBody = `{"error":{"message":"bad model"}}`
	base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
		return reply(400, errBody), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxBodyBuffer: math.MaxInt64, MaxErrorBody: math.MaxInt64,
		Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	body := &countingBody{r: strings.NewReader(payload)}
	status, got := roundTrip(t, tr, post(t, clientBase+"/chat/completions", body))
	if seen := base.Seen(); len(seen) != 1 || seen[0].body != payload {
		t.Errorf("upstream saw %+v, want one request with the %d-byte payload", seen, len(payload))
	}
	if status != 400 || got != errBody {
		t.Errorf("caller got %d %q, want the upstream's 400 body intact", status, got)
	}
}

func TestBodyGzippedErrorClassified(t *testing.T) {
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write([]byte(`{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}`))
	_ = zw.Close()
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return reply(429, zipped.String(), "Content-Encoding", "gzip"), nil
		}
		return reply(200, "ok"), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	req := chatRequest(t, context.Background(), clientBase, false)
	req.Header.Set("Accept-Encoding", "gzip") // the caller decodes itself: the base leaves bodies compressed
	if code, _ := roundTrip(t, tr, req); code != 200 {
		t.Fatalf("status %d, want b's 200", code)
	}
	if h := healthOf(t, tr, "a"); h.State != StateOpen {
		t.Fatalf("a is %v, want open: a gzipped insufficient_quota must be recognised", h.State)
	}
}

// TestBodyTruncatedUpstream: an upstream that sends its headers (200, and for a
// plain body a Content-Length) and then drops the connection part-way
// through the body gives the caller a read error, never a short body that
// reads as complete, and the request is not sent again once the headers
// arrived.
func TestBodyTruncatedUpstream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stream  bool
		timeout time.Duration
	}{
		{"plain", false, 0},
		{"plain with timeout", false, 5 * time.Second},
		{"stream", true, 0},
		{"stream with timeout", true, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := upstream(t, "a")
			b := upstream(t, "b")
			a.SetFault(fakeopenai.StreamCut(2))
			ea := ep(a, 0)
			ea.Timeout = tc.timeout
			tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{ea, ep(b, 1)}})
			resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, tc.stream))
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Fake-Upstream") != "a" {
				t.Fatalf("status %d from %q, want a's 200", resp.StatusCode, resp.Header.Get("X-Fake-Upstream"))
			}
			if !tc.stream && resp.ContentLength <= 0 {
				t.Fatalf("Content-Length %d, want the declared length", resp.ContentLength)
			}
			body, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("read %d bytes of a cut body without error: %q", len(body), body)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read error %v, want io.ErrUnexpectedEOF", err)
			}
			if !tc.stream && int64(len(body)) >= resp.ContentLength {
				t.Errorf("read %d of %d bytes, want a short read", len(body), resp.ContentLength)
			}
			if tc.stream && strings.Contains(string(body), "[DONE]") {
				t.Errorf("cut stream carries [DONE]: %q", body)
			}
			if a.Hits() != 1 || b.Hits() != 0 {
				t.Errorf("hits a=%d b=%d, want 1 and 0: nothing is retried once the headers arrived", a.Hits(), b.Hits())
			}
		})
	}
}

func TestBodyUpgradeStaysWritable(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Upgrade": {"websocket"}},
			Body: client, Request: req}, nil
	})
	a := hostEndpoint("a", 0)
	a.Timeout = time.Minute // the body is wrapped to release the attempt's context on Close
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}})
	req, _ := http.NewRequest(http.MethodGet, clientBase+"/realtime", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not writable", resp.Body)
	}
	go func() { _, _ = rw.Write([]byte("ping")) }()
	got := make([]byte, 4)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v through the upgraded body, want ping", got, err)
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestReadAtMost: a body is read whole up to limit bytes, and one byte past
// it shows that it is longer, whatever size the request claimed.
func TestReadAtMost(t *testing.T) {
	const limit = 1000
	for _, n := range []int{0, 1, limit - 1, limit, limit + 1, 5 * limit} {
		for _, claimed := range []int64{-1, 0, int64(n), int64(n) / 2, int64(n) * 3, 1 << 40} {
			body := bytes.Repeat([]byte("x"), n)
			got, err := readAtMost(iotest.HalfReader(bytes.NewReader(body)), limit, claimed)
			want := min(n, limit+1)
			if err != nil || len(got) != want || !bytes.Equal(got, body[:want]) {
				t.Errorf("%d bytes, claimed %d: read %d, %v; want %d", n, claimed, len(got), err, want)
			}
		}
	}
	if _, err := readAtMost(iotest.ErrReader(errors.New("boom")), limit, 10); err == nil {
		t.Error("a read error was not returned")
	}
}

// TestBodyAboveMaxBodyBufferFailsOverWhenUnread: a body too large to
// buffer still fails over when the failed attempt read none of it (a
// refused connection); the next endpoint gets it whole, and the caller's
// body is closed once.
func TestBodyAboveMaxBodyBufferFailsOverWhenUnread(t *testing.T) {
	refused := errors.New("test: connection refused")
	base := newScriptedBase(func(req *http.Request, n int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return nil, refused
		}
		return reply(200, "ok"), nil
	})
	// The scripted base reads every body; a refusing base reads none.
	refusing := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			_ = req.Body.Close() // as http.Transport closes a body it never sent
			return nil, refused
		}
		return base.RoundTrip(req)
	})
	tr, _ := newTestTransport(t, Config{Base: refusing, MaxBodyBuffer: 16,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	payload := strings.Repeat("x", 100)
	body := &countingBody{r: strings.NewReader(payload)}
	code, got := roundTrip(t, tr, post(t, clientBase+"/chat/completions", body))
	if code != 200 || got != "ok" {
		t.Fatalf("got %d %q, want b's 200", code, got)
	}
	if seen := base.Seen(); len(seen) != 1 || seen[0].host != "b.test" || seen[0].body != payload {
		t.Errorf("upstreams saw %+v, want b alone with the whole 100-byte body", seen)
	}
	if n := body.closes.Load(); n != 1 {
		t.Errorf("caller's body closed %d times, want once", n)
	}
}

// TestBodyAboveMaxBodyBufferPartlySent: when the failed attempt read part
// of a body too large to buffer, the request ends with ErrBodyTooLarge,
// naming the limit; no second endpoint gets a body cut short.
func TestBodyAboveMaxBodyBufferPartlySent(t *testing.T) {
	b := newScriptedBase(alwaysOK)
	reset := errors.New("test: connection reset")
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			buf := make([]byte, 10)
			_, _ = io.ReadFull(req.Body, buf) // part of it, then the connection dies
			_ = req.Body.Close()
			return nil, reset
		}
		return b.RoundTrip(req)
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxBodyBuffer: 16,
		Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	body := &countingBody{r: strings.NewReader(strings.Repeat("x", 100))}
	_, err := tr.RoundTrip(post(t, clientBase+"/chat/completions", body))
	if !errors.Is(err, ErrBodyTooLarge) || !errors.Is(err, reset) || !strings.Contains(err.Error(), "MaxBodyBuffer (16 bytes)") {
		t.Fatalf("error %v, want ErrBodyTooLarge naming the 16-byte limit, and a's reset", err)
	}
	if got := b.Hits("b.test"); got != 0 {
		t.Errorf("b got %d request(s) with a cut body", got)
	}
	if n := body.closes.Load(); n != 1 {
		t.Errorf("caller's body closed %d times, want once", n)
	}
}

// TestBodyStreamedReleasedWhenTransportDone: the caller's streamed body is
// closed when both the request and the base transport are done with it,
// whichever comes last.
func TestBodyStreamedReleasedWhenTransportDone(t *testing.T) {
	var held io.ReadCloser
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		held = req.Body // as a transport still writing the body after the response
		return reply(200, "ok"), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxBodyBuffer: 16, Endpoints: []Endpoint{hostEndpoint("a", 0)}})
	body := &countingBody{r: strings.NewReader(strings.Repeat("x", 100))}
	roundTrip(t, tr, post(t, clientBase+"/chat/completions", body))
	if n := body.closes.Load(); n != 0 {
		t.Fatalf("caller's body closed %d times while the transport still holds it", n)
	}
	if b, err := io.ReadAll(held); err != nil || len(b) != 100 {
		t.Fatalf("the transport read %d bytes, %v; want the whole body", len(b), err)
	}
	held.Close()
	if n := body.closes.Load(); n != 1 {
		t.Errorf("caller's body closed %d times after the transport closed it, want once", n)
	}
}
