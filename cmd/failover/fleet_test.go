package main

import (
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/failover-go/failover/internal/redistest"
)

// asCommandEnv, set to 1, makes the test binary run as the command itself
// (TestMain calls main), so that a test can start real proxy processes
// without building the command.
const asCommandEnv = "FAILOVER_TEST_AS_COMMAND"

// commandProcess is the command running in a process of its own.
type commandProcess struct {
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan int
	url    string
}

// startCommand runs "failover proxy args..." in a process of its own with
// the environment environ, stopped (SIGTERM) at the end of the test, and
// waits until it listens.
func startCommand(t *testing.T, environ []string, args ...string) *commandProcess {
	t.Helper()
	p := &commandProcess{logs: newLogBuffer(), exited: make(chan int, 1)}
	p.cmd = exec.Command(os.Args[0], append([]string{"proxy", "-listen", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = append(environ, asCommandEnv+"=1", "PATH="+os.Getenv("PATH"))
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exited <- p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(waitLimit):
			_ = p.cmd.Process.Kill()
			t.Errorf("a proxy process did not exit on SIGTERM; its output:\n%s", p.logs)
		}
	})
	m := p.logs.waitFor(t, listeningRE, p.exited)
	p.url = "http://" + m[1]
	return p
}

// TestProxyFleetSharesTheRateLimit: three proxy processes pointed at one
// Redis (-redis), each configured with OPENAI_MAX_RPS_1=20, send to that
// endpoint no more than the fleet's bound in any second, and everything
// else to the next endpoint; no request fails.
func TestProxyFleetSharesTheRateLimit(t *testing.T) {
	const n, r, b = 3, 20, 5
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	up, spill := startUpstream(t, fakeopenai.WithName("up")), startUpstream(t, fakeopenai.WithName("spill"))
	env := []string{
		"OPENAI_BASE_URL_1=" + up.URL(), "OPENAI_NAME_1=up", "OPENAI_MAX_RPS_1=20", "OPENAI_BURST_1=5",
		"OPENAI_BASE_URL_2=" + spill.URL(), "OPENAI_NAME_2=spill",
		"FAILOVER_REDIS_PREFIX=" + prefix,
	}
	var procs []*commandProcess
	for range n {
		procs = append(procs, startCommand(t, env, "-redis", url))
	}
	for _, p := range procs {
		if !strings.Contains(p.logs.String(), "shared state") || strings.Contains(p.logs.String(), "redis://") {
			t.Fatalf("the proxy's log does not say it shares its state (or shows the URL):\n%s", p.logs)
		}
	}
	client := newClient(t)
	stop := time.Now().Add(3 * time.Second)
	from := time.Now()
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for _, p := range procs {
		for range 3 {
			wg.Go(func() {
				for i := 0; i < 5000 && time.Now().Before(stop); i++ {
					ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/chat/completions", strings.NewReader(chatBody))
					resp, err := client.Do(req)
					sent.Add(1)
					if err != nil || resp.StatusCode != 200 {
						failed.Add(1)
					}
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					cancel()
				}
			})
		}
	}
	wg.Wait()
	to := time.Now()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), sent.Load())
	}
	most, got := up.MostWithin(time.Second, from, to), 0
	for _, req := range up.Requests() {
		if !req.At.Before(from) && req.At.Before(to) {
			got++
		}
	}
	// The README's bound over T seconds is R×T + B + N×L, each process
	// holding at most L = min(B, max(ceil(R/10), 2)). It counts requests
	// as Redis grants them; up counts them as they arrive, up to a
	// process's scheduling delay later, so a second at up spans a little
	// more of Redis's time: T is taken as 1.1 s (100 ms of delay, plenty
	// even on a loaded machine).
	limit := int(math.Ceil(r*1.1)) + b + n*min(b, max(int(math.Ceil(r/10.0)), 2))
	t.Logf("%d requests through %d proxies; up got %d, at most %d in a second (bound %d with every process on Redis; unshared it would take %d a second)",
		sent.Load(), n, got, most, limit, n*r)
	for _, p := range procs {
		resp, err := client.Get(p.url + "/metrics")
		if err == nil {
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cutOff := false
			for _, line := range strings.Split(string(metrics), "\n") {
				if strings.HasPrefix(line, "failover_shared_calls_total") || strings.HasPrefix(line, "failover_shared_degraded") {
					t.Log(line)
				}
				// A failed call (a slow Redis on a loaded machine) may have
				// cut the process off for a while: it then spent its local
				// share besides, as the README's bound says.
				if strings.HasPrefix(line, `failover_shared_calls_total{result="error"}`) && !strings.HasSuffix(line, " 0") {
					cutOff = true
				}
			}
			if cutOff {
				limit += int(math.Ceil(float64(r)/n)) + max(1, b/n)
			}
		}
	}
	if most > limit {
		t.Fatalf("up got %d requests in one second from the fleet, above its bound %d", most, limit)
	}
	if float64(got) < 0.5*r*to.Sub(from).Seconds() {
		t.Fatalf("up got only %d requests: the fleet did not use its budget", got)
	}
}
