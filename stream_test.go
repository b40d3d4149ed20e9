package failover

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestSSEScannerTellsContent feeds event streams to the scanner whole and
// split at every byte: the events that carry content (or end the stream)
// and the end are told apart from keep-alives, empty data and chunks that
// carry no output.
func TestSSEScannerTellsContent(t *testing.T) {
	roleOnly := `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	for _, tc := range []struct {
		name    string
		kind    streamKind
		stream  string
		content int
		ended   bool
	}{
		{"chat role only", streamChat, roleOnly, 0, false},
		{"chat comment and empty data", streamChat, ": keep-alive\n\ndata:\n\ndata: \n\n", 0, false},
		{"chat content", streamChat, roleOnly + `data: {"choices":[{"delta":{"content":"Hi"}}]}` + "\n\n", 1, false},
		{"chat content with spaces", streamChat, `data: {"choices": [{"delta": {"content": "Hi"}}]}` + "\n\n", 1, false},
		{"chat empty content with spaces", streamChat, `data: {"choices": [{"delta": {"content": ""}}]}` + "\n\n", 0, false},
		{"chat null content", streamChat, `data: {"choices":[{"delta":{"content":null}}]}` + "\n\n", 0, false},
		{"chat tool call", streamChat, `data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}` + "\n\n", 1, false},
		{"chat reasoning", streamChat, `data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}` + "\n\n", 1, false},
		{"chat finish", streamChat, `data: {"choices":[{"delta":{},"finish_reason":"stop"}]}` + "\n\n", 1, false},
		{"chat error", streamChat, `data: {"error":{"message":"overloaded"}}` + "\n\n", 1, false},
		{"completions text", streamChat, `data: {"choices":[{"text":"Hi","index":0}]}` + "\n\n", 1, false},
		{"chat done", streamChat, "data: [DONE]\n\n", 1, true},
		{"chat CRLF", streamChat, "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n", 2, true},
		{"chat done without blank line", streamChat, "data: [DONE]\n", 0, false},
		{"responses created, in progress", streamResponses,
			"event: response.created\ndata: {\"type\":\"response.created\"}\n\nevent: response.in_progress\ndata: {\"type\":\"response.in_progress\"}\n\n", 0, false},
		{"responses delta", streamResponses, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n", 1, false},
		{"responses type in data only", streamResponses, "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n", 1, false},
		{"responses completed", streamResponses, "event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n", 1, true},
		{"responses failed", streamResponses, "event: response.failed\ndata: {}\n\n", 1, true},
		{"responses error", streamResponses, "event: error\ndata: {\"type\":\"error\"}\n\n", 1, true},
		{"other data", streamOther, "data: anything\n\n: ping\n\n", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.stream); cut++ {
				s := sseScanner{kind: tc.kind}
				n := s.feed([]byte(tc.stream[:cut])) + s.feed([]byte(tc.stream[cut:]))
				if n != tc.content || s.ended != tc.ended {
					t.Fatalf("split at %d: %d content events, ended %v; want %d, %v", cut, n, s.ended, tc.content, tc.ended)
				}
			}
		})
	}
}

// TestSSEScannerLongLine: a line longer than the scanner keeps is judged
// on its start, and the lines after it are read as usual.
func TestSSEScannerLongLine(t *testing.T) {
	long := `data: {"choices":[{"delta":{"content":"` + strings.Repeat("x", 3*maxSSELine) + `"}}]}` + "\n\n"
	s := sseScanner{kind: streamChat}
	n := 0
	for i := 0; i < len(long); i += 1000 {
		n += s.feed([]byte(long[i:min(i+1000, len(long))]))
	}
	n += s.feed([]byte("data: [DONE]\n\n"))
	if n != 2 || !s.ended || len(s.carry) > maxSSELine {
		t.Fatalf("%d content events, ended %v, carry %d bytes; want 2, true, at most %d", n, s.ended, len(s.carry), maxSSELine)
	}
}

// TestSSEScannerFirstOnly: a scanner that needs only the first content
// event (no idle timer) turns terminal-only as that event ends: the events
// of the reads after it count without being read, even a chunk without
// output, which a scanner still telling content apart does not count.
func TestSSEScannerFirstOnly(t *testing.T) {
	for _, tc := range []struct {
		firstOnly bool
		events    int
	}{{true, 4}, {false, 3}} {
		s := sseScanner{kind: streamChat, firstOnly: tc.firstOnly}
		n := 0
		for _, ev := range []string{roleOnlyEvent, contentEvent, roleOnlyEvent, contentEvent, "data: [DONE]\n\n"} {
			n += s.feed([]byte(ev))
		}
		if n != tc.events || !s.ended || s.terminalOnly != tc.firstOnly {
			t.Errorf("firstOnly %v: %d events counted, ended %v, terminalOnly %v; want %d, true, %v",
				tc.firstOnly, n, s.ended, s.terminalOnly, tc.events, tc.firstOnly)
		}
	}
}

// TestSSEScannerRestOfRead: in a read where an event carrying content
// ended, the events after it count without being read (the reader only
// needs to know one did), and the terminal event is still spotted; the
// next read is read for content again.
func TestSSEScannerRestOfRead(t *testing.T) {
	s := sseScanner{kind: streamChat}
	if n := s.feed([]byte(roleOnlyEvent + contentEvent + roleOnlyEvent + ": ping\n\n")); n != 2 || s.ended {
		t.Fatalf("%d events counted, ended %v; want the content and the chunk after it, not ended", n, s.ended)
	}
	if n := s.feed([]byte(roleOnlyEvent)); n != 0 {
		t.Fatalf("a read of a chunk without output counted %d events, want 0", n)
	}
	if n := s.feed([]byte(contentEvent + "data: [DONE]\n\n")); n != 2 || !s.ended {
		t.Fatalf("%d events counted, ended %v; want 2, ended", n, s.ended)
	}
}

// TestLastEventEnd: the end of a read's last empty line, LF or CRLF, at
// its start or after other lines; 0 when it has none.
func TestLastEventEnd(t *testing.T) {
	for _, tc := range []struct {
		r    string
		want int
	}{
		{"", 0}, {"data: x", 0}, {"data: x\n", 0}, {"a\nb\n", 0},
		{"\n", 1}, {"\r\n", 2}, {"\ndata: x\n", 1},
		{"data: x\n\n", 9}, {"data: x\r\n\r\n", 11}, {"data: x\n\ndata: y\n\ndata: z\n", 18},
		{"data: x\n\n: ping\n", 9},
	} {
		if got := lastEventEnd([]byte(tc.r)); got != tc.want {
			t.Errorf("lastEventEnd(%q) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

// TestSSEScannerRestOfReadEndsWithTheRead: the events read without looking
// at their content after a counted one are only those that end in the same
// read: a chunk without output whose blank line comes in the next read is
// read for content, and not counted, however the reads cut the stream.
func TestSSEScannerRestOfReadEndsWithTheRead(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n"} {
		s := sseScanner{kind: streamChat}
		if n := s.feed([]byte(contentEvent + emptyDataLine)); n != 1 {
			t.Fatalf("%d events counted, want the content", n)
		}
		for i := range 3 {
			if n := s.feed([]byte(eol + emptyDataLine)); n != 0 {
				t.Fatalf("read %d (%q line ends): a chunk without output that ended in it counted %d events, want 0", i, eol, n)
			}
		}
	}
}

// TestSSEScannerTerminalOnly: once no one needs to tell content events
// apart (terminalOnly: the first went by and no idle timer runs), every
// event counts, comments still do not, and the terminal event is still
// spotted, so a truncated stream is still told from a complete one, with
// the stream split at every byte (a chat stream's chunks are passed over
// unread, and keep only a short carry when split).
func TestSSEScannerTerminalOnly(t *testing.T) {
	long := `data: {"choices":[{"delta":{"content":"` + strings.Repeat("x", 300) + `"}}]}` + "\n\n"
	for _, tc := range []struct {
		name   string
		stream string
		events int
		ended  bool
	}{
		{"chunk and comment", roleOnlyEvent + ": ping\n\n", 1, false},
		{"long chunk", long, 1, false},
		{"done", "data: [DONE]\n\n", 1, true},
		{"done without space", "data:[DONE]\n\n", 1, true},
		{"chunks then done", roleOnlyEvent + long + ": ping\n\ndata: [DONE]\r\n\r\n", 3, true},
		{"done without blank line", long + "data: [DONE]\n", 1, false},
		{"done in a chunk's text", `data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}` + "\n\n", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.stream); cut++ {
				s := sseScanner{kind: streamChat, terminalOnly: true}
				n := s.feed([]byte(tc.stream[:cut]))
				if len(s.carry) > maxDoneLine {
					t.Fatalf("split at %d: carry holds %d bytes, want at most %d", cut, len(s.carry), maxDoneLine)
				}
				n += s.feed([]byte(tc.stream[cut:]))
				if n != tc.events || s.ended != tc.ended {
					t.Fatalf("split at %d: %d events counted, ended %v; want %d, %v", cut, n, s.ended, tc.events, tc.ended)
				}
			}
		})
	}
}

// streamRequest posts a streamed request for path through tr and returns
// the response.
func streamRequest(t *testing.T, ctx context.Context, tr http.RoundTripper, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, clientBase+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	return resp
}

// direct fetches path from s without the transport, as the reference of
// what an untouched stream is.
func direct(t *testing.T, s *fakeopenai.Server, path, body string) string {
	t.Helper()
	resp, err := http.Post(s.URL()+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return sameIDs(string(b))
}

// idRE matches the ids the fake upstream numbers by request.
var idRE = regexp.MustCompile(`(chatcmpl-|cmpl-|resp_|msg_resp_)[a-z]+[-_][0-9]+`)

// sameIDs replaces the per-request ids of a stream, so that two answers of
// one upstream compare equal.
func sameIDs(s string) string { return idRE.ReplaceAllString(s, "${1}ID") }

const (
	responsesBody   = `{"model":"gpt-test","input":"hi","stream":true}`
	completionsBody = `{"model":"gpt-test","prompt":"hi","stream":true}`
)

// TestStreamCompleteUntouched: a complete stream, chat completions, legacy
// completions or Responses API,
// reaches the caller byte for byte as the upstream sent it, with every
// timeout on, and is counted complete.
func TestStreamCompleteUntouched(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{"/chat/completions", chatBody(true)},
		{"/completions", completionsBody},
		{"/responses", responsesBody},
	} {
		t.Run(tc.path, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a := upstream(t, "a")
			// The real clock, for a time to the first token.
			tr := newTestTransportOn(t, Config{Registerer: reg, Endpoints: []Endpoint{ep(a, 0)},
				FirstTokenTimeout: time.Minute, StreamIdleTimeout: time.Minute}, &funcClock{epoch: time.Now()})
			resp := streamRequest(t, context.Background(), tr, tc.path, tc.body)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			if want := direct(t, a, tc.path, tc.body); sameIDs(string(got)) != want {
				t.Fatalf("stream through the transport:\n%s\nwant, as sent:\n%s", got, want)
			}
			if n := metricValue(t, reg, "failover_streams_total", map[string]string{"endpoint": "a", "outcome": "complete"}); n != 1 {
				t.Errorf("complete streams = %v, want 1", n)
			}
			if n := metricValue(t, reg, "failover_first_token_seconds", map[string]string{"endpoint": "a"}); n != 1 {
				t.Errorf("first-token observations = %v, want 1", n)
			}
			if h := healthOf(t, tr, "a"); h.FirstToken <= 0 || h.Failures != 0 {
				t.Errorf("health %+v, want a first-token time and no failure", h)
			}
		})
	}
}

// TestStreamFirstTokenTimeoutFailsOver: an endpoint that sends its headers
// and then only keep-alive comments (or a role-only chunk) is given up
// after FirstTokenTimeout, and the request fails over: the caller gets the
// second endpoint's whole stream, nothing of the first.
func TestStreamFirstTokenTimeoutFailsOver(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakeopenai.Fault
	}{
		{"keep-alives only", fakeopenai.StreamStall(0, 10*time.Millisecond)},
		{"role-only chunk then keep-alives", fakeopenai.StreamStall(1, 10*time.Millisecond)},
		{"nothing after the headers", fakeopenai.StreamStall(0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			a, b := upstream(t, "a"), upstream(t, "b")
			a.SetFault(tc.fault)
			tr, _ := newTestTransport(t, Config{Registerer: reg, Endpoints: []Endpoint{ep(a, 0), ep(b, 1)},
				FirstTokenTimeout: 200 * time.Millisecond})
			// A bound, so that a stream wrongly let through ends the test.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp := streamRequest(t, ctx, tr, "/chat/completions", chatBody(true))
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			if want := direct(t, b, "/chat/completions", chatBody(true)); sameIDs(string(got)) != want {
				t.Fatalf("stream:\n%s\nwant b's alone:\n%s", got, want)
			}
			if h := healthOf(t, tr, "a"); h.Failures != 1 || !strings.Contains(h.LastError, "no first token within 200ms") {
				t.Errorf("a: %+v, want one failure: no first token", h)
			}
			if n := metricValue(t, reg, "failover_attempts_total", map[string]string{"endpoint": "a", "outcome": "first_token_timeout"}); n != 1 {
				t.Errorf("first_token_timeout attempts = %v, want 1", n)
			}
		})
	}
}

// firedTimers is manualTimers where a timer made for a time already passed
// fires before afterFunc returns: a real timer's goroutine that runs ahead
// of the request's.
type firedTimers struct{ *manualTimers }

func (m firedTimers) afterFunc(d time.Duration, f func()) streamTimer {
	tm := m.manualTimers.afterFunc(d, f)
	if d <= 0 {
		tm.Stop()
		f()
	}
	return tm
}

// TestStreamFirstTokenDeadlinePassedBeforeTheWait: when the headers come
// after the first-token deadline and its timer fires before the wait for
// the first token begins, the attempt still fails over, instead of waiting
// for content that never comes.
func TestStreamFirstTokenDeadlinePassedBeforeTheWait(t *testing.T) {
	clk, u := firedTimers{newManualTimers()}, newPipeUpstream() // a sends nothing after its headers
	complete := contentEvent + "data: [DONE]\n\n"
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Host == "a.example" {
			clk.Advance(31 * time.Second) // its headers come late
			return u.base().RoundTrip(req)
		}
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body: io.NopCloser(strings.NewReader(complete)), Request: req}, nil
	})
	tr := newTestTransportOn(t, Config{Base: base, FirstTokenTimeout: 30 * time.Second, Endpoints: []Endpoint{
		{Name: "a", BaseURL: "https://a.example/v1", APIKey: "key-a"},
		{Name: "b", BaseURL: "https://b.example/v1", APIKey: "key-b", Priority: 1}}}, clk)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends a wait that hangs, failing the test
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, clientBase+"/chat/completions", strings.NewReader(chatBody(true)))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan readResult, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			got <- readResult{err: err}
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		got <- readResult{string(data), err}
	}()
	select {
	case r := <-got:
		if r.err != nil || r.data != complete {
			t.Fatalf("read %q, %v; want b's stream", r.data, r.err)
		}
	case <-time.After(waitBound):
		t.Fatal("the request still waits for a first token whose deadline passed before the wait began")
	}
	if h := healthOf(t, tr, "a"); h.Failures != 1 {
		t.Errorf("a counted %d failures, want 1", h.Failures)
	}
}

// TestStreamFirstTokenInTime: a role-only chunk, then content, well within
// FirstTokenTimeout: held back only until the content, then given whole.
func TestStreamFirstTokenInTime(t *testing.T) {
	a := upstream(t, "a")
	a.SetFault(fakeopenai.Fault{Kind: fakeopenai.KindSlowDrip, Interval: 20 * time.Millisecond})
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{ep(a, 0)}, FirstTokenTimeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp := streamRequest(t, ctx, tr, "/chat/completions", chatBody(true))
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a.SetFault(fakeopenai.Healthy())
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	if want := direct(t, a, "/chat/completions", chatBody(true)); sameIDs(string(got)) != want {
		t.Fatalf("stream:\n%s\nwant:\n%s", got, want)
	}
	if h := healthOf(t, tr, "a"); h.Failures != 0 {
		t.Errorf("a counted %d failures for a stream that came in time", h.Failures)
	}
}

// TestStreamStallErrors: a stream that stops sending content after three
// chunks (keep-alive comments still coming) fails the caller's read with
// ErrStreamStalled after StreamIdleTimeout, long before the caller's own
// deadline, and the endpoint counts a failure.
func TestStreamStallErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := upstream(t, "a")
	a.SetFault(fakeopenai.StreamStall(3, 10*time.Millisecond))
	tr, _ := newTestTransport(t, Config{Registerer: reg, Endpoints: []Endpoint{ep(a, 0)}, StreamIdleTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp := streamRequest(t, ctx, tr, "/chat/completions", chatBody(true))
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, ErrStreamStalled) {
		t.Fatalf("read error %v, want ErrStreamStalled", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the caller's deadline passed first")
	}
	if !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("error %q does not name the endpoint", err)
	}
	if n := strings.Count(string(got), "data: "); n != 3 {
		t.Errorf("the caller got %d events before the stall, want the 3 sent:\n%s", n, got)
	}
	if n := metricValue(t, reg, "failover_streams_total", map[string]string{"endpoint": "a", "outcome": "stalled"}); n != 1 {
		t.Errorf("stalled streams = %v, want 1", n)
	}
	if h := healthOf(t, tr, "a"); h.Failures != 1 || h.LastError != "stream stalled" {
		t.Errorf("a: %+v, want one failure, the stall", h)
	}
}

// TestStreamTruncatedIsAnError: a chat completions, legacy completions or
// Responses API stream that ends
// cleanly before its terminal event gives the caller io.ErrUnexpectedEOF,
// naming the endpoint, and counts a failure; AllowTruncatedStreams lets it
// end as complete.
func TestStreamTruncatedIsAnError(t *testing.T) {
	for _, tc := range []struct{ path, body string }{
		{"/chat/completions", chatBody(true)},
		{"/completions", completionsBody},
		{"/responses", responsesBody},
	} {
		for _, allow := range []bool{false, true} {
			t.Run(tc.path+map[bool]string{false: "", true: " allowed"}[allow], func(t *testing.T) {
				reg := prometheus.NewRegistry()
				a := upstream(t, "a")
				a.SetFault(fakeopenai.StreamTruncate(0))
				tr, _ := newTestTransport(t, Config{Registerer: reg, Endpoints: []Endpoint{ep(a, 0)}, AllowTruncatedStreams: allow})
				resp := streamRequest(t, context.Background(), tr, tc.path, tc.body)
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				outcome := "truncated"
				if allow {
					outcome = "complete"
					if err != nil {
						t.Fatalf("read error %v, want none with AllowTruncatedStreams", err)
					}
				} else if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), `"a"`) {
					t.Fatalf("read error %v, want io.ErrUnexpectedEOF naming endpoint a", err)
				}
				if len(got) == 0 {
					t.Error("the caller got nothing of the stream before its end")
				}
				if n := metricValue(t, reg, "failover_streams_total", map[string]string{"endpoint": "a", "outcome": outcome}); n != 1 {
					t.Errorf("%s streams = %v, want 1", outcome, n)
				}
				if want := map[bool]uint64{false: 1, true: 0}[allow]; healthOf(t, tr, "a").Failures != want {
					t.Errorf("a counted %d failures, want %d", healthOf(t, tr, "a").Failures, want)
				}
			})
		}
	}
}

// TestStreamCanceledByCaller: a caller that closes the stream early is
// counted canceled, not as a failure of the endpoint.
func TestStreamCanceledByCaller(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := upstream(t, "a")
	a.SetFault(fakeopenai.StreamStall(2, 10*time.Millisecond))
	tr, _ := newTestTransport(t, Config{Registerer: reg, Endpoints: []Endpoint{ep(a, 0)}})
	resp := streamRequest(t, context.Background(), tr, "/chat/completions", chatBody(true))
	buf := make([]byte, 16)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := metricValue(t, reg, "failover_streams_total", map[string]string{"endpoint": "a", "outcome": "canceled"}); n != 1 {
		t.Errorf("canceled streams = %v, want 1", n)
	}
	if h := healthOf(t, tr, "a"); h.Failures != 0 {
		t.Errorf("a counted %d failures for a stream its caller closed", h.Failures)
	}
}

// TestStreamNotAnEventStreamUntouched: a response that is not an event
// stream gets no stream body, whatever the timeouts.
func TestStreamNotAnEventStreamUntouched(t *testing.T) {
	a := upstream(t, "a")
	tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{ep(a, 0)}, FirstTokenTimeout: time.Minute, StreamIdleTimeout: time.Minute})
	resp := streamRequest(t, context.Background(), tr, "/chat/completions", chatBody(false))
	defer resp.Body.Close()
	body := resp.Body
	if c, ok := body.(*cancelOnClose); ok {
		body = c.ReadCloser
	}
	if _, ok := body.(*streamBody); ok {
		t.Fatal("a JSON response got a stream body")
	}
}

// manualTimers is the fake clock with stream timers that a test fires by
// hand (see timerClock).
type manualTimers struct {
	*fakeClock
	made chan *manualTimer // every timer made, in order
}

func newManualTimers() *manualTimers {
	return &manualTimers{fakeClock: newFakeClock(), made: make(chan *manualTimer, 16)}
}

func (m *manualTimers) afterFunc(d time.Duration, f func()) streamTimer {
	t := &manualTimer{clk: m.fakeClock, f: f, d: d, due: m.Now().Add(d), armed: true}
	m.made <- t
	return t
}

// next returns the next timer made, failing the test if none comes.
func (m *manualTimers) next(t *testing.T) *manualTimer {
	t.Helper()
	select {
	case tm := <-m.made:
		return tm
	case <-time.After(waitBound):
		t.Fatal("no stream timer was started")
		return nil
	}
}

// manualTimer is a stream timer that runs its function when the test
// fires it, if it is armed, with the clock moved on to when it was due.
type manualTimer struct {
	clk    *fakeClock
	f      func()
	mu     sync.Mutex
	d      time.Duration // the period last set
	due    time.Time     // when it passes: d after it was last set
	armed  bool
	resets int
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.armed
	t.d, t.due, t.armed = d, t.clk.Now().Add(d), true
	t.resets++
	return was
}

func (t *manualTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := t.armed
	t.armed = false
	return was
}

// state returns the period last set, whether the timer is armed and how
// often it was reset.
func (t *manualTimer) state() (d time.Duration, armed bool, resets int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.d, t.armed, t.resets
}

// fire runs the timer's function, as its expiry would, in the test's
// goroutine, after moving the clock on to when the timer was due (if it
// is not there yet); it fails the test if the timer is not armed.
func (t *manualTimer) fire(tb testing.TB) {
	tb.Helper()
	t.mu.Lock()
	armed, due := t.armed, t.due
	t.armed = false
	t.mu.Unlock()
	if !armed {
		tb.Fatal("firing a stream timer that is not armed")
	}
	if wait := due.Sub(t.clk.Now()); wait > 0 {
		t.clk.Advance(wait)
	}
	t.f()
}

// pipeUpstream is an event stream upstream the test feeds: each string
// sent on events is what one read of the body gets (cut to the reader's
// buffer), closing events ends the body cleanly. The body's reads end
// with the attempt's context, as net/http's do, and closed is closed when
// the body is.
type pipeUpstream struct {
	events  chan string
	blocked chan struct{} // a read waits for data
	closed  chan struct{}
	once    sync.Once
}

func newPipeUpstream() *pipeUpstream {
	return &pipeUpstream{events: make(chan string, 16), blocked: make(chan struct{}, 1), closed: make(chan struct{})}
}

// base answers one request with the event stream.
func (u *pipeUpstream) base() http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body: &pipeBody{u: u, ctx: req.Context()}, Request: req}, nil
	})
}

// waitBlocked waits until a read of the body waits for data.
func (u *pipeUpstream) waitBlocked(t *testing.T) {
	t.Helper()
	select {
	case <-u.blocked:
	case <-time.After(waitBound):
		t.Fatal("no read of the upstream body waited")
	}
}

// isClosed reports whether the body was closed.
func (u *pipeUpstream) isClosed() bool {
	select {
	case <-u.closed:
		return true
	default:
		return false
	}
}

type pipeBody struct {
	u    *pipeUpstream
	ctx  context.Context
	rest string
}

func (b *pipeBody) Read(p []byte) (int, error) {
	if b.rest == "" {
		var (
			s  string
			ok bool
		)
		select {
		case s, ok = <-b.u.events:
		default:
			select {
			case b.u.blocked <- struct{}{}:
			default:
			}
			select {
			case s, ok = <-b.u.events:
			case <-b.ctx.Done():
				return 0, context.Cause(b.ctx)
			case <-b.u.closed:
				return 0, errors.New("read of a closed body")
			}
		}
		if !ok {
			return 0, io.EOF
		}
		b.rest = s
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

func (b *pipeBody) Close() error {
	b.u.once.Do(func() { close(b.u.closed) })
	return nil
}

// pipedStream sends a streamed chat request through a Transport over u
// with cfg's stream timeouts and the timers of clk, and returns the
// caller's response.
func pipedStream(t *testing.T, u *pipeUpstream, clk *manualTimers, reg *prometheus.Registry, cfg Config) (*Transport, *http.Response) {
	t.Helper()
	cfg.Base, cfg.Registerer = u.base(), reg
	cfg.Endpoints = []Endpoint{{Name: "a", BaseURL: "https://a.example/v1", APIKey: "key-a"}}
	tr := newTestTransportOn(t, cfg, clk)
	resp := streamRequest(t, context.Background(), tr, "/chat/completions", chatBody(true))
	t.Cleanup(func() { resp.Body.Close() })
	return tr, resp
}

// readResult is what one read of a stream gave.
type readResult struct {
	data string
	err  error
}

// readAsync starts one read of body with a large buffer.
func readAsync(body io.Reader) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		buf := make([]byte, 128<<10)
		n, err := body.Read(buf)
		ch <- readResult{string(buf[:n]), err}
	}()
	return ch
}

// result waits for a read started by readAsync.
func result(t *testing.T, ch <-chan readResult) readResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitBound):
		t.Fatal("a read of the stream did not return")
		return readResult{}
	}
}

const (
	keepAlive    = ": keep-alive\n\n"
	contentEvent = `data: {"choices":[{"delta":{"content":"Hi"}}]}` + "\n\n"
	// roleOnlyEvent carries no output: a chat stream's first chunk.
	roleOnlyEvent = `data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}` + "\n\n"
	// emptyDataLine is the data line of a chunk without output, without
	// the blank line that ends its event.
	emptyDataLine = `data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}` + "\n"
)

// checkCut checks that a stream cut by a timeout has had its upstream body
// closed before the caller closed its own, and is counted as a failure of
// endpoint a with outcome.
func checkCut(t *testing.T, tr *Transport, u *pipeUpstream, reg *prometheus.Registry, outcome string) {
	t.Helper()
	if !u.isClosed() {
		t.Error("the upstream body is still open after the timeout")
	}
	if n := metricValue(t, reg, "failover_streams_total", map[string]string{"endpoint": "a", "outcome": outcome}); n != 1 {
		t.Errorf("%s streams = %v, want 1", outcome, n)
	}
	if h := healthOf(t, tr, "a"); h.Failures != 1 {
		t.Errorf("a counted %d failures, want 1", h.Failures)
	}
}

// TestStreamIdleCoversTheFirstTokenWithoutFirstTokenTimeout: with
// StreamIdleTimeout and no FirstTokenTimeout, the stall timer starts when
// the headers arrive, so a stream that sends its headers and then only
// keep-alives fails the caller's read with ErrStreamStalled instead of
// hanging until the caller's context ends.
func TestStreamIdleCoversTheFirstTokenWithoutFirstTokenTimeout(t *testing.T) {
	reg, clk, u := prometheus.NewRegistry(), newManualTimers(), newPipeUpstream()
	tr, resp := pipedStream(t, u, clk, reg, Config{StreamIdleTimeout: 7 * time.Second})
	timer := clk.next(t)
	if d, armed, _ := timer.state(); d != 7*time.Second || !armed {
		t.Fatalf("the timer runs for %v (armed %v), want the idle timeout, 7s, from the headers", d, armed)
	}
	u.events <- keepAlive
	if r := result(t, readAsync(resp.Body)); r.err != nil || r.data != keepAlive {
		t.Fatalf("read %q, %v; want the keep-alive", r.data, r.err)
	}
	if _, _, resets := timer.state(); resets != 0 {
		t.Fatalf("a keep-alive reset the stall timer (%d resets)", resets)
	}
	read := readAsync(resp.Body)
	u.waitBlocked(t)
	timer.fire(t)
	if r := result(t, read); !errors.Is(r.err, ErrStreamStalled) {
		t.Fatalf("read error %v, want ErrStreamStalled", r.err)
	}
	checkCut(t, tr, u, reg, "stalled")
}

// TestStreamStallAfterContent: after a content event the stall timeout
// runs StreamIdleTimeout anew (the timer, not reset at each event, runs on
// when it finds content came); keep-alives and chunks without output do
// not renew it; when it passes while the caller reads, the read fails with
// ErrStreamStalled naming the endpoint, and the upstream body is closed.
func TestStreamStallAfterContent(t *testing.T) {
	reg, clk, u := prometheus.NewRegistry(), newManualTimers(), newPipeUpstream()
	tr, resp := pipedStream(t, u, clk, reg, Config{StreamIdleTimeout: 7 * time.Second})
	timer := clk.next(t)
	clk.Advance(5 * time.Second)
	u.events <- contentEvent
	if r := result(t, readAsync(resp.Body)); r.err != nil || r.data != contentEvent {
		t.Fatalf("read %q, %v; want the content event", r.data, r.err)
	}
	clk.Advance(time.Second)
	u.events <- keepAlive
	if r := result(t, readAsync(resp.Body)); r.err != nil || r.data != keepAlive {
		t.Fatalf("read %q, %v; want the keep-alive", r.data, r.err)
	}
	// Nor does a chunk without output after the first content (the
	// scanner still reads the chunks while an idle timer runs).
	empty := `data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}` + "\n\n"
	clk.Advance(500 * time.Millisecond)
	u.events <- empty
	if r := result(t, readAsync(resp.Body)); r.err != nil || r.data != empty {
		t.Fatalf("read %q, %v; want the empty chunk", r.data, r.err)
	}
	if _, _, resets := timer.state(); resets != 0 {
		t.Fatalf("the timer was reset %d times by the events, want none (it runs on when it passes)", resets)
	}
	read := readAsync(resp.Body)
	u.waitBlocked(t)
	timer.fire(t) // 7s after the headers, 2s after the content
	if d, armed, _ := timer.state(); d != 5*time.Second || !armed {
		t.Fatalf("2s after the content the timer runs for %v (armed %v), want the rest of the period, 5s", d, armed)
	}
	select {
	case r := <-read:
		t.Fatalf("the read ended (%q, %v) 2s after content, want it to wait", r.data, r.err)
	default:
	}
	if u.isClosed() {
		t.Fatal("the upstream body was closed 2s after content")
	}
	timer.fire(t) // 7s after the content, keep-alives and empty chunks only since
	r := result(t, read)
	if !errors.Is(r.err, ErrStreamStalled) || !strings.Contains(r.err.Error(), `"a"`) {
		t.Fatalf("read error %v, want ErrStreamStalled naming endpoint a", r.err)
	}
	checkCut(t, tr, u, reg, "stalled")
}

// TestStreamStallThroughSplitEvents: an upstream that flushes each chunk's
// data line and sends its blank line with the next chunk still stalls when
// its chunks carry no output: each read's counted content does not spill
// into the event that ends in the next read.
func TestStreamStallThroughSplitEvents(t *testing.T) {
	reg, clk, u := prometheus.NewRegistry(), newManualTimers(), newPipeUpstream()
	tr, resp := pipedStream(t, u, clk, reg, Config{StreamIdleTimeout: 7 * time.Second})
	timer := clk.next(t)
	u.events <- contentEvent + emptyDataLine
	if r := result(t, readAsync(resp.Body)); r.err != nil {
		t.Fatalf("reading the content: %v", r.err)
	}
	for range 5 { // 20s of chunks without output
		clk.Advance(4 * time.Second)
		u.events <- "\n" + emptyDataLine
		if r := result(t, readAsync(resp.Body)); r.err != nil {
			t.Fatalf("reading a chunk: %v", r.err)
		}
	}
	read := readAsync(resp.Body)
	u.waitBlocked(t)
	timer.fire(t)
	if r := result(t, read); !errors.Is(r.err, ErrStreamStalled) {
		t.Fatalf("read %q, %v after 20s of chunks without output; want ErrStreamStalled", r.data, r.err)
	}
	checkCut(t, tr, u, reg, "stalled")
}

// TestStreamIdleWhileTheCallerIsAway: the stall timeout passing while the
// caller is not reading does not fail the stream (content may be waiting
// unread): the caller's next read gets what came, and when nothing comes,
// a whole StreamIdleTimeout of its own before it fails.
func TestStreamIdleWhileTheCallerIsAway(t *testing.T) {
	reg, clk, u := prometheus.NewRegistry(), newManualTimers(), newPipeUpstream()
	tr, resp := pipedStream(t, u, clk, reg, Config{StreamIdleTimeout: 7 * time.Second})
	timer := clk.next(t)

	timer.fire(t) // the caller has not read yet
	u.events <- contentEvent
	if r := result(t, readAsync(resp.Body)); r.err != nil || r.data != contentEvent {
		t.Fatalf("read %q, %v after the timeout passed while the caller was away; want the content that came", r.data, r.err)
	}
	if u.isClosed() {
		t.Fatal("the upstream body was closed although content came")
	}

	_, _, before := timer.state()
	timer.fire(t) // away again, and this time nothing comes
	read := readAsync(resp.Body)
	u.waitBlocked(t)
	if d, armed, resets := timer.state(); d != 7*time.Second || !armed || resets != before+1 {
		t.Fatalf("the returning caller's timer runs for %v (armed %v, %d resets), want a whole 7s period", d, armed, resets-before)
	}
	select {
	case r := <-read:
		t.Fatalf("the returning caller's read ended at once (%q, %v), want it to wait its own period", r.data, r.err)
	default:
	}
	timer.fire(t)
	if r := result(t, read); !errors.Is(r.err, ErrStreamStalled) {
		t.Fatalf("read error %v, want ErrStreamStalled", r.err)
	}
	checkCut(t, tr, u, reg, "stalled")
}

// floodOfKeepAlives is more than the first-token wait holds back.
var floodOfKeepAlives = strings.Repeat(keepAlive, maxHeld/len(keepAlive)+1)

// TestStreamFirstTokenDeadlineAfterRelease: a stream the first-token wait
// releases to the caller because it held maxHeld bytes of events without
// content stays under the first-token deadline (not the stall timer, which
// starts at the first content event): when the deadline passes, the
// caller's read fails with ErrFirstTokenTimeout, the upstream body is
// closed and the endpoint counts a failure; content before it starts the
// stall timer.
func TestStreamFirstTokenDeadlineAfterRelease(t *testing.T) {
	for _, content := range []bool{false, true} {
		t.Run(map[bool]string{false: "no content", true: "content after the release"}[content], func(t *testing.T) {
			reg, clk, u := prometheus.NewRegistry(), newManualTimers(), newPipeUpstream()
			u.events <- floodOfKeepAlives
			tr, resp := pipedStream(t, u, clk, reg, Config{FirstTokenTimeout: 30 * time.Second, StreamIdleTimeout: 7 * time.Second})
			timer := clk.next(t)
			if d, armed, resets := timer.state(); d != 30*time.Second || !armed || resets != 0 {
				t.Fatalf("the released stream's timer runs for %v (armed %v, %d resets), want the first-token deadline, 30s", d, armed, resets)
			}
			var got strings.Builder
			for got.Len() < len(floodOfKeepAlives) {
				r := result(t, readAsync(resp.Body))
				if r.err != nil {
					t.Fatalf("reading the keep-alives: %v", r.err)
				}
				got.WriteString(r.data)
			}
			if got.String() != floodOfKeepAlives {
				t.Fatal("the caller did not get the keep-alives as sent")
			}
			want, outcome := ErrFirstTokenTimeout, "first_token_timeout"
			if content {
				u.events <- contentEvent
				if r := result(t, readAsync(resp.Body)); r.err != nil || r.data != contentEvent {
					t.Fatalf("read %q, %v; want the content event", r.data, r.err)
				}
				if d, armed, _ := timer.state(); d != 7*time.Second || !armed {
					t.Fatalf("after the first content the timer runs for %v (armed %v), want the idle timeout, 7s", d, armed)
				}
				want, outcome = ErrStreamStalled, "stalled"
			}
			read := readAsync(resp.Body)
			u.waitBlocked(t)
			timer.fire(t)
			r := result(t, read)
			if !errors.Is(r.err, want) || !strings.Contains(r.err.Error(), `"a"`) {
				t.Fatalf("read error %v, want one matching %v naming endpoint a", r.err, want)
			}
			if content && errors.Is(r.err, ErrFirstTokenTimeout) {
				t.Errorf("read error %v matches ErrFirstTokenTimeout after the first token", r.err)
			}
			checkCut(t, tr, u, reg, outcome)
		})
	}
}

// TestStreamTimeoutsCloseTheUpstreamConnection: on a loopback upstream, a
// stream cut by its stall timeout, or given up by its first-token timeout,
// has its connection closed: the upstream sees it end while the caller
// still holds its response, unclosed.
func TestStreamTimeoutsCloseTheUpstreamConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fakeopenai.Fault
		cfg   Config
	}{
		{"stall", fakeopenai.StreamStall(3, 10*time.Millisecond), Config{StreamIdleTimeout: 200 * time.Millisecond}},
		{"first token", fakeopenai.StreamStall(0, 10*time.Millisecond), Config{FirstTokenTimeout: 200 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := upstream(t, "a"), upstream(t, "b")
			a.SetFault(tc.fault)
			cfg := tc.cfg
			cfg.Endpoints = []Endpoint{ep(a, 0), ep(b, 1)}
			tr, _ := newTestTransport(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			resp := streamRequest(t, ctx, tr, "/chat/completions", chatBody(true))
			defer resp.Body.Close()
			if tc.cfg.StreamIdleTimeout > 0 {
				if _, err := io.ReadAll(resp.Body); !errors.Is(err, ErrStreamStalled) {
					t.Fatalf("read error %v, want ErrStreamStalled", err)
				}
			} else if got := resp.Header.Get("X-Fake-Upstream"); got != "b" {
				t.Fatalf("the stream came from %q, want b after a's first-token timeout", got)
			}
			if err := a.WaitOpenConns(ctx, 0); err != nil {
				t.Fatalf("a's connection was not closed: %v", err)
			}
		})
	}
}
