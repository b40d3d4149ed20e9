package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/failover-go/failover"
)

// fakeUpdater stands in for a transport that can change its configuration:
// it records each Config it is given and answers Health from the last one
// it accepted.
type fakeUpdater struct {
	mu     sync.Mutex
	err    error // Update's answer
	got    []failover.Config
	health []failover.EndpointHealth
}

func (f *fakeUpdater) Update(cfg failover.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, cfg)
	if f.err != nil {
		return f.err
	}
	f.health = f.health[:0]
	for _, e := range cfg.Endpoints {
		u, _ := url.Parse(e.BaseURL)
		name := e.Name
		if name == "" {
			name = u.Host
		}
		weight := e.Weight
		if weight == 0 {
			weight = 1
		}
		f.health = append(f.health, failover.EndpointHealth{
			Name: name, BaseURL: u.Scheme + "://" + u.Host + u.Path, Priority: e.Priority, Weight: weight,
		})
	}
	return nil
}

func (f *fakeUpdater) Health() []failover.EndpointHealth {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.health)
}

// calls returns the Configs Update was given.
func (f *fakeUpdater) calls() []failover.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// logBuffer is a slog destination safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newUpdatable returns a Proxy of cfg whose transport is replaced, for
// Update, by a fakeUpdater, and the buffer of its logs.
func newUpdatable(t *testing.T, cfg Config) (*Proxy, *fakeUpdater, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	f := &fakeUpdater{}
	p.updater = f
	return p, f, logs
}

const (
	keyA = "sk-endpoint-a-key-AAAA"
	keyB = "sk-endpoint-b-key-BBBB"
	keyC = "sk-endpoint-c-key-CCCC"
	keyD = "sk-endpoint-d-key-DDDD"
)

// TestUpdateAppliesProxySettings checks that a reloaded Config, which
// knows nothing of the proxy, reaches the transport with the settings the
// proxy gave it at New: its routing, registry, base, logger, endpoint
// header and body buffer.
func TestUpdateAppliesProxySettings(t *testing.T) {
	transportLogger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		base http.RoundTripper
	}{
		{"own base", nil},
		{"caller's base", &http.Transport{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, f, _ := newUpdatable(t, Config{Failover: failover.Config{
				Endpoints:      []failover.Endpoint{{Name: "a", BaseURL: "https://a.example/v1", APIKey: keyA}},
				Base:           tc.base,
				Logger:         transportLogger,
				EndpointHeader: "X-Endpoint",
				MaxBodyBuffer:  1 << 20,
			}})
			atNew := p.cfg
			reloaded := failover.Config{Endpoints: []failover.Endpoint{
				{Name: "a", BaseURL: "https://a.example/v1", APIKey: keyA},
				{Name: "b", BaseURL: "https://b.example/v1", APIKey: keyB},
			}}
			if err := p.Update(reloaded); err != nil {
				t.Fatal(err)
			}
			calls := f.calls()
			if len(calls) != 1 {
				t.Fatalf("Update reached the transport %d times, want once", len(calls))
			}
			got := calls[0]
			if !slices.Equal(got.ClientBaseURLs, []string{InternalBaseURL}) {
				t.Errorf("ClientBaseURLs %q", got.ClientBaseURLs)
			}
			if got.Registerer != p.registry || got.Registerer != atNew.Registerer {
				t.Error("the Registerer is not the proxy's registry")
			}
			if got.Base != atNew.Base || (tc.base != nil && got.Base != tc.base) || got.Base == nil {
				t.Errorf("Base %v, want the one of New", got.Base)
			}
			if got.Logger != transportLogger {
				t.Error("Logger is not the one of New")
			}
			if got.EndpointHeader != "X-Endpoint" || got.MaxBodyBuffer != 1<<20 {
				t.Errorf("EndpointHeader %q, MaxBodyBuffer %d; want those of New", got.EndpointHeader, got.MaxBodyBuffer)
			}
			if len(got.Endpoints) != 2 {
				t.Errorf("%d endpoints reached the transport, want 2", len(got.Endpoints))
			}
		})
	}
}

// TestUpdateLogsChanges checks the Info lines of an update: each endpoint
// added, removed or changed (with the fields that changed), the other
// settings that changed, and a summary; never a key or a URL's query.
func TestUpdateLogsChanges(t *testing.T) {
	p, _, logs := newUpdatable(t, Config{Failover: failover.Config{Endpoints: []failover.Endpoint{
		{Name: "a", BaseURL: "https://a.example/v1", APIKey: keyA, Priority: 1},
		{Name: "b", BaseURL: "https://b.example/v1?api-key=query-secret-1", Priority: 2},
		{Name: "c", BaseURL: "https://c.example/v1", APIKey: keyC},
		{Name: "e", BaseURL: "https://e.example/v1", Header: http.Header{"X-Secret": {"header-secret-1"}}},
	}}})
	err := p.Update(failover.Config{
		MaxRetries: 5,
		Endpoints: []failover.Endpoint{
			{Name: "a", BaseURL: "https://a.example/v1", APIKey: keyB, Priority: 1},
			{Name: "b", BaseURL: "https://b.example/v1?api-key=query-secret-2", Priority: 2, Weight: 3},
			{Name: "d", BaseURL: "https://d.example/v1", APIKey: keyD, Disabled: true},
			{Name: "e", BaseURL: "https://e.example/v1", Header: http.Header{"X-Secret": {"header-secret-2"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{
		`msg="endpoint changed" name=a fields=APIKey key=…BBBB`,
		`msg="endpoint changed" name=b fields=BaseURL,Weight url=https://b.example/v1`,
		`msg="endpoint changed" name=e fields=Header`,
		`msg="endpoint added" name=d url=https://d.example/v1 priority=0 weight=1 key=…DDDD disabled=true`,
		`msg="endpoint removed" name=c`,
		`msg="settings changed" fields=MaxRetries`,
		`msg="configuration updated" endpoints=4 added=1 removed=1 changed=3 unchanged=0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the logs lack %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{keyA, keyB, keyC, keyD, "query-secret", "header-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("the logs show %q:\n%s", secret, out)
		}
	}
	var names []string
	for _, e := range p.Endpoints() {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "d", "e"}) {
		t.Errorf("Endpoints after the update: %q", names)
	}
}

// TestUpdateRefused checks that a Config the transport refuses changes
// nothing in the proxy, and that the proxy says when its transport cannot
// be reconfigured at all.
func TestUpdateRefused(t *testing.T) {
	start := failover.Config{Endpoints: []failover.Endpoint{{Name: "a", BaseURL: "https://a.example/v1", APIKey: keyA}}}
	next := failover.Config{Endpoints: []failover.Endpoint{{Name: "b", BaseURL: "https://b.example/v1", APIKey: keyB}}}
	p, f, logs := newUpdatable(t, Config{Failover: start})
	refused := errors.New("failover: endpoint 0: weight -1 is negative")
	f.err = refused
	if err := p.Update(next); !errors.Is(err, refused) {
		t.Fatalf("Update = %v, want the transport's error", err)
	}
	if got := p.Endpoints(); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("after a refused update, Endpoints = %+v; want a alone", got)
	}
	if strings.Contains(logs.String(), "endpoint added") {
		t.Errorf("a refused update logged changes:\n%s", logs)
	}

	// The refused Config is still new: once the transport takes it, it
	// is applied.
	f.err = nil
	if err := p.Update(next); err != nil {
		t.Fatal(err)
	}
	if got := p.Endpoints(); len(got) != 1 || got[0].Name != "b" {
		t.Errorf("Endpoints = %+v; want b alone", got)
	}
}

// TestUpdateUnchanged checks that a Config equal to the running one does
// not reach the transport, and says so.
func TestUpdateUnchanged(t *testing.T) {
	cfg := failover.Config{Endpoints: []failover.Endpoint{{Name: "a", BaseURL: "https://a.example/v1", APIKey: keyA, Header: http.Header{"X": {"1"}}}}}
	p, f, logs := newUpdatable(t, Config{Failover: cfg})
	again := cfg
	again.Endpoints = slices.Clone(cfg.Endpoints)
	again.Endpoints[0].Header = http.Header{"X": {"1"}}
	if err := p.Update(again); err != nil {
		t.Fatal(err)
	}
	if n := len(f.calls()); n != 0 {
		t.Errorf("an unchanged Config reached the transport %d time(s)", n)
	}
	if !strings.Contains(logs.String(), `msg="configuration unchanged" endpoints=1`) {
		t.Errorf("no \"configuration unchanged\" in the logs:\n%s", logs)
	}
}

// TestUpdateConcurrent reads the proxy's endpoints while updates run, for
// the race detector.
func TestUpdateConcurrent(t *testing.T) {
	p, _, _ := newUpdatable(t, Config{Failover: failover.Config{Endpoints: []failover.Endpoint{{Name: "a", BaseURL: "https://a.example/v1"}}}})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				if i%2 == 0 {
					_ = p.Endpoints()
					continue
				}
				_ = p.Update(failover.Config{Endpoints: []failover.Endpoint{{Name: "a", BaseURL: "https://a.example/v1", Weight: j + 1}}})
			}
		})
	}
	wg.Wait()
	if got := p.Endpoints(); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("Endpoints = %+v", got)
	}
}
