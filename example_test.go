package failover_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/failover-go/failover"
)

// A primary and a backup, each with a per-attempt timeout: the calling
// code sends to the OpenAI API as usual, and the backup answers while the
// primary is down.
func Example() {
	primary := httptest.NewServer(http.NotFoundHandler())
	primary.Close() // down
	backup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[]}`)
	}))
	defer backup.Close()

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			// Timeout bounds each attempt until the response headers, so
			// that a hanging endpoint fails over instead of holding the
			// request until the caller's own deadline.
			{Name: "primary", BaseURL: primary.URL + "/v1", APIKey: "sk-primary", Priority: 1, Timeout: 20 * time.Second},
			{Name: "backup", BaseURL: backup.URL + "/v1", APIKey: "sk-backup", Priority: 2, Timeout: 20 * time.Second},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: transport} // for the SDK, or as is
	resp, err := client.Get("https://api.openai.com/v1/models")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, "from", resp.Request.URL.Host)
	for _, h := range transport.Health() {
		fmt.Printf("%s: %d failure(s)\n", h.Name, h.Failures)
	}
	// Output:
	// 200 from api.openai.com
	// primary: 1 failure(s)
	// backup: 0 failure(s)
}

// The primary endpoint is down (its port refuses connections); the request
// fails over to the backup at once, with the backup's own key, and the
// calling code never sees the failure.
func ExampleNew() {
	primary := httptest.NewServer(http.NotFoundHandler())
	primary.Close() // down: its port refuses connections
	var sawKey string
	backup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawKey = r.Header.Get("Authorization")
		fmt.Fprint(w, `{"choices":[{"message":{"content":"hello from backup"}}]}`)
	}))
	defer backup.Close()

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			// A per-attempt timeout, so that a hanging endpoint fails
			// over instead of holding the request to its deadline.
			{Name: "primary", BaseURL: primary.URL + "/v1", APIKey: "sk-primary", Priority: 1, Timeout: 30 * time.Second},
			{Name: "backup", BaseURL: backup.URL + "/v1", APIKey: "sk-backup", Priority: 2, Timeout: 30 * time.Second},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: transport}

	// The calling code sends to the OpenAI API as usual.
	resp, err := client.Post("https://api.openai.com/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		log.Fatal(err)
	}
	fmt.Println("reply:", out.Choices[0].Message.Content)
	fmt.Println("backup saw:", sawKey)
	for _, h := range transport.Health() {
		fmt.Printf("%s: %d attempt(s), %d failed\n", h.Name, h.Requests, h.Failures)
	}
	// Output:
	// reply: hello from backup
	// backup saw: Bearer sk-backup
	// primary: 1 attempt(s), 1 failed
	// backup: 1 attempt(s), 0 failed
}

// A revoked key (401) opens the endpoint's circuit breaker at once: the
// next requests go straight to the next endpoint without trying it again.
func ExampleTransport_Health() {
	revoked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"code":"invalid_api_key"}}`, http.StatusUnauthorized)
	}))
	defer revoked.Close()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"chat.completion"}`)
	}))
	defer healthy.Close()

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			{Name: "revoked", BaseURL: revoked.URL + "/v1", APIKey: "sk-revoked", Timeout: 30 * time.Second},
			{Name: "healthy", BaseURL: healthy.URL + "/v1", APIKey: "sk-healthy", Priority: 1, Timeout: 30 * time.Second},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: transport}
	for range 3 {
		resp, err := client.Get("https://api.openai.com/v1/models")
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, h := range transport.Health() {
		fmt.Printf("%s: %s, %d attempt(s), last error %q\n", h.Name, h.State, h.Requests, h.LastError)
	}
	// Output:
	// revoked: open, 1 attempt(s), last error "status 401"
	// healthy: closed, 3 attempt(s), last error ""
}

// WrapClient puts failover under an existing client in one line; the
// client's own transport sends the rewritten requests.
func ExampleWrapClient() {
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	defer flaky.Close()
	steady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from steady")
	}))
	defer steady.Close()

	client, err := failover.WrapClient(&http.Client{Timeout: time.Minute}, failover.Config{
		Endpoints: []failover.Endpoint{
			{BaseURL: flaky.URL + "/v1", APIKey: "sk-1", Timeout: 30 * time.Second},
			{BaseURL: steady.URL + "/v1", APIKey: "sk-2", Priority: 1, Timeout: 30 * time.Second},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	resp, err := client.Get("https://api.openai.com/v1/models")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// 200 hello from steady
}

// Update changes the endpoints while the transport serves: here a new
// primary is added in front of the old one, whose breaker and statistics
// carry over because its Name is kept. Wrap returns the Transport beside
// the client, for Update and Health.
func ExampleTransport_Update() {
	answer := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, name)
		}))
	}
	old, fresh := answer("old"), answer("fresh")
	defer old.Close()
	defer fresh.Close()

	cfg := failover.Config{Endpoints: []failover.Endpoint{
		{Name: "old", BaseURL: old.URL + "/v1", Timeout: 30 * time.Second},
	}}
	client, transport, err := failover.Wrap(http.DefaultClient, cfg)
	if err != nil {
		log.Fatal(err)
	}
	get := func() string {
		resp, err := client.Get("https://api.openai.com/v1/models")
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	fmt.Println("before:", get())

	cfg.Endpoints = []failover.Endpoint{
		{Name: "fresh", BaseURL: fresh.URL + "/v1", Timeout: 30 * time.Second},
		{Name: "old", BaseURL: old.URL + "/v1", Priority: 1, Timeout: 30 * time.Second},
	}
	if err := transport.Update(cfg); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after:", get())
	for _, h := range transport.Health() {
		fmt.Printf("%s: priority %d, %d request(s)\n", h.Name, h.Priority, h.Requests)
	}
	// Output:
	// before: old
	// after: fresh
	// fresh: priority 0, 1 request(s)
	// old: priority 1, 1 request(s)
}

// When every endpoint fails, the caller gets the last upstream response,
// intact, for its SDK to parse; with no response at all, an error naming
// each endpoint tried.
func ExampleError() {
	a := httptest.NewServer(http.NotFoundHandler())
	a.Close() // refuses connections
	b := httptest.NewServer(http.NotFoundHandler())
	b.Close()

	transport, err := failover.New(failover.Config{
		MaxRetries: 1, // two attempts in all
		Endpoints: []failover.Endpoint{
			// Timeout: a hanging endpoint fails over after 30s, not at the caller's deadline.
			{Name: "a", BaseURL: a.URL + "/v1", APIKey: "sk-a", Timeout: 30 * time.Second},
			{Name: "b", BaseURL: b.URL + "/v1", APIKey: "sk-b", Priority: 1, Timeout: 30 * time.Second},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = (&http.Client{Transport: transport}).Get("https://api.openai.com/v1/models")
	var ferr *failover.Error
	if errors.As(err, &ferr) {
		for _, a := range ferr.Attempts {
			var ae *failover.AttemptError
			if errors.As(a, &ae) {
				fmt.Printf("attempt %d on %s: refused=%v\n", ae.Attempt, ae.Endpoint, errors.Is(ae, syscall.ECONNREFUSED))
			}
		}
	}
	// Output:
	// attempt 1 on a: refused=true
	// attempt 2 on b: refused=true
}

// A host application serves the transport's metrics and health next to its
// own: /healthz answers 200 while an endpoint is eligible, 503 when none is.
func ExampleTransport_HealthHandler() {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"code":"invalid_api_key"}}`, http.StatusUnauthorized)
	}))
	defer down.Close()

	reg := prometheus.NewRegistry()
	transport, err := failover.New(failover.Config{
		// Timeout: a hanging endpoint fails its attempt after 30s, not at the caller's deadline.
		Endpoints:  []failover.Endpoint{{Name: "down", BaseURL: down.URL + "/v1", APIKey: "sk-revoked", Timeout: 30 * time.Second}},
		Registerer: reg,
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", transport.HealthHandler())
	admin := httptest.NewServer(mux)
	defer admin.Close()

	get := func(client *http.Client, url string) (int, string) {
		resp, err := client.Get(url)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, _ := get(http.DefaultClient, admin.URL+"/healthz")
	fmt.Println("before:", code)

	get(&http.Client{Transport: transport}, "https://api.openai.com/v1/models") // the 401 opens the breaker

	code, body := get(http.DefaultClient, admin.URL+"/healthz")
	var report failover.HealthReport
	if err := json.Unmarshal([]byte(body), &report); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after:", code, report.Status, report.Endpoints[0].State)
	_, metrics := get(http.DefaultClient, admin.URL+"/metrics")
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "failover_attempts_total") || strings.HasPrefix(line, "failover_breaker_state") {
			fmt.Println(line)
		}
	}
	// Output:
	// before: 200
	// after: 503 unavailable open
	// failover_attempts_total{endpoint="down",outcome="401"} 1
	// failover_breaker_state{endpoint="down"} 2
}

// With EndpointHeader set, each response names the endpoint that answered
// it, for the caller's logs: here the second, after the first answered 503.
func ExampleConfig_endpointHeader() {
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	spare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"chat.completion"}`)
	}))
	defer spare.Close()

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			{Name: "busy", BaseURL: busy.URL + "/v1", APIKey: "sk-busy", Timeout: 30 * time.Second},
			{Name: "spare", BaseURL: spare.URL + "/v1", APIKey: "sk-spare", Priority: 1, Timeout: 30 * time.Second},
		},
		EndpointHeader: "Failover-Endpoint",
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: transport}
	resp, err := client.Post("https://api.openai.com/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.StatusCode, "from", resp.Header.Get("Failover-Endpoint"))
	fmt.Println("request URL the caller sees:", resp.Request.URL)
	// Output:
	// 200 from spare
	// request URL the caller sees: https://api.openai.com/v1/chat/completions
}

// ConfigFromEnviron reads numbered endpoints from environment variables
// (ConfigFromEnv reads the process's own): here a primary and a backup
// behind a proxy, each with a per-attempt timeout, so that a hanging
// endpoint fails over after it, not at the caller's deadline.
func ExampleConfigFromEnviron() {
	cfg, err := failover.ConfigFromEnviron([]string{
		"OPENAI_API_KEY_1=sk-primary",
		"OPENAI_TIMEOUT_1=30s",
		"OPENAI_BASE_URL_2=https://proxy.example/openai/v1",
		"OPENAI_API_KEY_2=sk-backup",
		"OPENAI_TIMEOUT_2=20s",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range cfg.Endpoints {
		fmt.Printf("%s priority %d timeout %v\n", e.BaseURL, e.Priority, e.Timeout)
	}
	// Output:
	// https://api.openai.com/v1 priority 1 timeout 30s
	// https://proxy.example/openai/v1 priority 2 timeout 20s
}
