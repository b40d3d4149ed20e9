package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/failover-go/failover/internal/quote"
)

var (
	// ErrFirstTokenTimeout is the cause of an attempt whose event stream
	// sent no event carrying content within the endpoint's
	// FirstTokenTimeout, counted from the attempt's start. The request
	// fails over: nothing of that stream reached the caller. A stream
	// given to the caller before its first content event (past 64 KiB of
	// events without content) that then misses the deadline fails the
	// caller's read with an error matching it.
	ErrFirstTokenTimeout = errors.New("failover: no first token in time")

	// ErrStreamStalled is matched by the error of a read of a stream's body
	// when no event carrying content arrived for the endpoint's
	// StreamIdleTimeout while the caller read (keep-alive comments do not
	// count; see [Endpoint].StreamIdleTimeout for when it starts); the
	// upstream connection is then closed.
	ErrStreamStalled = errors.New("failover: stream stalled")
)

// streamKind is the kind of event stream a request asks for, which says
// how it ends.
type streamKind uint8

const (
	// streamOther is any other event stream: no terminal event is known,
	// and any data counts as content.
	streamOther streamKind = iota
	// streamChat is a chat completions or completions stream: it ends
	// with "data: [DONE]".
	streamChat
	// streamResponses is a Responses API stream: it ends with
	// response.completed, response.failed, response.incomplete or error.
	streamResponses
)

// streamKindOf tells the kind of stream a request to the routed path rest
// gets.
func streamKindOf(rest string) streamKind {
	switch {
	case strings.HasSuffix(rest, "/completions"):
		return streamChat
	case strings.HasSuffix(rest, "/responses"):
		return streamResponses
	}
	return streamOther
}

// isEventStream reports whether resp is a successful server-sent event
// stream.
func isEventStream(resp *http.Response) bool {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return false
	}
	ct := resp.Header["Content-Type"]
	return len(ct) > 0 && len(ct[0]) >= 17 && strings.EqualFold(ct[0][:17], "text/event-stream")
}

// Stream outcomes, the labels of failover_streams_total.
const (
	streamComplete  = "complete"
	streamTruncated = "truncated"
	streamStalled   = "stalled"
	streamCanceled  = "canceled"
	streamBroken    = "error"
	// streamNoFirstToken is a stream released to the caller before its
	// first content event (past maxHeld) that then missed the first-token
	// deadline.
	streamNoFirstToken = "first_token_timeout"
)

// maxSSELine bounds the part of a line split across reads that the scanner
// keeps; a longer line is judged on its first maxSSELine bytes.
const maxSSELine = 4 << 10

// sseScanner follows a server-sent event stream as its bytes go by: it
// tells the events that carry content from those that do not (comments,
// empty data, a chat chunk with only a role, the Responses API's
// response.created and response.in_progress) and spots the terminal event.
// It decides from bytes, decoding no JSON, and copies nothing but a line
// split across reads.
type sseScanner struct {
	kind  streamKind
	carry []byte // the start of a line split across reads
	long  bool   // that line outgrew carry

	// The event being read.
	evType   []byte // its "event:" field (Responses API), if any
	content  bool
	terminal bool

	ended bool // a terminal event went by

	// firstOnly says that only the first event carrying content needs
	// telling apart (no idle timer watches the others): when it ends,
	// terminalOnly is set, from that event on, in the same read.
	firstOnly bool
	// terminalOnly is set once no one needs to know which events carry
	// content: from then on every event counts as carrying content, and
	// only the terminal event is looked for, without reading the chunks'
	// fields.
	terminalOnly bool
	// readCounted is set when an event that carries content ended in the
	// current read (feed): its reader needs to know only that one did,
	// so the events after it that end in the same read are read as in
	// terminalOnly mode. countedLeft is how many bytes of the read are
	// left when the last of those ends: the lines after it belong to an
	// event that ends in a later read, and are read for content again.
	readCounted bool
	countedLeft int
}

// feed scans p and returns how many events ended in it that carried
// content or ended the stream; after the first of them, the other events
// that end in p count without being read for content (see readCounted).
func (s *sseScanner) feed(p []byte) int {
	s.readCounted = false
	events := 0
	for len(p) > 0 {
		if s.readCounted && len(p) <= s.countedLeft {
			s.readCounted = false
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keep(p)
			return events
		}
		line := p[:i]
		p = p[i+1:]
		if len(s.carry) > 0 || s.long {
			s.keep(line)
			line = s.carry
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if s.line(line) {
			events++
			if !s.readCounted && !s.terminalOnly {
				s.readCounted = true
				s.countedLeft = len(p) - lastEventEnd(p)
			}
		}
		s.carry, s.long = s.carry[:0], false
	}
	return events
}

// lastEventEnd returns how many bytes of r, which begins at the start of a
// line, run up to the end of its last empty line, the end of an event (0
// for none). It walks back from the end a line at a time: a read of whole
// events ends with one.
func lastEventEnd(r []byte) int {
	for j := bytes.LastIndexByte(r, '\n'); j >= 0; {
		i := bytes.LastIndexByte(r[:j], '\n') // the line r[i+1:j]
		if line := r[i+1 : j]; len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return j + 1
		}
		j = i
	}
	return 0
}

// keep adds part of an unfinished line to carry, up to maxSSELine, or
// maxDoneLine in terminalOnly mode for a chat stream (which has only short
// lines left to look at).
func (s *sseScanner) keep(p []byte) {
	limit := maxSSELine
	if s.terminalOnly && s.kind == streamChat {
		limit = maxDoneLine
	}
	room := max(limit-len(s.carry), 0)
	if len(p) > room {
		p, s.long = p[:room], true
	}
	s.carry = append(s.carry, p...)
}

// line takes one line; it reports whether it ended an event that carried
// content or ended the stream.
func (s *sseScanner) line(l []byte) bool {
	if len(l) == 0 {
		counted := s.content || s.terminal
		s.ended = s.ended || s.terminal
		s.terminalOnly = s.terminalOnly || (counted && s.firstOnly)
		s.evType, s.content, s.terminal = s.evType[:0], false, false
		return counted
	}
	if len(l) > maxDoneLine && s.skipsChunks() {
		// A chunk: not the terminal event, and content (as every
		// event is in this mode).
		s.content = s.content || isField(l, "data:")
		return false
	}
	switch {
	case l[0] == ':': // a comment: keep-alive
	case isField(l, "data:"):
		v := l[5:]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		s.data(v)
	case isField(l, "event:"):
		s.evType = append(s.evType[:0], bytes.TrimSpace(l[6:])...)
	}
	return false
}

// isField reports whether the line l starts with the field name and colon
// f (a constant, which the compiler compares in a word or two).
func isField(l []byte, f string) bool {
	return len(l) >= len(f) && string(l[:len(f)]) == f
}

// maxDoneLine is the longest line the scanner reads in a chat stream in
// terminalOnly mode: the terminal line, "data: [DONE]", is short, and a
// longer line is a chunk (or padding no server sends), passed over without
// reading its fields.
const maxDoneLine = 64

// skipsChunks reports whether the scanner passes over a chat stream's long
// lines: in terminalOnly mode, or for the rest of a read in which an event
// carrying content ended, only "data: [DONE]" matters.
func (s *sseScanner) skipsChunks() bool {
	return (s.terminalOnly || s.readCounted) && s.kind == streamChat
}

// data takes the value of a data line of the current event.
func (s *sseScanner) data(v []byte) {
	trimmed := bytes.TrimSpace(v)
	if len(trimmed) == 0 {
		return
	}
	switch s.kind {
	case streamChat:
		if bytes.Equal(trimmed, []byte("[DONE]")) {
			s.terminal = true
			return
		}
		s.content = s.content || s.terminalOnly || s.readCounted || s.long || chatContent(v)
	case streamResponses:
		typ := s.evType
		if len(typ) == 0 {
			typ = jsonStringAfter(v, `"type"`)
		}
		switch t := string(typ); t {
		case "response.completed", "response.failed", "response.incomplete", "error":
			s.terminal = true
		default:
			s.content = s.content || strings.HasSuffix(t, ".delta") || strings.HasSuffix(t, ".done")
		}
	default:
		s.content = true
	}
}

// chatContent reports whether a chat or completions chunk carries output:
// text, a refusal, reasoning, a tool call, an error, or a finish reason.
// A chunk with only a role or an empty content does not.
func chatContent(v []byte) bool {
	for _, key := range []string{`"content"`, `"text"`, `"refusal"`, `"reasoning_content"`, `"reasoning"`, `"finish_reason"`} {
		for rest := v; ; {
			val, after, ok := valueAfter(rest, key)
			if !ok {
				break
			}
			if len(val) > 1 && val[0] == '"' && val[1] != '"' {
				return true
			}
			rest = after
		}
	}
	for _, key := range []string{`"tool_calls"`, `"function_call"`} {
		if val, _, ok := valueAfter(v, key); ok && len(val) > 1 && (val[0] == '[' || val[0] == '{') {
			return true
		}
	}
	return bytes.Contains(v, []byte(`"error"`))
}

// valueAfter finds key (a quoted JSON name) in v followed by a colon and
// returns the bytes of its value onwards, and the bytes after the key to
// search on.
func valueAfter(v []byte, key string) (val, after []byte, ok bool) {
	for {
		i := bytes.Index(v, []byte(key))
		if i < 0 {
			return nil, nil, false
		}
		v = v[i+len(key):]
		rest := v[skipSpace(v, 0):]
		if len(rest) > 0 && rest[0] == ':' {
			return rest[skipSpace(rest, 1):], v, true
		}
	}
}

// jsonStringAfter returns the string value of key in v (without escapes
// decoded), or nil.
func jsonStringAfter(v []byte, key string) []byte {
	val, _, ok := valueAfter(v, key)
	if !ok || len(val) < 2 || val[0] != '"' {
		return nil
	}
	end := bytes.IndexByte(val[1:], '"')
	if end < 0 {
		return nil
	}
	return val[1 : 1+end]
}

// maxHeld bounds what the first-token wait holds back: past it (a flood of
// events that carry nothing), the stream goes to the caller as it is, and
// the first-token deadline goes on running on the caller's reads.
const maxHeld = 64 << 10

// The timeout a stream's timer is watching for.
const (
	watchNone  uint32 = iota
	watchFirst        // the first-token deadline, FirstTokenTimeout from the attempt's start
	watchIdle         // the stall timeout, StreamIdleTimeout without content
)

// streamTimer is the timer of a stream's timeouts: a *time.Timer, or a
// test's.
type streamTimer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// timerClock makes the stream timers and reads the time they run on. A
// test's clock may be one; with any other clock the timers are real
// (realTimers), as they bound real I/O.
type timerClock interface {
	afterFunc(d time.Duration, f func()) streamTimer
	since() time.Duration
}

// realTimers are real timers on the monotonic clock.
type realTimers struct{ realClock }

func (realTimers) afterFunc(d time.Duration, f func()) streamTimer { return time.AfterFunc(d, f) }

// afterFunc starts a stream timer of s: f runs in its own goroutine after d.
func (s *endpointState) afterFunc(d time.Duration, f func()) streamTimer {
	return s.timers.afterFunc(d, f)
}

// timerSince reads the time the stream timers of s run on, for the idle
// periods they bound (not the Transport's clock, unless it makes them).
func (s *endpointState) timerSince() time.Duration { return s.timers.since() }

// streamBody is the body of an event stream the caller reads: what the
// first-token wait held back, then the rest as it arrives, unbuffered.
//
// It bounds the wait for content with one timer. Until the first event
// that carries content, the timer runs to the first-token deadline
// (FirstTokenTimeout from the attempt's start) when the endpoint has one,
// else for StreamIdleTimeout from the moment the headers arrived; after
// each content event, for StreamIdleTimeout. Keep-alives never reset it.
// When it passes while the caller waits in Read (or while the first-token
// wait reads), the attempt's context is canceled, which closes the upstream
// connection, and the read fails. The Transport reads the stream only when
// the caller does, so when it passes while the caller is away, content may
// be waiting unread: the stream is not failed then, and the caller's next
// read gets one whole period of that timeout of its own, failing only if
// no content comes in it.
//
// For chat, completions and Responses API streams it also turns a clean
// end before the terminal event into an error. It records how the stream
// ended for the endpoint.
type streamBody struct {
	rc     io.ReadCloser
	held   []byte
	scan   sseScanner
	e      *endpoint
	strict bool          // a clean end before the terminal event is an error
	start  time.Duration // the attempt's start, on the clock's since
	first  bool          // the first content event went by

	// The timeouts, when the endpoint has one and the attempt a context
	// to cancel. watching and cut say which timeout the timer runs for
	// and which one cut the stream; reading and due tell the timer
	// whether the caller waits (lock-free: see fire and enterRead).
	firstToken time.Duration // FirstTokenTimeout, 0 for none
	idle       time.Duration // StreamIdleTimeout, 0 for none
	cancel     context.CancelCauseFunc
	timer      streamTimer // nil when no timeout is watched
	watching   atomic.Uint32
	cut        atomic.Uint32 // the timeout that cut the stream
	reading    atomic.Bool   // the caller (or the first-token wait) waits in a read
	due        atomic.Bool   // the timeout passed while the caller was away
	// lastContent is when the idle period began (the last content
	// event, or the headers), on timerSince: the timer is not
	// reset at each event, but finds on firing that content came and
	// runs on for what is left of the period.
	lastContent atomic.Int64

	ended atomic.Bool // the outcome is recorded
}

// newStreamBody watches rc, the body of an event stream e sent for a
// request of kind, in an attempt that started at start; cancel ends the
// attempt's context (nil when the endpoint has no stream timeout). It
// starts the timer: for the first-token deadline, or else for the stall
// timeout from now.
func newStreamBody(e *endpoint, rc io.ReadCloser, kind streamKind, strict bool, start time.Duration, cancel context.CancelCauseFunc) *streamBody {
	b := &streamBody{rc: rc, scan: sseScanner{kind: kind, firstOnly: true}, e: e, strict: strict && kind != streamOther, start: start}
	if cancel == nil || (e.firstToken <= 0 && e.streamIdle <= 0) {
		return b
	}
	b.scan.firstOnly = e.streamIdle <= 0
	b.firstToken, b.idle, b.cancel = e.firstToken, e.streamIdle, cancel
	if b.firstToken > 0 {
		b.watching.Store(watchFirst)
		b.timer = e.afterFunc(max(b.firstToken-(e.clock.since()-start), 0), b.fire)
	} else {
		b.watching.Store(watchIdle)
		b.lastContent.Store(int64(e.timerSince()))
		b.timer = e.afterFunc(b.idle, b.fire)
	}
	return b
}

// awaitFirstToken reads, within the attempt, until an event that carries
// content (or ends the stream) arrives, holding what it read for the
// caller, or until it holds maxHeld bytes. It returns an error matching
// ErrFirstTokenTimeout when the first-token deadline passes, or the
// read's error.
func (b *streamBody) awaitFirstToken() error {
	b.held = make([]byte, 0, 1<<10) // the first events of a stream are small
	b.reading.Store(true)
	defer b.reading.Store(false)
	if b.due.CompareAndSwap(true, false) {
		// The deadline passed before the wait began (the headers
		// came late): nothing reached the caller, the request fails
		// over.
		return &timeoutError{after: b.firstToken, firstToken: true}
	}
	for len(b.held) < maxHeld {
		if len(b.held) == cap(b.held) {
			b.held = append(b.held, 0)[:len(b.held)]
		}
		n, err := b.rc.Read(b.held[len(b.held):cap(b.held)])
		read := b.held[len(b.held) : len(b.held)+n]
		b.held = b.held[:len(b.held)+n]
		if b.scan.feed(read) > 0 {
			b.gotContent()
			return nil
		}
		switch {
		case b.cut.Load() == watchFirst:
			return &timeoutError{after: b.firstToken, firstToken: true}
		case errors.Is(err, io.EOF):
			return nil // the caller sees the end, judged as any other
		case err != nil:
			return err
		}
	}
	return nil
}

// Read yields the held bytes, then the stream.
func (b *streamBody) Read(p []byte) (int, error) {
	if len(b.held) > 0 {
		n := copy(p, b.held)
		b.held = b.held[n:]
		return n, nil
	}
	if b.timer != nil {
		b.enterRead()
	}
	n, err := b.rc.Read(p)
	if b.timer != nil {
		b.reading.Store(false)
	}
	if n > 0 && b.scan.feed(p[:n]) > 0 {
		b.gotContent()
	}
	if err == nil {
		return n, nil
	}
	return n, b.end(err)
}

// gotContent notes an event that carried content: the first one's time
// (which ends the first-token deadline), and a new idle period. The timer
// is reset only when it changes what it watches, or when it passed while
// the caller was away; otherwise the new period is only noted
// (lastContent), which costs a clock reading instead of a timer reset per
// event.
func (b *streamBody) gotContent() {
	if !b.first {
		b.first = true
		b.e.observeFirstToken(b.e.clock.since() - b.start)
		if b.timer != nil && b.idle <= 0 {
			b.stop()
		}
	}
	if b.timer == nil || b.idle <= 0 {
		return
	}
	b.lastContent.Store(int64(b.e.timerSince()))
	if b.watching.Load() == watchFirst && b.watching.CompareAndSwap(watchFirst, watchIdle) {
		// The first content ends the first-token deadline.
		b.due.Store(false)
		b.timer.Reset(b.idle)
		return
	}
	if b.due.Load() && b.due.CompareAndSwap(true, false) {
		b.timer.Reset(b.idle) // it passed, found no content and stopped
	}
}

// enterRead marks the caller waiting. If the timeout passed while it was
// away, it gets a whole period of that timeout of its own waiting. With
// fire, it decides without a lock: whichever of the two takes due acts.
func (b *streamBody) enterRead() {
	b.reading.Store(true)
	if b.due.CompareAndSwap(true, false) {
		switch b.watching.Load() { // due is set only by the timer
		case watchFirst:
			b.timer.Reset(b.firstToken)
		case watchIdle:
			b.timer.Reset(b.idle)
		}
	}
}

// fire runs when the timer passes. Watching for a stall, it first looks
// whether content came since the period began (lastContent): then the
// timer runs on for what is left of the period from it. Otherwise the
// stream is cut if the caller is waiting, else at the end of the caller's
// next period (enterRead). It marks due before looking again at reading,
// so that a caller entering meanwhile either sees due or is seen waiting.
func (b *streamBody) fire() {
	w := b.watching.Load()
	switch w {
	case watchNone:
		return
	case watchIdle:
		if quiet := b.e.timerSince() - time.Duration(b.lastContent.Load()); quiet < b.idle {
			b.timer.Reset(b.idle - quiet) // content came: the period runs from it
			return
		}
	}
	if !b.reading.Load() {
		b.due.Store(true)
		if !b.reading.Load() || !b.due.CompareAndSwap(true, false) {
			return
		}
	}
	// The first content may have switched the timer to a new idle
	// period meanwhile (resetting it): then it is that period's to cut.
	if b.watching.Load() != w || !b.cut.CompareAndSwap(watchNone, w) {
		return
	}
	if w == watchFirst {
		b.cancel(ErrFirstTokenTimeout)
	} else {
		b.cancel(ErrStreamStalled)
	}
}

// end turns the upstream body's error into what the caller reads, and
// records how the stream ended. A stream cut by a timeout has its upstream
// body closed at once (the canceled context has closed its connection).
func (b *streamBody) end(err error) error {
	switch cut := b.cut.Load(); {
	case cut == watchIdle:
		b.finish(streamStalled)
		_ = b.rc.Close()
		return &streamError{endpoint: b.e.name, err: ErrStreamStalled, detail: "sent no content for " + b.idle.String()}
	case cut == watchFirst:
		b.finish(streamNoFirstToken)
		_ = b.rc.Close()
		return &streamError{endpoint: b.e.name, err: ErrFirstTokenTimeout,
			detail: "sent no content within " + b.firstToken.String() + " of the attempt's start"}
	case errors.Is(err, io.EOF) && b.strict && !b.scan.ended:
		b.finish(streamTruncated)
		return &streamError{endpoint: b.e.name, err: io.ErrUnexpectedEOF, detail: "ended before its terminal event"}
	case errors.Is(err, io.EOF):
		b.finish(streamComplete)
		return err
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		b.finish(streamCanceled)
	default:
		b.finish(streamBroken)
	}
	return err
}

// finish records the stream's outcome once.
func (b *streamBody) finish(outcome string) {
	if !b.ended.CompareAndSwap(false, true) {
		return
	}
	b.stop()
	b.e.streamEnded(outcome)
}

// stop stops the timer.
func (b *streamBody) stop() {
	if b.timer != nil {
		b.watching.Store(watchNone)
		b.timer.Stop()
	}
}

// Close closes the upstream body; a stream closed before its end was
// canceled by the caller.
func (b *streamBody) Close() error {
	b.finish(streamCanceled)
	return b.rc.Close()
}

// streamError is a stream that failed after it began: it stalled, or
// ended before its terminal event. It matches its cause (ErrStreamStalled
// or io.ErrUnexpectedEOF) with errors.Is.
type streamError struct {
	endpoint string
	err      error
	detail   string
}

func (e *streamError) Error() string {
	return fmt.Sprintf("failover: stream from endpoint %s %s: %v", quote.Name(e.endpoint), e.detail, e.err)
}

func (e *streamError) Unwrap() error { return e.err }

// observeFirstToken records d, an attempt's time to its first content
// event.
func (s *endpointState) observeFirstToken(d time.Duration) {
	s.hot.firstToken.observe(d)
	if s.heal.balancesByLatency() {
		s.hot.peak.observe(d, s.clock.since())
	}
	s.m.firstToken(d)
}

// streamEnded records how one of s's streams ended; a stall, a truncation
// or a broken connection count as a failure of the endpoint.
func (s *endpointState) streamEnded(outcome string) {
	s.m.streamEnded(outcome)
	if outcome == streamComplete || outcome == streamCanceled {
		return
	}
	s.stats.failures.Add(1)
	s.stats.consecutive.Add(1)
	s.stats.lastErr.Store(&lastError{msg: "stream " + outcome, at: s.clock.now()})
	clk := lazyClock{c: s.clock}
	if _, open := s.breaker.openAt(clk.get().UnixNano()); !open {
		if done, ok := s.breaker.allow(&clk); ok {
			s.breaker.settle(done, errFailed)
		}
	}
	if s.logger != nil && s.logger.Enabled(context.Background(), slog.LevelDebug) {
		s.logger.Debug("failover: stream failed", slog.String("endpoint", s.name), slog.String("outcome", outcome))
	}
}
