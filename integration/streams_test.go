package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

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
// The error comes promptly, from the stream's fault (the proxy cuts the
// client's connection and its access log names the outcome), never from
// the client's own deadline.
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
		name    string
		fault   fakeopenai.Fault
		outcome string // in the proxy's access log
	}{{"stalls", firstStalls, "stalled"}, {"truncated", firstTruncates, "truncated"}} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstreams(t, tc.fault)
			var logs lockedBuffer
			base := startLoggedProxy(t, streamConfig(u), slog.New(slog.NewTextHandler(&logs, nil)))
			api := openAIGoViaProxy(t, base, sdkKey)
			ctx := testContext(t)
			start := time.Now()
			got, err := openAIGoStreamContent(ctx, api)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("got %q and a clean end; want the SDK to report the broken stream", got)
			}
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				t.Fatalf("error %v came from the client's deadline, not the stream's fault", err)
			}
			// The stall timeout is 300ms: bounded generously, far below
			// the client's deadline (requestTimeout).
			if took > promptBound {
				t.Fatalf("error %v after %v, want it within %v", err, took, promptBound)
			}
			if !strings.HasPrefix(fakeopenai.Reply(firstName), got) {
				t.Errorf("got %q before the error, want the start of the first's reply %q", got, fakeopenai.Reply(firstName))
			}
			if line := logs.String(); !strings.Contains(line, "stream="+tc.outcome) {
				t.Errorf("the proxy's access log does not mark the stream %s:\n%s", tc.outcome, line)
			}
		})
	}
}

// promptBound bounds, generously for shared machines, the time a stream
// fault of the tests' 300ms timeouts takes to reach the client.
const promptBound = 20 * time.Second

// lockedBuffer is a bytes.Buffer safe for the proxy's logger and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLegacyCompletionsTruncatedThroughGoOpenAI: a legacy completions
// stream that ends without [DONE] is io.ErrUnexpectedEOF through go-openai,
// and a clean end with AllowTruncatedStreams.
func TestLegacyCompletionsTruncatedThroughGoOpenAI(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(map[bool]string{false: "an error", true: "allowed"}[allow], func(t *testing.T) {
			u := newUpstreams(t, firstTruncates)
			cfg := streamConfig(u)
			cfg.AllowTruncatedStreams = allow
			stream, err := goOpenAIClient(t, cfg).CreateCompletionStream(testContext(t), goopenai.CompletionRequest{
				Model: goopenai.GPT3Dot5TurboInstruct, Prompt: "hi", Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			var text strings.Builder
			for {
				chunk, err := stream.Recv()
				if err != nil {
					if allow && !errors.Is(err, io.EOF) || !allow && !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("stream ended with %v (allowed %v)", err, allow)
					}
					break
				}
				for _, c := range chunk.Choices {
					text.WriteString(c.Text)
				}
			}
			if text.String() != fakeopenai.Reply(firstName) {
				t.Errorf("text %q, want the first's %q", text.String(), fakeopenai.Reply(firstName))
			}
			if u.second.Hits() != 0 {
				t.Errorf("the second endpoint got %d request(s): a stream that began cannot fail over", u.second.Hits())
			}
		})
	}
}
