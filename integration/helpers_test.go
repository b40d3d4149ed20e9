// Package integration proves that the real OpenAI SDKs for Go
// (github.com/sashabaranov/go-openai and github.com/openai/openai-go) fail
// over end to end through a failover client, against fake upstreams on
// loopback. It is a module of its own so that the failover module does not
// depend on either SDK.
package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

func TestMain(m *testing.M) {
	// openai-go reads OPENAI_BASE_URL, OPENAI_API_KEY and more from the
	// environment in NewClient; a developer's own settings must not steer
	// the tests (OPENAI_BASE_URL would send requests past the failover).
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OPENAI_") {
			os.Unsetenv(name)
		}
	}
	code := m.Run()
	// The README's snippets send through http.DefaultClient; its idle
	// connections are not a leak.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Names, keys and paths of the two upstreams every test fails over between.
const (
	firstName    = "first"
	secondName   = "second"
	firstKey     = "key-first"
	secondKey    = "key-second"
	secondPrefix = "/proxy/openai/v1"

	// sdkKey is the key the calling code gives openai-go; no upstream may
	// ever see it.
	sdkKey = "sdk-key"

	// requestTimeout bounds each SDK call; generous, for slow shared
	// machines. No assertion depends on timing.
	requestTimeout = 2 * time.Minute
)

// firstFault is one way the first (preferred) endpoint fails.
type firstFault struct {
	name  string
	fault fakeopenai.Fault
	// hit says whether the request reaches the first upstream's handler
	// (a refused connection does not).
	hit bool
}

// The failures of the first endpoint that every request must survive by
// failing over to the second.
var (
	firstDead = firstFault{name: "dead", fault: fakeopenai.Refuse(), hit: false}
	first500  = firstFault{name: "500", fault: fakeopenai.StatusFault(http.StatusInternalServerError), hit: true}
	first429  = firstFault{name: "429 Retry-After", fault: fakeopenai.RateLimited("1"), hit: true}
	first401  = firstFault{name: "401", fault: fakeopenai.StatusFault(http.StatusUnauthorized), hit: true}

	firstFaults = []firstFault{firstDead, first500, first429, first401}
)

// badModelBody is an OpenAI error body for a request that is wrong whatever
// the endpoint.
const badModelBody = `{"error":{"message":"bad model xyz","type":"invalid_request_error","code":"model_not_found"}}`

// upstreams is a pair of fake upstreams and the failover configuration
// over them: first (priority 0, prefix /v1) and second (priority 1, prefix
// /proxy/openai/v1), each with its own key.
type upstreams struct {
	first, second *fakeopenai.Server
	sent          *recorder // the attempts sent through cfg.Base
	cfg           failover.Config
}

// newUpstreams starts the two upstreams, closed with the test, with the
// first one failing as f says. The configuration's Base records every
// attempt and sends it through a transport of the test's own.
func newUpstreams(t *testing.T, f fakeopenai.Fault) *upstreams {
	t.Helper()
	u := &upstreams{
		first:  startUpstream(t, fakeopenai.WithName(firstName)),
		second: startUpstream(t, fakeopenai.WithName(secondName), fakeopenai.WithPrefix(secondPrefix)),
	}
	u.first.SetFault(f)
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	u.sent = &recorder{next: base}
	u.cfg = failover.Config{
		Endpoints: []failover.Endpoint{
			{Name: firstName, BaseURL: u.first.URL(), APIKey: firstKey, Priority: 0},
			{Name: secondName, BaseURL: u.second.URL(), APIKey: secondKey, Priority: 1},
		},
		Base: u.sent,
	}
	return u
}

// startUpstream starts a fake upstream closed with the test.
func startUpstream(t *testing.T, opts ...fakeopenai.Option) *fakeopenai.Server {
	t.Helper()
	s := fakeopenai.New(opts...)
	t.Cleanup(s.Close)
	return s
}

// checkFailedOver checks that the request went first to the first
// endpoint (in the order u.sent recorded, unless it is nil), then once to
// the second, which saw its own key and its own path
// prefix before wantRest (such as "/chat/completions"). It returns the
// second upstream's record of the request.
func (u *upstreams) checkFailedOver(t *testing.T, f firstFault, wantRest string) fakeopenai.Request {
	t.Helper()
	if u.sent != nil {
		if got, want := u.sent.hosts(), []string{u.first.Addr(), u.second.Addr()}; !slices.Equal(got, want) {
			t.Errorf("attempts went to %v, want first then second %v", got, want)
		}
	}
	wantFirstHits := int64(0)
	if f.hit {
		wantFirstHits = 1
	}
	if got := u.first.Hits(); got != wantFirstHits {
		t.Errorf("first upstream got %d request(s), want %d", got, wantFirstHits)
	}
	if f.hit {
		if last, ok := u.first.Last(); ok {
			checkAuth(t, firstName, last, firstKey)
		}
	}
	if got := u.second.Hits(); got != 1 {
		t.Fatalf("second upstream got %d request(s), want 1", got)
	}
	last, _ := u.second.Last()
	checkAuth(t, secondName, last, secondKey)
	if want := secondPrefix + wantRest; last.Path != want {
		t.Errorf("second upstream saw path %q, want %q", last.Path, want)
	}
	return last
}

// checkAuth checks that an upstream saw exactly its own key.
// checkOnlyFirstTried fails t unless the request made exactly one attempt,
// on the first upstream: a caller error must not fail over.
func (u *upstreams) checkOnlyFirstTried(t *testing.T) {
	t.Helper()
	if got := u.first.Hits(); got != 1 {
		t.Errorf("first upstream got %d request(s), want 1", got)
	}
	if got := u.second.Hits(); got != 0 {
		t.Errorf("second upstream got %d request(s), want none", got)
	}
	if got, want := u.sent.hosts(), []string{u.first.Addr()}; !slices.Equal(got, want) {
		t.Errorf("attempts went to %v, want only the first %v", got, want)
	}
}

func checkAuth(t *testing.T, name string, r fakeopenai.Request, key string) {
	t.Helper()
	got := r.Header.Values("Authorization")
	if want := []string{"Bearer " + key}; !slices.Equal(got, want) {
		t.Errorf("%s upstream saw Authorization %q, want %q", name, got, want)
	}
	if strings.Contains(strings.Join(got, " "), sdkKey) {
		t.Errorf("%s upstream saw the SDK's own key", name)
	}
}

// checkBody checks that the second upstream got a request body holding
// want and, when the first was reached, the very same body as the first.
func (u *upstreams) checkBody(t *testing.T, f firstFault, want []byte) {
	t.Helper()
	second, _ := u.second.Last()
	if !strings.Contains(string(second.Body), string(want)) {
		t.Errorf("second upstream's body (%d bytes) does not hold %q", len(second.Body), want)
	}
	if !f.hit {
		return
	}
	first, _ := u.first.Last()
	if string(first.Body) != string(second.Body) {
		t.Errorf("the upstreams got different bodies:\nfirst:  %q\nsecond: %q", first.Body, second.Body)
	}
}

// recorder is an http.RoundTripper that records the host of every attempt
// before passing it on.
type recorder struct {
	next http.RoundTripper

	mu   sync.Mutex
	sent []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.sent = append(r.sent, req.URL.Host)
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// hosts returns the hosts of the attempts so far, in order.
func (r *recorder) hosts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// testContext returns a context for one SDK call, bounded generously and
// ended with the test.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// envFor returns the environment that describes u's two endpoints in the
// numbered variables the README documents.
func envFor(u *upstreams) []string {
	return []string{
		"OPENAI_BASE_URL_1=" + u.first.URL(),
		"OPENAI_API_KEY_1=" + firstKey,
		"OPENAI_NAME_1=" + firstName,
		"OPENAI_BASE_URL_2=" + u.second.URL(),
		"OPENAI_API_KEY_2=" + secondKey,
		"OPENAI_NAME_2=" + secondName,
	}
}

// wavBytes is a small in-memory "audio file" whose bytes the upstream's
// record must hold.
var wavBytes = []byte("RIFF\x24\x00\x00\x00WAVEfmt integration-audio-payload-0123456789")
