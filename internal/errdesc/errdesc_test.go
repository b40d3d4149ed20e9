package errdesc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/failover-go/failover"
)

func TestDescribe(t *testing.T) {
	secretURL := "https://api.example/v1/models?sig=query-secret"
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: secretURL, Err: err} }
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"attempt timeout", fmt.Errorf("attempt: %w", failover.ErrAttemptTimeout), "timed out"},
		{"deadline", wrap(context.DeadlineExceeded), "timed out"},
		{"canceled", wrap(context.Canceled), "canceled"},
		{"no such host", wrap(&net.OpError{Op: "dial", Err: &net.DNSError{Name: "api.example", Err: "no such host", IsNotFound: true}}), "DNS: no such host api.example"},
		{"DNS timeout", wrap(&net.DNSError{Name: "api.example", Err: "i/o timeout", IsTimeout: true}), "DNS: lookup timed out"},
		{"refused", wrap(&net.OpError{Op: "dial", Err: &net.OpError{Op: "connect", Err: syscall.ECONNREFUSED}}), "connection refused"},
		{"reset", wrap(&net.OpError{Op: "read", Err: syscall.ECONNRESET}), "connection reset"},
		{"certificate", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "TLS: x509: certificate signed by unknown authority"},
		{"not TLS", wrap(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), "TLS: the server did not answer in TLS (is it plain http?)"},
		{"EOF", wrap(io.EOF), "connection closed without a response"},
		{"other", wrap(errors.New("http: server gave HTTP response to HTTPS client")), "http: server gave HTTP response to HTTPS client"},
		{"long", wrap(errors.New(strings.Repeat("é", 80))), strings.Repeat("é", 50) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Describe(tc.err)
			if got != tc.want {
				t.Errorf("Describe = %q, want %q", got, tc.want)
			}
			if strings.Contains(got, "query-secret") {
				t.Errorf("Describe = %q shows the URL's query", got)
			}
		})
	}
}

// TestDescribeRealErrors checks the descriptions of errors a real client
// gets on loopback: a refused connection, and TLS to a plain HTTP port.
func TestDescribeRealErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	for _, tc := range []struct {
		name, url, want string
	}{
		{"refused", "http://" + refused + "/v1?k=secret", "connection refused"},
		{"TLS to plain HTTP", "https://" + strings.TrimPrefix(srv.URL, "http://") + "/v1?k=secret", "http: server gave HTTP response to HTTPS client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Get(tc.url)
			if err == nil {
				resp.Body.Close()
				t.Fatal("no error")
			}
			if got := Describe(err); got != tc.want {
				t.Errorf("Describe(%v) = %q, want %q", err, got, tc.want)
			}
		})
	}
}
