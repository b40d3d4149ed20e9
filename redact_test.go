package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestErrorsNeverCarrySecrets: a base whose errors quote the request URL
// (as go-retryablehttp's does) cannot carry an endpoint's key, header
// value or BaseURL query value into the returned error, Health or
// /healthz, whatever wraps it; errors.Is still sees the base's error.
func TestErrorsNeverCarrySecrets(t *testing.T) {
	sentinel := errors.New("dial refused")
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return nil, fmt.Errorf("giving up on %s %s with %s and %s: %w", req.Method, req.URL.String(),
			req.Header.Get("Authorization"), req.Header.Get("X-Secret"), sentinel)
	})
	tr, _ := newTestTransport(t, Config{Base: base, MaxRetries: -1, Endpoints: []Endpoint{{
		Name: "azure", BaseURL: "https://az.test/openai?api-key=QUERY-SECRET-1&api-version=2024",
		APIKey: "sk-KEY-SECRET-2", Header: http.Header{"X-Secret": {"HEADER-SECRET-3"}},
	}}})
	_, err := tr.RoundTrip(chatRequest(t, context.Background(), clientBase, false))
	if err == nil {
		t.Fatal("RoundTrip succeeded")
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("errors.Is(err, the base's error) = false: %v", err)
	}
	rec := httptest.NewRecorder()
	tr.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	for what, text := range map[string]string{"error": err.Error(), "Health": fmt.Sprint(tr.Health()), "/healthz": rec.Body.String()} {
		if strings.Contains(text, "SECRET") {
			t.Errorf("%s carries a secret: %s", what, text)
		}
		if what != "/healthz" && !strings.Contains(text, "[REDACTED]") {
			t.Errorf("%s shows no [REDACTED] in place of the secrets: %s", what, text)
		}
	}
}

// TestPrintingNeverShowsSecrets: no fmt verb, no encoder and no slog
// handler shows an Endpoint's, a Config's or a Transport's secrets.
func TestPrintingNeverShowsSecrets(t *testing.T) {
	e := Endpoint{Name: "azure", BaseURL: "https://az.test/openai?api-key=QUERY-SECRET-1", APIKey: "sk-KEY-SECRET-2",
		Header: http.Header{"X-Secret": {"HEADER-SECRET-3"}}, Priority: 2}
	cfg := Config{Endpoints: []Endpoint{e}, Base: newScriptedBase(alwaysOK)}
	tr, _ := newTestTransport(t, cfg)
	bare := e
	bare.Header = nil // encoding/xml cannot encode a header map at all
	values := map[string]any{"Endpoint": e, "*Endpoint": &e, "Endpoint without Header": bare, "Config": cfg, "*Config": &cfg,
		"*Transport": tr, "[]Endpoint": []Endpoint{e}, "struct": struct{ E Endpoint }{e}}
	var outputs []string
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%t", "%10.3v", "%-20s"} {
			outputs = append(outputs, name+" "+verb+": "+fmt.Sprintf(verb, v))
		}
		if b, err := json.Marshal(v); err == nil {
			outputs = append(outputs, name+" json: "+string(b))
		}
		if b, err := xml.Marshal(v); err == nil {
			outputs = append(outputs, name+" xml: "+string(b))
		}
		for _, h := range []func(io.Writer) slog.Handler{
			func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
			func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
		} {
			var buf bytes.Buffer
			slog.New(h(&buf)).Info("value", "v", v)
			outputs = append(outputs, name+" slog: "+buf.String())
		}
	}
	for _, out := range outputs {
		if strings.Contains(out, "SECRET") {
			t.Errorf("%s", out)
		}
	}
	// What is printed is still useful.
	if got := fmt.Sprintf("%+v", e); !strings.Contains(got, "azure") || !strings.Contains(got, "Priority:2") || !strings.Contains(got, "[REDACTED]") {
		t.Errorf("%%+v = %s, want the name, the priority and [REDACTED] in place of the key", got)
	}
	if b, _ := json.Marshal(e); !strings.Contains(string(b), `"APIKey":"[REDACTED]"`) || !strings.Contains(string(b), `"Name":"azure"`) {
		t.Errorf("json = %s, want the fields with the key redacted", b)
	}
	if b, err := xml.Marshal(e); err != nil || !strings.Contains(string(b), `<APIKey>[REDACTED]</APIKey>`) ||
		!strings.Contains(string(b), `<Header name="X-Secret"><Value>[REDACTED]</Value></Header>`) {
		t.Errorf("xml = %s, %v; want the fields with the key and header values redacted", b, err)
	}
}
