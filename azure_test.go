package failover

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestAzureTarget: an Azure endpoint sends its key as api-key (never the
// caller's Authorization or api-key), and its requests under the
// resource's /openai/deployments/<deployment> with the api-version
// (classic), or /openai/v1 (v1), whichever of the usual forms BaseURL
// takes.
func TestAzureTarget(t *testing.T) {
	const key = "azure-secret-key"
	chat := chatFor("gpt-4o-mini")
	ct, upload := multipartDoc(t, [][2]string{{"purpose", "batch"}, {"file", "x"}})
	tests := []struct {
		name        string
		ep          Endpoint
		path, ctype string
		body        []byte
		wantPath    string
		wantQuery   string // the whole query sent (the caller's is x=caller)
		wantModel   string // in the body sent; "" when the body must be unchanged
	}{
		{name: "classic, mapped", ep: Endpoint{BaseURL: "https://res.test", APIVersion: "2024-10-21", Models: map[string]string{"gpt-4o-mini": "prod-4o-mini"}},
			path: "/chat/completions", body: chat, wantPath: "/openai/deployments/prod-4o-mini/chat/completions", wantQuery: "api-version=2024-10-21&x=caller", wantModel: "prod-4o-mini"},
		{name: "classic, the model as deployment", ep: Endpoint{BaseURL: "https://res.test/openai/", APIVersion: "2024-10-21"},
			path: "/chat/completions", body: chat, wantPath: "/openai/deployments/gpt-4o-mini/chat/completions", wantQuery: "api-version=2024-10-21&x=caller"},
		{name: "classic, BaseURL's api-version replaced", ep: Endpoint{BaseURL: "https://res.test/openai/v1?api-version=old&x=1", APIVersion: "2025-04-01-preview"},
			path: "/embeddings", body: []byte(`{"model":"emb","input":"hi"}`), wantPath: "/openai/deployments/emb/embeddings", wantQuery: "x=1&api-version=2025-04-01-preview"},
		{name: "classic, no model: a file upload", ep: Endpoint{BaseURL: "https://res.test", APIVersion: "2024-10-21"},
			path: "/files", ctype: ct, body: upload, wantPath: "/openai/files", wantQuery: "api-version=2024-10-21&x=caller"},
		{name: "classic, behind a gateway's path", ep: Endpoint{BaseURL: "https://gw.test/team-a", APIVersion: "2024-10-21"},
			path: "/chat/completions", body: chat, wantPath: "/team-a/openai/deployments/gpt-4o-mini/chat/completions", wantQuery: "api-version=2024-10-21&x=caller"},
		{name: "v1 from the root", ep: Endpoint{BaseURL: "https://res.test", Models: map[string]string{"gpt-4o-mini": "prod-4o-mini"}},
			path: "/chat/completions", body: chat, wantPath: "/openai/v1/chat/completions", wantQuery: "x=caller", wantModel: "prod-4o-mini"},
		{name: "v1 as Azure writes it", ep: Endpoint{BaseURL: "https://res.test/openai/v1/"},
			path: "/responses", body: []byte(`{"model":"gpt-4o-mini","input":"hi"}`), wantPath: "/openai/v1/responses", wantQuery: "x=caller"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &sendLog{}
			tt.ep.Name, tt.ep.APIType, tt.ep.APIKey = "az", APITypeAzure, key
			tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{tt.ep}})
			req := modelRequest(t, tt.path+"?x=caller", "application/json", tt.body, false)
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			req.Header.Set("Authorization", "Bearer caller-token")
			req.Header.Set("api-key", "caller-key")
			if code, _ := sendModel(t, tr, req); code != 200 {
				t.Fatalf("status %d", code)
			}
			s := log.all()[0]
			if s.path != tt.wantPath {
				t.Errorf("path %q, want %q", s.path, tt.wantPath)
			}
			if s.query != tt.wantQuery {
				t.Errorf("query %q, want %q", s.query, tt.wantQuery)
			}
			if got := s.header.Values("Api-Key"); len(got) != 1 || got[0] != key {
				t.Errorf("api-key %q, want the endpoint's key alone", got)
			}
			if got := s.header.Get("Authorization"); got != "" {
				t.Errorf("Authorization %q reached Azure", got)
			}
			want := tt.body
			if tt.wantModel != "" {
				want = []byte(strings.Replace(string(tt.body), `"gpt-4o-mini"`, `"`+tt.wantModel+`"`, 1))
			}
			if string(s.body) != string(want) {
				t.Errorf("body %q, want %q", s.body, want)
			}
		})
	}
}

// TestAzureDeploymentNames: on a classic Azure endpoint without a mapping,
// a model that cannot be a deployment name is not served there: another
// endpoint takes it, or none.
func TestAzureDeploymentNames(t *testing.T) {
	log := &sendLog{}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
		{Name: "az", BaseURL: "https://az.test", APIType: APITypeAzure, APIVersion: "2024-10-21", Priority: 1},
		{Name: "router", BaseURL: "https://router.test/v1", Priority: 2, Models: map[string]string{"openai/gpt-4o": ""}},
	}})
	if code, body := sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("openai/gpt-4o"), false)); code != 200 || body != "router" {
		t.Errorf("openai/gpt-4o: %d %q, want 200 from router", code, body)
	}
	for _, model := range []string{"../../x", "a/b", ".."} {
		_, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor(model), false))
		if !errors.Is(err, ErrNoEndpointForModel) {
			t.Errorf("%q: %v, want ErrNoEndpointForModel", model, err)
		}
	}
	if got := strings.Join(log.hosts(), ","); got != "router" {
		t.Errorf("attempts went to %s, want router once", got)
	}
}

// TestAzureResponses: Azure's answers are classified as they mean: a 429
// with retry-after-ms cools the endpoint down for that long and fails
// over; a content filter's 400 goes back to the caller, not to another
// provider, even with x-should-retry: true; a DeploymentNotFound fails
// over without counting against the endpoint's breaker.
func TestAzureResponses(t *testing.T) {
	azure429 := fakeopenai.AzureRateLimited(1500)
	filtered := fakeopenai.ContentFiltered()
	tests := []struct {
		name       string
		status     int
		body       string
		kv         []string
		wantHosts  string
		wantStatus int
		cooldown   time.Duration
		failures   uint64
	}{
		{"429 retry-after-ms", 429, azure429.Body, []string{"retry-after-ms", "1500", "retry-after", "2"}, "az,b", 200, 1500 * time.Millisecond, 1},
		{"content filter", 400, filtered.Body, nil, "az", 400, 0, 0},
		{"content filter, x-should-retry", 400, filtered.Body, []string{"x-should-retry", "true"}, "az", 400, 0, 0},
		{"deployment not found", 404, `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`, nil, "az,b", 200, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &sendLog{reply: func(host string) *http.Response {
				if host == "az" {
					return reply(tt.status, tt.body, tt.kv...)
				}
				return nil
			}}
			tr, clk := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
				{Name: "az", BaseURL: "https://az.test", APIType: APITypeAzure, APIKey: "k-az", Priority: 1},
				hostEndpoint("b", 2),
			}, Breaker: BreakerConfig{FailureThreshold: 1}})
			code, _ := sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false))
			if got := strings.Join(log.hosts(), ","); got != tt.wantHosts || code != tt.wantStatus {
				t.Errorf("attempts %s, status %d; want %s, %d", got, code, tt.wantHosts, tt.wantStatus)
			}
			h := healthOf(t, tr, "az")
			if got := h.CooldownUntil.Sub(clk.Now()); tt.cooldown > 0 && got != tt.cooldown || tt.cooldown == 0 && !h.CooldownUntil.IsZero() {
				t.Errorf("cooldown %v, want %v", got, tt.cooldown)
			}
			if h.State == StateOpen || h.Failures != tt.failures {
				t.Errorf("az is %v with %d failures, want its breaker closed and %d failures", h.State, h.Failures, tt.failures)
			}
		})
	}
}

// TestAzureFilteredStreamIsDelivered: a 200 stream that Azure's content
// filter stopped (no content, finish_reason content_filter) reaches the
// caller as it is, also under a first-token timeout: it is an answer, not
// a failure to fail over from.
func TestAzureFilteredStreamIsDelivered(t *testing.T) {
	az := upstream(t, "az", fakeopenai.WithAzure(fakeopenai.Azure{APIKey: "k-az", Deployments: []string{"m"}}))
	az.SetFault(fakeopenai.ContentFilterStop())
	other := upstream(t, "other")
	tr, _ := newTestTransport(t, Config{FirstTokenTimeout: time.Minute, Endpoints: []Endpoint{
		{Name: "az", BaseURL: az.URL(), APIType: APITypeAzure, APIKey: "k-az", Priority: 1},
		{Name: "other", BaseURL: other.URL(), Priority: 2},
	}})
	req := modelRequest(t, "/chat/completions", "application/json", []byte(`{"model":"m","messages":[],"stream":true}`), false)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), `"finish_reason":"content_filter"`) || !strings.Contains(string(body), "[DONE]") {
		t.Errorf("%d %q (%v), want the filtered stream whole", resp.StatusCode, body, err)
	}
	if other.Hits() != 0 {
		t.Errorf("the other endpoint got %d requests, want none", other.Hits())
	}
}

// TestAzureAgainstFake: over real connections, a request fails over from
// an OpenAI-style endpoint to an Azure classic one and an Azure v1 one,
// which check the api-key, the api-version and the deployment.
func TestAzureAgainstFake(t *testing.T) {
	const ver = "2024-10-21"
	down := upstream(t, "down")
	down.SetFault(fakeopenai.StatusFault(http.StatusInternalServerError))
	classic := upstream(t, "classic", fakeopenai.WithAzure(fakeopenai.Azure{APIKey: "k-classic", APIVersion: ver, Deployments: []string{"prod-4o-mini"}}))
	v1 := upstream(t, "v1", fakeopenai.WithAzure(fakeopenai.Azure{APIKey: "k-v1", Deployments: []string{"v1-4o-mini"}}))
	for _, tc := range []struct {
		name string
		ep   Endpoint
		srv  *fakeopenai.Server
		want string
	}{
		{"classic", Endpoint{Name: "az", BaseURL: classic.URL(), APIType: APITypeAzure, APIKey: "k-classic", APIVersion: ver,
			Models: map[string]string{"gpt-4o-mini": "prod-4o-mini"}}, classic, "prod-4o-mini"},
		{"v1", Endpoint{Name: "az", BaseURL: v1.URL() + "/openai/v1", APIType: APITypeAzure, APIKey: "k-v1",
			Models: map[string]string{"gpt-4o-mini": "v1-4o-mini"}}, v1, "v1-4o-mini"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ep.Priority = 2
			tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{{Name: "down", BaseURL: down.URL(), Priority: 1}, tc.ep}})
			req := modelRequest(t, "/chat/completions", "application/json", chatFor("gpt-4o-mini"), false)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get(fakeopenai.ModelHeader) != tc.want || !strings.Contains(string(body), fakeopenai.Reply(tc.srv.Name())) {
				t.Errorf("%d, model %q: %s; want 200 from %s serving %s", resp.StatusCode, resp.Header.Get(fakeopenai.ModelHeader), body, tc.srv.Name(), tc.want)
			}
			if down.Hits() == 0 {
				t.Error("the first endpoint was not tried")
			}
			down.Reset()
		})
	}
}
