package failover

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/failover-go/failover/internal/fakeopenai"
)

// Chaos test parameters. The run is about chaosRequests requests from
// chaosClients goroutines while the schedule changes the faults every
// chaosPhase.
const (
	chaosSeed     = 20261126
	chaosClients  = 40
	chaosRequests = 5000
	chaosPhase    = 200 * time.Millisecond
	// chaosTimeout is each endpoint's per-attempt timeout, so that hangs
	// fail over. On this class of machine (two shared cores, -race, 40
	// clients) a healthy upstream's headers were measured to take up to
	// 330ms under contention: a tighter timeout makes healthy endpoints
	// fail, and the test flaky.
	chaosTimeout = 750 * time.Millisecond
	// chaosSettle is how many phases an endpoint stays healthy before it
	// becomes the one the schedule keeps healthy (the anchor). It must
	// outlast everything an earlier fault leaves behind on a now healthy
	// endpoint: attempts hung before the switch time out after
	// chaosTimeout and may open its breaker, which stays open for
	// chaosOpenTimeout before a trial closes it; a cooldown lasts at most
	// chaosMaxCooldown. 750ms + 300ms + trial < 7 × 200ms, with a margin.
	chaosSettle      = 7
	chaosOpenTimeout = 300 * time.Millisecond
	chaosMaxCooldown = 500 * time.Millisecond
	// chaosRequestTimeout bounds one request of the run: far above what
	// any request needs (MaxWait is 10s), it only stops a hung test.
	chaosRequestTimeout = 30 * time.Second
	// chaosHeapBound bounds the growth of the live heap over the run. What
	// the run may legitimately leave behind is O(endpoints): breaker and
	// limiter state, lazily created metric children, the base transport's
	// (closed) connection pool maps, runtime caches: well under 1 MiB. A
	// leak of anything kept per request (a request, a response, a header
	// map, a body buffer, a timer or a context: each several hundred
	// bytes to kilobytes) over the run's ~7,000 attempts would pass 4 MiB.
	chaosHeapBound = 4 << 20
)

// chaosEndpoint is one upstream of the chaos test.
type chaosEndpoint struct {
	srv      *fakeopenai.Server
	name     string
	key      string
	priority int
	maxRPS   float64
	burst    int
}

// chaosFault is one kind of fault the schedule sets.
type chaosFault struct {
	name string
	make func() fakeopenai.Fault
	// cuts is true for a fault that may end a response already under way
	// (a cut stream, or a refusal, which closes open connections).
	cuts bool
}

func chaosFaults() []chaosFault {
	return []chaosFault{
		{name: "healthy", make: fakeopenai.Healthy},
		{name: "refuse", make: fakeopenai.Refuse, cuts: true},
		{name: "hang", make: fakeopenai.Hang},
		{name: "reset", make: fakeopenai.Reset},
		{name: "500", make: func() fakeopenai.Fault { return fakeopenai.StatusFault(500) }},
		{name: "502", make: func() fakeopenai.Fault { return fakeopenai.StatusFault(502) }},
		{name: "503", make: func() fakeopenai.Fault { return fakeopenai.StatusFault(503) }},
		{name: "504", make: func() fakeopenai.Fault { return fakeopenai.StatusFault(504) }},
		{name: "429 retry-after 1", make: func() fakeopenai.Fault { return fakeopenai.RateLimited("1") }},
		{name: "429 retry-after date", make: func() fakeopenai.Fault {
			return fakeopenai.RateLimited(time.Now().Add(time.Second).UTC().Format(http.TimeFormat))
		}},
		{name: "429 retry-after-ms", make: func() fakeopenai.Fault { return fakeopenai.RateLimitedMs(150) }},
		{name: "429 none", make: func() fakeopenai.Fault { return fakeopenai.StatusFault(429) }},
		{name: "401", make: func() fakeopenai.Fault { return fakeopenai.StatusFault(401) }},
		{name: "stream cut", make: func() fakeopenai.Fault { return fakeopenai.StreamCut(2) }, cuts: true},
		{name: "slow drip", make: func() fakeopenai.Fault { return fakeopenai.SlowDrip(5 * time.Millisecond) }},
		{name: "random 500", make: func() fakeopenai.Fault { return fakeopenai.Random(0.3, fakeopenai.StatusFault(500)) }},
		{name: "random reset", make: func() fakeopenai.Fault { return fakeopenai.Random(0.5, fakeopenai.Reset()) }},
		{name: "random cut", make: func() fakeopenai.Fault { return fakeopenai.Random(0.3, fakeopenai.StreamCut(1)) }, cuts: true},
	}
}

// chaosPhaseRec is one phase of the schedule as it ran.
type chaosPhaseRec struct {
	start  time.Time
	faults []int // index into chaosFaults, per endpoint
	anchor int
}

// chaosSchedule generates the seeded schedule. One endpoint, the anchor,
// is always healthy and has been for at least chaosSettle phases; the
// others get random faults. Every so often a successor is chosen and kept
// healthy for chaosSettle phases, then becomes the anchor, so that every
// endpoint, of either priority, spends time faulty.
type chaosSchedule struct {
	rng       *rand.Rand
	n         int
	kinds     int
	anchor    int
	tenure    int
	successor int
	succRun   int
}

func newChaosSchedule(seed uint64, endpoints, kinds int) *chaosSchedule {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	return &chaosSchedule{rng: rng, n: endpoints, kinds: kinds, anchor: rng.IntN(endpoints), successor: -1}
}

// next returns the faults of the next phase and its anchor.
func (s *chaosSchedule) next() (faults []int, anchor int) {
	s.tenure++
	if s.successor < 0 && s.tenure >= 3 && s.rng.IntN(2) == 0 {
		s.successor = (s.anchor + 1 + s.rng.IntN(s.n-1)) % s.n
		s.succRun = 0
	}
	faults = make([]int, s.n)
	for i := range faults {
		if i != s.anchor && i != s.successor {
			faults[i] = s.rng.IntN(s.kinds) // 0 is healthy
		}
	}
	anchor = s.anchor
	if s.successor >= 0 {
		s.succRun++
		if s.succRun >= chaosSettle {
			s.anchor, s.successor, s.tenure = s.successor, -1, 0
		}
	}
	return faults, anchor
}

// grantClock is the transport's clock in the chaos test. It remembers, per
// goroutine, its last reading. When the goroutine then hands an attempt to
// the base transport, that reading is the one the endpoint's rate limiter
// took the attempt's token at: the transport reads no clock between
// choosing an endpoint and sending to it (sendRecorder counts any attempt
// sent without a reading since the last, and the test fails if there is
// one). Checking the limiter against these readings rather than against
// the send times leaves out the scheduling delay between the two, which on
// this loaded machine under -race was measured at up to 400ms, and which
// no client-side limiter can control.
type grantClock struct {
	mu    sync.Mutex
	last  map[uint64]time.Time
	epoch time.Time
}

// since and sleep make grantClock the transport's clock. since reads the
// monotonic clock only, and records nothing: the transport reads it when
// it sends an attempt, after the limiter's grant.
func (c *grantClock) since() time.Duration { return time.Since(c.epoch) }

func (c *grantClock) sleep(ctx context.Context, d time.Duration) error {
	return newRealClock().sleep(ctx, d)
}

func (c *grantClock) now() time.Time {
	now := time.Now()
	g := goroutineID()
	c.mu.Lock()
	c.last[g] = now
	c.mu.Unlock()
	return now
}

// take returns and forgets the calling goroutine's last reading.
func (c *grantClock) take() (time.Time, bool) {
	g := goroutineID()
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.last[g]
	delete(c.last, g)
	return t, ok
}

// goroutineID returns the calling goroutine's id, from the first line of
// its stack trace ("goroutine 42 [running]:"), as goleak reads it.
func goroutineID() uint64 {
	var buf [32]byte
	n := runtime.Stack(buf[:], false)
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:n]), "goroutine "), " ")
	v, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		panic(fmt.Sprintf("cannot read the goroutine id from %q", buf[:n]))
	}
	return v
}

// sendRecorder is a base RoundTripper that records, per host, when each
// attempt was handed to it and the clock reading its endpoint's limiter
// granted it at, then passes it to base.
type sendRecorder struct {
	base     http.RoundTripper
	clock    *grantClock
	mu       sync.Mutex
	sent     map[string][]time.Time
	granted  map[string][]time.Time
	unpaired int // attempts with no clock reading since the goroutine's last one
	// slowestOK is the longest wait for the headers of a 200 response.
	slowestOK atomic.Int64
}

func newSendRecorder(base http.RoundTripper, clock *grantClock) *sendRecorder {
	return &sendRecorder{base: base, clock: clock, sent: map[string][]time.Time{}, granted: map[string][]time.Time{}}
}

func (r *sendRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	now := time.Now()
	grant, ok := r.clock.take()
	r.mu.Lock()
	r.sent[req.URL.Host] = append(r.sent[req.URL.Host], now)
	if ok {
		r.granted[req.URL.Host] = append(r.granted[req.URL.Host], grant)
	} else {
		r.unpaired++
	}
	r.mu.Unlock()
	resp, err := r.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusOK {
		d := int64(time.Since(now))
		for {
			old := r.slowestOK.Load()
			if d <= old || r.slowestOK.CompareAndSwap(old, d) {
				break
			}
		}
	}
	return resp, err
}

// times returns the sorted send times and limiter readings of host.
func (r *sendRecorder) times(host string) (sent, granted []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sent, granted = slices.Clone(r.sent[host]), slices.Clone(r.granted[host])
	slices.SortFunc(sent, time.Time.Compare)
	slices.SortFunc(granted, time.Time.Compare)
	return sent, granted
}

func (r *sendRecorder) count(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent[host])
}

// maxInWindow returns the largest number of times (sorted) within any
// closed interval of length w, and where that interval starts.
func maxInWindow(times []time.Time, w time.Duration) (most int, at time.Time) {
	j := 0
	for i := range times {
		for j < len(times) && times[j].Sub(times[i]) <= w {
			j++
		}
		if j-i > most {
			most, at = j-i, times[i]
		}
	}
	return most, at
}

// chaosOutcome is what one request of the run came to.
type chaosOutcome struct {
	stream   bool
	start    time.Time
	end      time.Time
	status   int
	upstream string // X-Fake-Upstream of the response
	err      error  // RoundTrip's error
	bodyErr  error  // the body read's error
	problem  string // a content check that failed, for a body read without error
}

// chaosRequest sends one chat completion through client and checks its
// content: a complete answer from the upstream that sent it.
func chaosRequest(ctx context.Context, client *http.Client, stream bool) chaosOutcome {
	o := chaosOutcome{stream: stream, start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, clientBase+"/chat/completions", strings.NewReader(chatBody(stream)))
	if err != nil {
		o.err, o.end = err, time.Now()
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		o.err = err
		o.end = time.Now()
		return o
	}
	defer resp.Body.Close()
	o.status = resp.StatusCode
	o.upstream = resp.Header.Get("X-Fake-Upstream")
	body, err := io.ReadAll(resp.Body)
	o.end = time.Now()
	if err != nil {
		o.bodyErr = err
		return o
	}
	if resp.StatusCode != http.StatusOK {
		return o
	}
	if stream {
		o.problem = checkStream(body, o.upstream)
	} else {
		o.problem = checkCompletion(body, o.upstream)
	}
	return o
}

// checkStream returns what is wrong with a streamed chat completion read to
// its end without error, or "".
func checkStream(body []byte, upstream string) string {
	if !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")) {
		return fmt.Sprintf("stream ended cleanly without data: [DONE]: %q", body)
	}
	var content strings.Builder
	events := 0
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		payload, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		events++
		if payload == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(payload), &chunk); err != nil || len(chunk.Choices) != 1 {
			return fmt.Sprintf("bad chunk %q: %v", payload, err)
		}
		content.WriteString(chunk.Choices[0].Delta.Content)
	}
	if events != 6 || content.String() != fakeopenai.Reply(upstream) {
		return fmt.Sprintf("stream of %d events saying %q, want 6 saying %q", events, content.String(), fakeopenai.Reply(upstream))
	}
	return ""
}

// checkCompletion returns what is wrong with a chat completion read to its
// end without error, or "".
func checkCompletion(body []byte, upstream string) string {
	var c struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return fmt.Sprintf("body read cleanly but not a whole completion (%v): %q", err, body)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != fakeopenai.Reply(upstream) {
		return fmt.Sprintf("completion %q, want content %q", body, fakeopenai.Reply(upstream))
	}
	return ""
}

// TestChaos sends chaosRequests chat completions, a third of them streamed,
// from chaosClients goroutines through three rate-limited endpoints at two
// priorities, while a seeded schedule changes their faults every
// chaosPhase, always keeping one endpoint healthy (and settled: see
// chaosSettle). It asserts that
//   - every request is answered 200 with the whole answer of the upstream
//     that sent it, except that a body cut after the headers (a cut stream,
//     or a refusal closing the connection) is an error the caller's read
//     sees, never a clean end, from an endpoint that had such a fault;
//   - no endpoint's limiter grants more than Burst + MaxRPS in any second;
//   - the breakers the faults open close again, and once all endpoints are
//     healthy the primaries take the traffic again;
//   - no key reaches an error, a log line, a health field or a metric, and
//     each upstream sees only its own key;
//   - the heap does not grow beyond chaosHeapBound, and no goroutine is
//     left once everything is closed.
func TestChaos(t *testing.T) {
	kinds := chaosFaults()
	secret := fmt.Sprintf("sk-chaos-SECRET-%d", rand.Uint64())
	eps := []*chaosEndpoint{
		{name: "primary-a", priority: 0, maxRPS: 250, burst: 5},
		{name: "primary-b", priority: 0, maxRPS: 250, burst: 5},
		{name: "backup", priority: 1, maxRPS: 400, burst: 5},
	}
	var cfgEps []Endpoint
	byName := map[string]int{}
	for i, e := range eps {
		e.srv = fakeopenai.New(fakeopenai.WithName(e.name), fakeopenai.WithSeed(chaosSeed+uint64(i)))
		t.Cleanup(e.srv.Close)
		e.key = secret + "-" + e.name
		byName[e.name] = i
		cfgEps = append(cfgEps, Endpoint{
			Name: e.name, BaseURL: e.srv.URL(), APIKey: e.key, Priority: e.priority,
			MaxRPS: e.maxRPS, Burst: e.burst, Timeout: chaosTimeout,
		})
	}

	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	httpTr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
	t.Cleanup(httpTr.CloseIdleConnections)
	clock := &grantClock{last: map[uint64]time.Time{}, epoch: time.Now()}
	rec := newSendRecorder(httpTr, clock)
	tr, err := newTransport(Config{
		Endpoints:   cfgEps,
		Base:        rec,
		Registerer:  reg,
		Logger:      logger,
		Breaker:     BreakerConfig{OpenTimeout: chaosOpenTimeout},
		BackoffMin:  10 * time.Millisecond,
		BackoffMax:  100 * time.Millisecond,
		Cooldown:    50 * time.Millisecond,
		MaxCooldown: chaosMaxCooldown,
	}, clock)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	client := &http.Client{Transport: tr}

	// Warm up (metric children, pools), then measure the heap with no
	// connection open.
	for i := range 20 {
		if o := chaosRequest(t.Context(), client, i%2 == 0); o.err != nil || o.status != 200 || o.bodyErr != nil || o.problem != "" {
			t.Fatalf("warm-up request: %+v", o)
		}
	}
	httpTr.CloseIdleConnections()
	heapBefore := settledHeap()

	// The schedule.
	var (
		phasesMu sync.Mutex
		phases   []chaosPhaseRec
	)
	sched := newChaosSchedule(chaosSeed, len(eps), len(kinds))
	stopSched := make(chan struct{})
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		tick := time.NewTicker(chaosPhase)
		defer tick.Stop()
		for {
			faults, anchor := sched.next()
			phasesMu.Lock()
			phases = append(phases, chaosPhaseRec{start: time.Now(), faults: faults, anchor: anchor})
			phasesMu.Unlock()
			for i, e := range eps {
				e.srv.SetFault(kinds[faults[i]].make())
			}
			select {
			case <-stopSched:
				return
			case <-tick.C:
			}
		}
	}()

	// The clients.
	var (
		issued   atomic.Int64
		outMu    sync.Mutex
		outcomes = make([]chaosOutcome, 0, chaosRequests)
		wg       sync.WaitGroup
	)
	runStart := time.Now()
	for c := range chaosClients {
		wg.Go(func() {
			for {
				n := issued.Add(1)
				if n > chaosRequests {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), chaosRequestTimeout)
				o := chaosRequest(ctx, client, (int(n)+c)%3 == 0)
				cancel()
				outMu.Lock()
				outcomes = append(outcomes, o)
				outMu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stopSched)
	<-schedDone
	runTime := time.Since(runStart)
	for _, e := range eps {
		e.srv.SetFault(fakeopenai.Healthy())
	}
	healthyAt := time.Now()
	phasesMu.Lock()
	phases = append(phases, chaosPhaseRec{start: healthyAt, faults: make([]int, len(eps)), anchor: -1})
	nPhases := len(phases) - 1
	phasesMu.Unlock()

	// Every request succeeded; a body cut after the headers is an error the
	// caller saw, from an endpoint that had a fault able to cut it.
	var succeeded, cutSeen int
	var failures []string
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			failures = append(failures, fmt.Sprintf("stream=%v at +%v (%s): %v", o.stream, o.start.Sub(runStart),
				describePhases(phases, o.start, o.end, kinds, eps), o.err))
		case o.status != http.StatusOK:
			failures = append(failures, fmt.Sprintf("stream=%v at +%v (%s): status %d from %s", o.stream, o.start.Sub(runStart),
				describePhases(phases, o.start, o.end, kinds, eps), o.status, o.upstream))
		case o.bodyErr != nil:
			cutSeen++
			if !couldCut(phases, byName[o.upstream], o.start, o.end, kinds) {
				failures = append(failures, fmt.Sprintf("stream=%v at +%v: body from %s failed (%v) though it had no fault that cuts a body",
					o.stream, o.start.Sub(runStart), o.upstream, o.bodyErr))
			}
		case o.problem != "":
			failures = append(failures, fmt.Sprintf("stream=%v at +%v: silent truncation or wrong content from %s: %s",
				o.stream, o.start.Sub(runStart), o.upstream, o.problem))
		default:
			succeeded++
		}
	}
	if len(outcomes) != chaosRequests {
		t.Errorf("%d outcomes recorded, want %d", len(outcomes), chaosRequests)
	}
	if len(failures) > 0 {
		t.Logf("health at the end of the run: %+v", tr.Health())
		t.Errorf("%d of %d requests failed while an endpoint was healthy; first ones:\n%s",
			len(failures), len(outcomes), strings.Join(failures[:min(len(failures), 20)], "\n"))
	}

	// No endpoint was sent more than its limiter allows in any second:
	// checked on the limiter's readings, and reported on the send times.
	if rec.unpaired != 0 {
		t.Errorf("%d attempts were sent with no clock reading since the last: the transport no longer reads its clock where this test expects", rec.unpaired)
	}
	busiest := make([]string, len(eps))
	for i, e := range eps {
		sent, granted := rec.times(e.srv.Addr())
		limit := e.burst + int(e.maxRPS)
		most, at := maxInWindow(granted, time.Second)
		if most > limit {
			t.Errorf("%s was granted %d requests in the second from +%v, more than burst %d + %v rps allow (%d)",
				e.name, most, at.Sub(runStart), e.burst, e.maxRPS, limit)
		}
		mostSent, _ := maxInWindow(sent, time.Second)
		busiest[i] = fmt.Sprintf("%s %d granted/%d sent of %d", e.name, most, mostSent, limit)
	}

	// Once all are healthy, every breaker the faults opened closes (or,
	// on the backup, which gets no traffic while the primaries take it,
	// at least lets a trial through), and traffic returns to the
	// primaries.
	deadline := healthyAt.Add(chaosTimeout + chaosOpenTimeout + chaosMaxCooldown + waitBound)
	var recovered time.Duration
	for {
		ready := true
		for _, h := range tr.Health() {
			wantClosed := eps[byName[h.Name]].priority == 0
			if (wantClosed && h.State != StateClosed) || !h.Eligible() {
				ready = false
			}
		}
		if ready {
			recovered = time.Since(healthyAt)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints not recovered %v after all became healthy: %+v", time.Since(healthyAt), tr.Health())
		}
		// Traffic, for the trials that close half-open breakers.
		o := chaosRequest(t.Context(), client, false)
		if o.err != nil || o.status != 200 || o.bodyErr != nil || o.problem != "" {
			t.Errorf("request while recovering: %+v", o)
		}
		time.Sleep(10 * time.Millisecond) // pacing of the polling, not synchronisation
	}
	backupHost := eps[2].srv.Addr()
	backupBefore := rec.count(backupHost)
	primaryBefore := []int{rec.count(eps[0].srv.Addr()), rec.count(eps[1].srv.Addr())}
	for range 10 {
		o := chaosRequest(t.Context(), client, false)
		if o.err != nil || o.status != 200 || o.bodyErr != nil || o.problem != "" || eps[byName[o.upstream]].priority != 0 {
			t.Errorf("request after recovery: %+v, want a whole answer from a primary", o)
		}
		// Paced well below the primaries' rates, so none spills over.
		time.Sleep(10 * time.Millisecond)
	}
	if n := rec.count(backupHost) - backupBefore; n != 0 {
		t.Errorf("backup got %d attempts after recovery, want none while the primaries are healthy", n)
	}
	for i, before := range primaryBefore {
		if rec.count(eps[i].srv.Addr()) == before {
			t.Errorf("%s got no traffic after recovery", eps[i].name)
		}
	}

	// The faults did open breakers, and those closed again during the run.
	opened, closedAfterOpen := breakerCycles(t, logs.String())
	if opened == 0 || closedAfterOpen == 0 {
		t.Errorf("breakers opened %d times and closed again %d times during the run, want both", opened, closedAfterOpen)
	}

	// No key in any error, log line, health field or metric.
	var errTexts []string
	for _, o := range outcomes {
		for _, err := range []error{o.err, o.bodyErr} {
			if err != nil {
				errTexts = append(errTexts, err.Error())
			}
		}
	}
	for _, h := range tr.Health() {
		errTexts = append(errTexts, h.LastError, h.BaseURL, h.Name)
	}
	for _, s := range errTexts {
		if strings.Contains(s, secret) {
			t.Errorf("an error or health field carries a key: %s", s)
			break
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the logs carry a key")
	}
	failovers := checkMetricsNoKey(t, reg, secret)
	if got := testutil.ToFloat64(tr.metrics.failedOver); got != failovers {
		t.Errorf("failed-over counter %v, gathered %v", got, failovers)
	}
	// Each upstream saw only its own key.
	for _, e := range eps {
		for _, r := range e.srv.Requests() {
			if got := r.Header.Get("Authorization"); got != "Bearer "+e.key {
				t.Errorf("%s received Authorization %q, want its own key", e.name, strings.ReplaceAll(got, secret, "<secret>"))
				break
			}
		}
	}

	hits := make([]string, len(eps))
	for i, e := range eps {
		hits[i] = fmt.Sprintf("%s=%d", e.name, e.srv.Hits())
	}
	t.Logf("chaos: %d requests in %v over %d phases: %d succeeded, %d failed while streaming (cut after the headers, error seen), %d failed; %v failovers; upstream hits %s; busiest second %s; slowest 200 headers %v; recovered %v after all healthy",
		len(outcomes), runTime.Round(time.Millisecond), nPhases, succeeded, cutSeen, len(failures), failovers,
		strings.Join(hits, " "), strings.Join(busiest, ", "), time.Duration(rec.slowestOK.Load()).Round(time.Millisecond), recovered.Round(time.Millisecond))

	// The heap after the run, with the upstreams' request records and the
	// test's own records dropped and every connection closed, is within
	// chaosHeapBound of the heap before it.
	for _, e := range eps {
		e.srv.Reset()
	}
	outcomes, errTexts, failures = nil, nil, nil
	logs.mu.Lock()
	logs.buf = bytes.Buffer{}
	logs.mu.Unlock()
	rec.mu.Lock()
	rec.sent, rec.granted = map[string][]time.Time{}, map[string][]time.Time{}
	rec.mu.Unlock()
	httpTr.CloseIdleConnections()
	var heapAfter uint64
	memDeadline := time.Now().Add(waitBound)
	for {
		// Closed connections free their buffers once their goroutines
		// (the server's among them) notice: give them time.
		heapAfter = settledHeap()
		if heapAfter < heapBefore+chaosHeapBound || time.Now().After(memDeadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if heapAfter > heapBefore+chaosHeapBound {
		t.Errorf("heap grew from %d to %d bytes over the run, more than %d", heapBefore, heapAfter, chaosHeapBound)
	}
	t.Logf("heap before %d, after %d bytes (%+d)", heapBefore, heapAfter, int64(heapAfter)-int64(heapBefore))
	runtime.KeepAlive(tr)

	// Nothing left running once everything is closed.
	for _, e := range eps {
		e.srv.Close()
	}
	httpTr.CloseIdleConnections()
	goleak.VerifyNone(t)
}

// settledHeap returns the live heap after garbage collection (twice, so
// that sync.Pool caches are dropped too).
func settledHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// couldCut reports whether endpoint i had, at some time in [from, to], a
// fault that may end a response under way.
func couldCut(phases []chaosPhaseRec, i int, from, to time.Time, kinds []chaosFault) bool {
	for k, p := range phases {
		end := time.Now()
		if k+1 < len(phases) {
			end = phases[k+1].start
		}
		if end.Before(from) || p.start.After(to) {
			continue
		}
		if p.anchor >= 0 && kinds[p.faults[i]].cuts {
			return true
		}
	}
	return false
}

// describePhases describes the faults of the phases overlapping [from, to].
func describePhases(phases []chaosPhaseRec, from, to time.Time, kinds []chaosFault, eps []*chaosEndpoint) string {
	var parts []string
	for k, p := range phases {
		if (k+1 < len(phases) && phases[k+1].start.Before(from)) || p.start.After(to) {
			continue
		}
		var fs []string
		for i, f := range p.faults {
			mark := ""
			if i == p.anchor {
				mark = "*"
			}
			fs = append(fs, fmt.Sprintf("%s%s:%s", mark, eps[i].name, kinds[f].name))
		}
		parts = append(parts, fmt.Sprintf("phase %d [%s]", k, strings.Join(fs, " ")))
	}
	return strings.Join(parts, "; ")
}

// breakerCycles counts, in JSON log lines, the breaker changes to open and
// the changes from half-open to closed.
func breakerCycles(t *testing.T, logs string) (opened, closed int) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l struct {
			Msg  string `json:"msg"`
			From string `json:"from"`
			To   string `json:"to"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if !strings.Contains(l.Msg, "breaker") {
			continue
		}
		switch {
		case l.To == "open":
			opened++
		case l.From == "half-open" && l.To == "closed":
			closed++
		}
	}
	return opened, closed
}

// checkMetricsNoKey gathers reg, fails the test if any metric name, help,
// label name or label value carries secret, and returns the value of
// failover_requests_failed_over_total.
func checkMetricsNoKey(t *testing.T, reg *prometheus.Registry, secret string) (failovers float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	found := false
	for _, f := range families {
		if strings.Contains(f.String(), secret) {
			t.Errorf("metric family %s carries a key", f.GetName())
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetName(), secret) || strings.Contains(lp.GetValue(), secret) {
					t.Errorf("metric %s has a label carrying a key", f.GetName())
				}
			}
			if f.GetName() == "failover_requests_failed_over_total" {
				failovers, found = m.GetCounter().GetValue(), true
			}
		}
	}
	if !found {
		t.Errorf("failover_requests_failed_over_total not gathered")
	}
	return failovers
}
