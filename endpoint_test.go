package failover

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
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
