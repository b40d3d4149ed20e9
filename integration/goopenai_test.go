package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// newGoOpenAI returns a go-openai client whose requests fail over across
// cfg's endpoints. Its body is the README's go-openai snippet.
func newGoOpenAI(cfg failover.Config) (*openai.Client, error) {
	client, err := failover.WrapClient(http.DefaultClient, cfg)
	if err != nil {
		return nil, err
	}
	oc := openai.DefaultConfig("") // the key comes from each endpoint
	oc.HTTPClient = client
	api := openai.NewClientWithConfig(oc)
	return api, nil
}

// goOpenAIClient is newGoOpenAI for a test.
func goOpenAIClient(t *testing.T, cfg failover.Config) *openai.Client {
	t.Helper()
	api, err := newGoOpenAI(cfg)
	if err != nil {
		t.Fatalf("newGoOpenAI: %v", err)
	}
	return api
}

// goOpenAIChat is the chat completion request of the go-openai tests.
var goOpenAIChat = openai.ChatCompletionRequest{
	Model:    openai.GPT4oMini,
	Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "hi"}},
}

// goOpenAIChatContent sends a chat completion and returns its content.
func goOpenAIChatContent(ctx context.Context, api *openai.Client) (string, error) {
	resp, err := api.CreateChatCompletion(ctx, goOpenAIChat)
	if err != nil {
		return "", err
	}
	if len(resp.Choices) != 1 {
		return "", fmt.Errorf("%d choices, want 1", len(resp.Choices))
	}
	return resp.Choices[0].Message.Content, nil
}

// goOpenAIStreamContent sends a streaming chat completion, reads every
// chunk through the SDK's stream and returns the concatenated content.
func goOpenAIStreamContent(ctx context.Context, api *openai.Client) (string, error) {
	stream, err := api.CreateChatCompletionStream(ctx, goOpenAIChat)
	if err != nil {
		return "", err
	}
	defer stream.Close()
	var content strings.Builder
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return content.String(), nil
		}
		if err != nil {
			return content.String(), err
		}
		for _, c := range chunk.Choices {
			content.WriteString(c.Delta.Content)
		}
	}
}

func TestGoOpenAIChatCompletionFailsOver(t *testing.T) {
	for _, f := range firstFaults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, f.fault)
			api := goOpenAIClient(t, u.cfg)

			got, err := goOpenAIChatContent(testContext(t), api)
			if err != nil {
				t.Fatalf("CreateChatCompletion: %v", err)
			}
			if want := fakeopenai.Reply(secondName); got != want {
				t.Errorf("reply %q, want %q", got, want)
			}
			u.checkFailedOver(t, f, "/chat/completions")
		})
	}
}

func TestGoOpenAIChatStreamFailsOver(t *testing.T) {
	for _, f := range firstFaults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, f.fault)
			api := goOpenAIClient(t, u.cfg)

			got, err := goOpenAIStreamContent(testContext(t), api)
			if err != nil {
				t.Fatalf("stream: %v (content so far %q)", err, got)
			}
			if want := fakeopenai.Reply(secondName); got != want {
				t.Errorf("streamed content %q, want %q", got, want)
			}
			last := u.checkFailedOver(t, f, "/chat/completions")
			if !bytes.Contains(last.Body, []byte(`"stream":true`)) {
				t.Errorf("second upstream's body %q does not ask for a stream", last.Body)
			}
		})
	}
}

// TestGoOpenAIErrorReachesCaller checks that a 400 answered by the first
// endpoint, a fault of the request and not of the endpoint, reaches the
// caller as go-openai's own error, and that the second endpoint is not
// tried.
func TestGoOpenAIErrorReachesCaller(t *testing.T) {
	tests := []struct {
		name string
		call func(context.Context, *openai.Client) (string, error)
	}{
		{"chat", goOpenAIChatContent},
		{"stream", goOpenAIStreamContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, fakeopenai.StatusFault(http.StatusBadRequest).WithBody(badModelBody))
			api := goOpenAIClient(t, u.cfg)

			_, err := tt.call(testContext(t), api)
			var apiErr *openai.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want an *openai.APIError", err, err)
			}
			if apiErr.HTTPStatusCode != http.StatusBadRequest {
				t.Errorf("HTTPStatusCode %d, want 400", apiErr.HTTPStatusCode)
			}
			if apiErr.Message != "bad model xyz" {
				t.Errorf("Message %q, want %q", apiErr.Message, "bad model xyz")
			}
			if apiErr.Type != "invalid_request_error" || apiErr.Code != "model_not_found" {
				t.Errorf("Type %q, Code %v; want invalid_request_error, model_not_found", apiErr.Type, apiErr.Code)
			}
			u.checkOnlyFirstTried(t)
		})
	}
}

// TestGoOpenAIBodiesFailOver checks that requests with a JSON body and with
// a multipart body fail over from a first endpoint answering 500 with their
// body intact.
func TestGoOpenAIBodiesFailOver(t *testing.T) {
	const input = "embed this integration input"
	tests := []struct {
		name     string
		rest     string // the path after the prefix
		wantBody []byte // what the second upstream's body must hold
		call     func(context.Context, *openai.Client) error
	}{
		{
			name:     "embeddings",
			rest:     "/embeddings",
			wantBody: []byte(input),
			call: func(ctx context.Context, api *openai.Client) error {
				resp, err := api.CreateEmbeddings(ctx, openai.EmbeddingRequest{
					Input: []string{input},
					Model: openai.SmallEmbedding3,
				})
				if err != nil {
					return err
				}
				if len(resp.Data) != 1 || len(resp.Data[0].Embedding) != 3 {
					return fmt.Errorf("got %+v, want one 3-dimensional embedding", resp.Data)
				}
				return nil
			},
		},
		{
			name:     "transcription",
			rest:     "/audio/transcriptions",
			wantBody: wavBytes,
			call: func(ctx context.Context, api *openai.Client) error {
				resp, err := api.CreateTranscription(ctx, openai.AudioRequest{
					Model:    openai.Whisper1,
					FilePath: "a.wav", // names the Reader's contents
					Reader:   bytes.NewReader(wavBytes),
				})
				if err != nil {
					return err
				}
				// The upstream parsed the multipart body and measured its file part.
				if want := fmt.Sprintf("%s: %d bytes", secondName, len(wavBytes)); resp.Text != want {
					return fmt.Errorf("text %q, want %q", resp.Text, want)
				}
				return nil
			},
		},
	}
	f := first500
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, f.fault)
			api := goOpenAIClient(t, u.cfg)

			if err := tt.call(testContext(t), api); err != nil {
				t.Fatal(err)
			}
			u.checkFailedOver(t, f, tt.rest)
			u.checkBody(t, f, tt.wantBody)
		})
	}
}

// TestGoOpenAIFromEnvironment builds the client as the README shows, from
// numbered environment variables, and checks that it fails over.
func TestGoOpenAIFromEnvironment(t *testing.T) {
	f := first500
	u := newUpstreams(t, f.fault)
	u.sent = nil // http.DefaultClient's own transport sends, as in the README

	cfg, err := failover.ConfigFromEnviron(envFor(u))
	if err != nil {
		t.Fatalf("ConfigFromEnviron: %v", err)
	}
	api := goOpenAIClient(t, cfg)

	got, err := goOpenAIChatContent(testContext(t), api)
	if err != nil {
		t.Fatalf("CreateChatCompletion: %v", err)
	}
	if want := fakeopenai.Reply(secondName); got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
	u.checkFailedOver(t, f, "/chat/completions")
}
