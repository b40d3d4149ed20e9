package main

import (
	"bytes"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// header prints what the demo is about to do.
func (d *demo) header() {
	var b bytes.Buffer
	fmt.Fprintf(&b, "failover demo: %d fake OpenAI-compatible upstreams on loopback, for %v.\n",
		len(d.ups), d.opts.Duration)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for i, u := range d.ups {
		when := ""
		if w := d.windows(i); len(w) > 0 {
			when = ": " + strings.Join(w, ", ")
		}
		fmt.Fprintf(tw, "  %s\tpriority %d\t%s%s\n", u.name, u.priority, u.trouble, when)
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "%d workers send about %d chat requests a second (every %s one streaming)\n"+
		"to %s, as an SDK does by default; the failover transport\n"+
		"sends each to the lowest priority that is up, and on to the next priority at\n"+
		"once when one fails. After %d failures in a row an endpoint's breaker opens;\n"+
		"%v later it lets a trial request through (BREAKER \"open 1.2s\": a trial in\n"+
		"1.2s). SENT and FAILED count attempts; OK counts the client's requests each\n"+
		"endpoint answered.\n\n",
		demoWorkers, demoRate, ordinal(demoStreamEvery), failover.DefaultClientBaseURL,
		demoFailureThreshold, roundDuration(d.openTimeout))
	_, _ = d.opts.Out.Write(b.Bytes())
}

// windows lists when upstream i is in trouble, such as "4.5s-7.5s".
func (d *demo) windows(i int) []string {
	var out []string
	from := -1.0
	for _, ev := range d.events {
		if ev.up != i {
			continue
		}
		trouble := ev.fault.Kind != fakeopenai.KindHealthy
		switch {
		case trouble && from < 0:
			from = ev.at
		case !trouble && from >= 0:
			out = append(out, d.span(from)+"-"+d.span(ev.at))
			from = -1
		}
	}
	if from >= 0 {
		out = append(out, "from "+d.span(from))
	}
	return out
}

// span formats a fraction of the run as a time since its start.
func (d *demo) span(frac float64) string {
	return roundDuration(time.Duration(frac * float64(d.opts.Duration))).String()
}

func ordinal(n int) string {
	switch n {
	case 2:
		return "second"
	case 3:
		return "third"
	}
	return fmt.Sprintf("%dth", n)
}

// roundDuration rounds to a tenth of a second above one second, and to a
// millisecond below.
func roundDuration(t time.Duration) time.Duration {
	if t >= time.Second {
		return t.Round(100 * time.Millisecond)
	}
	return t.Round(time.Millisecond)
}

// refresh draws the table about once a second until done is closed, and
// a last time then.
func (d *demo) refresh(done <-chan struct{}) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	lines := 0
	last := time.Now()
	for {
		select {
		case <-done:
			// Plain output already shows a frame of a moment ago.
			if d.opts.Live || time.Since(last) > 500*time.Millisecond {
				d.draw(&lines)
			}
			return
		case <-ticker.C:
			d.draw(&lines)
			last = time.Now()
		}
	}
}

// draw writes one frame of the table. Live, it first moves the cursor up
// over the previous frame (*lines long) and clears it; otherwise frames
// follow each other as plain lines.
func (d *demo) draw(lines *int) {
	var b bytes.Buffer
	if d.opts.Live && *lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\x1b[J", *lines)
	}
	frame := d.frame(time.Now())
	b.Write(frame)
	if !d.opts.Live {
		b.WriteByte('\n')
	}
	*lines = bytes.Count(frame, []byte("\n"))
	_, _ = d.opts.Out.Write(b.Bytes())
}

// frame renders the per-endpoint table and the client's figures at now,
// in less than 80 columns so that a terminal does not wrap its lines.
func (d *demo) frame(now time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "t=%v of %v\n", roundDuration(now.Sub(d.start)).Truncate(100*time.Millisecond), d.opts.Duration)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tPRIO\tUPSTREAM\tBREAKER\tCOOLDOWN\tSENT\tFAILED\tLATENCY\tOK\tSHARE")
	var total int64
	for _, u := range d.ups {
		total += u.answered.Load()
	}
	for i, h := range d.transport.Health() {
		u := d.ups[i]
		answered := u.answered.Load()
		share := "-"
		if total > 0 {
			share = fmt.Sprintf("%.0f%%", 100*float64(answered)/float64(total))
		}
		cooldown := "-"
		if left := h.CooldownUntil.Sub(now); !h.CooldownUntil.IsZero() && left > 0 {
			cooldown = roundDuration(left).String()
		}
		latency := "-"
		if h.Latency > 0 {
			latency = h.Latency.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n",
			h.Name, h.Priority, *u.now.Load(), d.breaker(h, now), cooldown, h.Requests, h.Failures, latency, answered, share)
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "client: %d sent, %d ok, %d after a failover, %d cut mid-stream, %d failed\n",
		d.sent.Load(), d.succeeded.Load(), d.failedOver(), d.cut.Load(), d.failed.Load())
	return b.Bytes()
}

// breaker describes an endpoint's breaker; an open one says when it lets a
// trial through.
func (d *demo) breaker(h failover.EndpointHealth, now time.Time) string {
	switch h.State {
	case failover.StateCoolingDown:
		return failover.StateClosed.String() // the cooldown has its column
	case failover.StateOpen:
		if left := h.StateSince.Add(d.openTimeout).Sub(now); left > 0 {
			return "open " + roundDuration(left).String()
		}
	}
	return h.State.String()
}

// printSummary prints the run's outcome.
func (d *demo) printSummary(s demoSummary) {
	var b bytes.Buffer
	if d.opts.Live {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "Summary after %v:\n", roundDuration(s.Elapsed))
	line := func(label string, n int64, note string) {
		fmt.Fprintln(&b, strings.TrimRight(fmt.Sprintf("  %-16s %6d  %s", label, n, note), " "))
	}
	line("requests sent:", s.Sent, fmt.Sprintf("(%d streaming)", s.Streaming))
	line("succeeded:", s.Succeeded, "")
	line("failovers:", s.FailedOver, "(answered after a failed attempt elsewhere)")
	line("cut mid-stream:", s.CutMidStream, "(its upstream died: too late to fail over)")
	line("failed:", s.Failed, "")
	fmt.Fprintln(&b, "  hits per endpoint:")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, e := range s.Endpoints {
		fmt.Fprintf(tw, "    %s\t%d reached it,\t%d answered by it\n", e.Name, e.Reached, e.Answered)
	}
	_ = tw.Flush()
	switch {
	case s.Failed > 0:
		fmt.Fprintf(&b, "%d request(s) failed.\n", s.Failed)
	case s.Succeeded == 0:
		fmt.Fprintln(&b, "No request was sent.")
	case s.CutMidStream > 0:
		fmt.Fprintf(&b, "Every request succeeded but %d stream(s) cut by a dying upstream.\n", s.CutMidStream)
	default:
		fmt.Fprintln(&b, "Every request succeeded, whichever upstream was in trouble.")
	}
	_, _ = d.opts.Out.Write(b.Bytes())
}
