package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/failover-go/failover"
)

// browserNames are the programs findBrowser looks for, in order.
var browserNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless-shell"}

// findBrowser returns the path of a Chromium-based browser. Without one it
// skips the test, saying so, or fails it in CI (CI set), where .ci/run
// installs Debian's chromium.
func findBrowser(t *testing.T) string {
	t.Helper()
	for _, name := range browserNames {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("no Chromium-based browser on PATH (looked for %s)", strings.Join(browserNames, ", "))
	if os.Getenv("CI") != "" {
		t.Fatalf("%s, and CI is set: .ci/run installs Debian's chromium", msg)
	}
	t.Skipf("%s: install one (apt-get install chromium) to run the status page's browser test", msg)
	return ""
}

// startBrowser starts a headless Chromium for the test, with a fresh
// profile and no background connections (this machine's network refuses
// them), and returns a context for chromedp actions in its first tab,
// bounded by requestTimeout.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := findBrowser(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 720),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTimeout := context.WithTimeout(allocCtx, requestTimeout)
	ctx, cancelTab := chromedp.NewContext(ctx)
	t.Cleanup(func() {
		cancelTab()
		cancelTimeout()
		cancelAlloc() // waits for the browser to exit
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// artifactPath returns where to save a test artefact named name: the
// test's artifact directory with go test -artifacts, else the system's
// temporary directory, where it outlives the test for a person to open.
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return filepath.Join(t.ArtifactDir(), name)
	}
	return filepath.Join(os.TempDir(), name)
}

// screenshot saves a screenshot of the page to the artefact name and logs
// its path.
func screenshot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := artifactPath(t, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("saving the screenshot: %v", err)
	}
	t.Logf("screenshot of the status page: %s", path)
}

// eval evaluates a JavaScript expression in the page and returns its value.
func eval[T any](ctx context.Context, t *testing.T, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitUntil polls a JavaScript expression until it is true, within a
// minute.
func waitUntil(ctx context.Context, t *testing.T, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(time.Minute))); err != nil {
		t.Fatalf("waiting until %s: %v", expr, err)
	}
}

// rowJS returns a JavaScript expression reading expr of the status page's
// row of endpoint name (bound as row).
func rowJS(name, expr string) string {
	return fmt.Sprintf(`(function () { var row = document.querySelector('tr[data-endpoint=%q]'); return row ? %s : null; })()`, name, expr)
}

// refreshesJS counts the page's refreshes by its script.
const refreshesJS = `Number(document.getElementById("status").dataset.refreshes)`

// TestStatusPageInBrowser loads the proxy's /status in a real browser while
// the first endpoint fails: its row shows open and the second's closed,
// coloured apart; the script refreshes the page and the counts move; it is
// readable on a phone's width; and with the script off, the page served is
// complete.
func TestStatusPageInBrowser(t *testing.T) {
	ctx := startBrowser(t)
	u := newUpstreams(t, first500.fault)
	u.cfg.Breaker = failover.BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Hour}
	// The first, once open, is probed: an hour on, as far as the test goes.
	u.cfg.Probe = failover.ProbeConfig{Interval: time.Hour}
	u.cfg.Balancer = failover.BalancerLeastLatency
	base := startFailoverProxy(t, u.cfg)
	statusURL := strings.TrimSuffix(base, "/v1") + "/status"
	api := openAIGoViaProxy(t, base, sdkKey)
	chat := func() {
		t.Helper()
		if _, err := api.Chat.Completions.New(testContext(t), openAIGoChat); err != nil {
			t.Fatalf("chat through the proxy: %v", err)
		}
	}
	chat() // the first answers 500, its breaker opens; the second answers

	if err := chromedp.Do(ctx, chromedp.Navigate(statusURL), chromedp.WaitVisible(chromedp.CSS("#endpoints"))); err != nil {
		t.Fatalf("loading %s: %v", statusURL, err)
	}
	if n := eval[int](ctx, t, refreshesJS); n != 0 {
		t.Errorf("%d refreshes as served, want 0", n)
	}
	first := eval[string](ctx, t, rowJS("first", "row.dataset.state"))
	second := eval[string](ctx, t, rowJS("second", "row.dataset.state"))
	if first != "open" || second != "closed" {
		t.Errorf("rows first %q, second %q; want open, closed", first, second)
	}
	badge := `getComputedStyle(row.querySelector('.badge')).backgroundColor`
	firstColour, secondColour := eval[string](ctx, t, rowJS("first", badge)), eval[string](ctx, t, rowJS("second", badge))
	if firstColour == secondColour || firstColour == "" {
		t.Errorf("the open and closed badges are coloured alike: %q, %q", firstColour, secondColour)
	}

	// Wait for a refresh, note the second's requests, send more, and wait
	// for a later refresh to show them.
	requestsJS := rowJS("second", `Number(row.querySelector('[data-field="requests"]').textContent)`)
	waitUntil(ctx, t, refreshesJS+" >= 1")
	before := eval[int](ctx, t, requestsJS)
	refreshes := eval[int](ctx, t, refreshesJS)
	chat()
	chat()
	waitUntil(ctx, t, fmt.Sprintf("%s > %d && %s > %d", refreshesJS, refreshes, requestsJS, before))
	if after := eval[int](ctx, t, requestsJS); after != before+2 {
		t.Errorf("the second's requests went from %d to %d after two more chats, want %d", before, after, before+2)
	}
	if state := eval[string](ctx, t, rowJS("first", "row.dataset.state")); state != "open" {
		t.Errorf("after a refresh the first row shows %q, want open", state)
	}
	if stale := eval[bool](ctx, t, `document.getElementById("stale").hidden`); !stale {
		t.Error("the page says its refresh failed")
	}
	// The script's cells of the healing features, as the server renders
	// them (TestStatusHealCells checks the server's).
	cellJS := func(name, field string) string {
		return rowJS(name, `row.querySelector('[data-field="`+field+`"]').textContent`)
	}
	if probe := eval[string](ctx, t, cellJS("first", "probe")); !strings.HasPrefix(probe, "next in ") {
		t.Errorf("after a refresh the first row's probe shows %q, want its next probe (an hour on, and up to a tenth more)", probe)
	}
	if probe := eval[string](ctx, t, cellJS("second", "probe")); probe != "-" {
		t.Errorf("the second row's probe shows %q, want -", probe)
	}
	if est := eval[string](ctx, t, cellJS("second", "latency_estimate")); !strings.HasSuffix(est, "ms") {
		t.Errorf("the second row's latency estimate shows %q, want milliseconds", est)
	}
	screenshot(ctx, t, "failover-status-page.png")

	t.Run("phone", func(t *testing.T) {
		if err := chromedp.Do(ctx,
			chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
			chromedp.Reload(),
			chromedp.WaitVisible(chromedp.CSS("#endpoints")),
		); err != nil {
			t.Fatal(err)
		}
		if eval[bool](ctx, t, `document.documentElement.scrollWidth > window.innerWidth`) {
			t.Error("the page is wider than a phone's screen")
		}
		if d := eval[string](ctx, t, `getComputedStyle(document.querySelector('thead')).display`); d != "none" {
			t.Errorf("the table head shows (display %q) on a phone, want one card per endpoint", d)
		}
		screenshot(ctx, t, "failover-status-page-phone.png")
	})

	t.Run("script off", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		if err := chromedp.Do(tab); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(tab, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(tab, chromedp.Navigate(statusURL), chromedp.WaitVisible(chromedp.CSS("#endpoints"))); err != nil {
			t.Fatal(err)
		}
		mode, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#mode")))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(mode, "Reloads every") {
			t.Errorf("with the script off the page says %q, want that it reloads", mode)
		}
		// DevTools evaluation still runs: it reads what the server rendered.
		if n := eval[int](tab, t, `document.querySelectorAll("#endpoints > tr").length`); n != 2 {
			t.Errorf("%d rows with the script off, want 2", n)
		}
		if state := eval[string](tab, t, rowJS("first", "row.dataset.state")); state != "open" {
			t.Errorf("with the script off the first row shows %q, want open", state)
		}
		probe := eval[string](tab, t, rowJS("first", `row.querySelector('[data-field="probe"]').textContent`))
		if !strings.HasPrefix(probe, "next in ") {
			t.Errorf("with the script off the first row's probe shows %q, want its next probe (an hour on, and up to a tenth more)", probe)
		}
	})
}
