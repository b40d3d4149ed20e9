package failover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sent is an attempt as a base RoundTripper received it.
type sent struct {
	host, path, query string
	header            http.Header
	body              []byte
	contentLength     int64
	getBody           []byte // what the attempt's GetBody gave, if it had one
}

// sendLog is a base RoundTripper that records each attempt whole (its
// body, and what its GetBody gives) and answers with reply(host), by
// default 200 with the host's name (without ".test").
type sendLog struct {
	mu    sync.Mutex
	sent  []sent
	reply func(host string) *http.Response
}

func (l *sendLog) RoundTrip(req *http.Request) (*http.Response, error) {
	s := sent{host: strings.TrimSuffix(req.URL.Host, ".test"), path: req.URL.Path, query: req.URL.RawQuery,
		header: req.Header.Clone(), contentLength: req.ContentLength}
	if req.Body != nil {
		s.body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	if req.GetBody != nil {
		if rc, err := req.GetBody(); err == nil {
			s.getBody, _ = io.ReadAll(rc)
			_ = rc.Close()
		}
	}
	l.mu.Lock()
	l.sent = append(l.sent, s)
	l.mu.Unlock()
	var resp *http.Response
	if l.reply != nil {
		resp = l.reply(s.host)
	}
	if resp == nil {
		resp = reply(200, s.host)
	}
	resp.Request = req
	return resp, nil
}

func (l *sendLog) all() []sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sent(nil), l.sent...)
}

// hosts returns the hosts of the attempts, in order.
func (l *sendLog) hosts() []string {
	var out []string
	for _, s := range l.all() {
		out = append(out, s.host)
	}
	return out
}

// failing makes a sendLog's hosts in fail answer status code.
func failing(code int, fail ...string) func(string) *http.Response {
	return func(host string) *http.Response {
		for _, f := range fail {
			if f == host {
				return reply(code, fmt.Sprintf(`{"error":{"message":"status %d","type":"server_error","code":null}}`, code))
			}
		}
		return nil
	}
}

// modelRequest builds a POST of body to the client base's path, with
// GetBody (as http.NewRequest sets it for a bytes.Reader) unless bare.
func modelRequest(t testing.TB, path, contentType string, body []byte, bare bool) *http.Request {
	t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if bare {
		rd = &countingBody{r: bytes.NewReader(body)}
	}
	req, err := http.NewRequest(http.MethodPost, clientBase+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	return req
}

// sendModel sends req through tr and returns the answer's status and body.
func sendModel(t testing.TB, tr *Transport, req *http.Request) (int, string) {
	t.Helper()
	return roundTrip(t, tr, req)
}

// chatFor is a chat completion body for model.
func chatFor(model string) []byte {
	return []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
}

// TestModelsSkipAndRename: an endpoint whose Models list a request's
// model gets it under its own name; one whose Models do not list it is
// passed by, no failure of its own, and the skip is counted; an endpoint
// without Models serves every model under the caller's name.
func TestModelsSkipAndRename(t *testing.T) {
	log := &sendLog{}
	reg := prometheus.NewRegistry()
	tr, _ := newTestTransport(t, Config{Base: log, Registerer: reg, Endpoints: []Endpoint{
		{Name: "router", BaseURL: "https://router.test/v1", Priority: 1, Models: map[string]string{"gpt-4o-mini": "openai/gpt-4o-mini"}},
		{Name: "openai", BaseURL: "https://openai.test/v1", Priority: 2},
	}})

	if code, body := sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("gpt-4o-mini"), false)); code != 200 || body != "router" {
		t.Fatalf("gpt-4o-mini: %d %q, want 200 from router", code, body)
	}
	if code, body := sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("gpt-4o"), false)); code != 200 || body != "openai" {
		t.Fatalf("gpt-4o: %d %q, want 200 from openai", code, body)
	}
	got := log.all()
	if len(got) != 2 {
		t.Fatalf("%d attempts (%v), want 2", len(got), log.hosts())
	}
	if want := chatFor("openai/gpt-4o-mini"); !bytes.Equal(got[0].body, want) || got[0].contentLength != int64(len(want)) || !bytes.Equal(got[0].getBody, want) {
		t.Errorf("router got %q (Content-Length %d, GetBody %q), want %q", got[0].body, got[0].contentLength, got[0].getBody, want)
	}
	if want := chatFor("gpt-4o"); got[1].host != "openai" || !bytes.Equal(got[1].body, want) {
		t.Errorf("openai got %q, want %q unchanged", got[1].body, want)
	}
	h := healthOf(t, tr, "router")
	if h.ModelSkips != 1 || h.Failures != 0 || h.State != StateClosed || h.Requests != 1 {
		t.Errorf("router: %d skips, %d failures, %v, %d requests; want 1 skip, no failure, closed, 1 request", h.ModelSkips, h.Failures, h.State, h.Requests)
	}
	if h.Models["gpt-4o-mini"] != "openai/gpt-4o-mini" || healthOf(t, tr, "openai").Models != nil {
		t.Errorf("Health Models %v and %v, want router's mapping and none for openai", h.Models, healthOf(t, tr, "openai").Models)
	}
	if n := testutil.ToFloat64(tr.snap.Load().metrics.modelSkips.WithLabelValues("router")); n != 1 {
		t.Errorf("failover_model_skips_total{endpoint=router} = %v, want 1", n)
	}
}

// TestModelsRenamePerAttempt: each attempt sends the model under its own
// endpoint's name, the caller's request and body stay as they were, and
// the body is read once, whether the request has GetBody or not.
func TestModelsRenamePerAttempt(t *testing.T) {
	for _, bare := range []bool{false, true} {
		t.Run(fmt.Sprintf("bare=%v", bare), func(t *testing.T) {
			log := &sendLog{reply: failing(500, "azure", "router")}
			tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
				{Name: "azure", BaseURL: "https://azure.test/v1", Priority: 1, Models: map[string]string{"m": "prod-m"}},
				{Name: "router", BaseURL: "https://router.test/v1", Priority: 2, Models: map[string]string{"m": "vendor/m"}},
				{Name: "local", BaseURL: "https://local.test/v1", Priority: 3, Models: map[string]string{"m": ""}},
			}})
			body := chatFor("m")
			req := modelRequest(t, "/chat/completions", "application/json", body, bare)
			var getBodies atomic.Int64
			if !bare {
				gb := req.GetBody
				req.GetBody = func() (io.ReadCloser, error) { getBodies.Add(1); return gb() }
			}
			before := reqSnapshot(req)
			if code, got := sendModel(t, tr, req); code != 200 || got != "local" {
				t.Fatalf("%d %q, want 200 from local", code, got)
			}
			want := map[string]string{"azure": "prod-m", "router": "vendor/m", "local": "m"}
			for _, s := range log.all() {
				if w := chatFor(want[s.host]); !bytes.Equal(s.body, w) {
					t.Errorf("%s got %q, want %q", s.host, s.body, w)
				}
			}
			if hosts := log.hosts(); strings.Join(hosts, ",") != "azure,router,local" {
				t.Errorf("attempts went to %v", hosts)
			}
			if reqSnapshot(req) != before {
				t.Error("RoundTrip changed the caller's request")
			}
			if bare {
				if n := req.Body.(*countingBody).closes.Load(); n != 1 {
					t.Errorf("the caller's body was closed %d times, want once", n)
				}
				return
			}
			if n := getBodies.Load(); n != 1 {
				t.Errorf("GetBody called %d times for 3 attempts, want once", n)
			}
			rc, _ := req.GetBody()
			if b := readAll(t, rc); !bytes.Equal(b, body) {
				t.Errorf("the caller's body reads %q after the request, want %q", b, body)
			}
		})
	}
}

// TestModelsBodyByteIdentical: apart from the model's value, the body an
// endpoint receives is the caller's byte for byte: key order, numbers
// beyond float64, unicode, unknown keys, escapes and odd spacing.
func TestModelsBodyByteIdentical(t *testing.T) {
	const head = "{\n  \"zeta\" : 1e400,\t\"big\":123456789012345678901234567890,\r\n" +
		`"text":"h\u00e9llo \"model\": \"x\" 日本語 😀","unknown":{"model":"keep-me","a":[1,2,{"b":null}]},` + "\n  \"model\" :   "
	const tail = " ,\"n\":-0.0e-0 ,\"flag\":true}  \n"
	log := &sendLog{}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
		{Name: "a", BaseURL: "https://a.test/v1", Models: map[string]string{"gpt-4o": "Qwen/Qwen2.5-7B-Instruct \"q\""}},
	}})
	body := []byte(head + `"gpt\u002d4o"` + tail)
	if code, _ := sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", body, false)); code != 200 {
		t.Fatalf("status %d", code)
	}
	want := head + `"Qwen/Qwen2.5-7B-Instruct \"q\""` + tail
	if got := string(log.all()[0].body); got != want {
		t.Errorf("upstream got\n%q\nwant\n%q", got, want)
	}
}

// TestModelsServedByOneOnly: a model only the second endpoint serves goes
// there at once, the first being no failure; a model no endpoint serves
// ends at once with ErrNoEndpointForModel, naming it, with no attempt.
func TestModelsServedByOneOnly(t *testing.T) {
	log := &sendLog{}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
		{Name: "chat", BaseURL: "https://chat.test/v1", Priority: 1, Models: map[string]string{"gpt-4o": ""}},
		{Name: "embed", BaseURL: "https://embed.test/v1", Priority: 2, Models: map[string]string{"text-embedding-3-small": "embed-v3"}},
		{Name: "off", BaseURL: "https://off.test/v1", Priority: 3, Disabled: true, Models: map[string]string{"o1": ""}},
	}})
	req := modelRequest(t, "/embeddings", "application/json", []byte(`{"input":"hi","model":"text-embedding-3-small"}`), false)
	if code, body := sendModel(t, tr, req); code != 200 || body != "embed" {
		t.Fatalf("embeddings: %d %q, want 200 from embed", code, body)
	}
	if got := string(log.all()[0].body); got != `{"input":"hi","model":"embed-v3"}` {
		t.Errorf("embed got %q", got)
	}
	if h := healthOf(t, tr, "chat"); h.Requests != 0 || h.Failures != 0 || h.ModelSkips != 1 {
		t.Errorf("chat: %d requests, %d failures, %d skips; want 0, 0, 1", h.Requests, h.Failures, h.ModelSkips)
	}
	for _, model := range []string{"gpt-5", "o1"} { // o1: only a disabled endpoint lists it
		_, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor(model), false))
		if !errors.Is(err, ErrNoEndpointForModel) || !strings.Contains(err.Error(), `"`+model+`"`) {
			t.Errorf("%s: error %v, want ErrNoEndpointForModel naming it", model, err)
		}
	}
	if n := len(log.all()); n != 1 {
		t.Errorf("%d attempts in all, want only the embeddings one", n)
	}
}

// TestModelsNoModelInBody: a request whose body names no model (a file
// upload, a batch, a model that is not a string), or is not JSON, is
// routed as without Models: unchanged, to any endpoint.
func TestModelsNoModelInBody(t *testing.T) {
	ct, upload := multipartDoc(t, [][2]string{{"purpose", "batch"}, {"file", `{"model":"x"}`}})
	for _, tc := range []struct {
		name, path, ct string
		body           []byte
	}{
		{"file upload", "/files", ct, upload},
		{"batch", "/batches", "application/json", []byte(`{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}`)},
		{"model null", "/chat/completions", "application/json", []byte(`{"model":null}`)},
		{"not JSON", "/chat/completions", "text/plain", []byte(`model: gpt-4o`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &sendLog{}
			tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
				{Name: "a", BaseURL: "https://a.test/v1", Models: map[string]string{"gpt-4o": "a-4o"}},
			}})
			if code, body := sendModel(t, tr, modelRequest(t, tc.path, tc.ct, tc.body, false)); code != 200 || body != "a" {
				t.Fatalf("%d %q, want 200 from a", code, body)
			}
			if got := log.all()[0].body; !bytes.Equal(got, tc.body) {
				t.Errorf("a got %q, want the body unchanged", got)
			}
		})
	}
}

// TestModelsMultipart: a transcription's model form field is renamed per
// endpoint; every other byte of the upload is the caller's.
func TestModelsMultipart(t *testing.T) {
	audio := "RIFF\x00\x10\x00\x00WAVEfmt \r\n--boundary-lookalike\r\n\xff\xfe"
	ct, body := multipartDoc(t, [][2]string{{"file", audio}, {"model", "whisper-1"}, {"language", "en"}})
	log := &sendLog{reply: failing(503, "first")}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
		{Name: "first", BaseURL: "https://first.test/v1", Priority: 1, Models: map[string]string{"whisper-1": "whisper-large-v3"}},
		{Name: "second", BaseURL: "https://second.test/v1", Priority: 2, Models: map[string]string{"whisper-1": "whisper-prod"}},
	}})
	if code, got := sendModel(t, tr, modelRequest(t, "/audio/transcriptions", ct, body, false)); code != 200 || got != "second" {
		t.Fatalf("%d %q, want 200 from second", code, got)
	}
	for _, s := range log.all() {
		want := map[string]string{"first": "whisper-large-v3", "second": "whisper-prod"}[s.host]
		fields := formFields(t, s.header.Get("Content-Type"), s.body)
		if fields[0][1] != audio || fields[1] != [2]string{"model", want} || fields[2] != [2]string{"language", "en"} {
			t.Errorf("%s got fields %q, want the file, model %q, language", s.host, fields, want)
		}
		if want := bytes.Replace(body, []byte("\r\n\r\nwhisper-1\r\n"), []byte("\r\n\r\n"+want+"\r\n"), 1); !bytes.Equal(s.body, want) {
			t.Errorf("%s: the body differs from the caller's beyond the model", s.host)
		}
	}
}

// TestModelsList: with Models on every enabled endpoint, GET /models is
// answered with the union of their names and GET /models/<name> with one
// (or 404 model_not_found), with no attempt; with one endpoint without
// Models, GET /models goes upstream as before.
func TestModelsList(t *testing.T) {
	log := &sendLog{}
	eps := []Endpoint{
		{Name: "a", BaseURL: "https://a.test/v1", Models: map[string]string{"gpt-4o": "x", "text-embedding-3-small": ""}},
		{Name: "b", BaseURL: "https://b.test/v1", Priority: 1, Models: map[string]string{"gpt-4o": "", "openai/o1": ""}},
		{Name: "off", BaseURL: "https://off.test/v1", Disabled: true},
	}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: eps})
	code, body := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+"/models"))
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object string
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || list.Object != "list" {
		t.Fatalf("GET /models: %d %q (%v)", code, body, err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	if got := strings.Join(ids, ","); got != "gpt-4o,openai/o1,text-embedding-3-small" {
		t.Errorf("listed %s, want the union, sorted", got)
	}
	if code, body := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+"/models/openai/o1")); code != 200 || !strings.Contains(body, `"id":"openai/o1"`) {
		t.Errorf("GET /models/openai/o1: %d %q", code, body)
	}
	if code, body := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+"/models/gpt-5")); code != 404 || !strings.Contains(body, `"code":"model_not_found"`) {
		t.Errorf("GET /models/gpt-5: %d %q, want 404 model_not_found", code, body)
	}
	if n := len(log.all()); n != 0 {
		t.Errorf("%d attempts, want none", n)
	}

	eps[2].Disabled = false
	if err := tr.Update(Config{Endpoints: eps}); err != nil {
		t.Fatal(err)
	}
	if code, body := roundTrip(t, tr, mustRequest(t, http.MethodGet, clientBase+"/models")); code != 200 || body != "a" {
		t.Errorf("GET /models with an endpoint without Models: %d %q, want it sent to a", code, body)
	}
}

// TestModelsBodyTooLarge: a body above MaxBodyBuffer is not read for its
// model: it goes on as a request without one, unchanged, to the preferred
// endpoint (and, without GetBody, in one attempt).
func TestModelsBodyTooLarge(t *testing.T) {
	for _, bare := range []bool{false, true} {
		t.Run(fmt.Sprintf("bare=%v", bare), func(t *testing.T) {
			log := &sendLog{reply: failing(500, "a")}
			tr, _ := newTestTransport(t, Config{Base: log, MaxBodyBuffer: 64, Endpoints: []Endpoint{
				{Name: "a", BaseURL: "https://a.test/v1", Priority: 1, Models: map[string]string{"other": ""}},
				{Name: "b", BaseURL: "https://b.test/v1", Priority: 2, Models: map[string]string{"m": "b-m"}},
			}})
			body := []byte(`{"messages":[{"role":"user","content":"` + strings.Repeat("x", 100) + `"}],"model":"m"}`)
			code, _ := sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", body, bare))
			want := "a,b"
			if bare {
				want = "a" // no replay without GetBody
			}
			if got := strings.Join(log.hosts(), ","); got != want {
				t.Errorf("attempts went to %s (status %d), want %s", got, code, want)
			}
			for _, s := range log.all() {
				if !bytes.Equal(s.body, body) {
					t.Errorf("%s got %q, want the body unchanged", s.host, s.body)
				}
			}
		})
	}
}

// TestModelsUnavailableNamesModel: when the only endpoints that serve a
// model cannot take it now, the error counts those that do not serve it.
func TestModelsUnavailableNamesModel(t *testing.T) {
	tr, _ := newTestTransport(t, Config{Base: &sendLog{}, MaxWait: -1, Endpoints: []Endpoint{
		{Name: "a", BaseURL: "https://a.test/v1", Models: map[string]string{"m": ""}},
		{Name: "b", BaseURL: "https://b.test/v1", Models: map[string]string{"n": ""}},
		{Name: "c", BaseURL: "https://c.test/v1", Models: map[string]string{"n": ""}},
	}})
	openBreaker(t, endpointsOf(tr)[0])
	_, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false))
	if !errors.Is(err, ErrNoEndpointAvailable) || !strings.Contains(err.Error(), `1 breaker open, 2 do not serve model "m"`) {
		t.Errorf("error %v, want ErrNoEndpointAvailable (1 breaker open, 2 do not serve model \"m\")", err)
	}
}

// TestModelsLastErrorNamesModel: a failed attempt's last error says which
// model it was for, and under which name it was sent.
func TestModelsLastErrorNamesModel(t *testing.T) {
	log := &sendLog{reply: failing(500, "a")}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{
		{Name: "a", BaseURL: "https://a.test/v1", Priority: 1, Models: map[string]string{"m": "a-m"}},
		{Name: "b", BaseURL: "https://b.test/v1", Priority: 2},
	}})
	sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false))
	if got, want := healthOf(t, tr, "a").LastError, `status 500 (model "m" sent as "a-m")`; got != want {
		t.Errorf("LastError %q, want %q", got, want)
	}
}

// TestModelsOffReadsNoBody: without Models (and no Azure deployments
// endpoint) no body is read for a model: the first attempt gets the
// caller's own body, GetBody is never called, and the snapshot routes
// nothing by model.
func TestModelsOffReadsNoBody(t *testing.T) {
	var got io.ReadCloser
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		got = req.Body
		return reply(200, "ok"), nil
	})
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{hostEndpoint("a", 0), hostEndpoint("b", 1)}})
	if tr.snap.Load().models != nil {
		t.Fatal("a configuration without Models routes by model")
	}
	req := modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false)
	req.GetBody = func() (io.ReadCloser, error) {
		t.Error("GetBody called")
		return nil, errors.New("no")
	}
	body := req.Body
	if code, _ := sendModel(t, tr, req); code != 200 {
		t.Fatalf("status %d", code)
	}
	if got != body {
		t.Error("the attempt did not get the caller's own body")
	}
}

// TestModelsConfigErrors: bad Models, APIType and APIVersion are errors of
// New naming the endpoint and what is wrong.
func TestModelsConfigErrors(t *testing.T) {
	ep := func(f func(*Endpoint)) Config {
		e := Endpoint{Name: "x", BaseURL: "https://x.test/v1"}
		f(&e)
		return Config{Endpoints: []Endpoint{e}}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty Models", ep(func(e *Endpoint) { e.Models = map[string]string{} }), "Models is empty"},
		{"empty name", ep(func(e *Endpoint) { e.Models = map[string]string{"": "a"} }), "model name is empty"},
		{"control character", ep(func(e *Endpoint) { e.Models = map[string]string{"a\nb": ""} }), "contains a control character"},
		{"upstream with a space at an end", ep(func(e *Endpoint) { e.Models = map[string]string{"a": "b "} }), `Models["a"]: "b " begins or ends with a space`},
		{"not UTF-8", ep(func(e *Endpoint) { e.Models = map[string]string{"a": "\xff"} }), "is not valid UTF-8"},
		{"APIType", ep(func(e *Endpoint) { e.APIType = "bedrock" }), `APIType "bedrock" is not`},
		{"APIVersion without azure", ep(func(e *Endpoint) { e.APIVersion = "2024-10-21" }), "APIVersion is set, but APIType"},
		{"bad APIVersion", ep(func(e *Endpoint) { e.APIType, e.APIVersion = "azure", "2024 10" }), `APIVersion "2024 10" is not an api-version`},
		{"deployment name", ep(func(e *Endpoint) {
			e.APIType, e.APIVersion, e.Models = "azure", "2024-10-21", map[string]string{"gpt-4o": "my/deployment"}
		}), `Models["gpt-4o"]: "my/deployment" is not an Azure deployment name`},
		{"unmapped deployment name", ep(func(e *Endpoint) {
			e.APIType, e.APIVersion, e.Models = "azure", "2024-10-21", map[string]string{"openai/gpt-4o": ""}
		}), `"openai/gpt-4o" is not an Azure deployment name`},
		{"MaxBodyBuffer negative", Config{MaxBodyBuffer: -1, Endpoints: []Endpoint{{BaseURL: "https://x.test", Models: map[string]string{"a": ""}}}},
			"MaxBodyBuffer -1 is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// Case does not matter in APIType; a mapping to the same name is fine.
	if _, err := New(ep(func(e *Endpoint) { e.APIType, e.Models = "Azure", map[string]string{"a": "a"} })); err != nil {
		t.Errorf("New: %v", err)
	}
}

// TestModelsConfigIsCopied: New copies Models: changing the map afterwards
// changes nothing.
func TestModelsConfigIsCopied(t *testing.T) {
	models := map[string]string{"m": "a-m"}
	log := &sendLog{}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: []Endpoint{{Name: "a", BaseURL: "https://a.test/v1", Models: models}}})
	models["m"] = "changed"
	models["n"] = ""
	sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false))
	if got := string(log.all()[0].body); got != string(chatFor("a-m")) {
		t.Errorf("a got %q, want the mapping as it was at New", got)
	}
	if _, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor("n"), false)); !errors.Is(err, ErrNoEndpointForModel) {
		t.Errorf("a model added to the map after New: %v, want ErrNoEndpointForModel", err)
	}
}

// TestModelsUpdate: Update turns routing by model on and off.
func TestModelsUpdate(t *testing.T) {
	log := &sendLog{}
	plain := []Endpoint{hostEndpoint("a", 0)}
	tr, _ := newTestTransport(t, Config{Base: log, Endpoints: plain})
	mapped := []Endpoint{hostEndpoint("a", 0)}
	mapped[0].Models = map[string]string{"m": "a-m"}
	if err := tr.Update(Config{Endpoints: mapped}); err != nil {
		t.Fatal(err)
	}
	sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false))
	if err := tr.Update(Config{Endpoints: plain}); err != nil {
		t.Fatal(err)
	}
	sendModel(t, tr, modelRequest(t, "/chat/completions", "application/json", chatFor("m"), false))
	got := log.all()
	if string(got[0].body) != string(chatFor("a-m")) || string(got[1].body) != string(chatFor("m")) {
		t.Errorf("bodies %q and %q, want renamed after the first Update, not after the second", got[0].body, got[1].body)
	}
}

// TestModelsNameNeverShowsAKey: a caller who sends an endpoint's key as
// the model's name never sees it in an error or in Health.
func TestModelsNameNeverShowsAKey(t *testing.T) {
	const key = "sk-models-secret-key-0123"
	log := &sendLog{reply: failing(500, "a")}
	tr, _ := newTestTransport(t, Config{Base: log, MaxWait: -1, Endpoints: []Endpoint{
		{Name: "a", BaseURL: "https://a.test/v1", APIKey: key, Models: map[string]string{key: "up"}},
		{Name: "b", BaseURL: "https://b.test/v1", Models: map[string]string{"other": ""}},
	}, MaxRetries: -1})
	var texts []string
	for _, model := range []string{key, key + "-x"} {
		_, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor(model), false))
		if err != nil {
			texts = append(texts, err.Error())
		}
	}
	openBreaker(t, endpointsOf(tr)[0])
	if _, err := tr.RoundTrip(modelRequest(t, "/chat/completions", "application/json", chatFor(key), false)); err != nil {
		texts = append(texts, err.Error())
	}
	texts = append(texts, healthOf(t, tr, "a").LastError)
	// The first request (the key as model) gets a's 500; the second the
	// no-endpoint error; the third, a's breaker open, the unavailable one.
	if len(texts) != 3 {
		t.Fatalf("texts %q, want the no-endpoint error, the unavailable error and the last error", texts)
	}
	for _, text := range texts {
		if strings.Contains(text, key) || !strings.Contains(text, redacted) {
			t.Errorf("%q shows the key, or does not show [REDACTED] in its place", text)
		}
	}
}
