package failover

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestErrorZeroValue: an Error built by hand without Err still prints.
func TestErrorZeroValue(t *testing.T) {
	if got := (&Error{}).Error(); got != "failover: request failed" {
		t.Errorf("Error() = %q", got)
	}
}

func TestErrorNamesEveryAttempt(t *testing.T) {
	keys := []string{"sk-test-SECRET-1", "sk-test-SECRET-2"}
	var eps []Endpoint
	for i, name := range []string{"alpha", "beta"} {
		s := upstream(t, name)
		s.SetFault(fakeopenai.Refuse())
		eps = append(eps, Endpoint{Name: name, BaseURL: s.URL(), APIKey: keys[i], Priority: i})
	}
	tr, _ := newTestTransport(t, Config{Endpoints: eps})
	resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error", resp.StatusCode)
	}
	var fe *Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %T %v, want an *Error", err, err)
	}
	if !errors.Is(err, ErrAttemptsExhausted) {
		t.Errorf("error %v does not match ErrAttemptsExhausted", err)
	}
	tried := map[string]bool{}
	for i, a := range fe.Attempts {
		var ae *AttemptError
		if !errors.As(a, &ae) {
			t.Fatalf("attempt %d: %T %v, want an *AttemptError", i+1, a, a)
		}
		if ae.Attempt != i+1 || ae.Err == nil || ae.StatusCode != 0 {
			t.Errorf("attempt %d: %+v, want number %d with a transport error", i+1, ae, i+1)
		}
		tried[ae.Endpoint] = true
	}
	if len(fe.Attempts) != 4 || !tried["alpha"] || !tried["beta"] || len(tried) != 2 {
		t.Errorf("attempts %v, want 4 on alpha and beta", fe.Attempts)
	}
	msg := err.Error()
	for _, name := range []string{"alpha", "beta"} {
		if !strings.Contains(msg, `"`+name+`"`) {
			t.Errorf("message %q does not name %s", msg, name)
		}
	}
	for _, h := range tr.Health() {
		msg += "\n" + h.LastError
	}
	if strings.Contains(msg, "SECRET") {
		t.Errorf("an API key leaked into the error or health: %q", msg)
	}
}

// TestErrorURLQueryRedacted: a Base that returns *url.Error (one wrapping an
// http.Client does) puts the outgoing URL in its message; the endpoint's
// query there may hold a key, so neither the returned error nor Health
// shows the query.
func TestErrorURLQueryRedacted(t *testing.T) {
	const secret = "sk-query-SECRET"
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if !strings.Contains(req.URL.RawQuery, secret) {
			t.Errorf("outgoing query %q lacks the endpoint's parameter", req.URL.RawQuery)
		}
		return nil, &url.Error{Op: "Post", URL: req.URL.String(), Err: errors.New("connection refused")}
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: -1,
		Endpoints: []Endpoint{{Name: "q", BaseURL: "https://q.test/v1?key=" + secret}}})
	_, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err == nil {
		t.Fatal("RoundTrip succeeded, want the base's error")
	}
	msg, last := err.Error(), healthOf(t, tr, "q").LastError
	for _, s := range []string{msg, last} {
		if strings.Contains(s, secret) {
			t.Errorf("%q shows the endpoint's query", s)
		}
		if !strings.Contains(s, "https://q.test/v1/chat/completions") || !strings.Contains(s, "connection refused") {
			t.Errorf("%q lost the URL's path or the cause", s)
		}
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("error %v no longer unwraps to *url.Error", err)
	}
}
