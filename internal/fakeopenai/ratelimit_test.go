package fakeopenai

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// postLimited posts body to s's chat completions and returns the response
// with its body read.
func postLimited(t *testing.T, c *http.Client, s *Server, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestWithRateLimits: the Server counts requests and tokens in its window,
// says what is left in OpenAI's headers, and answers 429
// rate_limit_exceeded beyond a limit; a new window starts afresh.
func TestWithRateLimits(t *testing.T) {
	body := string(chatBody(false))
	tokens := requestTokens([]byte(body))
	t.Run("requests", func(t *testing.T) {
		s := newServer(t, WithRateLimits(RateLimits{Requests: 3}))
		c := newClient(t)
		for i, want := range []string{"2", "1", "0"} {
			resp, _ := postLimited(t, c, s, body)
			if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining-Requests") != want ||
				resp.Header.Get("X-Ratelimit-Limit-Requests") != "3" {
				t.Fatalf("request %d: %d, remaining %q; want 200 and %s left", i+1, resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining-Requests"), want)
			}
			if d, err := time.ParseDuration(resp.Header.Get("X-Ratelimit-Reset-Requests")); err != nil || d <= 0 || d > time.Minute {
				t.Fatalf("reset %q is not a Go duration within the minute", resp.Header.Get("X-Ratelimit-Reset-Requests"))
			}
		}
		resp, b := postLimited(t, c, s, body)
		if resp.StatusCode != 429 || !strings.Contains(b, "rate_limit_exceeded") || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
			t.Fatalf("over the limit: %d %s, want 429 rate_limit_exceeded with 0 left", resp.StatusCode, b)
		}
		if s.Throttled() != 1 || s.Hits() != 4 {
			t.Fatalf("throttled %d of %d hits, want 1 of 4", s.Throttled(), s.Hits())
		}
	})
	t.Run("tokens", func(t *testing.T) {
		s := newServer(t, WithRateLimits(RateLimits{Tokens: 2*tokens + 99}))
		c := newClient(t)
		for range 2 {
			if resp, _ := postLimited(t, c, s, body); resp.StatusCode != 200 {
				t.Fatalf("status %d within the token limit", resp.StatusCode)
			}
		}
		resp, _ := postLimited(t, c, s, `{"model":"m","messages":[],"max_tokens":100}`)
		if resp.StatusCode != 429 || resp.Header.Get("X-Ratelimit-Remaining-Tokens") != "99" {
			t.Fatalf("a request of 100+ tokens with 99 left: %d, remaining %s; want 429 and 99",
				resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
		}
	})
	t.Run("window", func(t *testing.T) {
		s := newServer(t, WithRateLimits(RateLimits{Requests: 1, Window: 50 * time.Millisecond}))
		c := newClient(t)
		postLimited(t, c, s, body)
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, b := postLimited(t, c, s, body)
			if resp.StatusCode == 200 {
				if !bytes.Contains([]byte(b), []byte(Reply("fake"))) {
					t.Fatalf("body %s", b)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("still throttled 5s after a window of 50ms")
			}
			time.Sleep(10 * time.Millisecond) // polling the window's real time
		}
	})
}
