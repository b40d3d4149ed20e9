package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// modelsEndpoints are two endpoints with Models on fake upstreams: an
// OpenAI-style one and an Azure classic one.
func modelsEndpoints(t *testing.T) ([]failover.Endpoint, *fakeopenai.Server, *fakeopenai.Server) {
	t.Helper()
	router := fakeopenai.New(fakeopenai.WithName("router"))
	t.Cleanup(router.Close)
	az := fakeopenai.New(fakeopenai.WithName("az"), fakeopenai.WithAzure(fakeopenai.Azure{APIKey: keyB, APIVersion: "2024-10-21"}))
	t.Cleanup(az.Close)
	return []failover.Endpoint{
		{Name: "router", BaseURL: router.URL(), APIKey: keyA, Priority: 1, Models: map[string]string{"gpt-4o-mini": "openai/gpt-4o-mini"}},
		{Name: "az", BaseURL: az.URL(), APIKey: keyB, Priority: 2, APIType: "azure", APIVersion: "2024-10-21",
			Models: map[string]string{"gpt-4o-mini": "prod-mini", "text-embedding-3-small": ""}},
	}, router, az
}

// TestProxyModelNotServed: a request for a model no endpoint serves gets
// OpenAI's 404 model_not_found, naming the model, and reaches no upstream;
// a model only the second endpoint serves goes there under its name.
func TestProxyModelNotServed(t *testing.T) {
	eps, router, az := modelsEndpoints(t)
	url := serveProxy(t, eps, io.Discard)
	resp := postJSON(t, url+"/v1/chat/completions", `{"model":"gpt-5","messages":[]}`, nil)
	e := checkError(t, resp, http.StatusNotFound, "model_not_found")
	if e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, `"gpt-5"`) {
		t.Errorf("error %+v, want an invalid_request_error naming gpt-5", e.Error)
	}
	if router.Hits()+az.Hits() != 0 {
		t.Errorf("upstreams got %d and %d requests, want none", router.Hits(), az.Hits())
	}

	resp = postJSON(t, url+"/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(fakeopenai.ModelHeader) != "text-embedding-3-small" {
		t.Fatalf("embeddings: %d, model %q: %s", resp.StatusCode, resp.Header.Get(fakeopenai.ModelHeader), body)
	}
	if last, _ := az.Last(); last.Path != "/openai/deployments/text-embedding-3-small/embeddings" || last.Header.Get("Api-Key") != keyB {
		t.Errorf("az got %s with api-key %q", last.Path, last.Header.Get("Api-Key"))
	}
	if router.Hits() != 0 {
		t.Errorf("router got %d requests for a model it does not serve", router.Hits())
	}
}

// TestProxyModelsVisible: /healthz shows each endpoint's models (names
// only: no key), /v1/models lists their union, and Endpoints, which the
// start-up lines print, carries them with the Azure type.
func TestProxyModelsVisible(t *testing.T) {
	eps, _, _ := modelsEndpoints(t)
	url := serveProxy(t, eps, io.Discard)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	get := func(path string) []byte {
		t.Helper()
		resp, err := client.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	health := get(HealthPath)
	var rep failover.HealthReport
	if err := json.Unmarshal(health, &rep); err != nil {
		t.Fatal(err)
	}
	if got := rep.Endpoints[1].Models; got["gpt-4o-mini"] != "prod-mini" || got["text-embedding-3-small"] != "text-embedding-3-small" {
		t.Errorf("/healthz models of az %v", got)
	}
	for _, key := range []string{keyA, keyB} {
		if strings.Contains(string(health), key) {
			t.Error("/healthz shows a key")
		}
	}
	if list := string(get("/v1/models")); !strings.Contains(list, `"id":"gpt-4o-mini"`) || !strings.Contains(list, `"id":"text-embedding-3-small"`) {
		t.Errorf("/v1/models %s, want the union of the endpoints' models", list)
	}
	p, err := New(Config{Failover: failover.Config{Endpoints: eps}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	infos := p.Endpoints()
	if !slices.Equal(infos[0].Models, []string{"gpt-4o-mini=openai/gpt-4o-mini"}) || infos[0].APIType != "" {
		t.Errorf("router: %+v", infos[0])
	}
	attrs := infos[1].LogAttrs()
	want := []any{"models", "gpt-4o-mini=prod-mini,text-embedding-3-small", "api_type", "azure", "api_version", "2024-10-21"}
	if len(attrs) < len(want) || !slices.Equal(attrs[len(attrs)-len(want):], want) {
		t.Errorf("az's start-up attributes %v, want them to end %v", attrs, want)
	}
}
