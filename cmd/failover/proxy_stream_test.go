package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestProxyStreamOutcomes: the proxy gives its clients the transport's
// stream outcomes. A first token that does not come in time fails over
// invisibly; a stream that stalls, or that ends cleanly before its
// [DONE], is cut for the client as a broken connection is (a read error,
// never a clean end); the access line says how the stream ended.
func TestProxyStreamOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fault     fakeopenai.Fault
		wantError bool
		log       string
	}{
		{"first token late", fakeopenai.StreamStall(0, 10*time.Millisecond), false,
			`status=200 bytes=\d+ duration=\S+ endpoint=second attempts=2 stream=complete`},
		{"stalled", fakeopenai.StreamStall(3, 10*time.Millisecond), true,
			`status=200 bytes=\d+ duration=\S+ aborted=true endpoint=first attempts=1 stream=stalled`},
		{"truncated", fakeopenai.StreamTruncate(0), true,
			`status=200 bytes=\d+ duration=\S+ aborted=true endpoint=first attempts=1 stream=truncated`},
		{"complete", fakeopenai.Healthy(), false,
			`status=200 bytes=\d+ duration=\S+ endpoint=first attempts=1 stream=complete`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := startUpstream(t, fakeopenai.WithName("first"), fakeopenai.WithPrefix("/proxy/v1"))
			second := startUpstream(t, fakeopenai.WithName("second"), fakeopenai.WithPrefix("/proxy/v1"))
			first.SetFault(tc.fault)
			env := append(twoEndpoints(first, second), "OPENAI_FIRST_TOKEN_TIMEOUT=300ms", "OPENAI_STREAM_IDLE_TIMEOUT=300ms")
			p := startProxy(t, env)
			resp := post(t, newClient(t), p.url+"/v1/chat/completions", "", streamBody)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			body, err := io.ReadAll(resp.Body)
			switch {
			case tc.wantError && err == nil:
				t.Fatalf("the client read a clean end of a broken stream:\n%s", body)
			case !tc.wantError && err != nil:
				t.Fatalf("reading the stream: %v", err)
			case !tc.wantError && !strings.HasSuffix(string(body), "data: [DONE]\n\n"):
				t.Fatalf("the stream did not end with [DONE]:\n%s", body)
			}
			if tc.name == "first token late" && strings.Contains(string(body), "first") {
				t.Errorf("the client saw the slow endpoint's stream:\n%s", body)
			}
			p.logs.waitFor(t, regexp.MustCompile(`msg=request method=POST path=/v1/chat/completions `+tc.log), p.exited)
		})
	}
}
