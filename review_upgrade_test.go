package failover

import (
	"io"
	"net"
	"net/http"
	"testing"
)

// TestReviewUpgradeWritableWithTokenBudget: an endpoint with a MaxTPM
// hands a 101 Switching Protocols (the Realtime API's WebSocket) to the
// caller with a body that is still the connection's writer. The token
// budget's usage tap must not hide the Write method: net/http and
// httputil.ReverseProxy need an io.ReadWriteCloser to use the upgraded
// connection.
func TestReviewUpgradeWritableWithTokenBudget(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*Endpoint)
	}{
		{"MaxTPM", func(e *Endpoint) { e.MaxTPM = 600_000 }},
		{"MaxTPM and Timeout", func(e *Endpoint) { e.MaxTPM = 600_000; e.Timeout = 60e9 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer server.Close()
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Upgrade": {"websocket"}},
					Body: client, Request: req}, nil
			})
			a := hostEndpoint("a", 0)
			tc.setup(&a)
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a}})
			req, _ := http.NewRequest(http.MethodGet, clientBase+"/realtime", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			rw, ok := resp.Body.(io.ReadWriteCloser)
			if !ok {
				t.Fatalf("101 body %T is not writable: the upgraded connection cannot be used", resp.Body)
			}
			go func() { _, _ = rw.Write([]byte("ping")) }()
			got := make([]byte, 4)
			if _, err := io.ReadFull(server, got); err != nil || string(got) != "ping" {
				t.Fatalf("read %q, %v through the upgraded body, want ping", got, err)
			}
		})
	}
}
