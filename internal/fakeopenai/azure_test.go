package fakeopenai

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// azureKey is the api-key of the Azure tests' resource.
const azureKey = "azure-key-0123456789"

// fetchAzure sends a request with the given api-key (none when empty) and
// returns the response and its body.
func fetchAzure(t *testing.T, c *http.Client, method, url, apiKey, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if apiKey != "" {
		req.Header.Set("Api-Key", apiKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, data
}

// TestAzure: an Azure server answers the classic deployments path (the
// deployment from the path, api-version required) and the v1 path (the
// deployment from the body), checks the api-key header, and reports the
// model it served in ModelHeader and in the answer.
func TestAzure(t *testing.T) {
	s := newServer(t, WithName("az"), WithAzure(Azure{APIKey: azureKey, APIVersion: "2024-10-21", Deployments: []string{"prod-4o-mini", "prod-embed", "prod-whisper"}}))
	c := newClient(t)
	mpType, mpBody := multipartBody(t, map[string]string{"model": "whisper-1"}, []byte("RIFF....WAVE"))
	v1Type, v1Body := multipartBody(t, map[string]string{"model": "prod-whisper"}, []byte("RIFF....WAVE"))
	classic := "/openai/deployments/prod-4o-mini/chat/completions?api-version=2024-10-21"
	tests := []struct {
		name, method, path, key, contentType string
		body                                 []byte
		wantStatus                           int
		wantModel                            string
		want                                 map[string]any
	}{
		{name: "classic chat", method: "POST", path: classic, key: azureKey, contentType: "application/json", body: chatBody(false),
			wantStatus: 200, wantModel: "prod-4o-mini", want: map[string]any{"model": "prod-4o-mini", "choices.0.message.content": Reply("az")}},
		{name: "classic embeddings", method: "POST", path: "/openai/deployments/prod-embed/embeddings?api-version=2024-10-21", key: azureKey,
			contentType: "application/json", body: []byte(`{"input":"hi"}`),
			wantStatus: 200, wantModel: "prod-embed", want: map[string]any{"model": "prod-embed"}},
		{name: "classic transcription", method: "POST", path: "/openai/deployments/prod-whisper/audio/transcriptions?api-version=2024-10-21", key: azureKey,
			contentType: mpType, body: mpBody, wantStatus: 200, wantModel: "prod-whisper", want: map[string]any{"text": "az: 12 bytes"}},
		{name: "classic models", method: "GET", path: "/openai/models?api-version=2024-10-21", key: azureKey,
			wantStatus: 200, want: map[string]any{"object": "list"}},
		{name: "v1 chat", method: "POST", path: "/openai/v1/chat/completions", key: azureKey, contentType: "application/json",
			body: []byte(`{"model":"prod-4o-mini","messages":[]}`), wantStatus: 200, wantModel: "prod-4o-mini", want: map[string]any{"model": "prod-4o-mini"}},
		{name: "v1 transcription", method: "POST", path: "/openai/v1/audio/transcriptions", key: azureKey,
			contentType: v1Type, body: v1Body, wantStatus: 200, wantModel: "prod-whisper"},
		{name: "v1 unknown deployment", method: "POST", path: "/openai/v1/chat/completions", key: azureKey, contentType: "application/json",
			body: chatBody(false), wantStatus: 404, wantModel: "gpt-test", want: map[string]any{"error.code": "DeploymentNotFound"}},
		{name: "classic unknown deployment", method: "POST", path: "/openai/deployments/gpt-test/chat/completions?api-version=2024-10-21", key: azureKey,
			contentType: "application/json", body: chatBody(false), wantStatus: 404, wantModel: "gpt-test", want: map[string]any{"error.code": "DeploymentNotFound"}},
		{name: "no api-version", method: "POST", path: "/openai/deployments/prod-4o-mini/chat/completions", key: azureKey,
			contentType: "application/json", body: chatBody(false), wantStatus: 400, wantModel: "gpt-test", want: map[string]any{"error.code": "MissingApiVersionParameter"}},
		{name: "other api-version", method: "POST", path: "/openai/deployments/prod-4o-mini/chat/completions?api-version=2023-05-15", key: azureKey,
			contentType: "application/json", body: chatBody(false), wantStatus: 404, wantModel: "gpt-test", want: map[string]any{"error.code": "404"}},
		{name: "no key", method: "POST", path: classic, contentType: "application/json", body: chatBody(false),
			wantStatus: 401, wantModel: "gpt-test", want: map[string]any{"error.code": "401"}},
		{name: "wrong key", method: "POST", path: classic, key: "azure-key-wrong", contentType: "application/json", body: chatBody(false),
			wantStatus: 401, wantModel: "gpt-test", want: map[string]any{"error.code": "401"}},
		{name: "classic chat without a deployment", method: "POST", path: "/openai/chat/completions?api-version=2024-10-21", key: azureKey,
			contentType: "application/json", body: []byte(`{"model":"prod-4o-mini","messages":[]}`), wantStatus: 404, wantModel: "prod-4o-mini", want: map[string]any{"error.code": "404"}},
		{name: "classic embeddings without a deployment", method: "POST", path: "/openai/embeddings?api-version=2024-10-21", key: azureKey,
			contentType: "application/json", body: []byte(`{"model":"prod-embed","input":"hi"}`), wantStatus: 404, wantModel: "prod-embed", want: map[string]any{"error.code": "404"}},
		{name: "OpenAI path", method: "POST", path: "/v1/chat/completions", key: azureKey, contentType: "application/json", body: chatBody(false),
			wantStatus: 404, wantModel: "gpt-test", want: map[string]any{"error.code": "404"}},
		{name: "unknown route", method: "POST", path: "/openai/v1/nope", key: azureKey, contentType: "application/json", body: []byte(`{}`),
			wantStatus: 404, want: map[string]any{"error.code": "404"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := fetchAzure(t, c, tt.method, s.URL()+tt.path, tt.key, tt.contentType, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, data)
			}
			if got := resp.Header.Get(ModelHeader); got != tt.wantModel {
				t.Errorf("%s %q, want %q", ModelHeader, got, tt.wantModel)
			}
			checkJSON(t, data, tt.want)
		})
	}
	if got := s.URL(); got != "http://"+s.Addr() {
		t.Errorf("URL() = %q, want the resource's root http://%s", got, s.Addr())
	}
}

// TestAzureBearerIsNotAKey: Azure takes its key in api-key only.
func TestAzureBearerIsNotAKey(t *testing.T) {
	s := newServer(t, WithAzure(Azure{APIKey: azureKey}))
	c := newClient(t)
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/openai/v1/chat/completions", strings.NewReader(string(chatBody(false))))
	req.Header.Set("Authorization", "Bearer "+azureKey)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d with the key as a bearer token, want 401", resp.StatusCode)
	}
}

// TestModelHeader: every server reports the model the request named, from
// a JSON body or a multipart form field, and none for a body without one.
func TestModelHeader(t *testing.T) {
	s := newServer(t)
	c := newClient(t)
	mpType, mpBody := multipartBody(t, map[string]string{"model": "whisper-x"}, []byte("RIFF"))
	noType, noBody := multipartBody(t, map[string]string{"purpose": "batch"}, []byte("RIFF"))
	for _, tc := range []struct {
		name, path, ct string
		body           []byte
		want           string
	}{
		{"json", "/chat/completions", "application/json", chatBody(false), "gpt-test"},
		{"multipart", "/audio/transcriptions", mpType, mpBody, "whisper-x"},
		{"none", "/files", noType, noBody, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := fetch(t, c, http.MethodPost, s.URL()+tc.path, tc.ct, tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, data)
			}
			if got := resp.Header.Get(ModelHeader); got != tc.want {
				t.Errorf("%s %q, want %q", ModelHeader, got, tc.want)
			}
		})
	}
}

// TestAzureFaults: the Azure-shaped faults answer as Azure does.
func TestAzureFaults(t *testing.T) {
	s := newServer(t)
	c := newClient(t)

	s.SetFault(AzureRateLimited(1500))
	resp, data := postChat(t, c, s, false)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After-Ms") != "1500" || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("429: status %d, retry-after-ms %q, retry-after %q; want 429, 1500, 2",
			resp.StatusCode, resp.Header.Get("Retry-After-Ms"), resp.Header.Get("Retry-After"))
	}
	checkJSON(t, data, map[string]any{"error.code": "429"})

	s.SetFault(ContentFiltered())
	resp, data = postChat(t, c, s, false)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("content filter: status %d, want 400", resp.StatusCode)
	}
	checkJSON(t, data, map[string]any{"error.code": "content_filter", "error.innererror.code": "ResponsibleAIPolicyViolation"})

	s.SetFault(ContentFilterStop())
	resp, data = postChat(t, c, s, false)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("filtered answer: status %d, want 200", resp.StatusCode)
	}
	checkJSON(t, data, map[string]any{"choices.0.finish_reason": "content_filter", "choices.0.message.content": nil})
	resp, data = postChat(t, c, s, true)
	events, err := readEvents(strings.NewReader(string(data)))
	if resp.StatusCode != http.StatusOK || err != nil || len(events) != 3 || events[2] != doneMarker ||
		!strings.Contains(events[0], `"prompt_filter_results"`) || !strings.Contains(events[1], `"finish_reason":"content_filter"`) {
		t.Errorf("filtered stream: status %d, events %q (%v); want the prompt filter results, the filtered chunk and [DONE]", resp.StatusCode, events, err)
	}
	if ContentFilterStop().String() != "content-filter" {
		t.Errorf("String() = %q", ContentFilterStop().String())
	}
}
