package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// waitLimit bounds every wait of the tests: generous, for slow shared
// machines. No assertion depends on timing.
const waitLimit = time.Minute

// apiError is the error body the OpenAI API (and the proxy) sends.
type apiError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// checkError checks that resp has status and an OpenAI-format error body
// with code, and returns that error.
func checkError(t *testing.T, resp *http.Response, status int, code string) apiError {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("body %q is not an OpenAI error (%v)", body, err)
	}
	if e.Error.Code != code {
		t.Errorf("error code %q, want %q", e.Error.Code, code)
	}
	return e
}

// postJSON posts body to url with the headers h, bounded by waitLimit, and
// returns the response, its body closed when the test ends.
func postJSON(t *testing.T, url, body string, h http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
