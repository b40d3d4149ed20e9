package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// errBodyTimeout ends a request whose client did not send its body within
// the read timeout: it is the cause of the request's canceled context, so
// the transport sees a caller who gave up, which charges no endpoint.
var errBodyTimeout = errors.New("proxy: the client did not send the request body within the read timeout")

// clientBody is a request body read under the proxy's read timeout. The
// connection's read deadline is set when the handler starts and lifted
// once the body is read to its end (net/http does that too, as it starts
// reading the connection again to notice the client going away), closed,
// or before a hijack: it bounds the body alone, never a response or an
// upgraded connection. When the deadline passes, net/http cancels the
// request's context; clientBody cancels it too, with errBodyTimeout as
// its cause, and remembers it for the client's 408.
type clientBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	cancel context.CancelCauseFunc

	read     atomic.Int64 // bytes read so far
	timedOut atomic.Bool
	once     sync.Once // clears the deadline
}

// timeBody bounds the read of r's body by timeout, from now. It returns r
// unchanged when it has no body or the connection takes no deadline;
// otherwise a shallow copy of r whose context is canceled with
// errBodyTimeout when the deadline passes, and its clientBody.
func timeBody(w http.ResponseWriter, r *http.Request, timeout time.Duration) (*http.Request, *clientBody) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return r, nil
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		return r, nil
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	b := &clientBody{ReadCloser: r.Body, rc: rc, cancel: cancel}
	r = r.WithContext(ctx)
	r.Body = b
	return r, b
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read.Add(int64(n))
	switch {
	case err == io.EOF:
		b.release()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut.Store(true)
		b.cancel(errBodyTimeout)
		err = errBodyTimeout
	}
	return n, err
}

// Close closes the body and lifts the deadline.
func (b *clientBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// release lifts the read deadline, once.
func (b *clientBody) release() {
	b.once.Do(func() { _ = b.rc.SetReadDeadline(time.Time{}) })
}

// done releases what timeBody set up; the handler calls it on return.
func (b *clientBody) done() {
	if b != nil {
		b.release()
		b.cancel(nil)
	}
}

// bodyTimedOut reports whether b, if any, ran into the read timeout.
func (b *clientBody) bodyTimedOut() bool { return b != nil && b.timedOut.Load() }

// overBuffer reports whether more of b was read than the transport buffers
// for replay (limit, negative for none): the transport then had to send the
// body on as it came, to one endpoint only.
func (b *clientBody) overBuffer(limit int64) bool {
	return b != nil && b.read.Load() > max(limit, 0)
}

// bodyHint explains, for a client's error, that its body was too large to
// fail over with.
func bodyHint(limit int64) string {
	if limit < 0 {
		return " The proxy buffers no request body (-max-body 0), so a request with a body goes to one endpoint only."
	}
	return fmt.Sprintf(" The request body is larger than the proxy's buffer (-max-body %s), so it could go to one endpoint only, without failover; raise -max-body to let such requests fail over.", formatSize(limit))
}

// formatSize writes n bytes as a whole number of GiB, MiB or KiB where it
// is one, else in bytes.
func formatSize(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
