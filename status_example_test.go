package failover_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"time"

	"github.com/failover-go/failover"
)

// ExampleTransport_StatusHandler serves the status page beside the health
// JSON; a person opens /status in a browser.
func ExampleTransport_StatusHandler() {
	transport, err := failover.New(failover.Config{Endpoints: []failover.Endpoint{
		{Name: "primary", BaseURL: "https://api.openai.com/v1", Priority: 1, Timeout: 20 * time.Second},
		{Name: "backup", BaseURL: "https://proxy.example/openai/v1", Priority: 2, Timeout: 20 * time.Second},
	}})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", transport.HealthHandler())
	mux.Handle("/status", transport.StatusHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	for _, row := range regexp.MustCompile(`<tr data-endpoint="[^"]*" data-state="[^"]*"`).FindAllString(string(page), -1) {
		fmt.Println(row)
	}
	// Output:
	// 200 text/html; charset=utf-8
	// <tr data-endpoint="primary" data-state="closed"
	// <tr data-endpoint="backup" data-state="closed"
}
