// Package errdesc describes why a request got no response, in a few words
// for a log line or a table cell: "connection refused", "timed out", "DNS:
// no such host api.example", "TLS: x509: certificate signed by unknown
// authority". A description never holds the request's URL, whose query may
// carry a secret, and so never a key.
package errdesc

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"syscall"

	"github.com/failover-go/failover"
)

// maxLen bounds a description built from an error's own text.
const maxLen = 100

// Describe returns a short description of err, "" for nil.
func Describe(err error) string {
	if err == nil {
		return ""
	}
	var (
		dnsErr   *net.DNSError
		certErr  *tls.CertificateVerificationError
		alertErr tls.AlertError
		recErr   tls.RecordHeaderError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, failover.ErrAttemptTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &dnsErr):
		switch {
		case dnsErr.IsNotFound:
			return "DNS: no such host " + dnsErr.Name
		case dnsErr.IsTimeout:
			return "DNS: lookup timed out"
		}
		return "DNS: lookup of " + dnsErr.Name + " failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &certErr):
		return cut("TLS: " + certErr.Err.Error())
	case errors.As(err, &alertErr):
		return cut("TLS: " + alertErr.Error())
	case errors.As(err, &recErr):
		return "TLS: the server did not answer in TLS (is it plain http?)"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without a response"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	}
	// The innermost error of a *url.Error, without the method and URL.
	var ue *url.Error
	for errors.As(err, &ue) {
		err = ue.Err
	}
	return cut(err.Error())
}

// cut shortens s to maxLen bytes, on a rune boundary, marking the cut.
func cut(s string) string {
	if len(s) <= maxLen {
		return s
	}
	n := maxLen
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
