package fakeopenai

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// patience bounds every wait that should end quickly; it is generous
// because test machines are shared and slow.
const patience = 30 * time.Second

// newServer starts a Server closed at the end of the test.
func newServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s := New(opts...)
	t.Cleanup(s.Close)
	return s
}

// newClient returns a client with its own transport, whose idle
// connections are closed at the end of the test.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// chatBody returns a chat completion request body.
func chatBody(stream bool) []byte {
	return fmt.Appendf(nil, `{"model":"gpt-test","messages":[{"role":"user","content":"hi"}],"stream":%t}`, stream)
}

// send issues a request and returns the response (body unread) or the
// error.
func send(ctx context.Context, t *testing.T, c *http.Client, method, url, contentType string, body []byte) (*http.Response, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.Do(req)
}

// fetch issues a request that must get a complete response, and returns it
// with its body.
func fetch(t *testing.T, c *http.Client, method, url, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	resp, err := send(ctx, t, c, method, url, contentType, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, data
}

// postChat posts a chat completion request that must get a complete
// response.
func postChat(t *testing.T, c *http.Client, s *Server, stream bool) (*http.Response, []byte) {
	t.Helper()
	return fetch(t, c, http.MethodPost, s.URL()+"/chat/completions", "application/json", chatBody(stream))
}

// lookup follows a dotted path ("choices.0.message") through decoded JSON.
func lookup(v any, path string) (any, bool) {
	for key := range strings.SplitSeq(path, ".") {
		switch node := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = node[key]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(node) {
				return nil, false
			}
			v = node[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// checkJSON checks that data is JSON holding the wanted values at the
// dotted paths (numbers as float64, JSON null as nil).
func checkJSON(t *testing.T, data []byte, want map[string]any) {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("body is not JSON: %v: %q", err, data)
	}
	for path, w := range want {
		got, ok := lookup(v, path)
		if !ok {
			t.Errorf("%s missing in %s", path, data)
		} else if got != w {
			t.Errorf("%s = %#v, want %#v", path, got, w)
		}
	}
}

// multipartBody builds a multipart/form-data body with the fields and, if
// file is non-nil, a "file" part named audio.wav.
func multipartBody(t *testing.T, fields map[string]string, file []byte) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if file != nil {
		fw, err := mw.CreateFormFile("file", "audio.wav")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(file); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

// readEvents reads a server-sent event stream and returns its data
// payloads, and the error that ended it (nil for a clean EOF).
func readEvents(r io.Reader) ([]string, error) {
	var events []string
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: "); ok && err == nil {
			events = append(events, data)
		}
		if errors.Is(err, io.EOF) {
			return events, nil
		}
		if err != nil {
			return events, err
		}
	}
}

// wantErrBeforeHeaders checks that a request failed without a response.
func wantErrBeforeHeaders(t *testing.T, resp *http.Response, err error) {
	t.Helper()
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error before headers", resp.StatusCode)
	}
}

func TestRoutes(t *testing.T) {
	s := newServer(t, WithName("alpha"))
	c := newClient(t)
	audio := []byte("RIFF....WAVE")
	mpType, mpBody := multipartBody(t, map[string]string{"model": "whisper-1", "purpose": "fine-tune"}, audio)
	noFileType, noFileBody := multipartBody(t, map[string]string{"model": "whisper-1"}, nil)

	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        []byte
		wantStatus  int
		want        map[string]any
	}{
		{
			name: "chat", method: "POST", path: "/v1/chat/completions",
			contentType: "application/json", body: chatBody(false),
			wantStatus: 200,
			want: map[string]any{
				"id":                        "chatcmpl-alpha-1",
				"object":                    "chat.completion",
				"model":                     "gpt-test",
				"created":                   float64(created),
				"choices.0.index":           float64(0),
				"choices.0.message.role":    "assistant",
				"choices.0.message.content": Reply("alpha"),
				"choices.0.finish_reason":   "stop",
				"usage.completion_tokens":   float64(3),
				"usage.total_tokens":        float64(3 + promptTokens([]byte(`[{"role":"user","content":"hi"}]`))),
			},
		},
		{
			name: "embeddings", method: "POST", path: "/v1/embeddings",
			contentType: "application/json", body: []byte(`{"model":"text-embedding-3-small","input":"hi"}`),
			wantStatus: 200,
			want: map[string]any{
				"object":             "list",
				"model":              "text-embedding-3-small",
				"data.0.object":      "embedding",
				"data.0.index":       float64(0),
				"data.0.embedding.0": 0.1,
				"data.0.embedding.2": 0.3,
				"usage.total_tokens": float64(1),
			},
		},
		{
			name: "models", method: "GET", path: "/v1/models",
			wantStatus: 200,
			want:       map[string]any{"object": "list", "data.0.id": ModelID, "data.0.owned_by": "alpha"},
		},
		{
			name: "transcription", method: "POST", path: "/v1/audio/transcriptions",
			contentType: mpType, body: mpBody,
			wantStatus: 200,
			want:       map[string]any{"text": fmt.Sprintf("alpha: %d bytes", len(audio))},
		},
		{
			name: "file", method: "POST", path: "/v1/files",
			contentType: mpType, body: mpBody,
			wantStatus: 200,
			want: map[string]any{
				"id": "file-alpha", "object": "file", "bytes": float64(len(audio)),
				"filename": "audio.wav", "purpose": "fine-tune",
			},
		},
		{
			name: "unknown path", method: "POST", path: "/v1/nope",
			contentType: "application/json", body: []byte(`{}`),
			wantStatus: 404,
			want:       map[string]any{"error.type": "invalid_request_error", "error.code": "unknown_url"},
		},
		{
			name: "wrong method", method: "GET", path: "/v1/chat/completions",
			wantStatus: 404,
			want:       map[string]any{"error.code": "unknown_url"},
		},
		{
			name: "outside prefix", method: "POST", path: "/chat/completions",
			contentType: "application/json", body: chatBody(false),
			wantStatus: 404,
			want:       map[string]any{"error.code": "unknown_url"},
		},
		{
			name: "chat invalid JSON", method: "POST", path: "/v1/chat/completions",
			contentType: "application/json", body: []byte(`{"model":`),
			wantStatus: 400,
			want:       map[string]any{"error.type": "invalid_request_error", "error.code": nil},
		},
		{
			name: "embeddings invalid JSON", method: "POST", path: "/v1/embeddings",
			contentType: "application/json", body: []byte(`not json`),
			wantStatus: 400,
			want:       map[string]any{"error.type": "invalid_request_error"},
		},
		{
			name: "transcription not multipart", method: "POST", path: "/v1/audio/transcriptions",
			contentType: "application/json", body: []byte(`{}`),
			wantStatus: 400,
			want:       map[string]any{"error.type": "invalid_request_error"},
		},
		{
			name: "file without file part", method: "POST", path: "/v1/files",
			contentType: noFileType, body: noFileBody,
			wantStatus: 400,
			want:       map[string]any{"error.type": "invalid_request_error"},
		},
		{
			name: "truncated multipart", method: "POST", path: "/v1/files",
			contentType: mpType, body: mpBody[:len(mpBody)/2],
			wantStatus: 400,
			want:       map[string]any{"error.type": "invalid_request_error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			resp, data := fetch(t, c, tt.method, "http://"+s.Addr()+tt.path, tt.contentType, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tt.wantStatus, data)
			}
			if got := resp.Header.Get("X-Fake-Upstream"); got != "alpha" {
				t.Errorf("X-Fake-Upstream = %q, want %q", got, "alpha")
			}
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			checkJSON(t, data, tt.want)
		})
	}
}

func TestChatStream(t *testing.T) {
	s := newServer(t, WithName("beta"))
	c := newClient(t)
	resp, data := postChat(t, c, s, true)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", got)
	}
	if got := resp.Header.Get("X-Fake-Upstream"); got != "beta" {
		t.Errorf("X-Fake-Upstream = %q, want beta", got)
	}
	events, err := readEvents(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 6 || events[5] != "[DONE]" {
		t.Fatalf("events = %q, want 5 chunks and [DONE]", events)
	}
	var content strings.Builder
	for i, ev := range events[:5] {
		var chunk struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Model   string `json:"model"`
			Choices []struct {
				Delta struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(ev), &chunk); err != nil {
			t.Fatalf("chunk %d: %v: %s", i, err, ev)
		}
		if chunk.ID != "chatcmpl-beta-1" || chunk.Object != "chat.completion.chunk" || chunk.Model != "gpt-test" || len(chunk.Choices) != 1 {
			t.Fatalf("chunk %d = %s", i, ev)
		}
		choice := chunk.Choices[0]
		content.WriteString(choice.Delta.Content)
		if (i == 0) != (choice.Delta.Role == "assistant") {
			t.Errorf("chunk %d: role = %q", i, choice.Delta.Role)
		}
		if last := i == 4; last != (choice.FinishReason != nil && *choice.FinishReason == "stop") {
			t.Errorf("chunk %d: finish_reason = %v", i, choice.FinishReason)
		}
	}
	if content.String() != Reply("beta") {
		t.Errorf("content = %q, want %q", content.String(), Reply("beta"))
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name       string
		opts       []Option
		wantName   string
		wantPrefix string
	}{
		{"defaults", nil, "fake", "/v1"},
		{"name", []Option{WithName("up-1")}, "up-1", "/v1"},
		{"nested prefix", []Option{WithPrefix("openai/v1/")}, "fake", "/openai/v1"},
		{"root prefix", []Option{WithPrefix("/")}, "fake", ""},
		{"empty prefix", []Option{WithPrefix("")}, "fake", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.opts...)
			if s.Name() != tt.wantName {
				t.Errorf("Name() = %q, want %q", s.Name(), tt.wantName)
			}
			if host, _, err := net.SplitHostPort(s.Addr()); err != nil || host != "127.0.0.1" {
				t.Errorf("Addr() = %q, want 127.0.0.1:port", s.Addr())
			}
			if want := "http://" + s.Addr() + tt.wantPrefix; s.URL() != want {
				t.Errorf("URL() = %q, want %q", s.URL(), want)
			}
			resp, data := postChat(t, newClient(t), s, false)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d: %s", resp.StatusCode, data)
			}
			checkJSON(t, data, map[string]any{"choices.0.message.content": Reply(tt.wantName)})
		})
	}
}

func TestStatusFaults(t *testing.T) {
	tests := []struct {
		name       string
		fault      Fault
		wantStatus int
		wantHeader map[string]string
		wantJSON   map[string]any // nil: check wantBody instead
		wantBody   string
	}{
		{
			name: "500", fault: StatusFault(500), wantStatus: 500,
			wantJSON: map[string]any{"error.type": "server_error", "error.code": "server_error"},
		},
		{
			name: "401", fault: StatusFault(401), wantStatus: 401,
			wantJSON: map[string]any{"error.type": "invalid_request_error", "error.code": "invalid_api_key"},
		},
		{
			name: "503", fault: StatusFault(503), wantStatus: 503,
			wantJSON: map[string]any{"error.type": "server_error"},
		},
		{
			name: "418", fault: StatusFault(418), wantStatus: 418,
			wantJSON: map[string]any{"error.type": "invalid_request_error", "error.code": nil},
		},
		{
			name: "rate limited", fault: RateLimited("7"), wantStatus: 429,
			wantHeader: map[string]string{"Retry-After": "7"},
			wantJSON:   map[string]any{"error.type": "requests", "error.code": "rate_limit_exceeded"},
		},
		{
			name: "rate limited ms", fault: RateLimitedMs(1500), wantStatus: 429,
			wantHeader: map[string]string{"retry-after-ms": "1500", "Retry-After": ""},
			wantJSON:   map[string]any{"error.code": "rate_limit_exceeded"},
		},
		{
			name: "insufficient quota", fault: InsufficientQuota(), wantStatus: 429,
			wantJSON: map[string]any{"error.type": "insufficient_quota", "error.code": "insufficient_quota"},
		},
		{
			name:       "custom body and header",
			fault:      StatusFault(502).WithBody("upstream down").WithHeader("Content-Type", "text/plain"),
			wantStatus: 502,
			wantHeader: map[string]string{"Content-Type": "text/plain", "X-Fake-Upstream": "fake"},
			wantBody:   "upstream down",
		},
	}
	s := newServer(t)
	c := newClient(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFault(tt.fault)
			for _, stream := range []bool{false, true} {
				resp, data := postChat(t, c, s, stream)
				if resp.StatusCode != tt.wantStatus {
					t.Errorf("stream=%t: status = %d, want %d", stream, resp.StatusCode, tt.wantStatus)
				}
				for k, v := range tt.wantHeader {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("stream=%t: header %s = %q, want %q", stream, k, got, v)
					}
				}
				if tt.wantJSON != nil {
					checkJSON(t, data, tt.wantJSON)
				} else if string(data) != tt.wantBody {
					t.Errorf("stream=%t: body = %q, want %q", stream, data, tt.wantBody)
				}
			}
		})
	}
}

// wantRefused checks that err is a refused connection.
func wantRefused(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want connection refused", err)
	}
}

func TestRefuse(t *testing.T) {
	s := newServer(t)

	// A kept-alive connection that has served a request.
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /v1/models HTTP/1.1\r\nHost: %s\r\n\r\n", s.Addr()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("keep-alive request: status %d, close %t, err %v", resp.StatusCode, resp.Close, err)
	}

	for round := range 3 {
		s.SetFault(Refuse())
		s.SetFault(Refuse()) // setting it twice is harmless

		if round == 0 {
			if err := conn.SetReadDeadline(time.Now().Add(patience)); err != nil {
				t.Fatal(err)
			}
			_, err := br.ReadByte()
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("kept-alive connection still open after Refuse: %v", err)
			}
		}
		_, err := net.Dial("tcp", s.Addr())
		wantRefused(t, err)
		// Each round uses a fresh client: a pooled connection, closed by
		// Refuse, fails with EOF instead if the client has not noticed yet.
		c := newClient(t)
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(false))
		cancel()
		if err == nil {
			resp.Body.Close()
		}
		wantRefused(t, err)

		s.SetFault(Healthy())
		resp, data := postChat(t, c, s, false)
		if resp.StatusCode != 200 {
			t.Fatalf("round %d: status after Refuse = %d", round, resp.StatusCode)
		}
		checkJSON(t, data, map[string]any{"choices.0.message.content": Reply("fake")})
	}
	if got := s.Hits(); got != 4 {
		t.Errorf("Hits() = %d, want 4 (refused connections do not count)", got)
	}
}

func TestHang(t *testing.T) {
	s := newServer(t)
	c := newClient(t)
	s.SetFault(Hang())

	t.Run("client timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(true))
		wantErrBeforeHeaders(t, resp, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
	})

	t.Run("released by Refuse", func(t *testing.T) {
		s.Reset()
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(false))
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("got status %d", resp.StatusCode)
			}
			errc <- err
		}()
		if err := s.WaitHits(ctx, 1); err != nil {
			t.Fatal(err)
		}
		s.SetFault(Refuse())
		if err := <-errc; errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "got status") {
			t.Fatalf("hung request: %v, want a connection error", err)
		}
		s.SetFault(Hang())
	})
}

func TestCloseReleasesEverything(t *testing.T) {
	s := New()
	tr := &http.Transport{}
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()

	faults := []Fault{Hang(), Healthy().WithDelay(time.Hour), SlowDrip(time.Hour)}
	errc := make(chan error, len(faults))
	for i, f := range faults {
		s.SetFault(f)
		go func() {
			resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(true))
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			errc <- err
		}()
		if err := s.WaitHits(ctx, int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}

	closed := make(chan struct{})
	go func() {
		s.Close()
		s.Close() // idempotent
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(patience):
		t.Fatal("Close did not return")
	}
	for range faults {
		if err := <-errc; err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("request pending at Close: err = %v, want a connection error", err)
		}
	}
	if _, err := net.Dial("tcp", s.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Close: %v, want connection refused", err)
	}
	s.SetFault(Healthy()) // no effect after Close
	if _, err := net.Dial("tcp", s.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after SetFault after Close: %v, want connection refused", err)
	}
	if err := s.WaitHits(ctx, 100); err == nil {
		t.Error("WaitHits after Close returned nil")
	}
	tr.CloseIdleConnections()
	goleak.VerifyNone(t)
}

func TestCloseWhileRefusing(t *testing.T) {
	s := New()
	s.SetFault(Refuse())
	s.Close()
	if _, err := net.Dial("tcp", s.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial after Close: %v, want connection refused", err)
	}
}

func TestReset(t *testing.T) {
	s := newServer(t)
	c := newClient(t)
	s.SetFault(Reset())
	for _, stream := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(stream))
		cancel()
		wantErrBeforeHeaders(t, resp, err)
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a connection error", err)
		}
		t.Logf("stream=%t: %v", stream, err)
	}
	if got := s.Hits(); got != 2 {
		t.Errorf("Hits() = %d, want 2", got)
	}
}

func TestStreamCut(t *testing.T) {
	s := newServer(t)
	c := newClient(t)
	for _, n := range []int{-1, 0, 1, 3, 5, 99} {
		t.Run(fmt.Sprintf("stream after %d", n), func(t *testing.T) {
			s.SetFault(StreamCut(n))
			ctx, cancel := context.WithTimeout(t.Context(), patience)
			defer cancel()
			resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(true))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			events, err := readEvents(resp.Body)
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("stream ended with %v, want a connection error", err)
			}
			if want := min(max(n, 0), 5); len(events) != want || slices.Contains(events, "[DONE]") {
				t.Fatalf("events = %q, want %d chunks and no [DONE]", events, want)
			}
		})
	}
	t.Run("non-stream", func(t *testing.T) {
		s.SetFault(StreamCut(2))
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(false))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reading body: %v, want unexpected EOF", err)
		}
		if resp.ContentLength <= 0 || int64(len(data)) != resp.ContentLength/2 {
			t.Fatalf("read %d of Content-Length %d, want half", len(data), resp.ContentLength)
		}
	})
}

func TestSlowDrip(t *testing.T) {
	const interval = 10 * time.Millisecond
	s := newServer(t)
	c := newClient(t)

	t.Run("stream", func(t *testing.T) {
		s.SetFault(SlowDrip(interval))
		start := time.Now()
		resp, data := postChat(t, c, s, true)
		if elapsed := time.Since(start); elapsed < 6*interval {
			t.Errorf("stream took %v, want at least %v", elapsed, 6*interval)
		}
		events, err := readEvents(bytes.NewReader(data))
		if err != nil || resp.StatusCode != 200 || len(events) != 6 || events[5] != "[DONE]" {
			t.Fatalf("status %d, events %q, err %v", resp.StatusCode, events, err)
		}
	})
	t.Run("non-stream", func(t *testing.T) {
		s.SetFault(SlowDrip(interval))
		start := time.Now()
		resp, data := postChat(t, c, s, false)
		if elapsed := time.Since(start); elapsed < SlowDripPieces*interval {
			t.Errorf("body took %v, want at least %v", elapsed, SlowDripPieces*interval)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d", resp.StatusCode)
		}
		checkJSON(t, data, map[string]any{"choices.0.message.content": Reply("fake")})
	})
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("headers at once stream=%t", stream), func(t *testing.T) {
			s.SetFault(SlowDrip(time.Hour))
			ctx, cancel := context.WithTimeout(t.Context(), patience)
			defer cancel()
			resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(stream))
			if err != nil {
				t.Fatalf("headers did not come at once: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			cancel()
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Fatal("body complete, want it cut by the cancellation")
			}
		})
	}
}

func TestDelay(t *testing.T) {
	const delay = 50 * time.Millisecond
	s := newServer(t)
	c := newClient(t)
	tests := []struct {
		fault      Fault
		wantStatus int
	}{
		{Healthy().WithDelay(delay), 200},
		{StatusFault(503).WithDelay(delay), 503},
		{Random(1, StatusFault(500)).WithDelay(delay / 2).withInnerDelay(delay / 2), 500},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s.SetFault(tt.fault)
			start := time.Now()
			resp, _ := postChat(t, c, s, false)
			if elapsed := time.Since(start); elapsed < delay {
				t.Errorf("answered after %v, want at least %v", elapsed, delay)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		s.SetFault(Healthy().WithDelay(time.Hour))
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(false))
		wantErrBeforeHeaders(t, resp, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
	})
}

// withInnerDelay returns a copy of the Random fault f whose inner fault has
// Delay d.
func (f Fault) withInnerDelay(d time.Duration) Fault {
	inner := f.Inner.WithDelay(d)
	f.Inner = &inner
	return f
}

// statuses sends n sequential chat requests and returns their status codes,
// or -1 for a failed request.
func statuses(t *testing.T, s *Server, n int) []int {
	t.Helper()
	c := newClient(t)
	out := make([]int, n)
	for i := range out {
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody(false))
		out[i] = -1
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil {
				out[i] = resp.StatusCode
			}
		}
		cancel()
	}
	return out
}

func TestRandom(t *testing.T) {
	sequence := func(seed uint64) []int {
		s := newServer(t, WithSeed(seed))
		s.SetFault(Random(0.5, StatusFault(503)))
		return statuses(t, s, 64)
	}
	a, b := sequence(42), sequence(42)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different sequences:\n%v\n%v", a, b)
	}
	faulty := 0
	for _, code := range a {
		if code != 200 && code != 503 {
			t.Fatalf("unexpected status %d in %v", code, a)
		}
		if code == 503 {
			faulty++
		}
	}
	if faulty == 0 || faulty == len(a) {
		t.Fatalf("fraction 0.5 gave %d of %d faults", faulty, len(a))
	}
	if c := sequence(7); slices.Equal(a, c) {
		t.Errorf("seeds 42 and 7 gave the same sequence %v", a)
	}

	tests := []struct {
		name  string
		fault Fault
		want  int
	}{
		{"never", Random(0, StatusFault(503)), 200},
		{"always", Random(1, StatusFault(503)), 503},
		{"nested", Random(1, Random(1, StatusFault(502))), 502},
		{"nil inner", Fault{Kind: KindRandom, Fraction: 1}, 200},
		{"refuse acts as reset", Random(1, Refuse()), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			s.SetFault(tt.fault)
			for i, code := range statuses(t, s, 5) {
				if code != tt.want {
					t.Fatalf("request %d: status %d, want %d", i, code, tt.want)
				}
			}
			if s.Hits() != 5 {
				t.Fatalf("Hits() = %d, want 5", s.Hits())
			}
		})
	}
}

func TestRecording(t *testing.T) {
	s := newServer(t)
	c := newClient(t)
	if _, ok := s.Last(); ok {
		t.Fatal("Last() on a new Server returned a request")
	}

	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	body := chatBody(false)
	req, err := http.NewRequestWithContext(ctx, "POST", s.URL()+"/chat/completions?api-version=2024", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-test")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	last, ok := s.Last()
	if !ok {
		t.Fatal("Last() found no request")
	}
	if last.Method != "POST" || last.Path != "/v1/chat/completions" || last.RawQuery != "api-version=2024" ||
		last.Header.Get("Authorization") != "Bearer sk-test" || !bytes.Equal(last.Body, body) {
		t.Fatalf("Last() = %+v", last)
	}

	// Returned requests are copies.
	last.Header.Set("Authorization", "changed")
	last.Body[0] = 'X'
	reqs := s.Requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer sk-test" || !bytes.Equal(reqs[0].Body, body) {
		t.Fatalf("Requests() = %+v after modifying a copy", reqs)
	}

	// Bodies are capped.
	big := bytes.Repeat([]byte("a"), MaxRecordedBody+100)
	if resp, _ := fetch(t, c, "POST", s.URL()+"/embeddings", "application/json", big); resp.StatusCode != 400 {
		t.Fatalf("status = %d, want 400", resp.StatusCode)
	}
	if last, _ := s.Last(); !bytes.Equal(last.Body, big[:MaxRecordedBody]) {
		t.Fatalf("recorded %d body bytes, want the first %d", len(last.Body), MaxRecordedBody)
	}
	if s.Hits() != 2 || len(s.Requests()) != 2 {
		t.Fatalf("Hits() = %d, len(Requests()) = %d, want 2", s.Hits(), len(s.Requests()))
	}

	s.Reset()
	if _, ok := s.Last(); ok || s.Hits() != 0 || len(s.Requests()) != 0 {
		t.Fatal("Reset did not clear the record")
	}
}

func TestRecordingBounded(t *testing.T) {
	s := newServer(t)
	const extra = 5
	s.mu.Lock()
	for i := range MaxRecordedRequests + extra {
		s.recordLocked(Request{Path: strconv.Itoa(i)})
	}
	s.mu.Unlock()
	reqs := s.Requests()
	if len(reqs) != MaxRecordedRequests {
		t.Fatalf("len(Requests()) = %d, want %d", len(reqs), MaxRecordedRequests)
	}
	for i, r := range reqs {
		if want := strconv.Itoa(i + extra); r.Path != want {
			t.Fatalf("Requests()[%d].Path = %s, want %s", i, r.Path, want)
		}
	}
	if last, _ := s.Last(); last.Path != strconv.Itoa(MaxRecordedRequests+extra-1) {
		t.Fatalf("Last().Path = %s", last.Path)
	}
}

func TestConcurrentFaultSwitching(t *testing.T) {
	s := newServer(t, WithSeed(3))
	c := newClient(t)
	faults := []Fault{
		Healthy(), StatusFault(500), Refuse(), Hang(), Reset(), StreamCut(2),
		SlowDrip(time.Millisecond), Random(0.5, Reset()), Healthy().WithDelay(5 * time.Millisecond),
	}
	stop := make(chan struct{})
	switched := make(chan struct{})
	go func() {
		defer close(switched)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			s.SetFault(faults[i%len(faults)])
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				resp, err := send(ctx, t, c, "POST", s.URL()+"/chat/completions", "application/json", chatBody((w+i)%2 == 0))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				cancel()
				_ = s.Requests()
				_ = s.Hits()
			}
		})
	}
	wg.Wait()
	close(stop)
	<-switched

	s.SetFault(Healthy())
	// A fresh client: c's pooled connections may have been closed by faults.
	if resp, _ := postChat(t, newClient(t), s, false); resp.StatusCode != 200 {
		t.Fatalf("status after the storm = %d", resp.StatusCode)
	}
}

func TestFaultValueSemantics(t *testing.T) {
	f := RateLimited("1")
	g := f.WithHeader("X-Extra", "1")
	if f.Header.Get("X-Extra") != "" {
		t.Fatal("WithHeader modified the receiver's Header")
	}
	s := newServer(t)
	s.SetFault(g)
	g.Header.Set("Retry-After", "99") // must not affect the Server's copy
	resp, _ := postChat(t, newClient(t), s, false)
	if got := resp.Header.Get("Retry-After"); got != "1" || resp.Header.Get("X-Extra") != "1" {
		t.Fatalf("Retry-After = %q, X-Extra = %q", got, resp.Header.Get("X-Extra"))
	}
	if got := Random(0.25, StatusFault(429).WithDelay(time.Second)).String(); got != "random 0.25 of (status 429 +delay 1s)" {
		t.Errorf("String() = %q", got)
	}
}

func ExampleServer_SetFault() {
	s := New(WithName("primary"))
	defer s.Close()
	// Without keep-alive every request dials, so Refuse shows as a refused
	// connection; a pooled connection (closed by Refuse) might fail with EOF.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	post := func() {
		resp, err := client.Post(s.URL()+"/chat/completions", "application/json",
			strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			fmt.Println("connection refused:", errors.Is(err, syscall.ECONNREFUSED))
			return
		}
		defer resp.Body.Close()
		var out struct {
			Choices []struct{ Message struct{ Content string } }
			Error   struct{ Code string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			fmt.Println(err)
			return
		}
		if len(out.Choices) > 0 {
			fmt.Println(resp.StatusCode, out.Choices[0].Message.Content)
		} else {
			fmt.Println(resp.StatusCode, out.Error.Code, "retry after", resp.Header.Get("Retry-After"))
		}
	}

	post()
	s.SetFault(RateLimited("2"))
	post()
	s.SetFault(Refuse())
	post()
	s.SetFault(Healthy())
	post()
	// Output:
	// 200 hello from primary
	// 429 rate_limit_exceeded retry after 2
	// connection refused: true
	// 200 hello from primary
}

// TestCompletionsStream: the legacy completions API answers as JSON, or
// streamed as text_completion chunks that spell Reply and end with
// [DONE]; StreamTruncate ends the stream cleanly without [DONE].
func TestCompletionsStream(t *testing.T) {
	s := newServer(t, WithName("gamma"))
	c := newClient(t)
	post := func(stream bool) []byte {
		t.Helper()
		body := fmt.Appendf(nil, `{"model":"gpt-test","prompt":"hi","stream":%t}`, stream)
		_, data := fetch(t, c, http.MethodPost, s.URL()+"/completions", "application/json", body)
		return data
	}
	checkJSON(t, post(false), map[string]any{"object": "text_completion", "choices.0.text": Reply("gamma"), "choices.0.finish_reason": "stop"})

	for _, tc := range []struct {
		name  string
		fault Fault
		done  bool
	}{{"complete", Healthy(), true}, {"truncated", StreamTruncate(0), false}} {
		t.Run(tc.name, func(t *testing.T) {
			s.SetFault(tc.fault)
			events, err := readEvents(bytes.NewReader(post(true)))
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			for _, ev := range events {
				if ev == "[DONE]" {
					continue
				}
				var chunk struct {
					Object  string `json:"object"`
					Choices []struct {
						Text string `json:"text"`
					} `json:"choices"`
				}
				if err := json.Unmarshal([]byte(ev), &chunk); err != nil || chunk.Object != "text_completion" || len(chunk.Choices) != 1 {
					t.Fatalf("chunk %s: %v", ev, err)
				}
				text.WriteString(chunk.Choices[0].Text)
			}
			if text.String() != Reply("gamma") {
				t.Errorf("text = %q, want %q", text.String(), Reply("gamma"))
			}
			if done := len(events) > 0 && events[len(events)-1] == "[DONE]"; done != tc.done {
				t.Errorf("ends with [DONE]: %v, want %v (events %q)", done, tc.done, events)
			}
		})
	}
}

// TestWaitOpenConns: a stream that stalls holds its connection open until
// the client closes it, which WaitOpenConns sees.
func TestWaitOpenConns(t *testing.T) {
	s := newServer(t)
	s.SetFault(StreamStall(1, 0))
	c := newClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	resp, err := send(ctx, t, c, http.MethodPost, s.URL()+"/chat/completions", "application/json", chatBody(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := s.OpenConns(); n != 1 {
		t.Fatalf("OpenConns = %d during the stream, want 1", n)
	}
	short, stop := context.WithCancel(ctx)
	stop()
	if err := s.WaitOpenConns(short, 0); err == nil {
		t.Fatal("WaitOpenConns(0) returned nil while the stream's connection was open")
	}
	resp.Body.Close() // the body is unread: net/http closes the connection
	if err := s.WaitOpenConns(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// TestMostWithin: the most requests within any window of the length
// given, sliding over the arrivals, counting only those between from and
// to (to excluded).
func TestMostWithin(t *testing.T) {
	s := &Server{}
	t0 := time.Unix(1000, 0)
	for _, ms := range []int{0, 100, 900, 1000, 1050, 1100, 2500} {
		s.reqs = append(s.reqs, Request{At: t0.Add(time.Duration(ms) * time.Millisecond)})
	}
	for _, tc := range []struct {
		d        time.Duration
		from, to time.Time
		want     int
	}{
		{time.Second, t0, t0.Add(time.Hour), 4},                             // 100, 900, 1000, 1050 (or 900..1100)
		{200 * time.Millisecond, t0, t0.Add(time.Hour), 3},                  // 900, 1000, 1050 or 1000, 1050, 1100
		{time.Second, t0.Add(950 * time.Millisecond), t0.Add(time.Hour), 3}, // 1000, 1050, 1100
		{time.Second, t0, t0.Add(1000 * time.Millisecond), 3},               // 0, 100, 900
		{time.Hour, t0, t0.Add(time.Hour), 7},
		{time.Second, t0.Add(time.Hour), t0.Add(2 * time.Hour), 0},
	} {
		if got := s.MostWithin(tc.d, tc.from, tc.to); got != tc.want {
			t.Errorf("MostWithin(%v, +%v, +%v) = %d, want %d", tc.d, tc.from.Sub(t0), tc.to.Sub(t0), got, tc.want)
		}
	}
}
