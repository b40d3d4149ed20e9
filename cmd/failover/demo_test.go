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
	for _, want := range []string{"ENDPOINT  PRIO", "client:", "Summary after"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	// The shape the README teaches: a primary, a backup of the next
	// priority, and a third.
	for _, want := range []string{"primary", "backup", "third"} {
		if !regexp.MustCompile(`(?m)^  ` + want + ` +priority \d`).MatchString(out) {
			t.Errorf("the header does not list %s with its priority:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^  primary +priority 1 .*\n  backup +priority 2 .*\n  third +priority 3 `).MatchString(out) {
		t.Errorf("the header does not list primary, backup and third at priorities 1, 2 and 3:\n%s", out)
	}
	sent := summaryFigure(t, out, "requests sent")
	succeeded := summaryFigure(t, out, "succeeded")
	if succeeded == 0 || succeeded > sent {
		t.Errorf("%d of %d requests succeeded", succeeded, sent)
	}
	if n := summaryFigure(t, out, "failovers"); n < 1 {
		t.Errorf("%d failovers, want at least one:\n%s", n, out)
	}
	// The script takes out the primary, then the backup as well: each of
	// the three answers some of the requests.
	answered := regexp.MustCompile(`(?m)^    (\w+)\s+\d+ reached it,\s+(\d+) answered by it$`).FindAllStringSubmatch(out, -1)
	if len(answered) != 3 {
		t.Fatalf("%d endpoints in the summary, want 3:\n%s", len(answered), out)
	}
	for _, m := range answered {
		if n, _ := strconv.Atoi(m[2]); n == 0 {
			t.Errorf("%s answered no request:\n%s", m[1], out)
		}
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
