package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
)

// Load of the demo: light enough for a laptop running other things.
const (
	demoWorkers = 8
	demoRate    = 40 // requests per second, all workers together
	// demoStreamEvery makes every third request a streaming one.
	demoStreamEvery = 3
	// demoRequestTimeout bounds one request, failover included.
	demoRequestTimeout = 15 * time.Second
	// demoFailureThreshold opens a breaker after this many consecutive
	// failures, so that a short run shows it.
	demoFailureThreshold = 3
)

// demoUsage is the help of "failover demo", before its flags.
const demoUsage = `Usage: failover demo [-duration 15s]

Starts three fake OpenAI-compatible upstreams on loopback, configured as the
README teaches: a primary (priority 1), a backup (priority 2) and a third
(priority 3). The primary dies mid-run and comes back, then throws 500s; the
backup throws 503s, then throttles with 429 and Retry-After. Chat requests
(some streaming) flow through one failover transport, from the primary to
the next priority whenever it fails, and each endpoint's health shows about
once a second. Needs no API key. Exits 0 when every request succeeded (or
was cut mid-stream, which no failover can mend), 1 otherwise.

Flags:
`

// runDemoCommand runs "failover demo".
func runDemoCommand(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := commandFlags("failover demo", demoUsage, stderr)
	duration := fs.Duration("duration", 15*time.Second, "how long to send requests")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 || *duration <= 0 {
		fmt.Fprintln(stderr, "failover demo: want only a positive -duration")
		return exitUsage
	}
	sum, err := runDemo(ctx, demoOptions{
		Duration: *duration,
		Out:      stdout,
		Live:     isTerminal(stdout, environ),
	})
	if err != nil {
		fmt.Fprintf(stderr, "failover demo: %v\n", err)
		return exitFailure
	}
	if sum.Failed > 0 || sum.Succeeded == 0 {
		return exitFailure
	}
	return exitOK
}

// isTerminal reports whether w is a character device (a terminal) and TERM
// does not say it cannot move the cursor.
func isTerminal(w io.Writer, environ []string) bool {
	f, ok := w.(*os.File)
	if !ok || lookupEnv(environ, "TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// demoOptions configure runDemo.
type demoOptions struct {
	// Duration is how long requests are started; those in flight at the
	// end run to completion.
	Duration time.Duration
	// Out receives the table and the summary.
	Out io.Writer
	// Live redraws the table in place with ANSI escapes (for a
	// terminal); otherwise each refresh is printed as plain lines.
	Live bool
}

// demoSummary is the outcome of a demo run.
type demoSummary struct {
	Elapsed time.Duration
	// Sent counts requests sent; Streaming those of them that streamed.
	Sent, Streaming int64
	// Succeeded counts requests answered in full with status 200.
	Succeeded int64
	// CutMidStream counts streaming requests whose stream began (status
	// 200) and then broke off: once the headers are through, no failover
	// can help.
	CutMidStream int64
	// Failed counts every other request: no response, or an error status.
	Failed int64
	// FailedOver counts requests answered after at least one failed
	// attempt (failover_requests_failed_over_total).
	FailedOver int64
	// Endpoints holds, per upstream, the requests that reached it and
	// those it answered.
	Endpoints []demoEndpointSummary
}

// demoEndpointSummary is one upstream's part of a demoSummary.
type demoEndpointSummary struct {
	Name     string
	Reached  int64 // requests that reached its handler (refused connections do not)
	Answered int64 // requests it answered in full for the client
}

// demoUpstream is one fake upstream of the demo.
type demoUpstream struct {
	name     string
	priority int
	trouble  string        // its kind of trouble, for the header
	latency  time.Duration // added to every answer
	srv      *fakeopenai.Server
	now      atomic.Pointer[string] // what it does now, for the table
	answered atomic.Int64
}

// demoEvent switches one upstream's behaviour at a fraction of the run.
type demoEvent struct {
	at    float64 // fraction of the duration
	up    int
	fault fakeopenai.Fault
	label string // what the upstream does from then on, at most 8 characters
}

// demoSchedule is the run's script, as fractions of its duration, so that
// even a short run shows every kind of trouble. The primary takes the
// traffic while it is up; when it fails, the backup takes it; when both
// are out, the third, which stays healthy, so that at every moment one
// upstream is healthy and not held off by an open breaker.
func demoSchedule(ups []*demoUpstream) []demoEvent {
	const primary, backup = 0, 1
	healthy := func(i int) fakeopenai.Fault { return fakeopenai.Fault{Delay: ups[i].latency} }
	status := func(i, code int) fakeopenai.Fault {
		return fakeopenai.StatusFault(code).WithDelay(ups[i].latency / 2)
	}
	throttle := func(i int) fakeopenai.Fault {
		return fakeopenai.RateLimited("1").WithDelay(ups[i].latency / 2)
	}
	return []demoEvent{
		{0.10, primary, fakeopenai.Refuse(), "DOWN"},      // the backup takes over
		{0.25, backup, status(backup, 503), "HTTP 503"},   // and fails too: the third
		{0.35, backup, healthy(backup), "healthy"},        // back after its breaker's trial
		{0.40, primary, healthy(primary), "back up"},      // back after its breaker's trial
		{0.60, primary, status(primary, 500), "HTTP 500"}, // the backup takes over
		{0.62, backup, throttle(backup), "HTTP 429"},      // and cools down: the third
		{0.68, primary, healthy(primary), "healthy"},
		{0.70, backup, healthy(backup), "healthy"},
	}
}

// demo is one run of the demo.
type demo struct {
	opts        demoOptions
	ups         []*demoUpstream
	events      []demoEvent
	transport   *failover.Transport
	client      *http.Client
	registry    *prometheus.Registry
	openTimeout time.Duration
	start       time.Time

	sent, streaming, succeeded, cut, failed atomic.Int64
}

// runDemo runs the demo for opts.Duration, or until ctx is done, and
// returns its summary. It starts and stops everything it needs.
func runDemo(ctx context.Context, opts demoOptions) (demoSummary, error) {
	d := &demo{opts: opts, registry: prometheus.NewRegistry()}
	endpoints := d.startUpstreams()
	defer func() {
		for _, u := range d.ups {
			u.srv.Close()
		}
	}()
	d.events = demoSchedule(d.ups)
	// An open breaker tries again after a sixth of the run (at most 2s),
	// so that a run shows open, half-open and closed again.
	d.openTimeout = min(2*time.Second, max(250*time.Millisecond, opts.Duration/6))

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = demoWorkers
	defer base.CloseIdleConnections()
	var err error
	d.transport, err = failover.New(failover.Config{
		Endpoints:  endpoints,
		Base:       base,
		Registerer: d.registry,
		Breaker: failover.BreakerConfig{
			FailureThreshold: demoFailureThreshold,
			OpenTimeout:      d.openTimeout,
		},
	})
	if err != nil {
		return demoSummary{}, err
	}
	defer d.transport.Close()
	// The calling code sends to OpenAI's own URL, as an SDK does by
	// default; the transport routes every request to the upstreams.
	d.client = &http.Client{Transport: d.transport}
	d.run(ctx)
	sum := d.summary()
	d.printSummary(sum)
	return sum, nil
}

// startUpstreams starts the demo's upstreams in the shape the README
// teaches: a primary, a backup of the next priority, and a third. It
// returns their endpoints.
func (d *demo) startUpstreams() []failover.Endpoint {
	specs := []struct {
		name, trouble string
		latency       time.Duration
	}{
		{"primary", "dies (refuses connections), comes back, then throws 500s", 20 * time.Millisecond},
		{"backup", "throws 503s, later throttles (429, Retry-After: 1)", 40 * time.Millisecond},
		{"third", "stays healthy: takes what the other two cannot", 30 * time.Millisecond},
	}
	endpoints := make([]failover.Endpoint, len(specs))
	for i, s := range specs {
		u := &demoUpstream{name: s.name, priority: i + 1, trouble: s.trouble, latency: s.latency,
			srv: fakeopenai.New(fakeopenai.WithName(s.name), fakeopenai.WithSeed(uint64(i+1)))}
		u.srv.SetFault(fakeopenai.Fault{Delay: s.latency})
		healthy := "healthy"
		u.now.Store(&healthy)
		d.ups = append(d.ups, u)
		endpoints[i] = failover.Endpoint{
			Name:     s.name,
			BaseURL:  u.srv.URL(),
			APIKey:   "sk-demo-" + s.name,
			Priority: u.priority,
			// A hanging upstream fails over after 5s instead of holding
			// the request until its deadline.
			Timeout: 5 * time.Second,
		}
	}
	return endpoints
}

// run sends the demo's requests, plays its script of faults and refreshes
// its table until its duration is over.
func (d *demo) run(ctx context.Context) {
	d.start = time.Now()
	d.header()
	runCtx, stop := context.WithDeadline(ctx, d.start.Add(d.opts.Duration))
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { d.script(runCtx) })
	var workers sync.WaitGroup
	limiter := rate.NewLimiter(demoRate, 1)
	for range demoWorkers {
		workers.Go(func() { d.work(runCtx, limiter) })
	}
	refreshDone := make(chan struct{})
	wg.Go(func() { d.refresh(refreshDone) })
	workers.Wait()
	close(refreshDone)
	wg.Wait()
}

// script applies the schedule's faults at their times until ctx is done.
func (d *demo) script(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for _, ev := range d.events {
		timer.Reset(time.Until(d.at(ev.at)))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		u := d.ups[ev.up]
		u.srv.SetFault(ev.fault)
		label := ev.label
		u.now.Store(&label)
	}
}

// at returns the moment of a fraction of the run.
func (d *demo) at(frac float64) time.Time {
	return d.start.Add(time.Duration(frac * float64(d.opts.Duration)))
}

// work sends requests at the shared rate until ctx is done. A request in
// flight then runs to its end, so that the run's end fails nothing.
func (d *demo) work(ctx context.Context, limiter *rate.Limiter) {
	for limiter.Wait(ctx) == nil {
		n := d.sent.Add(1)
		stream := n%demoStreamEvery == 0
		if stream {
			d.streaming.Add(1)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoRequestTimeout)
		name, result := d.chat(rctx, stream)
		cancel()
		switch result {
		case resultOK:
			d.succeeded.Add(1)
			for _, u := range d.ups {
				if u.name == name {
					u.answered.Add(1)
				}
			}
		case resultCut:
			d.cut.Add(1)
		default:
			d.failed.Add(1)
		}
	}
}

// demoResult is how one request ended.
type demoResult int

const (
	resultOK     demoResult = iota
	resultCut               // a stream began and broke off
	resultFailed            // no response, or an error status
)

// demoChatBody is the demo's chat completion request; %t is "stream".
const demoChatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"stream":%t}`

// chat sends one chat completion through the failover client and reads
// its answer to the end. It returns the name of the upstream that answered.
func (d *demo) chat(ctx context.Context, stream bool) (string, demoResult) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		failover.DefaultClientBaseURL+"/chat/completions", strings.NewReader(fmt.Sprintf(demoChatBody, stream)))
	if err != nil {
		return "", resultFailed
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return "", resultFailed
	}
	defer resp.Body.Close()
	name := resp.Header.Get("X-Fake-Upstream")
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return name, resultFailed
	}
	if !stream {
		body, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Contains(body, []byte(fakeopenai.Reply(name))) {
			return name, resultFailed
		}
		return name, resultOK
	}
	// A stream is complete when its last event, [DONE], arrived.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "data: [DONE]" {
			return name, resultOK
		}
	}
	return name, resultCut
}

// failedOver reads failover_requests_failed_over_total from the registry.
func (d *demo) failedOver() int64 {
	mfs, err := d.registry.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "failover_requests_failed_over_total" {
			var n float64
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
			return int64(n)
		}
	}
	return 0
}

// summary collects the run's figures.
func (d *demo) summary() demoSummary {
	s := demoSummary{
		Elapsed:      time.Since(d.start),
		Sent:         d.sent.Load(),
		Streaming:    d.streaming.Load(),
		Succeeded:    d.succeeded.Load(),
		CutMidStream: d.cut.Load(),
		Failed:       d.failed.Load(),
		FailedOver:   d.failedOver(),
	}
	for _, u := range d.ups {
		s.Endpoints = append(s.Endpoints, demoEndpointSummary{
			Name: u.name, Reached: u.srv.Hits(), Answered: u.answered.Load(),
		})
	}
	return s
}
