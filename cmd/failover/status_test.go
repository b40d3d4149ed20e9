package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// TestProxyServesStatus checks that the proxy serves the status page
// where it serves /healthz, under the same rule (no proxy key asked), and
// that the API listener does not serve it when -admin-listen is given.
func TestProxyServesStatus(t *testing.T) {
	up := startUpstream(t, fakeopenai.WithName("up"))
	env := []string{"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_API_KEY_1=" + firstKey, "OPENAI_NAME_1=up", "FAILOVER_PROXY_KEY=" + proxyKey}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"same listener", nil},
		{"admin listener", []string{"-admin-listen", "127.0.0.1:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, env, tc.args...)
			if !strings.Contains(p.logs.String(), "status=http://"+strings.TrimPrefix(p.adminURL, "http://")+"/status") {
				t.Errorf("the listening line does not give the status page's URL:\n%s", p.logs)
			}
			c := newClient(t)
			resp, err := c.Get(p.adminURL + "/status")
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<tr data-endpoint="up" data-state="closed"`) {
				t.Errorf("/status: status %d, body:\n%s", resp.StatusCode, body)
			}
			for _, secret := range []string{firstKey, proxyKey} {
				if strings.Contains(body, secret) {
					t.Errorf("/status shows %q", secret)
				}
			}
			if p.adminURL != p.url {
				resp, err := c.Get(p.url + "/status")
				if err != nil {
					t.Fatal(err)
				}
				checkOpenAIError(t, resp, http.StatusNotFound, "unknown_url")
				resp.Body.Close()
			}
		})
	}
}
