package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// summaryFigure returns a figure of the demo's summary, such as
// "  succeeded:   120".
func summaryFigure(t *testing.T, out, label string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(label) + `:\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in the summary:\n%s", label, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestDemo(t *testing.T) {
	code, out, stderr := runCommand(t, nil, "demo", "-duration", "3s")
	if code != exitOK {
		t.Errorf("exit code %d, want 0; stderr %q; output:\n%s", code, stderr, out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("the output to a non-terminal holds escape codes")
	}
	for _, want := range []string{"ENDPOINT", "alpha", "bravo", "charlie", "client:", "Summary after"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	sent := summaryFigure(t, out, "requests sent")
	succeeded := summaryFigure(t, out, "succeeded")
	if succeeded == 0 || succeeded > sent {
		t.Errorf("%d of %d requests succeeded", succeeded, sent)
	}
	if n := summaryFigure(t, out, "failovers"); n < 1 {
		t.Errorf("%d failovers, want at least one:\n%s", n, out)
	}
	reached := regexp.MustCompile(`(?m)^    (\w+)\s+(\d+) reached it`).FindAllStringSubmatch(out, -1)
	busy := 0
	for _, m := range reached {
		if n, _ := strconv.Atoi(m[2]); n > 0 {
			busy++
		}
	}
	if len(reached) != 3 || busy < 2 {
		t.Errorf("hits on %d of %d endpoints, want more than one:\n%s", busy, len(reached), out)
	}
}

// TestDemoLive runs the demo briefly as on a terminal: each frame but the
// first moves the cursor back over the previous one.
func TestDemoLive(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	sum, err := runDemo(ctx, demoOptions{Duration: 2100 * time.Millisecond, Out: &out, Live: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded == 0 || sum.Failed != 0 {
		t.Errorf("summary %+v: want successes and no failure", sum)
	}
	if !regexp.MustCompile(`\x1b\[\d+A\x1b\[J`).Match(out.Bytes()) {
		t.Errorf("no redraw in the live output:\n%q", out.String())
	}
}

// TestDemoStopsOnSignal ends the demo early, as SIGINT does: it prints its
// summary and fails no request.
func TestDemoStopsOnSignal(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sum, err := runDemo(ctx, demoOptions{Duration: time.Hour, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed != 0 || !strings.Contains(out.String(), "Summary after") {
		t.Errorf("summary %+v, output:\n%s", sum, out.String())
	}
}
