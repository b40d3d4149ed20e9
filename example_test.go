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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// chatCompletion posts a chat completion to the OpenAI base URL through
// client and returns the assistant's reply.
func chatCompletion(client *http.Client) (string, error) {
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequest(http.MethodPost, "https://api.openai.com/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	return out.Choices[0].Message.Content, nil
}

// The primary endpoint is down (its port refuses connections); the request
// fails over to the backup at once, with the backup's own key, and the
// calling code never sees the failure.
func ExampleNew() {
	primary := fakeopenai.New(fakeopenai.WithName("primary"))
	defer primary.Close()
	backup := fakeopenai.New(fakeopenai.WithName("backup"))
	defer backup.Close()
	primary.SetFault(fakeopenai.Refuse())

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			{Name: "primary", BaseURL: primary.URL(), APIKey: "sk-primary", Priority: 1},
			{Name: "backup", BaseURL: backup.URL(), APIKey: "sk-backup", Priority: 2},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: transport}

	reply, err := chatCompletion(client)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("reply:", reply)
	last, _ := backup.Last()
	fmt.Println("backup saw:", last.Header.Get("Authorization"))
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
	revoked := fakeopenai.New(fakeopenai.WithName("revoked"))
	defer revoked.Close()
	healthy := fakeopenai.New(fakeopenai.WithName("healthy"))
	defer healthy.Close()
	revoked.SetFault(fakeopenai.StatusFault(http.StatusUnauthorized))

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			{Name: "revoked", BaseURL: revoked.URL(), APIKey: "sk-revoked"},
			{Name: "healthy", BaseURL: healthy.URL(), APIKey: "sk-healthy", Priority: 1},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: transport}
	for range 3 {
		if _, err := chatCompletion(client); err != nil {
			log.Fatal(err)
		}
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
	flaky := fakeopenai.New(fakeopenai.WithName("flaky"))
	defer flaky.Close()
	steady := fakeopenai.New(fakeopenai.WithName("steady"))
	defer steady.Close()
	flaky.SetFault(fakeopenai.StatusFault(http.StatusServiceUnavailable))

	client, err := failover.WrapClient(&http.Client{}, failover.Config{
		Endpoints: []failover.Endpoint{
			{BaseURL: flaky.URL(), APIKey: "sk-1"},
			{BaseURL: steady.URL(), APIKey: "sk-2", Priority: 1},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	reply, err := chatCompletion(client)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply)
	fmt.Println("flaky answered", flaky.Hits(), "request(s) with 503")
	// Output:
	// hello from steady
	// flaky answered 1 request(s) with 503
}

// When every endpoint fails, the caller gets the last upstream response,
// intact, for its SDK to parse; with no response at all, an error naming
// each endpoint tried.
func ExampleError() {
	a := fakeopenai.New(fakeopenai.WithName("a"))
	defer a.Close()
	b := fakeopenai.New(fakeopenai.WithName("b"))
	defer b.Close()
	a.SetFault(fakeopenai.Refuse())
	b.SetFault(fakeopenai.Refuse())

	transport, err := failover.New(failover.Config{
		MaxRetries: 1, // two attempts in all
		Endpoints: []failover.Endpoint{
			{Name: "a", BaseURL: a.URL(), APIKey: "sk-a"},
			{Name: "b", BaseURL: b.URL(), APIKey: "sk-b", Priority: 1},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = chatCompletion(&http.Client{Transport: transport})
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
	down := fakeopenai.New(fakeopenai.WithName("down"))
	defer down.Close()
	down.SetFault(fakeopenai.StatusFault(http.StatusUnauthorized))

	reg := prometheus.NewRegistry()
	transport, err := failover.New(failover.Config{
		Endpoints:  []failover.Endpoint{{Name: "down", BaseURL: down.URL(), APIKey: "sk-revoked"}},
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

	get := func(path string) (int, string) {
		resp, err := http.Get(admin.URL + path)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	fmt.Println("before:", code)

	_, _ = chatCompletion(&http.Client{Transport: transport}) // the 401 opens the breaker

	code, body := get("/healthz")
	var report failover.HealthReport
	if err := json.Unmarshal([]byte(body), &report); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after:", code, report.Status, report.Endpoints[0].State)
	_, metrics := get("/metrics")
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
	busy := fakeopenai.New(fakeopenai.WithName("busy"))
	defer busy.Close()
	spare := fakeopenai.New(fakeopenai.WithName("spare"))
	defer spare.Close()
	busy.SetFault(fakeopenai.StatusFault(http.StatusServiceUnavailable))

	transport, err := failover.New(failover.Config{
		Endpoints: []failover.Endpoint{
			{Name: "busy", BaseURL: busy.URL(), APIKey: "sk-busy"},
			{Name: "spare", BaseURL: spare.URL(), APIKey: "sk-spare", Priority: 1},
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
