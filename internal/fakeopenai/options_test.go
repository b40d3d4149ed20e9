package fakeopenai

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestWithAPIKey checks that a Server with a key answers 401
// invalid_api_key to a request without it, showing a wrong key only
// masked, and serves a request with it.
func TestWithAPIKey(t *testing.T) {
	const key = "sk-right-key-0123456789"
	s := newServer(t, WithAPIKey(key))
	c := newClient(t)
	for _, tc := range []struct {
		name          string
		authorization string
		wantStatus    int
		wantMessage   string // part of the error message; "" for a success
	}{
		{"right key", "Bearer " + key, http.StatusOK, ""},
		{"wrong key", "Bearer sk-wrong-key-abcdefghij", http.StatusUnauthorized, "Incorrect API key provided: sk-wr**************ghij."},
		{"no key", "", http.StatusUnauthorized, "You didn't provide an API key."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL()+"/models", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			if _, err := body.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body.String())
			}
			if tc.wantMessage == "" {
				checkJSON(t, body.Bytes(), map[string]any{"data.0.id": ModelID})
				return
			}
			checkJSON(t, body.Bytes(), map[string]any{"error.code": "invalid_api_key"})
			if !strings.Contains(body.String(), tc.wantMessage) {
				t.Errorf("body %s lacks %q", body.String(), tc.wantMessage)
			}
			if strings.Contains(body.String(), "sk-wrong-key-abcdefghij") {
				t.Errorf("body %s shows the wrong key unmasked", body.String())
			}
		})
	}
}

// TestWithoutModels checks that GET /models is an unknown route on a
// Server without it, while the rest of the API still answers.
func TestWithoutModels(t *testing.T) {
	s := newServer(t, WithoutModels())
	c := newClient(t)
	resp, data := fetch(t, c, http.MethodGet, s.URL()+"/models", "", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /models: status %d, want 404: %s", resp.StatusCode, data)
	}
	checkJSON(t, data, map[string]any{"error.code": "unknown_url"})
	if resp, data := postChat(t, c, s, false); resp.StatusCode != http.StatusOK {
		t.Errorf("chat: status %d: %s", resp.StatusCode, data)
	}
}
