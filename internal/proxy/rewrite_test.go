package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"

	"github.com/failover-go/failover"
)

func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		base, in, want string
	}{
		{"/v1", "/v1/chat/completions?x=1", "http://failover.internal/v1/chat/completions?x=1"},
		{"/v1", "/v1", "http://failover.internal/v1"},
		{"/", "/chat/completions", "http://failover.internal/v1/chat/completions"},
		{"/openai/v1", "/openai/v1/files/a%2Fb/content", "http://failover.internal/v1/files/a%2Fb/content"},
	} {
		base, err := cleanBasePath(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		p := &Proxy{basePath: base, hopID: "0123456789abcdef"}
		p.internal, _ = p.internal.Parse(InternalBaseURL)
		in := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080"+tc.in, strings.NewReader("{}"))
		in.Header.Set("Authorization", "Bearer client")
		in.Header.Set("Accept-Encoding", "br")
		in.Header.Set("OpenAI-Beta", "assistants=v2")
		// They qualify the client's own key, never forwarded.
		in.Header.Set("OpenAI-Organization", "org-client")
		in.Header.Set("OpenAI-Project", "proj_client")
		// A header map written to directly keeps any spelling.
		in.Header["openai-organization"] = []string{"org-client-2"}
		in.Header["OPENAI-PROJECT"] = []string{"proj_client_2"}
		in.Header["authorization"] = []string{"Bearer client-2"}
		in.Header.Set(HopHeader, "fedcba9876543210") // a proxy before this one
		pr := &httputil.ProxyRequest{In: in, Out: in.Clone(context.Background())}
		p.rewrite(pr)
		if got := pr.Out.URL.String(); got != tc.want {
			t.Errorf("base %q: %s -> %s, want %s", tc.base, tc.in, got, tc.want)
		}
		if pr.Out.Host != "" {
			t.Errorf("Out.Host = %q, want empty", pr.Out.Host)
		}
		for k := range pr.Out.Header {
			switch strings.ToLower(k) {
			case "authorization", "accept-encoding", "openai-organization", "openai-project":
				t.Errorf("outgoing header %q kept; want it dropped", k)
			}
		}
		if pr.Out.Header.Get("OpenAI-Beta") == "" {
			t.Error("OpenAI-Beta dropped; want other headers kept")
		}
		if got, want := pr.Out.Header.Values(HopHeader), []string{"fedcba9876543210", "0123456789abcdef"}; !slices.Equal(got, want) {
			t.Errorf("outgoing %s %q, want %q", HopHeader, got, want)
		}
		if got := in.Header.Values(HopHeader); len(got) != 1 {
			t.Errorf("rewrite added to the inbound %s: %q", HopHeader, got)
		}
		if in.Header.Get("Authorization") == "" || in.URL.Host != "127.0.0.1:8080" {
			t.Error("rewrite modified the inbound request")
		}
	}
}

// TestErrorStatus checks the status of a request that got no upstream
// response: 504 when every attempt timed out, whatever ended the request.
func TestErrorStatus(t *testing.T) {
	timedOut := func(name string) error {
		return &failover.AttemptError{Endpoint: name, Outcome: failover.OutcomeFailure,
			Err: fmt.Errorf("attempt: %w", failover.ErrAttemptTimeout)}
	}
	refused := &failover.AttemptError{Endpoint: "r", Outcome: failover.OutcomeFailure,
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"every attempt timed out", &failover.Error{Err: failover.ErrAttemptsExhausted,
			Attempts: []error{timedOut("a"), timedOut("b"), timedOut("a")}}, 504, "upstream_timeout"},
		{"timed out, then none available", &failover.Error{Err: fmt.Errorf("%w (2 open)", failover.ErrNoEndpointAvailable),
			Attempts: []error{timedOut("a"), timedOut("b")}}, 504, "upstream_timeout"},
		{"deadline", &failover.Error{Err: context.DeadlineExceeded}, 504, "upstream_timeout"},
		{"one refused", &failover.Error{Err: failover.ErrAttemptsExhausted,
			Attempts: []error{timedOut("a"), refused}}, 502, "upstream_unavailable"},
		{"none available", &failover.Error{Err: failover.ErrNoEndpointAvailable}, 503, "no_endpoint_available"},
		{"refused, then none available", &failover.Error{Err: failover.ErrNoEndpointAvailable,
			Attempts: []error{refused}}, 503, "no_endpoint_available"},
		{"exhausted without attempts", &failover.Error{Err: failover.ErrAttemptsExhausted}, 502, "upstream_unavailable"},
		{"other error", errors.New("boom"), 502, "upstream_unavailable"},
	} {
		status, code := errorStatus(tc.err)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
}

func TestDescribe(t *testing.T) {
	err := &failover.Error{
		Err: failover.ErrAttemptsExhausted,
		Attempts: []error{
			&failover.AttemptError{Endpoint: "a", Attempt: 1, Outcome: failover.OutcomeFailure,
				Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}},
			&failover.AttemptError{Endpoint: "b", Attempt: 2, Outcome: failover.OutcomeFailure, StatusCode: 503},
		},
	}
	want := `failover: attempts exhausted. Attempts: "a": no response; "b": status 503.`
	if got := describe(err); got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
}
