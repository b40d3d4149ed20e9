package failover

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// pastedKey is an API key pasted into an endpoint's Name by mistake.
const pastedKey = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// pastedKeyShown is how errors show pastedKey: a short prefix and its length.
const pastedKeyShown = `"sk-"... (44 bytes)`

// TestErrorsNeverPrintAKeyPastedIntoName checks every error that names an
// endpoint by its Name: a key pasted into the Name shows as its first
// characters and its length, never whole (issue 11).
func TestErrorsNeverPrintAKeyPastedIntoName(t *testing.T) {
	named := func(name string, f func(*Endpoint)) Endpoint {
		e := Endpoint{Name: name, BaseURL: "https://a.test/v1", APIKey: "sk-real"}
		if f != nil {
			f(&e)
		}
		return e
	}
	for _, tc := range []struct {
		name string
		err  func(t *testing.T) error
	}{
		{"New: MaxRPS below one an hour", func(t *testing.T) error {
			_, err := New(Config{Endpoints: []Endpoint{named(pastedKey, func(e *Endpoint) { e.MaxRPS = 0.0001 })}})
			return err
		}},
		{"New: negative Weight", func(t *testing.T) error {
			_, err := New(Config{Endpoints: []Endpoint{named(pastedKey, func(e *Endpoint) { e.Weight = -1 })}})
			return err
		}},
		{"New: duplicate name", func(t *testing.T) error {
			_, err := New(Config{Endpoints: []Endpoint{named(pastedKey, nil), named(pastedKey, nil)}})
			return err
		}},
		{"Update: bad endpoint", func(t *testing.T) error {
			tr, _ := newTestTransport(t, Config{Endpoints: []Endpoint{named("ok", nil)}})
			return tr.Update(Config{Endpoints: []Endpoint{named(pastedKey, func(e *Endpoint) { e.Timeout = -1 })}})
		}},
		{"RoundTrip: every attempt failed", func(t *testing.T) error {
			base := newScriptedBase(func(*http.Request, int) (*http.Response, error) { return nil, errors.New("refused") })
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{named(pastedKey, nil)}})
			resp, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded, want an error")
			}
			return err
		}},
		{"AttemptError", func(t *testing.T) error {
			return &AttemptError{Endpoint: pastedKey, Attempt: 1, Outcome: OutcomeFailure, StatusCode: 503}
		}},
		{"a stream's error", func(t *testing.T) error {
			return &streamError{endpoint: pastedKey, detail: "stalled", err: ErrStreamStalled}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err(t)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), pastedKey[4:]) {
				t.Errorf("error prints the pasted key: %v", err)
			}
			if !strings.Contains(err.Error(), pastedKeyShown) {
				t.Errorf("error %q does not show the name as %s", err, pastedKeyShown)
			}
		})
	}
}

// TestErrorsPrintPlainNamesWhole checks that a name that does not look
// like a key is still quoted whole.
func TestErrorsPrintPlainNamesWhole(t *testing.T) {
	_, err := New(Config{Endpoints: []Endpoint{{Name: "azure-eastus2-gpt4o", BaseURL: "https://a.test/v1", Weight: -1}}})
	if err == nil || !strings.Contains(err.Error(), `endpoint 0 ("azure-eastus2-gpt4o")`) {
		t.Errorf("error %v does not name the endpoint whole", err)
	}
}

// TestEndpointValidation: New refuses an Endpoint with a bad field, naming
// the endpoint and the field, never the key.
func TestEndpointValidation(t *testing.T) {
	const key = "sk-test-SECRET-validation"
	good := func(name string) Endpoint {
		return Endpoint{Name: name, BaseURL: "https://" + name + ".test/v1", APIKey: key}
	}
	with := func(name string, f func(*Endpoint)) Endpoint {
		e := good(name)
		f(&e)
		return e
	}
	for _, tc := range []newErrorCase{
		{name: "empty BaseURL", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.BaseURL = "" })}},
			wantIn: []string{"BaseURL", `"e1"`}},
		{name: "relative BaseURL", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.BaseURL = "/v1" })}},
			wantIn: []string{"BaseURL", `"e1"`}},
		{name: "ftp BaseURL", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.BaseURL = "ftp://e1.test/v1" })}},
			wantIn: []string{"BaseURL", `"e1"`}},
		{name: "userinfo BaseURL", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.BaseURL = "https://user:hunter2@e1.test/v1" })}},
			wantIn: []string{"BaseURL", `"e1"`}, wantOut: []string{"hunter2"}},
		{name: "unnamed endpoint by position", cfg: Config{Endpoints: []Endpoint{good("ok"), with("", func(e *Endpoint) { e.BaseURL = "nope" })}},
			wantIn: []string{"BaseURL", "endpoint 1"}},
		{name: "negative Weight", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.Weight = -1 })}},
			wantIn: []string{"Weight", `"e1"`}},
		{name: "negative MaxRPS", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.MaxRPS = -1 })}},
			wantIn: []string{"MaxRPS", `"e1"`}},
		{name: "NaN MaxRPS", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.MaxRPS = math.NaN() })}},
			wantIn: []string{"MaxRPS", `"e1"`}},
		{name: "infinite MaxRPS", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.MaxRPS = math.Inf(1) })}},
			wantIn: []string{"MaxRPS", `"e1"`}},
		{name: "negative Burst", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.MaxRPS, e.Burst = 1, -1 })}},
			wantIn: []string{"Burst", `"e1"`}},
		{name: "negative Timeout", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.Timeout = -time.Second })}},
			wantIn: []string{"Timeout", `"e1"`}},
		{name: "duplicate names", cfg: Config{Endpoints: []Endpoint{good("dup"), with("dup", func(e *Endpoint) { e.BaseURL = "https://other.test/v1" })}},
			wantIn: []string{`"dup"`, "endpoint 1"}},
		{name: "bad header name", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.Header = http.Header{"Bad Header": {"1"}} })}},
			wantIn: []string{"Header", `"e1"`}},
		{name: "header value with line break", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.Header = http.Header{"X-A": {"1\r\nX-B: 2"}} })}},
			wantIn: []string{"Header", `"e1"`}},
		{name: "key with line break", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.APIKey = key + "\nX-Evil: 1" })}},
			wantIn: []string{"APIKey", `"e1"`}, wantOut: []string{"Evil"}},
		{name: "BaseURL query does not parse", cfg: Config{Endpoints: []Endpoint{with("e1", func(e *Endpoint) { e.BaseURL = "https://e1.test/v1?key=SECRET;x" })}},
			wantIn: []string{"BaseURL", `"e1"`, "query"}},
		{name: "Name not UTF-8", cfg: Config{Endpoints: []Endpoint{good("caf\xe9")}},
			wantIn: []string{"Name", "UTF-8"}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t) })
	}
}

func TestNewDefaultNamesUnique(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		want []string
	}{
		{"same host twice", []Endpoint{
			{BaseURL: "https://h.test/v1"}, {BaseURL: "https://H.test:443/v2"},
		}, []string{"h.test", "h.test-2"}},
		{"explicit name taken", []Endpoint{
			{BaseURL: "https://h.test/v1"}, {Name: "h.test-2", BaseURL: "https://x.test/v1"}, {BaseURL: "https://h.test/v2"},
		}, []string{"h.test", "h.test-2", "h.test-3"}},
		{"explicit name equal to a host", []Endpoint{
			{BaseURL: "https://h.test/v1"}, {Name: "h.test", BaseURL: "https://x.test/v1"},
		}, []string{"h.test-2", "h.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(Config{Endpoints: tc.eps})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			var got []string
			for _, h := range tr.Health() {
				got = append(got, h.Name)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("names %q, want %q", got, tc.want)
			}
		})
	}
}
