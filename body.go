package failover

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// replayBody hands each attempt a fresh reader of the request body: the
// caller's own body for the first attempt when GetBody can make the next
// ones, else a copy buffered once (up to a cap). The caller's body is closed
// exactly once: by the base transport that read it, or by close.
type replayBody struct {
	req        *http.Request
	buffered   bool          // the body was read into memory (the request had no GetBody)
	single     io.ReadCloser // a body too large to buffer: one attempt only
	sentOrig   bool          // the caller's body went to an attempt
	replayable bool
	getBody    func() (io.ReadCloser, error) // set on outgoing requests
	held       []byte                        // the buffered body, when buffered
}

// init prepares req's body for replay. A body above limit bytes without
// GetBody is sent once, unbuffered beyond its first limit bytes.
func (b *replayBody) init(req *http.Request, limit int64) error {
	*b = replayBody{req: req, replayable: true}
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
		b.replayable = false
		b.single = &multiReadCloser{Reader: io.MultiReader(bytes.NewReader(prefix), req.Body), closer: req.Body}
		return nil
	}
	_ = req.Body.Close()
	b.buffered, b.held = true, prefix
	b.getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(prefix)), nil }
	return nil
}

// next returns the body for the next attempt, nil for a request without one.
func (b *replayBody) next() (io.ReadCloser, error) {
	switch {
	case b.single != nil:
		rc := b.single
		b.single = nil
		b.sentOrig = true
		return rc, nil
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

// close closes the caller's body if no attempt took it.
func (b *replayBody) close() {
	if b.single != nil {
		_ = b.single.Close()
		return
	}
	if !b.sentOrig && !b.buffered && b.req.Body != nil {
		_ = b.req.Body.Close()
	}
}

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
