package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// newOpenAIGo returns an openai-go client whose requests fail over across
// cfg's endpoints. Its body is the README's openai-go snippet.
func newOpenAIGo(cfg failover.Config) (openai.Client, error) {
	client, err := failover.WrapClient(http.DefaultClient, cfg)
	if err != nil {
		return openai.Client{}, err
	}
	api := openai.NewClient(
		option.WithHTTPClient(client),
		option.WithMaxRetries(0), // failover retries across endpoints; the SDK's own 2 retries would multiply them
		// Pinned: openai-go would otherwise send to OPENAI_BASE_URL when it is set, which is not routed.
		option.WithBaseURL(failover.DefaultClientBaseURL),
	)
	return api, nil
}

// openAIGoClient is newOpenAIGo for a test.
func openAIGoClient(t *testing.T, cfg failover.Config) openai.Client {
	t.Helper()
	api, err := newOpenAIGo(cfg)
	if err != nil {
		t.Fatalf("newOpenAIGo: %v", err)
	}
	return api
}

// openAIGoKey is the calling code's own key, given to every call (request
// options apply exactly as client options do); each endpoint's key must
// replace it.
var openAIGoKey = option.WithAPIKey(sdkKey)

// openAIGoChat is the chat completion request of the openai-go tests.
var openAIGoChat = openai.ChatCompletionNewParams{
	Model:    fakeopenai.ModelID, // the fake echoes any model
	Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
}

// openAIGoChatContent sends a chat completion and returns its content.
func openAIGoChatContent(ctx context.Context, api openai.Client, opts ...option.RequestOption) (string, error) {
	resp, err := api.Chat.Completions.New(ctx, openAIGoChat, append([]option.RequestOption{openAIGoKey}, opts...)...)
	if err != nil {
		return "", err
	}
	if len(resp.Choices) != 1 {
		return "", fmt.Errorf("%d choices, want 1", len(resp.Choices))
	}
	return resp.Choices[0].Message.Content, nil
}

// openAIGoStreamContent sends a streaming chat completion, reads every
// chunk through the SDK's stream and returns the concatenated content.
func openAIGoStreamContent(ctx context.Context, api openai.Client, opts ...option.RequestOption) (string, error) {
	return openAIGoStreamOf(ctx, api, openAIGoChat, opts...)
}

// openAIGoStreamOf is openAIGoStreamContent for the request params.
func openAIGoStreamOf(ctx context.Context, api openai.Client, params openai.ChatCompletionNewParams, opts ...option.RequestOption) (string, error) {
	stream := api.Chat.Completions.NewStreaming(ctx, params, append([]option.RequestOption{openAIGoKey}, opts...)...)
	defer stream.Close()
	var content strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	return content.String(), stream.Err()
}

// openAIGoCases are firstFaults, plus one case where the SDK's base URL is
// the first endpoint's own URL instead of the default.
type openAIGoCase struct {
	firstFault
	ownBaseURL bool
}

func openAIGoCases() []openAIGoCase {
	var cases []openAIGoCase
	for _, f := range firstFaults {
		cases = append(cases, openAIGoCase{firstFault: f})
	}
	own := openAIGoCase{firstFault: first500, ownBaseURL: true}
	own.name += ", base URL = first endpoint's"
	return append(cases, own)
}

// opts returns the request options of c over u.
func (c openAIGoCase) opts(u *upstreams) []option.RequestOption {
	if !c.ownBaseURL {
		return nil
	}
	return []option.RequestOption{option.WithBaseURL(u.first.URL())}
}

func TestOpenAIGoChatCompletionFailsOver(t *testing.T) {
	for _, c := range openAIGoCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, c.fault)
			api := openAIGoClient(t, u.cfg)

			got, err := openAIGoChatContent(testContext(t), api, c.opts(u)...)
			if err != nil {
				t.Fatalf("Chat.Completions.New: %v", err)
			}
			if want := fakeopenai.Reply(secondName); got != want {
				t.Errorf("reply %q, want %q", got, want)
			}
			u.checkFailedOver(t, c.firstFault, "/chat/completions")
		})
	}
}

func TestOpenAIGoChatStreamFailsOver(t *testing.T) {
	for _, c := range openAIGoCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, c.fault)
			api := openAIGoClient(t, u.cfg)

			got, err := openAIGoStreamContent(testContext(t), api, c.opts(u)...)
			if err != nil {
				t.Fatalf("stream: %v (content so far %q)", err, got)
			}
			if want := fakeopenai.Reply(secondName); got != want {
				t.Errorf("streamed content %q, want %q", got, want)
			}
			last := u.checkFailedOver(t, c.firstFault, "/chat/completions")
			if !bytes.Contains(last.Body, []byte(`"stream":true`)) {
				t.Errorf("second upstream's body %q does not ask for a stream", last.Body)
			}
		})
	}
}

// TestOpenAIGoErrorReachesCaller checks that a 400 answered by the first
// endpoint, a fault of the request and not of the endpoint, reaches the
// caller as openai-go's own error, and that the second endpoint is not
// tried.
func TestOpenAIGoErrorReachesCaller(t *testing.T) {
	tests := []struct {
		name string
		call func(context.Context, openai.Client, ...option.RequestOption) (string, error)
	}{
		{"chat", openAIGoChatContent},
		{"stream", openAIGoStreamContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, fakeopenai.StatusFault(http.StatusBadRequest).WithBody(badModelBody))
			api := openAIGoClient(t, u.cfg)

			_, err := tt.call(testContext(t), api)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want an *openai.Error", err, err)
			}
			if apiErr.StatusCode != http.StatusBadRequest {
				t.Errorf("StatusCode %d, want 400", apiErr.StatusCode)
			}
			if apiErr.Message != "bad model xyz" {
				t.Errorf("Message %q, want %q", apiErr.Message, "bad model xyz")
			}
			if apiErr.Type != "invalid_request_error" || apiErr.Code != "model_not_found" {
				t.Errorf("Type %q, Code %q; want invalid_request_error, model_not_found", apiErr.Type, apiErr.Code)
			}
			u.checkOnlyFirstTried(t)
		})
	}
}

// TestOpenAIGoBodiesFailOver checks that requests with a JSON body and with
// a multipart body fail over from a first endpoint answering 500 with their
// body intact.
func TestOpenAIGoBodiesFailOver(t *testing.T) {
	const input = "embed this integration input"
	tests := []struct {
		name     string
		rest     string // the path after the prefix
		wantBody []byte // what the second upstream's body must hold
		call     func(context.Context, openai.Client) error
	}{
		{
			name:     "embeddings",
			rest:     "/embeddings",
			wantBody: []byte(input),
			call: func(ctx context.Context, api openai.Client) error {
				resp, err := api.Embeddings.New(ctx, openai.EmbeddingNewParams{
					Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(input)},
					Model: openai.EmbeddingModelTextEmbedding3Small,
				}, openAIGoKey)
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
			call: func(ctx context.Context, api openai.Client) error {
				resp, err := api.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
					File:  openai.File(bytes.NewReader(wavBytes), "a.wav", "audio/wav"),
					Model: fakeopenai.ModelID,
				}, openAIGoKey)
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
		{
			name:     "file upload",
			rest:     "/files",
			wantBody: wavBytes,
			call: func(ctx context.Context, api openai.Client) error {
				resp, err := api.Files.New(ctx, openai.FileNewParams{
					File:    openai.File(bytes.NewReader(wavBytes), "a.wav", "audio/wav"),
					Purpose: openai.FilePurposeUserData,
				}, openAIGoKey)
				if err != nil {
					return err
				}
				if resp.ID != "file-"+secondName || resp.Bytes != int64(len(wavBytes)) || resp.Filename != "a.wav" {
					return fmt.Errorf("file object id %q, %d bytes, name %q; want %q, %d, %q",
						resp.ID, resp.Bytes, resp.Filename, "file-"+secondName, len(wavBytes), "a.wav")
				}
				return nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUpstreams(t, first500.fault)
			api := openAIGoClient(t, u.cfg)

			if err := tt.call(testContext(t), api); err != nil {
				t.Fatal(err)
			}
			u.checkFailedOver(t, first500, tt.rest)
			u.checkBody(t, first500, tt.wantBody)
		})
	}
}

// TestOpenAIGoFromEnvironment builds the client as the README shows, from
// numbered environment variables, and checks that it fails over.
func TestOpenAIGoFromEnvironment(t *testing.T) {
	u := newUpstreams(t, first500.fault)
	u.sent = nil // http.DefaultClient's own transport sends, as in the README

	cfg, err := failover.ConfigFromEnviron(envFor(u))
	if err != nil {
		t.Fatalf("ConfigFromEnviron: %v", err)
	}
	api := openAIGoClient(t, cfg)

	got, err := openAIGoChatContent(testContext(t), api)
	if err != nil {
		t.Fatalf("Chat.Completions.New: %v", err)
	}
	if want := fakeopenai.Reply(secondName); got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
	u.checkFailedOver(t, first500, "/chat/completions")
}
