package failover

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// replayBody hands each attempt a fresh reader of the request body: the
// caller's own body for the first attempt when GetBody can make the next
// ones, else a copy buffered once (up to a cap). A body above the cap is
// streamed: the next attempt may take it only if the last read none of it
// (a refused connection, say). The caller's body is closed exactly once:
// by the base transport that read it, or by close.
type replayBody struct {
	req      *http.Request
	buffered bool   // the body was read into memory (the request had no GetBody, or load read it)
	data     []byte // the body, when buffered

	// The body read once through GetBody for its fields (peek), in a
	// pooled slice released by close; nil when not read.
	peeked   []byte
	peekBuf  *[]byte
	sentOrig bool                          // the caller's body went to an attempt
	getBody  func() (io.ReadCloser, error) // set on outgoing requests

	// A body too large to buffer: its prefix, then the rest of the
	// caller's, handed to one attempt at a time through a streamedBody.
	stream  io.Reader
	current *streamedBody
	limit   int64
}

// init prepares req's body for replay. A body above limit bytes without
// GetBody is streamed, unbuffered beyond its first limit bytes.
func (b *replayBody) init(req *http.Request, limit int64) error {
	*b = replayBody{req: req}
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		return nil
	case req.GetBody != nil:
		b.getBody = req.GetBody
		return nil
	}
	prefix, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		_ = req.Body.Close()
		return fmt.Errorf("failover: reading the request body: %w", err)
	}
	if int64(len(prefix)) > limit {
		b.stream, b.limit = io.MultiReader(bytes.NewReader(prefix), req.Body), limit
		return nil
	}
	_ = req.Body.Close()
	b.buffer(prefix)
	return nil
}

// buffer makes b replay data, the whole body, from memory.
func (b *replayBody) buffer(data []byte) {
	b.buffered, b.data = true, data
	b.getBody = func() (io.ReadCloser, error) { return newBytesBody(data), nil }
}

// bytesBody is a request body read from memory: one allocation.
type bytesBody struct{ bytes.Reader }

func newBytesBody(data []byte) *bytesBody {
	b := new(bytesBody)
	b.Reset(data)
	return b
}

func (*bytesBody) Close() error { return nil }

// load is init for a request whose body a feature reads (the model it
// names): it returns the whole body, read into memory once and replayed
// from there, or nil for a request without a body or one above limit
// bytes, which init then prepares as usual. A request with GetBody is
// read through GetBody, and its own body closed at once (no attempt will
// take it); one without is read as init reads it.
func (b *replayBody) load(req *http.Request, limit int64) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody == nil {
		err := b.init(req, limit)
		return b.data, err
	}
	rc, err := req.GetBody()
	if err != nil || rc == nil {
		_ = req.Body.Close()
		if err == nil {
			err = errors.New("GetBody returned a nil body")
		}
		return nil, fmt.Errorf("failover: reading the request body: %w", err)
	}
	data, err := readAtMost(rc, limit, req.ContentLength)
	if rc != req.Body {
		_ = rc.Close()
	}
	if err != nil {
		_ = req.Body.Close()
		return nil, fmt.Errorf("failover: reading the request body: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, b.init(req, limit)
	}
	_ = req.Body.Close()
	*b = replayBody{req: req}
	b.buffer(data)
	return data, nil
}

// readAtMost reads r to its end or to limit+1 bytes, whichever comes
// first; size, when positive, is how long r is expected to be (read into
// one allocation, with a byte to spare to see the end).
func readAtMost(r io.Reader, limit, size int64) ([]byte, error) {
	n := int64(512)
	if size > 0 {
		n = size + 1
	}
	buf := make([]byte, 0, min(n, limit+1, 64<<20)) // a size claimed, not yet seen
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit+1-int64(len(buf)))))
		}
		m, err := r.Read(buf[len(buf):min(int64(cap(buf)), limit+1)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// next returns the body for the next attempt, nil for a request without one.
func (b *replayBody) next() (io.ReadCloser, error) {
	switch {
	case b.stream != nil:
		if b.current != nil && !b.current.seal() {
			return nil, &bodyTooLargeError{limit: b.limit}
		}
		b.current = &streamedBody{r: b.stream}
		return b.current, nil
	case b.buffered:
		return b.getBody()
	case b.req.Body == nil || b.req.Body == http.NoBody:
		return b.req.Body, nil
	case !b.sentOrig:
		b.sentOrig = true
		return b.req.Body, nil
	}
	rc, err := b.getBody()
	if err != nil {
		return nil, fmt.Errorf("failover: GetBody for a new attempt: %w", err)
	}
	if rc == nil {
		return nil, errors.New("failover: GetBody for a new attempt returned a nil body")
	}
	return rc, nil
}

// close closes the caller's body if no attempt took it; a streamed body
// once its last attempt is done with it. It releases the bytes peek read.
func (b *replayBody) close() {
	if b.peekBuf != nil {
		releaseBody(b.peekBuf)
		b.peekBuf, b.peeked = nil, nil
	}
	switch {
	case b.stream != nil && b.current != nil:
		b.current.release(b.req.Body)
	case b.stream != nil:
		_ = b.req.Body.Close()
	case !b.sentOrig && !b.buffered && b.req.Body != nil:
		_ = b.req.Body.Close()
	}
}

// streamedBody is one attempt's share of a body too large to buffer. Its
// Close does not close the caller's body, so that an attempt that read
// none of it (a refused connection) leaves it whole for the next; once
// sealed, it reads no more, whatever the base transport's goroutines still
// try. The last one closes the caller's body when both the transport and
// the request are done with it (release).
type streamedBody struct {
	mu     sync.Mutex
	r      io.Reader
	read   int64
	sealed bool
	closed bool      // the base transport closed it
	owner  io.Closer // the caller's body, to close at Close (set by release)
}

func (s *streamedBody) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sealed || s.closed {
		return 0, errBodySealed
	}
	n, err := s.r.Read(p)
	s.read += int64(n)
	return n, err
}

func (s *streamedBody) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.owner != nil {
		owner := s.owner
		s.owner = nil
		return owner.Close()
	}
	return nil
}

// seal ends s's share of the body and reports whether it read none of it.
func (s *streamedBody) seal() (untouched bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = true
	return s.read == 0
}

// release closes caller, the caller's body, now if the base transport has
// closed s, else when it does.
func (s *streamedBody) release(caller io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = caller.Close()
		return
	}
	s.owner = caller
}

// errBodySealed is what a read of a streamedBody gets once another attempt
// (or none) took the body over.
var errBodySealed = errors.New("failover: request body taken over by another attempt")

// bodyTooLargeError ends a request whose body, too large to buffer, was
// partly read by an attempt that failed.
type bodyTooLargeError struct{ limit int64 }

func (e *bodyTooLargeError) Error() string {
	return fmt.Sprintf("failover: the request body is larger than MaxBodyBuffer (%d bytes) and was partly sent to an endpoint that failed, so it cannot fail over to another; raise MaxBodyBuffer, or give the request a GetBody", e.limit)
}

func (e *bodyTooLargeError) Is(target error) bool { return target == ErrBodyTooLarge }

type multiReadCloser struct {
	io.Reader
	closer io.Closer
}

func (m *multiReadCloser) Close() error { return m.closer.Close() }

// readPrefix reads up to limit bytes of body. When that is the whole body it
// closes body and returns a replacement reading from memory; otherwise the
// replacement reads the prefix, then the rest of body, and closes body.
func readPrefix(body io.ReadCloser, limit int64) ([]byte, io.ReadCloser) {
	if body == nil || body == http.NoBody {
		return nil, body
	}
	prefix, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err == nil && int64(len(prefix)) <= limit {
		_ = body.Close()
		return prefix, &memBody{Reader: bytes.NewReader(prefix)}
	}
	if err != nil {
		// A read error: hand the caller what arrived, then the error.
		return prefix, &multiReadCloser{Reader: io.MultiReader(bytes.NewReader(prefix), errReader{err}), closer: body}
	}
	return prefix[:limit], &multiReadCloser{Reader: io.MultiReader(bytes.NewReader(prefix), body), closer: body}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// memBody is a response body held in memory.
type memBody struct{ *bytes.Reader }

func (memBody) Close() error { return nil }

// keepBody returns resp with its body in memory, so that its connection is
// released while later attempts run: the prefix already read when that was
// all of it, else at most the prefix (the rest is discarded). A body no
// prefix was read from (a 2xx a custom Classifier failed) is not read now,
// outside the attempt's timeout: it is discarded.
func keepBody(resp *http.Response, prefix []byte) *http.Response {
	if resp.Body == nil {
		return resp
	}
	if _, ok := resp.Body.(*memBody); ok {
		return resp
	}
	if mb, ok := unwrapCancel(resp.Body).(*memBody); ok {
		_ = resp.Body.Close() // releases the attempt's context
		resp.Body = mb
		return resp
	}
	_ = resp.Body.Close()
	resp.Body = &memBody{Reader: bytes.NewReader(prefix)}
	resp.ContentLength = int64(len(prefix))
	resp.Header.Del("Content-Length")
	return resp
}

// cancelOnClose ends an attempt's context when the caller closes the body,
// so a per-attempt timeout never cuts a stream yet nothing leaks.
type cancelOnClose struct {
	io.ReadCloser
	cancel func(error)
	once   sync.Once
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() { c.cancel(nil) })
	return err
}

func unwrapCancel(rc io.ReadCloser) io.ReadCloser {
	if c, ok := rc.(*cancelOnClose); ok {
		return c.ReadCloser
	}
	return rc
}

// cancelOnCloseRW is cancelOnClose for the body of a 101 Switching
// Protocols response, which is also the connection's writer.
type cancelOnCloseRW struct {
	*cancelOnClose
	w io.Writer
}

func (c *cancelOnCloseRW) Write(p []byte) (int, error) { return c.w.Write(p) }

// decodedPrefix returns the error body prefix as the classifier should see
// it: gunzipped (up to limit bytes) when the caller asked for the encoding
// itself, so that the base transport left it compressed.
func decodedPrefix(resp *http.Response, prefix []byte, limit int64) []byte {
	if resp == nil || len(prefix) == 0 || !strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		return prefix
	}
	zr, err := gzip.NewReader(bytes.NewReader(prefix))
	if err != nil {
		return prefix
	}
	decoded, _ := io.ReadAll(io.LimitReader(zr, limit)) // a cut prefix ends early: keep what decoded
	return decoded
}
