package integration

import (
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3/option"
)

// TestSDKsShowTheEndpointHeader checks what the README says of
// Config.EndpointHeader: both SDKs hand the caller the header naming the
// endpoint that answered, here the second after the first refused.
func TestSDKsShowTheEndpointHeader(t *testing.T) {
	const header = "Failover-Endpoint"
	t.Run("go-openai", func(t *testing.T) {
		u := newUpstreams(t, firstDead.fault)
		u.cfg.EndpointHeader = header
		api := goOpenAIClient(t, u.cfg)
		resp, err := api.CreateChatCompletion(testContext(t), goOpenAIChat)
		if err != nil {
			t.Fatalf("CreateChatCompletion: %v", err)
		}
		if got := resp.Header().Get(header); got != secondName {
			t.Errorf("%s: %q, want %q", header, got, secondName)
		}
	})
	t.Run("openai-go", func(t *testing.T) {
		u := newUpstreams(t, firstDead.fault)
		u.cfg.EndpointHeader = header
		api := openAIGoClient(t, u.cfg)
		var raw *http.Response
		if _, err := api.Chat.Completions.New(testContext(t), openAIGoChat, openAIGoKey, option.WithResponseInto(&raw)); err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		if raw == nil {
			t.Fatal("no raw response")
		}
		if got := raw.Header.Get(header); got != secondName {
			t.Errorf("%s: %q, want %q", header, got, secondName)
		}
	})
}
