package integration

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/failover-go/failover/internal/proxy"
)

// startLoggedProxy starts a failover proxy of cfg on a loopback port,
// with the proxy's logs (its access log) going to logger (nil: none), and
// returns its base URL; the test's cleanup stops it.
func startLoggedProxy(t *testing.T, cfg failover.Config, logger *slog.Logger) string {
	t.Helper()
	p, err := proxy.New(proxy.Config{Failover: cfg, ProxyKey: sdkKey, Logger: logger})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("proxy Serve: %v", err)
			}
		case <-time.After(requestTimeout):
			t.Errorf("the proxy did not stop within %v", requestTimeout)
		}
		p.Close()
	})
	return "http://" + ln.Addr().String() + "/v1"
}

// startFailoverProxy serves the proxy of `failover proxy` over cfg on a
// loopback port until the test ends, with sdkKey as its proxy key, and
// returns the base URL an SDK points at: http://127.0.0.1:<port>/v1.
func startFailoverProxy(t *testing.T, cfg failover.Config) string {
	t.Helper()
	return startLoggedProxy(t, cfg, nil)
}

// openAIGoViaProxy returns an openai-go client of the proxy at baseURL,
// with key as its API key (the proxy's key, or a wrong one) and no retries
// of its own: the proxy fails over.
func openAIGoViaProxy(t *testing.T, baseURL, key string) openai.Client {
	t.Helper()
	httpClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(httpClient.CloseIdleConnections)
	return openai.NewClient(
		option.WithBaseURL(baseURL),
		option.WithAPIKey(key),
		option.WithHTTPClient(httpClient),
		option.WithMaxRetries(0),
	)
}

// TestProxyOpenAIGoFailsOver sends chat completions, plain and streamed,
// from openai-go through the proxy while the first endpoint fails in each
// way: the second answers, with its own key, never the SDK's.
func TestProxyOpenAIGoFailsOver(t *testing.T) {
	for _, f := range firstFaults {
		for _, mode := range []struct {
			name string
			call func(context.Context, openai.Client) (string, error)
		}{
			{"chat", func(ctx context.Context, api openai.Client) (string, error) {
				resp, err := api.Chat.Completions.New(ctx, openAIGoChat)
				if err != nil {
					return "", err
				}
				return resp.Choices[0].Message.Content, nil
			}},
			{"stream", func(ctx context.Context, api openai.Client) (string, error) {
				stream := api.Chat.Completions.NewStreaming(ctx, openAIGoChat)
				defer stream.Close()
				var acc openai.ChatCompletionAccumulator
				for stream.Next() {
					acc.AddChunk(stream.Current())
				}
				if err := stream.Err(); err != nil || len(acc.Choices) == 0 {
					return "", errors.Join(err, errors.New("no choice streamed"))
				}
				return acc.Choices[0].Message.Content, nil
			}},
		} {
			t.Run(f.name+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				u := newUpstreams(t, f.fault)
				api := openAIGoViaProxy(t, startFailoverProxy(t, u.cfg), sdkKey)

				got, err := mode.call(testContext(t), api)
				if err != nil {
					t.Fatalf("%s through the proxy: %v", mode.name, err)
				}
				if want := fakeopenai.Reply(secondName); got != want {
					t.Errorf("reply %q, want %q", got, want)
				}
				u.checkFailedOver(t, f, "/chat/completions")
			})
		}
	}
}

// TestProxyOpenAIGoWrongKey checks that a client without the proxy's key
// gets a 401 that openai-go reports as its own error, and that no request
// reaches an upstream.
func TestProxyOpenAIGoWrongKey(t *testing.T) {
	u := newUpstreams(t, fakeopenai.Healthy())
	api := openAIGoViaProxy(t, startFailoverProxy(t, u.cfg), "not-the-proxy-key")

	_, err := api.Chat.Completions.New(testContext(t), openAIGoChat)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v (%T), want an *openai.Error", err, err)
	}
	if apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
		t.Errorf("StatusCode %d, Code %q; want 401, invalid_api_key", apiErr.StatusCode, apiErr.Code)
	}
	if hits := u.first.Hits() + u.second.Hits(); hits != 0 {
		t.Errorf("the upstreams got %d request(s)", hits)
	}
}

// TestProxyGoOpenAIStream streams a chat completion from go-openai through
// the proxy while the first endpoint is down.
func TestProxyGoOpenAIStream(t *testing.T) {
	u := newUpstreams(t, firstDead.fault)
	oc := goopenai.DefaultConfig(sdkKey)
	oc.BaseURL = startFailoverProxy(t, u.cfg)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	oc.HTTPClient = &http.Client{Transport: tr}
	api := goopenai.NewClientWithConfig(oc)

	stream, err := api.CreateChatCompletionStream(testContext(t), goopenai.ChatCompletionRequest{
		Model:    goopenai.GPT4oMini,
		Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "hi"}},
		Stream:   true,
	})
	if err != nil {
		t.Fatalf("CreateChatCompletionStream: %v", err)
	}
	defer stream.Close()
	var got string
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v (content so far %q)", err, got)
		}
		for _, c := range resp.Choices {
			got += c.Delta.Content
		}
	}
	if want := fakeopenai.Reply(secondName); got != want {
		t.Errorf("streamed content %q, want %q", got, want)
	}
	u.checkFailedOver(t, firstDead, "/chat/completions")
}
