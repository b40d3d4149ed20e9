package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/openai/openai-go/v3"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// The mixed configuration of the model tests: OpenAI first (every model,
// under the caller's names), Azure second (its deployments), an
// OpenRouter-style router third (its own names).
const (
	openaiName   = "openai"
	azureName    = "azure"
	routerName   = "router"
	azureKey     = "key-azure"
	routerKey    = "key-router"
	azureVersion = "2024-10-21"
	routerPrefix = "/api/v1"
)

// The caller's model names, and what Azure and the router call them.
var (
	azureModels = map[string]string{
		"gpt-4o-mini": "prod-4o-mini", "text-embedding-3-small": "prod-embed", "whisper-1": "prod-whisper",
	}
	routerModels = map[string]string{
		"gpt-4o-mini": "openai/gpt-4o-mini", "text-embedding-3-small": "openai/text-embedding-3-small", "whisper-1": "openai/whisper-1",
	}
)

// modelUpstreams are the three upstreams of the mixed configuration.
type modelUpstreams struct {
	openai, azure, router *fakeopenai.Server
	cfg                   failover.Config
}

// newModelUpstreams starts the three, closed with the test: openai answers
// 500, and azure 503 too when azureDown, so that a request ends at azure
// or at the router.
func newModelUpstreams(t *testing.T, azureDown bool) *modelUpstreams {
	t.Helper()
	deployments := make([]string, 0, len(azureModels))
	for _, d := range azureModels {
		deployments = append(deployments, d)
	}
	u := &modelUpstreams{
		openai: startUpstream(t, fakeopenai.WithName(openaiName)),
		azure: startUpstream(t, fakeopenai.WithName(azureName),
			fakeopenai.WithAzure(fakeopenai.Azure{APIKey: azureKey, APIVersion: azureVersion, Deployments: deployments})),
		router: startUpstream(t, fakeopenai.WithName(routerName), fakeopenai.WithPrefix(routerPrefix), fakeopenai.WithAPIKey(routerKey)),
	}
	u.openai.SetFault(fakeopenai.StatusFault(http.StatusInternalServerError))
	if azureDown {
		u.azure.SetFault(fakeopenai.StatusFault(http.StatusServiceUnavailable))
	}
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	u.cfg = failover.Config{
		Base: base,
		Endpoints: []failover.Endpoint{
			{Name: openaiName, BaseURL: u.openai.URL(), APIKey: firstKey, Priority: 1},
			{Name: azureName, BaseURL: u.azure.URL(), APIKey: azureKey, APIType: failover.APITypeAzure, APIVersion: azureVersion,
				Priority: 2, Models: azureModels},
			{Name: routerName, BaseURL: u.router.URL(), APIKey: routerKey, Priority: 3, Models: routerModels},
		},
	}
	return u
}

// sentModel returns the model a recorded request's body names: its JSON
// "model", or its multipart form field "model".
func sentModel(t *testing.T, r fakeopenai.Request) string {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && mt == "multipart/form-data" {
		form, err := multipart.NewReader(bytes.NewReader(r.Body), params["boundary"]).ReadForm(1 << 20)
		if err != nil {
			t.Fatalf("%s: multipart body: %v", r.Path, err)
		}
		defer form.RemoveAll()
		return strings.Join(form.Value["model"], ",")
	}
	var body struct {
		Model string `json:"model"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("%s: JSON body %q: %v", r.Path, r.Body, err)
	}
	return body.Model
}

// check checks that the request for model, to the API path rest, went to
// openai under the caller's name, then (when target is the router) to
// azure, then to target, each under its own name, with its own key and
// path, and only once.
func (u *modelUpstreams) check(t *testing.T, target, model, rest string) {
	t.Helper()
	tried := []*fakeopenai.Server{u.openai, u.azure}
	if target == azureName {
		tried = tried[:1]
	}
	for _, s := range append(tried, map[string]*fakeopenai.Server{azureName: u.azure, routerName: u.router}[target]) {
		if s.Hits() != 1 {
			t.Errorf("%s got %d requests, want 1", s.Name(), s.Hits())
			continue
		}
		r, _ := s.Last()
		want := map[string]string{openaiName: model, azureName: azureModels[model], routerName: routerModels[model]}[s.Name()]
		if got := sentModel(t, r); got != want {
			t.Errorf("%s got model %q, want %q", s.Name(), got, want)
		}
		switch s.Name() {
		case openaiName:
			checkAuth(t, openaiName, r, firstKey)
		case azureName:
			if r.Header.Get("Api-Key") != azureKey || r.Header.Get("Authorization") != "" {
				t.Errorf("azure got api-key %q and Authorization %q", r.Header.Get("Api-Key"), r.Header.Get("Authorization"))
			}
			if wantPath := "/openai/deployments/" + want + rest; r.Path != wantPath || r.RawQuery != "api-version="+azureVersion {
				t.Errorf("azure got %s?%s, want %s?api-version=%s", r.Path, r.RawQuery, wantPath, azureVersion)
			}
		case routerName:
			checkAuth(t, routerName, r, routerKey)
			if r.Path != routerPrefix+rest {
				t.Errorf("router got path %s, want %s", r.Path, routerPrefix+rest)
			}
		}
	}
	if target == azureName && u.router.Hits() != 0 {
		t.Errorf("the router got %d requests, want none", u.router.Hits())
	}
}

// modelCall is one kind of request the model tests send: the API path,
// the model, and the call through an SDK, which returns what the answer
// says of who answered (the reply, or the transcription's text).
type modelCall[C any] struct {
	name, rest, model string
	call              func(ctx context.Context, api C) (string, error)
}

// wantAnswer is what a call's answer says when target answered it.
func wantAnswer(callName, target string) string {
	switch callName {
	case "transcription":
		return fmt.Sprintf("%s: %d bytes", target, len(wavBytes))
	case "embeddings":
		return "3"
	}
	return fakeopenai.Reply(target)
}

var goOpenAIModelCalls = []modelCall[*goopenai.Client]{
	{"chat", "/chat/completions", "gpt-4o-mini", goOpenAIChatContent},
	{"stream", "/chat/completions", "gpt-4o-mini", goOpenAIStreamContent},
	{"embeddings", "/embeddings", "text-embedding-3-small", func(ctx context.Context, api *goopenai.Client) (string, error) {
		resp, err := api.CreateEmbeddings(ctx, goopenai.EmbeddingRequest{Input: []string{"hi"}, Model: goopenai.SmallEmbedding3})
		if err != nil || len(resp.Data) != 1 {
			return "", err
		}
		return fmt.Sprint(len(resp.Data[0].Embedding)), nil
	}},
	{"transcription", "/audio/transcriptions", "whisper-1", func(ctx context.Context, api *goopenai.Client) (string, error) {
		resp, err := api.CreateTranscription(ctx, goopenai.AudioRequest{Model: goopenai.Whisper1, FilePath: "a.wav", Reader: bytes.NewReader(wavBytes)})
		return resp.Text, err
	}},
}

var openAIGoModelCalls = []modelCall[openai.Client]{
	{"chat", "/chat/completions", "gpt-4o-mini", func(ctx context.Context, api openai.Client) (string, error) {
		resp, err := api.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		}, openAIGoKey)
		if err != nil || len(resp.Choices) != 1 {
			return "", err
		}
		return resp.Choices[0].Message.Content, nil
	}},
	{"stream", "/chat/completions", "gpt-4o-mini", func(ctx context.Context, api openai.Client) (string, error) {
		return openAIGoStreamOf(ctx, api, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
	}},
	{"embeddings", "/embeddings", "text-embedding-3-small", func(ctx context.Context, api openai.Client) (string, error) {
		resp, err := api.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hi")}, Model: openai.EmbeddingModelTextEmbedding3Small,
		}, openAIGoKey)
		if err != nil || len(resp.Data) != 1 {
			return "", err
		}
		return fmt.Sprint(len(resp.Data[0].Embedding)), nil
	}},
	{"transcription", "/audio/transcriptions", "whisper-1", func(ctx context.Context, api openai.Client) (string, error) {
		resp, err := api.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
			File: openai.File(bytes.NewReader(wavBytes), "a.wav", "audio/wav"), Model: openai.AudioModelWhisper1,
		}, openAIGoKey)
		if err != nil {
			return "", err
		}
		return resp.Text, nil
	}},
}

// runModelCalls runs each call for each target of the mixed configuration
// through the client newAPI makes, and checks who answered under which
// name.
func runModelCalls[C any](t *testing.T, calls []modelCall[C], newAPI func(*testing.T, *modelUpstreams) C) {
	for _, target := range []string{azureName, routerName} {
		for _, c := range calls {
			t.Run(target+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				u := newModelUpstreams(t, target == routerName)
				got, err := c.call(testContext(t), newAPI(t, u))
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if want := wantAnswer(c.name, target); got != want {
					t.Errorf("answer %q, want %q", got, want)
				}
				u.check(t, target, c.model, c.rest)
			})
		}
	}
}

// TestGoOpenAIModelsFailOver: through go-openai, chat, a stream,
// embeddings and a multipart transcription fail over from OpenAI to Azure
// (its deployments, api-key, api-version) and on to an OpenRouter-style
// endpoint, each sent the model under its own name.
func TestGoOpenAIModelsFailOver(t *testing.T) {
	runModelCalls(t, goOpenAIModelCalls, func(t *testing.T, u *modelUpstreams) *goopenai.Client { return goOpenAIClient(t, u.cfg) })
}

// TestOpenAIGoModelsFailOver is TestGoOpenAIModelsFailOver through
// openai-go.
func TestOpenAIGoModelsFailOver(t *testing.T) {
	runModelCalls(t, openAIGoModelCalls, func(t *testing.T, u *modelUpstreams) openai.Client { return openAIGoClient(t, u.cfg) })
}

// TestProxyModelsFailOver is TestGoOpenAIModelsFailOver through the proxy,
// from openai-go.
func TestProxyModelsFailOver(t *testing.T) {
	runModelCalls(t, openAIGoModelCalls, func(t *testing.T, u *modelUpstreams) openai.Client {
		return openAIGoViaProxy(t, startFailoverProxy(t, u.cfg), sdkKey)
	})
}

// servedBySecond is a configuration whose first endpoint serves gpt-4o-mini
// only and whose second serves o3-mini only, as vendor/o3-mini.
func servedBySecond(t *testing.T) (*upstreams, failover.Config) {
	t.Helper()
	u := newUpstreams(t, fakeopenai.Healthy())
	cfg := u.cfg
	cfg.Endpoints = slices.Clone(cfg.Endpoints)
	cfg.Endpoints[0].Models = map[string]string{"gpt-4o-mini": ""}
	cfg.Endpoints[1].Models = map[string]string{"o3-mini": "vendor/o3-mini"}
	return u, cfg
}

// TestSDKsModelServedBySecondOnly: a model only the second endpoint
// serves goes straight there, under its name, from go-openai, openai-go
// and the proxy; the first is not tried.
func TestSDKsModelServedBySecondOnly(t *testing.T) {
	for _, via := range []string{"go-openai", "openai-go", "proxy"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			u, cfg := servedBySecond(t)
			ctx := testContext(t)
			var (
				content string
				err     error
			)
			params := openai.ChatCompletionNewParams{Model: "o3-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
			switch via {
			case "go-openai":
				var resp goopenai.ChatCompletionResponse
				resp, err = goOpenAIClient(t, cfg).CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{
					Model: "o3-mini", Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "hi"}},
				})
				if err == nil {
					content = resp.Choices[0].Message.Content
				}
			default:
				api := openAIGoClient(t, cfg)
				if via == "proxy" {
					api = openAIGoViaProxy(t, startFailoverProxy(t, cfg), sdkKey)
				}
				var resp *openai.ChatCompletion
				resp, err = api.Chat.Completions.New(ctx, params, openAIGoKey)
				if err == nil {
					content = resp.Choices[0].Message.Content
				}
			}
			if err != nil || content != fakeopenai.Reply(secondName) {
				t.Fatalf("%q, %v; want the second's reply", content, err)
			}
			if u.first.Hits() != 0 || u.second.Hits() != 1 {
				t.Errorf("hits %d and %d, want 0 and 1", u.first.Hits(), u.second.Hits())
			}
			if r, _ := u.second.Last(); sentModel(t, r) != "vendor/o3-mini" {
				t.Errorf("the second got model %q, want vendor/o3-mini", sentModel(t, r))
			}
		})
	}
}

// TestSDKsModelServedByNone: a model no endpoint serves ends at once with
// no attempt: failover.ErrNoEndpointForModel through go-openai and
// openai-go, OpenAI's 404 model_not_found through the proxy.
func TestSDKsModelServedByNone(t *testing.T) {
	u, cfg := servedBySecond(t)
	ctx := testContext(t)
	_, err := goOpenAIClient(t, cfg).CreateChatCompletion(ctx, goopenai.ChatCompletionRequest{
		Model: "gpt-5", Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "hi"}},
	})
	if !errors.Is(err, failover.ErrNoEndpointForModel) || !strings.Contains(err.Error(), `"gpt-5"`) {
		t.Errorf("go-openai: %v, want ErrNoEndpointForModel naming gpt-5", err)
	}
	params := openai.ChatCompletionNewParams{Model: "gpt-5", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	direct := openAIGoClient(t, cfg)
	if _, err := direct.Chat.Completions.New(ctx, params, openAIGoKey); !errors.Is(err, failover.ErrNoEndpointForModel) {
		t.Errorf("openai-go: %v, want ErrNoEndpointForModel", err)
	}
	viaProxy := openAIGoViaProxy(t, startFailoverProxy(t, cfg), sdkKey)
	_, err = viaProxy.Chat.Completions.New(ctx, params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" || !strings.Contains(apiErr.Message, `"gpt-5"`) {
		t.Errorf("proxy: %v, want a 404 model_not_found naming gpt-5", err)
	}
	if u.first.Hits()+u.second.Hits() != 0 {
		t.Errorf("upstreams got %d and %d requests, want none", u.first.Hits(), u.second.Hits())
	}
}

// TestProxyModelBodyByteIdentical: through the proxy, the body the Azure
// and router endpoints receive is the client's byte for byte (key order,
// numbers beyond float64, unicode, escapes, unknown keys, odd spacing)
// but for the model's value.
func TestProxyModelBodyByteIdentical(t *testing.T) {
	u := newModelUpstreams(t, true)
	baseURL := startFailoverProxy(t, u.cfg)
	const head = "{\n\t\"zeta\":  9007199254740993123456789, \"messages\" :[{\"role\":\"user\",\"content\":\"h\u00e9llo \\\"model\\\" 日本語 \\ud83d\\ude00\"}],\r\n" +
		"\"x-vendor\": {\"model\": \"keep\", \"n\": [1.5e300, -0, null]} ,  \"model\"  :  "
	const tail = "  , \"temperature\":0.70 }\n"
	body := head + `"gpt\u002d4o-mini"` + tail
	ctx := testContext(t)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+sdkKey)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(answer), fakeopenai.Reply(routerName)) {
		t.Fatalf("%d %s, want the router's answer", resp.StatusCode, answer)
	}
	for _, tc := range []struct {
		s    *fakeopenai.Server
		lit  string
		name string
	}{
		{u.openai, `"gpt\u002d4o-mini"`, "openai"}, // the caller's own literal, untouched
		{u.azure, `"prod-4o-mini"`, "azure"},
		{u.router, `"openai/gpt-4o-mini"`, "router"},
	} {
		r, _ := tc.s.Last()
		if want := head + tc.lit + tail; string(r.Body) != want {
			t.Errorf("%s got\n%q\nwant\n%q", tc.name, r.Body, want)
		}
	}
}

// TestProxyModelsList: through the proxy, openai-go's Models.List gets the
// union of the endpoints' model names when every endpoint lists its
// models.
func TestProxyModelsList(t *testing.T) {
	u := newModelUpstreams(t, false)
	cfg := u.cfg
	cfg.Endpoints = cfg.Endpoints[1:] // azure and the router: both list their models
	api := openAIGoViaProxy(t, startFailoverProxy(t, cfg), sdkKey)
	page, err := api.Models.List(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	if want := []string{"gpt-4o-mini", "text-embedding-3-small", "whisper-1"}; !slices.Equal(ids, want) {
		t.Errorf("models %q, want %q", ids, want)
	}
	if u.azure.Hits()+u.router.Hits() != 0 {
		t.Error("listing the models reached an upstream")
	}
	m, err := api.Models.Get(testContext(t), "whisper-1")
	if err != nil || m.ID != "whisper-1" {
		t.Errorf("Models.Get: %+v, %v", m, err)
	}
}
