package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// writeEnvFile writes content to path as an editor saves: a new file
// renamed over the old.
func writeEnvFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitForCount waits until re matches the buffer at least n times.
func (b *logBuffer) waitForCount(t *testing.T, re *regexp.Regexp, n int, exited chan int) {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		got := len(re.FindAllStringIndex(b.buf.String(), -1))
		changed := b.changed
		b.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case code := <-exited:
			exited <- code
			t.Fatalf("the command exited with %d before logging %q %d times; its output:\n%s", code, re, n, b)
		case <-timeout.C:
			t.Fatalf("%q not %d times in the output within %v:\n%s", re, n, waitLimit, b)
		}
	}
}

// TestProxyEnvFile checks that -env-file's variables override the
// environment's while the environment's others still apply, for the
// endpoints and for FAILOVER_PROXY_KEY alike.
func TestProxyEnvFile(t *testing.T) {
	first := startUpstream(t, fakeopenai.WithName("first"))
	second := startUpstream(t, fakeopenai.WithName("second"))
	path := filepath.Join(t.TempDir(), "proxy.env")
	writeEnvFile(t, path, "# the file wins\nOPENAI_BASE_URL_1="+second.URL()+"\nOPENAI_NAME_1=from-file\nexport FAILOVER_PROXY_KEY='"+proxyKey+"'\n")
	p := startProxy(t, []string{
		"OPENAI_BASE_URL_1=" + first.URL(),
		"OPENAI_NAME_1=from-env",
		"OPENAI_API_KEY_1=" + firstKey,
	}, "-env-file", path)

	if want := "msg=endpoint name=from-file url=" + second.URL() + " "; !strings.Contains(p.logs.String(), want) {
		t.Errorf("the start-up output lacks %q:\n%s", want, p.logs)
	}
	c := newClient(t)
	checkOpenAIError(t, post(t, c, p.url+"/v1/chat/completions", "", chatBody), http.StatusUnauthorized, "invalid_api_key")
	resp := post(t, c, p.url+"/v1/chat/completions", proxyKey, chatBody)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("with the file's proxy key: status %d: %s", resp.StatusCode, body)
	}
	if first.Hits() != 0 {
		t.Error("the environment's base URL was used, not the file's")
	}
	last, _ := second.Last()
	checkAuthorization(t, "the file's upstream", last, []string{"Bearer " + firstKey})
}

// TestProxyEnvFileErrors checks that a -env-file that cannot be read or
// parsed exits 2 with an error naming the file and the line, never the
// value.
func TestProxyEnvFileErrors(t *testing.T) {
	const secret = "sk-very-secret-key-0000"
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.env")
	writeEnvFile(t, bad, "OPENAI_BASE_URL_1=http://127.0.0.1:9/v1\n"+secret+"\n")
	unclosed := filepath.Join(dir, "unclosed.env")
	writeEnvFile(t, unclosed, "OPENAI_API_KEY_1=\""+secret+"\n")
	invalid := filepath.Join(dir, "invalid.env")
	writeEnvFile(t, invalid, "OPENAI_API_KEY_1="+secret+"\nOPENAI_WEIGHT_1=-1\n")
	for _, tc := range []struct {
		name     string
		path     string
		mentions []string
	}{
		{"a line without a name", bad, []string{"-env-file", bad, "line 2"}},
		{"an unclosed quote", unclosed, []string{"-env-file", unclosed, "line 1", "OPENAI_API_KEY_1"}},
		{"a bad value", invalid, []string{"OPENAI_WEIGHT_1"}},
		{"a missing file", filepath.Join(dir, "missing.env"), []string{"-env-file", "missing.env"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCommand(t, nil, "proxy", "-listen", "127.0.0.1:0", "-env-file", tc.path)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			for _, want := range tc.mentions {
				if !strings.Contains(stderr, want) {
					t.Errorf("the error does not mention %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stderr, secret) || strings.Contains(stderr, "sk-very") {
				t.Errorf("the error shows the key:\n%s", stderr)
			}
			if strings.Contains(stderr, "msg=listening") {
				t.Errorf("the proxy listened:\n%s", stderr)
			}
		})
	}
}

var (
	refusedRE   = regexp.MustCompile(`msg="configuration refused; the running one stays" error="([^"]|\\")*`)
	unchangedRE = regexp.MustCompile(`msg="configuration unchanged"`)
	sighupRE    = regexp.MustCompile(`msg="reloading the configuration" trigger=SIGHUP`)
)

// TestProxyEnvFileReload runs the proxy on a watched -env-file with a
// SIGHUP channel of the test's: a file with an error, and one whose
// endpoint is the proxy itself, are refused (logged, never with the key)
// while the running configuration keeps serving; the file put back
// changes nothing, and neither does a SIGHUP.
func TestProxyEnvFileReload(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	path := filepath.Join(t.TempDir(), "proxy.env")
	good := "OPENAI_BASE_URL_1=" + up.URL() + "\nOPENAI_API_KEY_1=" + firstKey + "\nOPENAI_NAME_1=up\n"
	writeEnvFile(t, path, good)
	hups := make(chan os.Signal, 1)
	hangup := func() (<-chan os.Signal, func()) { return hups, func() {} }
	p := startProxyWith(t, hangup, nil, "-env-file", path)
	c := newClient(t)
	serves := func(after string) {
		t.Helper()
		resp := post(t, c, p.url+"/v1/chat/completions", "", chatBody)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
			t.Fatalf("after %s: status %d: %s", after, resp.StatusCode, body)
		}
	}
	serves("the start")

	writeEnvFile(t, path, good+"OPENAI_API_KEY_2 "+secondKey+"\n")
	p.logs.waitForCount(t, refusedRE, 1, p.exited)
	serves("a file with an error")

	port := p.url[strings.LastIndex(p.url, ":")+1:]
	writeEnvFile(t, path, "OPENAI_BASE_URL_1=http://LOCALHOST:"+port+"/v1\nOPENAI_API_KEY_1="+firstKey+"\n")
	p.logs.waitForCount(t, refusedRE, 2, p.exited)
	serves("a file whose endpoint is the proxy")

	writeEnvFile(t, path, good)
	p.logs.waitForCount(t, unchangedRE, 1, p.exited)
	hups <- syscall.SIGHUP
	p.logs.waitForCount(t, sighupRE, 1, p.exited)
	p.logs.waitForCount(t, unchangedRE, 2, p.exited)
	serves("the file put back and SIGHUP")
	if got := up.Hits(); got != 4 {
		t.Errorf("the upstream got %d request(s), want 4", got)
	}

	logs := p.logs.String()
	refusals := refusedRE.FindAllString(logs, -1)
	for i, want := range []string{"line 4", "is this proxy itself"} {
		if !strings.Contains(refusals[i], want) {
			t.Errorf("refusal %d %q does not mention %q", i+1, refusals[i], want)
		}
	}
	for _, key := range []string{firstKey, secondKey} {
		if strings.Contains(logs, key) {
			t.Errorf("the output shows the key %q:\n%s", key, logs)
		}
	}
}

// TestNotifyHangup sends SIGHUP to the test's own process, with the
// handler installed by notifyHangup: its channel receives the signal.
func TestNotifyHangup(t *testing.T) {
	c, stop := notifyHangup()
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-c:
		if sig != syscall.SIGHUP {
			t.Errorf("received %v, want SIGHUP", sig)
		}
	case <-time.After(waitLimit):
		t.Fatal("SIGHUP did not reach the channel")
	}
}

var updatedRE = regexp.MustCompile(`msg="configuration updated"`)

// TestProxyEnvFileReloadApplies: a changed file is applied while the proxy
// serves: a new endpoint takes the traffic its priority gives it, and the
// endpoint whose name is kept keeps its statistics.
func TestProxyEnvFileReloadApplies(t *testing.T) {
	one := startUpstream(t, fakeopenai.WithName("one"))
	two := startUpstream(t, fakeopenai.WithName("two"))
	path := filepath.Join(t.TempDir(), "proxy.env")
	first := "OPENAI_BASE_URL_1=" + one.URL() + "\nOPENAI_API_KEY_1=" + firstKey + "\nOPENAI_NAME_1=one\n"
	writeEnvFile(t, path, first)
	p := startProxyWith(t, nil, nil, "-env-file", path)
	c := newClient(t)
	answeredBy := func() string {
		t.Helper()
		resp := post(t, c, p.url+"/v1/chat/completions", "", chatBody)
		if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		return resp.Header.Get("Failover-Endpoint")
	}
	if got := answeredBy(); got != "one" {
		t.Fatalf("before the reload, %q answered, want one", got)
	}

	// two comes first now; one stays, second.
	writeEnvFile(t, path, "OPENAI_BASE_URL_1="+two.URL()+"\nOPENAI_API_KEY_1="+secondKey+"\nOPENAI_NAME_1=two\n"+
		"OPENAI_BASE_URL_2="+one.URL()+"\nOPENAI_API_KEY_2="+firstKey+"\nOPENAI_NAME_2=one\n")
	p.logs.waitForCount(t, updatedRE, 1, p.exited)
	if got := answeredBy(); got != "two" {
		t.Fatalf("after the reload, %q answered, want two", got)
	}
	if one.Hits() != 1 || two.Hits() != 1 {
		t.Errorf("hits one=%d two=%d, want 1 each", one.Hits(), two.Hits())
	}
	var report failover.HealthReport
	resp, err := c.Get(p.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&report); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	requests := map[string]uint64{}
	for _, h := range report.Endpoints {
		requests[h.Name] = h.Requests
	}
	if requests["one"] != 1 || requests["two"] != 1 || len(requests) != 2 {
		t.Errorf("health after the reload: %v requests, want one: 1 (kept) and two: 1", requests)
	}
	if logs := p.logs.String(); strings.Contains(logs, firstKey) || strings.Contains(logs, secondKey) {
		t.Errorf("the output shows a key:\n%s", logs)
	}
}
