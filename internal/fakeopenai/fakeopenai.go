// Package fakeopenai provides a fake OpenAI-compatible upstream server for
// tests, examples, demos and benchmarks. Each Server listens on its own
// loopback port and can be switched at run time between healthy answers and
// faults: error statuses, refused connections, hangs, TCP resets, cut
// streams, slow bodies, added latency and seeded random mixes of these.
//
// The API is served under a prefix ("/v1" by default, see WithPrefix):
//
//	POST /chat/completions      chat.completion JSON, or with "stream": true
//	                            chat.completion.chunk events and [DONE]
//	POST /completions           text_completion JSON (the legacy
//	                            completions API), or with "stream": true
//	                            text_completion chunks and [DONE]
//	POST /responses             a response object, or with "stream": true
//	                            response.created, response.in_progress,
//	                            response.output_text.delta events and
//	                            response.completed
//	POST /embeddings            a list with one 3-dimensional embedding
//	POST /audio/transcriptions  multipart with a "file" part; {"text": ...}
//	POST /files                 multipart with a "file" part; a file object
//	GET  /models                a list with the model ModelID (404 with
//	                            WithoutModels, as on servers without that route)
//
// With WithAzure, it answers as Azure OpenAI instead, on the classic
// deployments path and the v1 path (see WithAzure). Every response
// reports in ModelHeader the model the request named.
//
// With WithAPIKey, a request that does not present that key as its bearer
// token gets a 401 invalid_api_key, as OpenAI answers a wrong key.
// Anything else gets a 404 and a body that is not valid JSON (or not valid
// multipart for uploads) a 400, both with an OpenAI-style error body. Every
// response carries the header X-Fake-Upstream with the Server's name, and
// chat completions answer with the content Reply(name).
//
// A Server is safe for concurrent use. Close stops it and waits for every
// goroutine it started.
package fakeopenai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// ModelID is the id of the single model listed by GET /models.
	ModelID = "fake-model"
	// MaxRecordedBody is the number of body bytes kept for each recorded
	// request; longer bodies are truncated in the record.
	MaxRecordedBody = 1 << 20
	// MaxRecordedRequests is the number of most recent requests a Server
	// keeps; older ones are forgotten.
	MaxRecordedRequests = 10000

	// maxBody bounds the request bodies the Server reads; larger ones get
	// a 413.
	maxBody = 64 << 20
	// created is the fixed timestamp of every response, for determinism.
	created = 1700000000
	// doneMarker is the payload of the last event of a healthy stream.
	doneMarker = "[DONE]"
)

// obj is a JSON object under construction.
type obj = map[string]any

// replyParts returns the content deltas of a streamed reply from name.
func replyParts(name string) []string { return []string{"hello ", "from ", name} }

// Reply returns the assistant content with which a Server named name answers
// chat completions, streamed or not: "hello from <name>".
func Reply(name string) string { return strings.Join(replyParts(name), "") }

// Option configures a Server in New. A nil Option must not be passed.
type Option func(*config)

type config struct {
	name     string
	prefix   string
	seed     uint64
	apiKey   string // "" accepts any Authorization
	noModels bool   // GET /models is an unknown route
	azure    *Azure // answer as Azure OpenAI; nil for OpenAI's shape
	limits   *RateLimits
}

// WithName sets the Server's name, which appears in its answers (the reply
// content, the X-Fake-Upstream header, ids) so that a test can tell which
// upstream answered. The default is "fake".
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithPrefix sets the path prefix of the API, "/v1" by default. Leading and
// trailing slashes are normalised; "" or "/" serves the API at the root.
func WithPrefix(p string) Option {
	return func(c *config) {
		c.prefix = ""
		if p = strings.Trim(p, "/"); p != "" {
			c.prefix = "/" + p
		}
	}
}

// WithSeed sets the seed of the PRNG that drives Random faults; a given
// seed yields the same sequence of choices. The default seed is 1.
func WithSeed(seed uint64) Option { return func(c *config) { c.seed = seed } }

// WithAPIKey makes the Server require key: a request whose Authorization
// header is not "Bearer <key>" gets a 401 invalid_api_key whose message
// shows the key presented, masked, as OpenAI's does ("Incorrect API key
// provided: sk-ab**********wxyz. ..."). Faults take precedence. The
// default, "", accepts any request.
func WithAPIKey(key string) Option { return func(c *config) { c.apiKey = key } }

// WithoutModels makes GET /models an unknown route (a 404 unknown_url), as
// on OpenAI-compatible servers that do not list their models.
func WithoutModels() Option { return func(c *config) { c.noModels = true } }

// Request is a copy of a request a Server received. Server.Requests fills
// it; the zero value records no request.
type Request struct {
	// Method is the HTTP method, e.g. "POST".
	Method string
	// Path is the URL path, including the prefix.
	Path string
	// RawQuery is the encoded query string, without '?'.
	RawQuery string
	// Header holds the request headers.
	Header http.Header
	// Body holds the first MaxRecordedBody bytes of the body.
	Body []byte
	// At is when the request reached the handler.
	At time.Time
}

// clone returns a deep copy of r.
func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Body = bytes.Clone(r.Body)
	return r
}

// Server is one fake upstream on a loopback port. Create it with New and
// release it with Close; the zero value is not usable.
type Server struct {
	name     string
	prefix   string
	apiKey   string
	noModels bool
	azure    *Azure
	limits   *limiter // nil without RateLimits
	addr     string
	srv      *http.Server
	done     chan struct{} // closed by Close to release waiting handlers

	closeOnce sync.Once
	setMu     sync.Mutex // serialises SetFault and Close

	mu     sync.Mutex // guards the fields below
	closed bool
	ln     *listener // nil while refusing or closed
	conns  map[net.Conn]struct{}
	fault  Fault
	rng    *rand.Rand
	hits   int64
	hitCh  chan struct{} // closed and replaced at each hit
	connCh chan struct{} // closed and replaced when a connection ends
	reqs   []Request     // ring buffer of at most MaxRecordedRequests
	first  int           // index of the oldest entry of reqs once full

	serveWG   sync.WaitGroup // http.Server.Serve goroutines
	connWG    sync.WaitGroup // accepted connections not yet closed or hijacked
	handlerWG sync.WaitGroup // running handlers
}

// New starts a Server listening on 127.0.0.1 at a free port. It panics if
// it cannot listen, like httptest.NewServer.
func New(opts ...Option) *Server {
	cfg := config{name: "fake", prefix: "/v1", seed: 1}
	for _, o := range opts {
		o(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("fakeopenai: listen: " + err.Error())
	}
	s := &Server{
		name:     cfg.name,
		prefix:   cfg.prefix,
		apiKey:   cfg.apiKey,
		noModels: cfg.noModels,
		azure:    cfg.azure,
		limits:   newLimiter(cfg.limits),
		addr:     ln.Addr().String(),
		done:     make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
		rng:      rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)),
		hitCh:    make(chan struct{}),
		connCh:   make(chan struct{}),
	}
	s.srv = &http.Server{
		Handler:                      http.HandlerFunc(s.serveHTTP),
		ConnState:                    s.connState,
		ErrorLog:                     log.New(io.Discard, "", 0),
		DisableGeneralOptionsHandler: true,
	}
	s.mu.Lock()
	s.serveLocked(ln)
	s.mu.Unlock()
	return s
}

// URL returns the base URL of the API, including the prefix, e.g.
// "http://127.0.0.1:41234/v1". It stays the same across Refuse faults.
func (s *Server) URL() string { return "http://" + s.addr + s.prefix }

// Addr returns the host:port the Server listens on.
func (s *Server) Addr() string { return s.addr }

// Name returns the Server's name (see WithName).
func (s *Server) Name() string { return s.name }

// Close stops the Server: it closes the listener and every connection,
// releases hung and delayed handlers, and waits for all goroutines the
// Server started. Close is idempotent and safe for concurrent use.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.setMu.Lock()
		s.mu.Lock()
		s.closed = true
		s.stopLocked()
		s.mu.Unlock()
		s.setMu.Unlock()

		_ = s.srv.Close()
		close(s.done)
		s.handlerWG.Wait()
		s.connWG.Wait()
		s.serveWG.Wait()
	})
}

// SetFault switches the behaviour for the requests that follow; requests
// already being answered keep the fault they started with, except that
// switching to Refuse closes their connections. SetFault keeps a deep copy
// of f. Switching from Refuse to any other fault re-opens the listener on
// the same address; SetFault panics if that address cannot be bound again
// within a few seconds. SetFault after Close has no effect.
func (s *Server) SetFault(f Fault) {
	f = f.clone()
	s.setMu.Lock()
	defer s.setMu.Unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.fault = f
	refuse := f.Kind == KindRefuse
	if refuse {
		s.stopLocked()
	}
	reopen := !refuse && s.ln == nil
	s.mu.Unlock()
	if !reopen {
		return
	}
	// Closed cannot change meanwhile: Close takes setMu first.
	ln := relisten(s.addr)
	s.mu.Lock()
	s.serveLocked(ln)
	s.mu.Unlock()
}

// Hits returns the number of requests that reached a handler since New or
// the last Reset. Refused connections are not counted.
func (s *Server) Hits() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// WaitHits blocks until Hits reaches n, ctx is done or the Server is
// closed; it returns nil in the first case and an error otherwise. It lets
// a test wait for a request to reach the Server (for instance one that the
// Server will hang) without sleeping.
func (s *Server) WaitHits(ctx context.Context, n int64) error {
	for {
		s.mu.Lock()
		hits, ch := s.hits, s.hitCh
		s.mu.Unlock()
		if hits >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("fakeopenai: %s closed after %d of %d hits", s.name, hits, n)
		}
	}
}

// Requests returns copies of the last (at most MaxRecordedRequests)
// requests that reached a handler, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.reqs))
	for i := range out {
		out[i] = s.reqs[(s.first+i)%len(s.reqs)].clone()
	}
	return out
}

// MostWithin returns the most requests that arrived within any window of
// length d > 0 (sliding over the arrivals) between from and to, among those
// Requests still holds: a limit's test compares it with the rate the
// upstream was promised.
func (s *Server) MostWithin(d time.Duration, from, to time.Time) int {
	var at []time.Time
	for _, r := range s.Requests() {
		if !r.At.Before(from) && r.At.Before(to) {
			at = append(at, r.At)
		}
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	most, j := 0, 0
	for i := range at {
		for at[i].Sub(at[j]) >= d {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

// Last returns a copy of the most recent request that reached a handler,
// and false if there is none.
func (s *Server) Last() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.reqs)
	if n == 0 {
		return Request{}, false
	}
	return s.reqs[(s.first+n-1)%n].clone(), true
}

// Reset clears the hit count and the recorded requests. It does not change
// the fault or rewind the PRNG.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits = 0
	s.reqs = nil
	s.first = 0
}

// listener wraps the Server's listening socket so that the Server tracks
// every connection it accepts.
type listener struct {
	net.Listener
	s *Server
}

// Accept returns the next connection, registered with the Server. It drops
// connections that arrive after the listener was replaced or closed.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.track(l, c) {
			return c, nil
		}
		_ = c.Close()
	}
}

// track registers c, accepted by l, unless l is no longer current.
func (s *Server) track(l *listener, c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ln != l {
		return false
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return true
}

// connState forgets connections that net/http is done with.
func (s *Server) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.connWG.Done()
		close(s.connCh)
		s.connCh = make(chan struct{})
	}
}

// OpenConns returns the number of client connections the Server holds
// open: accepted, and neither closed nor taken over (hijacked) yet.
func (s *Server) OpenConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitOpenConns blocks until at most n client connections are open, ctx
// is done or the Server is closed; it returns nil in the first case and an
// error otherwise. It lets a test see, without sleeping, that a client
// closed the connection of a stream the Server was still sending.
func (s *Server) WaitOpenConns(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		open, ch := len(s.conns), s.connCh
		s.mu.Unlock()
		if open <= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fakeopenai: %s still holds %d connection(s), want at most %d: %w", s.name, open, n, ctx.Err())
		case <-s.done:
			return fmt.Errorf("fakeopenai: %s closed with %d connection(s) open", s.name, open)
		}
	}
}

// serveLocked starts serving on ln. s.mu must be held.
func (s *Server) serveLocked(ln net.Listener) {
	l := &listener{Listener: ln, s: s}
	s.ln = l
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = s.srv.Serve(l)
	}()
}

// stopLocked closes the listener, so that dials are refused, and every
// tracked connection. s.mu must be held.
func (s *Server) stopLocked() {
	if s.ln != nil {
		_ = s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		_ = c.Close()
	}
}

// relisten binds addr again, retrying briefly in case the port is
// transiently unavailable, and panics if it cannot.
func relisten(addr string) net.Listener {
	var err error
	for attempt := range 40 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond) // backoff, ~4s in all
	}
	panic(fmt.Sprintf("fakeopenai: re-listen on %s: %v", addr, err))
}

// begin registers a running handler; it reports false once s is closed.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.handlerWG.Add(1)
	return true
}

// admit counts and records a request and picks the fault to apply to it.
// It returns the request's sequence number (its hit count).
func (s *Server) admit(r *http.Request, body []byte) (int64, Fault) {
	rec := Request{
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     body,
		At:       time.Now(),
	}
	if len(body) > MaxRecordedBody {
		rec.Body = bytes.Clone(body[:MaxRecordedBody])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits++
	close(s.hitCh)
	s.hitCh = make(chan struct{})
	s.recordLocked(rec)
	return s.hits, s.fault.resolve(s.rng)
}

// recordLocked appends r to the ring of recorded requests. s.mu must be
// held.
func (s *Server) recordLocked(r Request) {
	if len(s.reqs) < MaxRecordedRequests {
		s.reqs = append(s.reqs, r)
		return
	}
	s.reqs[s.first] = r
	s.first = (s.first + 1) % len(s.reqs)
}

// pause waits for d and reports whether it elapsed; it returns false early
// if ctx is done or s is closed. A negative d waits for one of those.
func (s *Server) pause(ctx context.Context, d time.Duration) bool {
	if d == 0 {
		return true
	}
	var elapsed <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		elapsed = t.C
	}
	select {
	case <-elapsed:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// dropConn takes the connection over from net/http and closes it without
// writing anything more; with reset it sends a TCP RST instead of a FIN.
// Anything already written but not flushed is lost.
func dropConn(w http.ResponseWriter, reset bool) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // net/http closes the connection
	}
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// cutConn flushes what was written and then drops the connection, so that
// the client sees a truncated body.
func cutConn(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
	dropConn(w, false)
}

// serveHTTP is the Server's handler: it records the request, applies the
// current fault and answers.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.begin() {
		dropConn(w, false)
		return
	}
	defer s.handlerWG.Done()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	seq, f := s.admit(r, body)
	var tooLarge *http.MaxBytesError
	if err != nil && !errors.As(err, &tooLarge) {
		dropConn(w, false) // the client went away
		return
	}
	ctx := r.Context()
	if !s.pause(ctx, f.Delay) {
		dropConn(w, false)
		return
	}
	var resp response
	switch {
	case f.Kind == KindHang:
		s.pause(ctx, -1)
		dropConn(w, false)
		return
	case f.Kind == KindReset:
		dropConn(w, true)
		return
	case f.Kind == KindStatus:
		resp = statusResponse(f)
	case tooLarge != nil:
		resp = bodyResponse(http.StatusRequestEntityTooLarge, defaultErrorBody(http.StatusRequestEntityTooLarge))
	case s.azure != nil:
		resp = s.azureRoute(r, body, seq, f)
	case s.apiKey != "" && r.Header.Get("Authorization") != "Bearer "+s.apiKey:
		resp = wrongKey(r.Header.Get("Authorization"))
	case s.limits != nil:
		resp = s.limitedRoute(r, body, seq, f)
	default:
		resp = s.route(r, body, seq, "", f)
	}
	if resp.model == "" {
		resp.model = receivedModel(r, body)
	}
	s.write(ctx, w, f, resp)
}

// response is an answer before the fault's writing mode is applied.
type response struct {
	status int
	model  string // the model the request named, for ModelHeader
	header http.Header
	body   []byte   // the body of a non-streaming answer
	chunks [][]byte // the events of a streaming answer, each formatted and ending in a blank line, the terminal one last; nil if not streaming
}

// jsonResponse returns a 200 answer with v as JSON.
func jsonResponse(v any) response {
	return bodyResponse(http.StatusOK, mustJSON(v))
}

// errorResponse returns an answer with status and the JSON body.
func bodyResponse(status int, body []byte) response {
	return response{
		status: status,
		header: http.Header{"Content-Type": {"application/json"}},
		body:   body,
	}
}

// badRequest returns a 400 invalid_request_error answer with message.
func badRequest(message string) response {
	return bodyResponse(http.StatusBadRequest, errorJSON(message, "invalid_request_error", nil))
}

// statusResponse returns the answer of a KindStatus fault.
func statusResponse(f Fault) response {
	status := f.Status
	if status < 200 || status > 999 {
		status = http.StatusInternalServerError
	}
	body := []byte(f.Body)
	if f.Body == "" {
		body = defaultErrorBody(status)
	}
	resp := bodyResponse(status, body)
	for k, v := range f.Header {
		resp.header[k] = v
	}
	return resp
}

// mustJSON marshals v, which cannot fail for the values this package
// builds.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("fakeopenai: " + err.Error())
	}
	return b
}

// route answers a request under the API prefix, or with a 404. model,
// when not empty, is the model the request is for whatever its body says
// (an Azure deployment); f is the fault in force.
func (s *Server) route(r *http.Request, body []byte, seq int64, model string, f Fault) response {
	rest, ok := strings.CutPrefix(r.URL.Path, s.prefix)
	if ok {
		switch r.Method + " " + rest {
		case "POST /chat/completions":
			return s.chat(body, seq, model, f.Kind == KindContentFilter)
		case "POST /completions":
			return s.completion(body, seq, model)
		case "POST /embeddings":
			return s.embeddings(body, model)
		case "POST /responses":
			return s.responses(body, seq, model)
		case "POST /audio/transcriptions", "POST /files":
			up, err := parseUpload(r.Header.Get("Content-Type"), body)
			if err != nil {
				return badRequest(err.Error())
			}
			if rest == "/files" {
				return jsonResponse(obj{
					"id":         "file-" + s.name,
					"object":     "file",
					"bytes":      up.size,
					"created_at": created,
					"filename":   up.filename,
					"purpose":    up.fields["purpose"],
					"status":     "processed",
				})
			}
			return jsonResponse(obj{"text": fmt.Sprintf("%s: %d bytes", s.name, up.size)})
		case "GET /models":
			if s.noModels {
				break
			}
			return jsonResponse(obj{
				"object": "list",
				"data": []obj{{
					"id":       ModelID,
					"object":   "model",
					"created":  created,
					"owned_by": s.name,
				}},
			})
		}
	}
	return bodyResponse(http.StatusNotFound, errorJSON(
		fmt.Sprintf("Unknown request URL: %s %s. Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/.", r.Method, r.URL.Path),
		"invalid_request_error", "unknown_url"))
}

// wrongKey is OpenAI's answer to a request without the right key:
// authorization is the Authorization header presented.
func wrongKey(authorization string) response {
	key, ok := strings.CutPrefix(authorization, "Bearer ")
	msg := "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
	if ok && key != "" {
		msg = "Incorrect API key provided: " + maskKey(key) + ". You can find your API key at https://platform.openai.com/account/api-keys."
	}
	return bodyResponse(http.StatusUnauthorized, errorJSON(msg, "invalid_request_error", "invalid_api_key"))
}

// maskKey shows a key as OpenAI's errors do: its first few and last four
// characters, stars between.
func maskKey(key string) string {
	r := []rune(key)
	if len(r) < 12 {
		return strings.Repeat("*", len(r))
	}
	return string(r[:5]) + strings.Repeat("*", len(r)-9) + string(r[len(r)-4:])
}

// promptTokens is a deterministic stand-in for a token count of raw.
func promptTokens(raw []byte) int { return (len(raw) + 3) / 4 }

// chat answers POST /chat/completions; filtered answers as a content
// filter that stops the reply (finish_reason content_filter, no content).
func (s *Server) chat(body []byte, seq int64, model string, filtered bool) response {
	var req struct {
		Model    string          `json:"model"`
		Messages json.RawMessage `json:"messages"`
		Stream   bool            `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return badRequest("We could not parse the JSON body of your request: " + err.Error())
	}
	if model != "" {
		req.Model = model
	}
	id := fmt.Sprintf("chatcmpl-%s-%d", s.name, seq)
	if filtered {
		return filteredChat(id, req.Model, req.Stream)
	}
	parts := replyParts(s.name)
	if !req.Stream {
		prompt := promptTokens(req.Messages)
		return jsonResponse(obj{
			"id":      id,
			"object":  "chat.completion",
			"created": created,
			"model":   req.Model,
			"choices": []obj{{
				"index":         0,
				"message":       obj{"role": "assistant", "content": Reply(s.name)},
				"finish_reason": "stop",
			}},
			"usage": obj{
				"prompt_tokens":     prompt,
				"completion_tokens": len(parts),
				"total_tokens":      prompt + len(parts),
			},
		})
	}
	chunk := func(delta obj, finish any) []byte {
		return mustJSON(obj{
			"id":      id,
			"object":  "chat.completion.chunk",
			"created": created,
			"model":   req.Model,
			"choices": []obj{{"index": 0, "delta": delta, "finish_reason": finish}},
		})
	}
	chunks := [][]byte{dataEvent(chunk(obj{"role": "assistant", "content": ""}, nil))}
	for _, p := range parts {
		chunks = append(chunks, dataEvent(chunk(obj{"content": p}, nil)))
	}
	chunks = append(chunks, dataEvent(chunk(obj{}, "stop")), dataEvent([]byte(doneMarker)))
	return response{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
		chunks: chunks,
	}
}

// completion answers POST /completions, the legacy completions API: the
// text Reply(name), whole or as one chunk per part, a last chunk with the
// finish reason, and [DONE].
func (s *Server) completion(body []byte, seq int64, model string) response {
	var req struct {
		Model  string          `json:"model"`
		Prompt json.RawMessage `json:"prompt"`
		Stream bool            `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return badRequest("We could not parse the JSON body of your request: " + err.Error())
	}
	if model != "" {
		req.Model = model
	}
	id := fmt.Sprintf("cmpl-%s-%d", s.name, seq)
	parts := replyParts(s.name)
	choice := func(text string, finish any) obj {
		return obj{"text": text, "index": 0, "logprobs": nil, "finish_reason": finish}
	}
	if !req.Stream {
		prompt := promptTokens(req.Prompt)
		return jsonResponse(obj{
			"id": id, "object": "text_completion", "created": created, "model": req.Model,
			"choices": []obj{choice(Reply(s.name), "stop")},
			"usage":   obj{"prompt_tokens": prompt, "completion_tokens": len(parts), "total_tokens": prompt + len(parts)},
		})
	}
	chunk := func(text string, finish any) []byte {
		return dataEvent(mustJSON(obj{"id": id, "object": "text_completion", "created": created, "model": req.Model,
			"choices": []obj{choice(text, finish)}}))
	}
	var chunks [][]byte
	for _, p := range parts {
		chunks = append(chunks, chunk(p, nil))
	}
	chunks = append(chunks, chunk("", "stop"), dataEvent([]byte(doneMarker)))
	return response{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
		chunks: chunks,
	}
}

// dataEvent formats payload as one SSE event of a data line.
func dataEvent(payload []byte) []byte {
	return fmt.Appendf(nil, "data: %s\n\n", payload)
}

// responses answers POST /responses (the Responses API): a response
// object, or with "stream": true its typed events, response.created and
// response.in_progress first (no output), one response.output_text.delta
// per part of the reply, and response.completed last.
func (s *Server) responses(body []byte, seq int64, model string) response {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return badRequest("We could not parse the JSON body of your request: " + err.Error())
	}
	if model != "" {
		req.Model = model
	}
	id := fmt.Sprintf("resp_%s_%d", s.name, seq)
	final := obj{
		"id": id, "object": "response", "created_at": created, "model": req.Model, "status": "completed",
		"output": []obj{{"type": "message", "role": "assistant", "content": []obj{{"type": "output_text", "text": Reply(s.name)}}}},
	}
	if !req.Stream {
		return jsonResponse(final)
	}
	event := func(typ string, fields obj) []byte {
		fields["type"] = typ
		return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", typ, mustJSON(fields))
	}
	pending := obj{"id": id, "object": "response", "created_at": created, "model": req.Model, "status": "in_progress"}
	chunks := [][]byte{
		event("response.created", obj{"response": pending}),
		event("response.in_progress", obj{"response": pending}),
	}
	for _, p := range replyParts(s.name) {
		chunks = append(chunks, event("response.output_text.delta", obj{"item_id": "msg_" + id, "output_index": 0, "content_index": 0, "delta": p}))
	}
	chunks = append(chunks, event("response.completed", obj{"response": final}))
	return response{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
		chunks: chunks,
	}
}

// embeddings answers POST /embeddings.
func (s *Server) embeddings(body []byte, model string) response {
	var req struct {
		Model string          `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return badRequest("We could not parse the JSON body of your request: " + err.Error())
	}
	if model != "" {
		req.Model = model
	}
	prompt := promptTokens(req.Input)
	return jsonResponse(obj{
		"object": "list",
		"data": []obj{{
			"object":    "embedding",
			"index":     0,
			"embedding": []float64{0.1, 0.2, 0.3},
		}},
		"model": req.Model,
		"usage": obj{"prompt_tokens": prompt, "total_tokens": prompt},
	})
}

// upload is what parseUpload finds in a multipart/form-data body.
type upload struct {
	size     int64             // size of the "file" part
	filename string            // file name of the "file" part
	fields   map[string]string // the other parts
}

// parseUpload parses a multipart/form-data body that must hold a "file"
// part.
func parseUpload(contentType string, body []byte) (upload, error) {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		return upload{}, fmt.Errorf("expected multipart/form-data with a boundary, got Content-Type %q", contentType)
	}
	up := upload{size: -1, fields: make(map[string]string)}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return upload{}, fmt.Errorf("invalid multipart body: %v", err)
		}
		name := part.FormName()
		if name == "file" {
			up.filename = part.FileName()
			up.size, err = io.Copy(io.Discard, part)
		} else {
			var v []byte
			v, err = io.ReadAll(part)
			up.fields[name] = string(v)
		}
		if err != nil {
			return upload{}, fmt.Errorf("invalid multipart body: %v", err)
		}
	}
	if up.size < 0 {
		return upload{}, errors.New("missing required multipart part \"file\"")
	}
	return up, nil
}

// write sends resp in the writing mode of f (whole, cut or slow).
func (s *Server) write(ctx context.Context, w http.ResponseWriter, f Fault, resp response) {
	h := w.Header()
	h.Set("X-Fake-Upstream", s.name)
	if resp.model != "" {
		h.Set(ModelHeader, resp.model)
	}
	for k, v := range resp.header {
		h[k] = slices.Clone(v)
	}
	if resp.chunks != nil {
		s.writeStream(ctx, w, f, resp)
	} else {
		s.writeBody(ctx, w, f, resp)
	}
}

// writeStream sends a server-sent event stream, one flushed event per
// chunk, ending with its terminal event ("data: [DONE]", or
// response.completed) unless f cuts, stalls or truncates it.
func (s *Server) writeStream(ctx context.Context, w http.ResponseWriter, f Fault, resp response) {
	rc := http.NewResponseController(w)
	w.WriteHeader(resp.status)
	if rc.Flush() != nil {
		return
	}
	last := len(resp.chunks) - 1 // the terminal event
	for i, chunk := range resp.chunks {
		switch {
		case f.Kind == KindStreamCut && (i >= f.AfterChunks || i == last):
			cutConn(w)
			return
		case f.Kind == KindStreamStall && i >= f.AfterChunks:
			s.keepAlive(ctx, w, rc, f.Interval)
			return
		case f.Kind == KindStreamTruncate && (i == last || (f.AfterChunks > 0 && i >= f.AfterChunks)):
			return // a clean end of the body, without the rest
		case f.Kind == KindSlowDrip && !s.pause(ctx, f.Interval):
			dropConn(w, false)
			return
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
	if f.Kind == KindStreamStall {
		s.keepAlive(ctx, w, rc, f.Interval)
	}
}

// keepAlive writes an SSE comment every interval (nothing when it is 0)
// until the client goes away or the Server closes.
func (s *Server) keepAlive(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, interval time.Duration) {
	if interval <= 0 {
		s.pause(ctx, -1) // until the client or the Server goes
		return
	}
	for s.pause(ctx, interval) {
		if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
			return
		}
	}
}

// writeBody sends a non-streaming body with its Content-Length.
func (s *Server) writeBody(ctx context.Context, w http.ResponseWriter, f Fault, resp response) {
	body := resp.body
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.status)
	switch f.Kind {
	case KindStreamCut:
		_, _ = w.Write(body[:len(body)/2])
		cutConn(w)
	case KindSlowDrip:
		rc := http.NewResponseController(w)
		if rc.Flush() != nil {
			return
		}
		piece := max(1, (len(body)+SlowDripPieces-1)/SlowDripPieces)
		for len(body) > 0 {
			if !s.pause(ctx, f.Interval) {
				dropConn(w, false)
				return
			}
			n := min(piece, len(body))
			if _, err := w.Write(body[:n]); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			body = body[n:]
		}
	default:
		_, _ = w.Write(body)
	}
}
