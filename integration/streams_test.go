package integration

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// The stream faults of the first endpoint: it sends its headers and then
// only keep-alive comments (a first token that never comes), stalls after
// three chunks, or ends cleanly without [DONE].
var (
	firstSilent    = fakeopenai.StreamStall(0, 10*time.Millisecond)
	firstStalls    = fakeopenai.StreamStall(3, 10*time.Millisecond)
	firstTruncates = fakeopenai.StreamTruncate(0)
)

// streamConfig is u's configuration with the stream timeouts on.
func streamConfig(u *upstreams) failover.Config {
	cfg := u.cfg
	cfg.FirstTokenTimeout = 300 * time.Millisecond
	cfg.StreamIdleTimeout = 300 * time.Millisecond
	return cfg
}

// TestStreamsThroughSDKs: through go-openai and openai-go, a first endpoint
// whose first token never comes is left for the second invisibly, and a
// stream that stalls or ends without [DONE] is an error the SDK returns
// (io.ErrUnexpectedEOF, or ErrStreamStalled), never a clean end.
func TestStreamsThroughSDKs(t *testing.T) {
	sdks := map[string]func(t *testing.T, ctx context.Context, cfg failover.Config) (string, error){
		"go-openai": func(t *testing.T, ctx context.Context, cfg failover.Config) (string, error) {
			return goOpenAIStreamContent(ctx, goOpenAIClient(t, cfg))
		},
		"openai-go": func(t *testing.T, ctx context.Context, cfg failover.Config) (string, error) {
			return openAIGoStreamContent(ctx, openAIGoClient(t, cfg))
		},
	}
	for name, stream := range sdks {
		t.Run(name, func(t *testing.T) {
			t.Run("first token never comes", func(t *testing.T) {
				u := newUpstreams(t, firstSilent)
				got, err := stream(t, testContext(t), streamConfig(u))
				if err != nil || got != fakeopenai.Reply(secondName) {
					t.Fatalf("got %q, %v; want the second's reply, no error", got, err)
				}
			})
			for _, tc := range []struct {
				name  string
				fault fakeopenai.Fault
				want  error
			}{
				{"stalls", firstStalls, failover.ErrStreamStalled},
				{"truncated", firstTruncates, io.ErrUnexpectedEOF},
			} {
				t.Run(tc.name, func(t *testing.T) {
					u := newUpstreams(t, tc.fault)
					got, err := stream(t, testContext(t), streamConfig(u))
					if !errors.Is(err, tc.want) {
						t.Fatalf("got %q, %v; want an error matching %v", got, err, tc.want)
					}
					if u.second.Hits() != 0 {
						t.Errorf("the second endpoint got %d request(s): a stream that began cannot fail over", u.second.Hits())
					}
				})
			}
		})
	}
}

// TestStreamsThroughProxy: through the proxy, openai-go sees the same: a
// late first token is invisible, a stalled or truncated stream an error.
func TestStreamsThroughProxy(t *testing.T) {
	t.Run("first token never comes", func(t *testing.T) {
		u := newUpstreams(t, firstSilent)
		api := openAIGoViaProxy(t, startFailoverProxy(t, streamConfig(u)), sdkKey)
		got, err := openAIGoStreamContent(testContext(t), api)
		if err != nil || got != fakeopenai.Reply(secondName) {
			t.Fatalf("got %q, %v; want the second's reply, no error", got, err)
		}
	})
	for _, tc := range []struct {
		name  string
		fault fakeopenai.Fault
	}{{"stalls", firstStalls}, {"truncated", firstTruncates}} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstreams(t, tc.fault)
			api := openAIGoViaProxy(t, startFailoverProxy(t, streamConfig(u)), sdkKey)
			got, err := openAIGoStreamContent(testContext(t), api)
			if err == nil {
				t.Fatalf("got %q and a clean end; want the SDK to report the broken stream", got)
			}
		})
	}
}
