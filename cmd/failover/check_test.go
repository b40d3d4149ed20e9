package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/failover-go/failover/redisshare"
)

// Keys of the check tests; no output may show any of them.
const (
	goodKey    = "sk-check-good-key-0123456789"
	revokedKey = "sk-check-revoked-key-abcdefgh" // what the environment holds
	realKey    = "sk-check-current-key-zyxwvuts" // what the upstream wants
	downKey    = "sk-check-down-key-5555555555"
)

// checkFixture is an environment of five endpoints and a look-alike
// variable: good (healthy), revoked (its key refused with a 401),
// down (refusing connections), nomodels (no /models route), and off
// (disabled).
func checkFixture(t *testing.T) []string {
	t.Helper()
	good := startUpstream(t, fakeopenai.WithName("good"), fakeopenai.WithAPIKey(goodKey))
	revoked := startUpstream(t, fakeopenai.WithName("revoked"), fakeopenai.WithAPIKey(realKey))
	down := startUpstream(t, fakeopenai.WithName("down"))
	down.SetFault(fakeopenai.Refuse())
	noModels := startUpstream(t, fakeopenai.WithName("nomodels"), fakeopenai.WithoutModels())
	return []string{
		"OPENAI_BASE_URL_1=" + good.URL() + "?api-version=2024-10-21&sig=query-secret",
		"OPENAI_API_KEY_1=" + goodKey,
		"OPENAI_NAME_1=good",
		"OPENAI_BASE_URL_2=" + revoked.URL(),
		"OPENAI_API_KEY_2=" + revokedKey,
		"OPENAI_NAME_2=revoked",
		"OPENAI_BASE_URL_3=" + down.URL(),
		"OPENAI_API_KEY_3=" + downKey,
		"OPENAI_NAME_3=down",
		"OPENAI_BASE_URL_4=" + noModels.URL(),
		"OPENAI_NAME_4=nomodels",
		"OPENAI_BASE_URL_5=http://127.0.0.1:1/v1",
		"OPENAI_NAME_5=off",
		"OPENAI_ENABLED_5=false",
		"OPENAI_BASEURL_6=http://127.0.0.1:2/v1", // misspelt: ignored by failover
		"OPENAI_ORG_ID=org-unrelated",            // another tool's: no warning
	}
}

// checkNoSecret fails t if any output shows a key or the URL's query.
func checkNoSecret(t *testing.T, outputs ...string) {
	t.Helper()
	for _, out := range outputs {
		for _, secret := range []string{goodKey, revokedKey, realKey, downKey, "query-secret", "sk-ch"} {
			if strings.Contains(out, secret) {
				t.Errorf("the output shows %q:\n%s", secret, out)
			}
		}
	}
}

func TestCheckTable(t *testing.T) {
	env := checkFixture(t)
	code, stdout, stderr := runCommand(t, env, "check")
	if code != exitFailure {
		t.Errorf("exit code %d, want 1", code)
	}
	checkNoSecret(t, stdout, stderr)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^ENDPOINT +URL +PRIORITY +RESULT +LATENCY +MODELS +ERROR$`),
		regexp.MustCompile(`(?m)^good +http://127\.0\.0\.1:\d+/v1 +1 +ok +[\d.]+ms +1$`),
		regexp.MustCompile(`(?m)^revoked +http://\S+ +2 +FAILED +[\d.]+ms +- +key refused: 401 invalid_api_key: Incorrect API key provided: \[key\]\. `),
		regexp.MustCompile(`(?m)^down +http://\S+ +3 +FAILED +- +- +connection refused$`),
		regexp.MustCompile(`(?m)^nomodels +http://\S+ +4 +ok +[\d.]+ms +- +no /models route \(404\); -model would check a chat request$`),
		regexp.MustCompile(`(?m)^off +http://127\.0\.0\.1:1/v1 +5 +disabled +- +-$`),
		regexp.MustCompile(`(?m)^warning: OPENAI_BASEURL_6 is not read; did you mean OPENAI_BASE_URL_6\?$`),
		regexp.MustCompile(`(?m)^FAILED: 2 of 4 enabled endpoints failed\.$`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("the output does not match %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "OPENAI_ORG_ID") {
		t.Errorf("a warning for another tool's variable:\n%s", stdout)
	}
}

func TestCheckJSON(t *testing.T) {
	env := checkFixture(t)
	code, stdout, stderr := runCommand(t, env, "check", "-json")
	if code != exitFailure {
		t.Errorf("exit code %d, want 1", code)
	}
	checkNoSecret(t, stdout, stderr)
	var rep checkReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("the output is not JSON: %v\n%s", err, stdout)
	}
	if rep.Verdict != "failed" || rep.Passed != 2 || rep.Failed != 2 || rep.Disabled != 1 {
		t.Errorf("verdict %q, %d passed, %d failed, %d disabled; want failed, 2, 2, 1", rep.Verdict, rep.Passed, rep.Failed, rep.Disabled)
	}
	want := []struct {
		name, result, route string
		models              int // -1: none
		latency             bool
		errorPart           string
	}{
		{"good", "ok", "listed", 1, true, ""},
		{"revoked", "failed", "refused", -1, true, "key refused: 401 invalid_api_key"},
		{"down", "failed", "", -1, false, "connection refused"},
		{"nomodels", "ok", "absent", -1, true, ""},
		{"off", "disabled", "", -1, false, ""},
	}
	if len(rep.Endpoints) != len(want) {
		t.Fatalf("%d endpoints, want %d", len(rep.Endpoints), len(want))
	}
	for i, w := range want {
		got := rep.Endpoints[i]
		if got.Name != w.name || got.Result != w.result || got.ModelsRoute != w.route {
			t.Errorf("endpoint %d: %s %s %q, want %s %s %q", i, got.Name, got.Result, got.ModelsRoute, w.name, w.result, w.route)
		}
		if (got.Models == nil) != (w.models < 0) || got.Models != nil && *got.Models != w.models {
			t.Errorf("%s: models %v, want %d", w.name, got.Models, w.models)
		}
		if (got.LatencyMS != nil) != w.latency {
			t.Errorf("%s: latency %v, want one: %v", w.name, got.LatencyMS, w.latency)
		}
		if !strings.Contains(got.Error, w.errorPart) || (w.errorPart == "") != (got.Error == "") {
			t.Errorf("%s: error %q, want %q", w.name, got.Error, w.errorPart)
		}
		if strings.Contains(got.URL, "?") {
			t.Errorf("%s: URL %q has its query", w.name, got.URL)
		}
	}
	if len(rep.Warnings) != 1 || rep.Warnings[0].Variable != "OPENAI_BASEURL_6" || rep.Warnings[0].Suggestion != "OPENAI_BASE_URL_6" {
		t.Errorf("warnings %+v, want one for OPENAI_BASEURL_6", rep.Warnings)
	}
}

// TestCheckPasses checks the verdict and exit code when every enabled
// endpoint passes, and that -model sends one max_tokens 1 chat completion
// to that model on each.
func TestCheckPasses(t *testing.T) {
	good := startUpstream(t, fakeopenai.WithName("good"), fakeopenai.WithAPIKey(goodKey))
	noModels := startUpstream(t, fakeopenai.WithName("nomodels"), fakeopenai.WithoutModels())
	env := []string{
		"OPENAI_BASE_URL_1=" + good.URL(), "OPENAI_API_KEY_1=" + goodKey, "OPENAI_NAME_1=good",
		"OPENAI_BASE_URL_2=" + noModels.URL(), "OPENAI_NAME_2=nomodels",
	}
	code, stdout, stderr := runCommand(t, env, "check", "-model", "gpt-4o-mini")
	if code != exitOK {
		t.Errorf("exit code %d, want 0; stderr %s", code, stderr)
	}
	checkNoSecret(t, stdout, stderr)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^good +\S+ +1 +ok +[\d.]+ms +1 +ok [\d.]+ms$`),
		regexp.MustCompile(`(?m)^nomodels +\S+ +2 +ok +[\d.]+ms +- +ok [\d.]+ms +no /models route \(404\)$`),
		regexp.MustCompile(`(?m)^OK: 2 enabled endpoints passed\.$`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("the output does not match %q:\n%s", want, stdout)
		}
	}
	for _, up := range []*fakeopenai.Server{good, noModels} {
		var chats []string
		for _, r := range up.Requests() {
			if r.Method == http.MethodPost {
				chats = append(chats, r.Path+" "+string(r.Body))
			}
		}
		want := `/v1/chat/completions {"max_tokens":1,"messages":[{"content":"Say OK.","role":"user"}],"model":"gpt-4o-mini"}`
		if !slices.Equal(chats, []string{want}) {
			t.Errorf("%s got chat requests %q, want one: %s", up.Name(), chats, want)
		}
	}
}

// TestCheckFailures checks the error of an endpoint that fails in other
// ways: a chat request refused, a timeout, a base URL that is not an API.
func TestCheckFailures(t *testing.T) {
	chatRefused := startUpstream(t, fakeopenai.WithName("x"))
	hanging := startUpstream(t, fakeopenai.WithName("x"))
	hanging.SetFault(fakeopenai.Hang())
	page := startUpstream(t, fakeopenai.WithName("x"))
	page.SetFault(fakeopenai.StatusFault(http.StatusOK).WithBody("<html>a web site</html>"))
	for _, tc := range []struct {
		name string
		url  string
		args []string
		want string
	}{
		{"timeout", hanging.URL(), []string{"-timeout", "200ms"}, "timed out after 200ms waiting for the response"},
		{"not an API", page.URL(), nil, "GET /models answered 200 but not with a model list"},
		{"server error", "", nil, "GET /models: 503 service_unavailable: The engine is currently overloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url
			if url == "" {
				chatRefused.SetFault(fakeopenai.StatusFault(http.StatusServiceUnavailable))
				url = chatRefused.URL()
			}
			code, stdout, _ := runCommand(t, []string{"OPENAI_BASE_URL_1=" + url, "OPENAI_NAME_1=x"}, append([]string{"check", "-json"}, tc.args...)...)
			if code != exitFailure {
				t.Errorf("exit code %d, want 1", code)
			}
			var rep checkReport
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Endpoints) != 1 {
				t.Fatalf("output %s (%v)", stdout, err)
			}
			if got := rep.Endpoints[0].Error; !strings.Contains(got, tc.want) {
				t.Errorf("error %q, want %q", got, tc.want)
			}
			if !strings.Contains(stdout, `"warnings": []`) {
				t.Errorf("no empty list of warnings for scripts in:\n%s", stdout)
			}
		})
	}
}

// TestCheckBadConfiguration: a configuration that cannot run (no
// endpoint, a bad value, a duplicate name, every endpoint disabled) exits
// 2 with the problem named, on stderr and in -json's errors.
func TestCheckBadConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		mention string
	}{
		{"no endpoint", []string{"OPENAI_BASEURL_1=http://127.0.0.1:1/v1"}, "OPENAI_BASEURL_1 is not read; did you mean OPENAI_BASE_URL_1?"},
		{"bad URL", []string{"OPENAI_BASE_URL_1=ftp://example.com/v1", "OPENAI_API_KEY_1=" + goodKey}, "OPENAI_BASE_URL_1"},
		{"none enabled", []string{"OPENAI_BASE_URL_1=http://127.0.0.1:1/v1", "OPENAI_ENABLED_1=false", "OPENAI_BASE_URL_2=http://127.0.0.1:2/v1", "OPENAI_ENABLED_2=false"},
			"every endpoint has OPENAI_ENABLED_N=false; at least one must take requests"},
		{"duplicate name", []string{"OPENAI_BASE_URL_1=http://127.0.0.1:1/v1", "OPENAI_BASE_URL_2=http://127.0.0.1:2/v1", "OPENAI_NAME_1=a", "OPENAI_NAME_2=a", "OPENAI_API_KEY_2=" + goodKey}, "OPENAI_NAME_2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCommand(t, tc.env, "check")
			if code != exitUsage {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(stderr, "bad configuration") || !strings.Contains(stderr, tc.mention) {
				t.Errorf("stderr does not mention %q:\n%s", tc.mention, stderr)
			}
			checkNoSecret(t, stdout, stderr)

			code, stdout, stderr = runCommand(t, tc.env, "check", "-json")
			var rep checkReport
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("-json output %q is not JSON: %v", stdout, err)
			}
			if code != exitUsage || rep.Verdict != "bad-configuration" || len(rep.Errors) == 0 {
				t.Errorf("-json: exit %d, verdict %q, errors %q", code, rep.Verdict, rep.Errors)
			}
			if tc.name != "no endpoint" && !slices.ContainsFunc(rep.Errors, func(e string) bool { return strings.Contains(e, tc.mention) }) {
				t.Errorf("-json: errors %q do not mention %q", rep.Errors, tc.mention)
			}
			checkNoSecret(t, stdout, stderr)
		})
	}
}

func TestCheckFlags(t *testing.T) {
	for _, args := range [][]string{{"-timeout", "0s"}, {"-timeout", "x"}, {"extra"}} {
		if code, _, _ := runCommand(t, nil, append([]string{"check"}, args...)...); code != exitUsage {
			t.Errorf("check %q: exit code %d, want 2", args, code)
		}
	}
	code, _, stderr := runCommand(t, nil, "check", "-h")
	if code != exitOK || !strings.Contains(stderr, "billed") {
		t.Errorf("check -h: exit code %d; the help does not say -model is billed:\n%s", code, stderr)
	}
}

func TestLookAlikes(t *testing.T) {
	for _, tc := range []struct {
		name, suggestion string // suggestion "" for no warning
	}{
		{"OPENAI_BASE_URL_2", ""},
		{"OPENAI_API_KEY", ""},
		{"FAILOVER_PROXY_KEY", ""},
		{"OPENAI_API_KEY_01", ""}, // an error of ConfigFromEnviron, reported there
		{"OPENAI_ORG_ID", ""},
		{"OPENAI_PROJECT_ID", ""},
		{"OPENAI_LOG", ""},
		{"HOME", ""},
		{"OPENAI_BASEURL_2", "OPENAI_BASE_URL_2"},
		{"openai_api_key_1", "OPENAI_API_KEY_1"},
		{"OPENAI_API_KEY1", "OPENAI_API_KEY_1"},
		{"OPENAI_PRIORTY_3", "OPENAI_PRIORITY_3"},
		{"OPENAI_TIMEOUT", "OPENAI_TIMEOUT_1"},
		{"OPENAI_API_BASE_2", "OPENAI_BASE_URL_2"},
		{"OPENAI_MAX_RETRIES_1", "OPENAI_MAX_RETRIES"},
		{"OPENAI_MAXRETRIES", "OPENAI_MAX_RETRIES"},
		{"OPENAI_API_KEY_PRIMARY", "OPENAI_API_KEY_1"},
		{"FAILOVER_PROXYKEY", "FAILOVER_PROXY_KEY"},
	} {
		got := lookAlikes([]string{tc.name + "=v"})
		switch {
		case tc.suggestion == "" && len(got) != 0:
			t.Errorf("%s: warning %+v, want none", tc.name, got)
		case tc.suggestion != "" && (len(got) != 1 || got[0].Suggestion != tc.suggestion || !strings.HasPrefix(got[0].Message, tc.name+" is not read")):
			t.Errorf("%s: warnings %+v, want one suggesting %s", tc.name, got, tc.suggestion)
		}
	}
}

// TestEnvNamesAreRead guards the names check knows against drift from
// failover.ConfigFromEnviron: a bad value in each is an error naming it.
func TestEnvNamesAreRead(t *testing.T) {
	bad := map[string]string{
		"OPENAI_BASE_URL": "ftp://x", "OPENAI_API_KEY": "a\nb", "OPENAI_PRIORITY": "x",
		"OPENAI_WEIGHT": "-1", "OPENAI_MAX_RPS": "x", "OPENAI_BURST": "x", "OPENAI_TIMEOUT": "x",
		"OPENAI_ENABLED": "maybe", "OPENAI_NAME": "\xff", "OPENAI_FALLBACK_ENABLED": "maybe",
		"OPENAI_MAX_RETRIES": "x", "OPENAI_BACKOFF_MS": "x", "OPENAI_FORWARD_AUTH": "maybe",
		"OPENAI_FIRST_TOKEN_TIMEOUT": "x", "OPENAI_STREAM_IDLE_TIMEOUT": "x",
		"OPENAI_PROBE_INTERVAL": "10ms", "OPENAI_SLOW_START": "x", "OPENAI_BALANCER": "fastest",
		"OPENAI_AFFINITY": "user", "OPENAI_PROBE_MODEL": "\xff",
		"OPENAI_MODELS": "a,,b", "OPENAI_API_TYPE": "bedrock", "OPENAI_API_VERSION": "v/1",
		"OPENAI_MAX_TPM": "x", "OPENAI_TOKEN_BURST": "-1",
	}
	check := func(name string) {
		t.Helper()
		v, ok := bad[strings.TrimSuffix(name, "_1")]
		if !ok {
			t.Fatalf("no bad value for %s", name)
		}
		_, err := failover.ConfigFromEnviron([]string{"OPENAI_API_KEY_9=k", name + "=" + v})
		if err == nil || !strings.Contains(err.Error(), name+":") {
			t.Errorf("%s=%q: error %v, want one naming it", name, v, err)
		}
	}
	for _, p := range envPerEndpoint {
		check(p + "_1")
	}
	for _, g := range envGlobals {
		if g != envProxyKey && g != redisshare.EnvURL && g != redisshare.EnvPrefix { // the proxy's, not ConfigFromEnviron's
			check(g)
		}
	}
}

// TestCheckEnvFile: -env-file's variables override the environment's, as
// the proxy reads them; a file with an error is a bad configuration, named
// by line and never by value.
func TestCheckEnvFile(t *testing.T) {
	good := startUpstream(t, fakeopenai.WithName("good"), fakeopenai.WithAPIKey(goodKey))
	dir := t.TempDir()
	file := filepath.Join(dir, "deploy.env")
	// The environment names a dead endpoint; the file replaces its URL and
	// key with the good one's.
	env := []string{"OPENAI_BASE_URL_1=http://127.0.0.1:1/v1", "OPENAI_API_KEY_1=sk-wrong-SECRET", "OPENAI_NAME_1=good"}
	writeEnvFile(t, file, "OPENAI_BASE_URL_1="+good.URL()+"\nOPENAI_API_KEY_1="+goodKey+"\n")
	code, stdout, stderr := runCommand(t, env, "check", "-env-file", file)
	if code != exitOK || !strings.Contains(stdout, "OK: 1 enabled endpoint passed.") {
		t.Errorf("exit code %d, want 0 with the file's endpoint:\n%s%s", code, stdout, stderr)
	}
	checkNoSecret(t, stdout, stderr)

	writeEnvFile(t, file, "OPENAI_BASE_URL_1="+good.URL()+"\nOPENAI_API_KEY_1 "+goodKey+"\n")
	code, stdout, stderr = runCommand(t, env, "check", "-env-file", file)
	if code != exitUsage || !strings.Contains(stderr, "line 2") {
		t.Errorf("exit code %d, want 2 naming line 2:\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, goodKey) {
		t.Errorf("the output shows the file's key:\n%s%s", stdout, stderr)
	}
}

// TestCheckModels: an endpoint with OPENAI_MODELS_N is still asked for its
// own /models (not answered from the configuration), and -model sends the
// chat probe under the name its Models give, or fails the endpoint whose
// list lacks the model; an Azure endpoint is probed on its own paths with
// its api-key.
func TestCheckModels(t *testing.T) {
	router := startUpstream(t, fakeopenai.WithName("router"))
	local := startUpstream(t, fakeopenai.WithName("local"))
	az := startUpstream(t, fakeopenai.WithName("az"), fakeopenai.WithAzure(fakeopenai.Azure{APIKey: goodKey, APIVersion: "2024-10-21", Deployments: []string{"prod-mini"}}))
	env := []string{
		"OPENAI_BASE_URL_1=" + router.URL(), "OPENAI_NAME_1=router", "OPENAI_MODELS_1=gpt-4o-mini=openai/gpt-4o-mini",
		"OPENAI_BASE_URL_2=" + local.URL(), "OPENAI_NAME_2=local", "OPENAI_MODELS_2=llama",
		"OPENAI_BASE_URL_3=" + az.URL(), "OPENAI_NAME_3=az", "OPENAI_API_KEY_3=" + goodKey,
		"OPENAI_API_TYPE_3=azure", "OPENAI_API_VERSION_3=2024-10-21", "OPENAI_MODELS_3=gpt-4o-mini=prod-mini",
	}
	code, stdout, stderr := runCommand(t, env, "check", "-model", "gpt-4o-mini")
	if code != exitFailure {
		t.Errorf("exit code %d, want 1 (local does not serve the model); stderr %s", code, stderr)
	}
	checkNoSecret(t, stdout, stderr)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^router +\S+ +1 +ok +[\d.]+ms +1 +ok [\d.]+ms$`),
		regexp.MustCompile(`(?m)^local +\S+ +2 +FAILED +[\d.]+ms +1 +FAILED +chat gpt-4o-mini: failover: no endpoint serves model "gpt-4o-mini"$`),
		regexp.MustCompile(`(?m)^az +\S+ +3 +ok +[\d.]+ms +1 +ok [\d.]+ms$`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("the output does not match %q:\n%s", want, stdout)
		}
	}
	for _, tc := range []struct {
		up    *fakeopenai.Server
		paths []string
		model string
	}{
		{router, []string{"GET /v1/models", "POST /v1/chat/completions"}, "openai/gpt-4o-mini"},
		{local, []string{"GET /v1/models"}, ""},
		{az, []string{"GET /openai/models", "POST /openai/deployments/prod-mini/chat/completions"}, "prod-mini"},
	} {
		var paths []string
		for _, r := range tc.up.Requests() {
			paths = append(paths, r.Method+" "+r.Path)
			if r.Method == http.MethodPost && !strings.Contains(string(r.Body), `"model":"`+tc.model+`"`) {
				t.Errorf("%s got %s, want the model as %q", tc.up.Name(), r.Body, tc.model)
			}
		}
		if !slices.Equal(paths, tc.paths) {
			t.Errorf("%s got %q, want %q", tc.up.Name(), paths, tc.paths)
		}
	}
}
