package failover

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Shared is state shared between the processes of a fleet that send to the
// same endpoints (matched by Name), set in [Config].Shared: one rate budget
// for the fleet and one view of the endpoints' health. The package
// github.com/failover-go/failover/redisshare implements it on Redis; this
// package never imports a Redis client.
//
// The Transport never waits on it in a request's path: leases are renewed
// and events published in the background, each call bounded by
// [Config].SharedTimeout. When a call fails, the Transport falls back to
// local shares of each budget (the rate divided by [Shared.Processes])
// and to its own breakers, logs that once, and tries again once a second
// until a call succeeds.
//
// An implementation must be safe for concurrent use. The zero value, a
// nil Shared, means no fleet: each process alone.
type Shared interface {
	// Lease takes up to want units from the token bucket named key,
	// shared by the fleet, which holds at most burst units and refills
	// at rate units per second (a full bucket to begin with), and returns
	// how many it took: fewer than want, or 0, when the bucket holds
	// fewer. The Transport spends them locally.
	//
	// A negative want gives -want units back to the bucket, which still
	// holds at most burst, and returns want: the Transport gives back what
	// it holds beyond its lease's size (a token estimate corrected down to
	// the usage the provider counted), so that it never holds more than
	// the fleet's bound counts.
	Lease(ctx context.Context, key string, rate float64, burst, want int64) (int64, error)

	// Publish tells every other process of the fleet of ev, within
	// 100 ms, and keeps it until ev.Until for processes that join later.
	Publish(ctx context.Context, ev SharedEvent) error

	// Subscribe calls fn with each event other processes publish, and
	// with the events still kept whenever it (re)joins the fleet, until
	// stop is called. fn must return quickly.
	Subscribe(fn func(SharedEvent)) (stop func())

	// Claim reports whether this process won key for ttl: of all the
	// processes that claim one key while it is held, exactly one wins
	// (Redis's SET NX with an expiry). The Transport claims
	// "trial:<endpoint name>" before the fleet's one trial request at the
	// end of an open period; recovery probes claim "probe:<endpoint
	// name>" so that one process probes each endpoint.
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)

	// Processes returns how many processes of the fleet were last seen
	// alive (at least 1): the local share of a budget while the shared
	// state is unreachable is its rate divided by this.
	Processes() int
}

// SharedEventKind says what a [SharedEvent] announces. The zero value is
// no kind: an event of it is ignored.
type SharedEventKind uint8

const (
	// SharedBreakerOpen: the endpoint's breaker opened, until Until; the
	// fleet skips it until then, and then one process sends the trial.
	SharedBreakerOpen SharedEventKind = iota + 1
	// SharedBreakerClosed: the trial succeeded; the endpoint takes
	// traffic again.
	SharedBreakerClosed
	// SharedCooldown: the endpoint cools down until Until (a 429 or a
	// Retry-After).
	SharedCooldown
	// SharedPaced: the provider's remaining requests are spent until
	// Until.
	SharedPaced
)

var sharedKindNames = [...]string{"", "open", "closed", "cooldown", "paced"}

// String returns the kind's name: "open", "closed", "cooldown" or "paced".
func (k SharedEventKind) String() string {
	if int(k) < len(sharedKindNames) && k > 0 {
		return sharedKindNames[k]
	}
	return "unknown"
}

// ParseSharedEventKind returns the kind whose String is s.
func ParseSharedEventKind(s string) (SharedEventKind, bool) {
	for i, name := range sharedKindNames {
		if i > 0 && name == s {
			return SharedEventKind(i), true
		}
	}
	return 0, false
}

// SharedEvent is a change of an endpoint's health that one process of a
// fleet tells the others through [Shared]. Only transitions are shared:
// each process counts its own failures. The zero value announces
// nothing.
type SharedEvent struct {
	// Endpoint is the endpoint's Name.
	Endpoint string
	// Kind is what happened.
	Kind SharedEventKind
	// Until is when an open period, a cooldown or a pacing ends; zero for
	// SharedBreakerClosed.
	Until time.Time
}

// DefaultSharedTimeout bounds each call to [Shared] when
// [Config].SharedTimeout is zero.
const DefaultSharedTimeout = 10 * time.Millisecond

// sharedRetry is how long the Transport leaves an unreachable shared
// state alone before trying it again.
const sharedRetry = time.Second

// sharedFailures is how many calls in a row must fail for the shared
// state to count as unreachable: one slow call on a loaded machine is not
// an outage (a Redis that is down refuses each call at once).
const sharedFailures = 3

// errSharedDown is the error of a call not made: the shared state is
// unreachable and its next try is not due.
var errSharedDown = errors.New("failover: shared state unreachable")

// fleet is a Transport's link to its Shared: the calls (each bounded,
// none on a request's path), whether the shared state is reachable, and
// the events from the other processes.
type fleet struct {
	shared  Shared
	timeout time.Duration
	clock   clock
	logger  *slog.Logger
	t       *Transport

	down    atomic.Bool
	failing atomic.Int32 // calls failed in a row
	retryAt atomic.Int64 // unix nanoseconds: the next call allowed while down
	calls   atomic.Uint64
	errs    atomic.Uint64
	wg      sync.WaitGroup // background calls in flight
	stop    func()

	// ctx bounds every call; close cancels it. After close, f is off the
	// fleet: each call fails at once, as if the state were unreachable.
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex // guards closed with wg.Add
	closed  bool
	stopped atomic.Bool
}

// newFleet links t to sh; nil without sh.
func newFleet(t *Transport, sh Shared, timeout time.Duration) *fleet {
	if sh == nil {
		return nil
	}
	f := &fleet{shared: sh, timeout: cmpOr(timeout, DefaultSharedTimeout), clock: t.clock, logger: t.logger, t: t}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.stop = sh.Subscribe(f.receive)
	return f
}

// close takes f off the fleet, for [Transport.Close]: it stops the
// subscription, cancels the calls under way and waits for the background
// ones to end. Afterwards the budgets use their local shares and the
// breakers are the process's own. It is safe to call more than once.
func (f *fleet) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	f.stopped.Store(true)
	f.down.Store(true)
	f.stop()
	f.cancel()
	f.wg.Wait()
}

func cmpOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// state is the shared state's for health: "connected" or "degraded"; ""
// for a nil f (no Shared).
func (f *fleet) state() string {
	switch {
	case f == nil:
		return ""
	case f.isDown():
		return "degraded"
	}
	return "connected"
}

// isDown reports whether the shared state is held unreachable.
func (f *fleet) isDown() bool { return f.down.Load() }

// call runs op against the shared state, bounded by the timeout, unless
// the state is down and its retry not due. sharedFailures failures in a
// row mark it down (and log that once); a success marks it back (and logs
// that).
func (f *fleet) call(op func(ctx context.Context) error) error {
	if f.stopped.Load() || (f.down.Load() && f.clock.now().UnixNano() < f.retryAt.Load()) {
		return errSharedDown
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	defer cancel()
	err := op(ctx)
	if f.stopped.Load() {
		return errSharedDown // canceled by close: says nothing of the state
	}
	f.calls.Add(1)
	if err != nil {
		f.errs.Add(1)
		if f.failing.Add(1) < sharedFailures && !f.down.Load() {
			return err
		}
		f.retryAt.Store(f.clock.now().Add(sharedRetry).UnixNano())
		if f.down.CompareAndSwap(false, true) && f.logger != nil {
			f.logger.Warn("failover: shared state unreachable; each budget falls back to a local share, each breaker to its own",
				slog.Int("processes", f.shared.Processes()), slog.String("error", err.Error()))
		}
		return err
	}
	f.failing.Store(0)
	if f.down.Load() && f.down.CompareAndSwap(true, false) && f.logger != nil {
		f.logger.Warn("failover: shared state reachable again; budgets and health are shared with the fleet")
	}
	return nil
}

// background runs fn in a goroutine of its own, counted in f.wg; after
// close, at once (its calls fail at once).
func (f *fleet) background(fn func()) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		fn()
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// publish tells the fleet of ev in the background. A call that fails is
// made again at once while the shared state is not held unreachable (one
// slow call is not an outage, and a lost transition would leave the
// fleet unaware of it) and ev has not ended: at most sharedFailures
// calls, after which the state is unreachable and the breakers local.
func (f *fleet) publish(ev SharedEvent) {
	f.background(func() {
		for range sharedFailures {
			err := f.call(func(ctx context.Context) error { return f.shared.Publish(ctx, ev) })
			if err == nil || errors.Is(err, errSharedDown) || f.isDown() ||
				(!ev.Until.IsZero() && !f.clock.now().Before(ev.Until)) {
				return
			}
		}
	})
}

// receive applies an event from another process to the endpoint it names.
func (f *fleet) receive(ev SharedEvent) {
	s := f.t.snap.Load()
	if s == nil {
		return
	}
	for _, e := range s.endpoints {
		if e.name == ev.Endpoint {
			e.bud.fleet.apply(e.endpointState, ev, f.clock.now())
			return
		}
	}
}

// fleetEndpoint is an endpoint's share of the fleet's health: an open
// period another process announced, and the claim on the trial that ends
// an open period (one process of the fleet sends it).
type fleetEndpoint struct {
	f        atomic.Pointer[fleet] // nil without Shared
	openTill atomic.Int64          // unix nanoseconds: another process's open period; 0 none
	closedAt atomic.Int64          // unix nanoseconds of the last "closed" the fleet announced

	claimFor atomic.Int64 // the open period (its end) the claim is for
	claimAt  atomic.Int64 // unix nanoseconds of the claim
	claim    atomic.Int32 // claimPending, claimWon, claimLost, claimUsed
}

// Claim states.
const (
	claimPending int32 = iota
	claimWon
	claimLost
	claimUsed
)

// apply takes ev, from another process, into s.
func (fe *fleetEndpoint) apply(s *endpointState, ev SharedEvent, now time.Time) {
	until := ev.Until.UnixNano()
	switch ev.Kind {
	case SharedBreakerOpen:
		if until > now.UnixNano() {
			fe.openTill.Store(until)
		}
	case SharedBreakerClosed:
		fe.openTill.Store(0)
		fe.closedAt.Store(now.UnixNano())
	case SharedCooldown:
		s.cooling.extend(until)
	case SharedPaced:
		s.bud.pace.pause(until)
	}
}

// breakerChanged publishes a change of the endpoint's own breaker: open
// until until, or closed. It runs under gobreaker's lock: it only starts a
// goroutine.
func (fe *fleetEndpoint) breakerChanged(name string, open bool, until int64) {
	f := fe.f.Load()
	if f == nil {
		return
	}
	ev := SharedEvent{Endpoint: name, Kind: SharedBreakerClosed}
	if open {
		ev.Kind, ev.Until = SharedBreakerOpen, time.Unix(0, until)
	}
	f.publish(ev)
}

// cooled publishes a cooldown of the endpoint until until.
func (fe *fleetEndpoint) cooled(name string, until int64) {
	if f := fe.f.Load(); f != nil {
		f.publish(SharedEvent{Endpoint: name, Kind: SharedCooldown, Until: time.Unix(0, until)})
	}
}

// gate decides, for an attempt on e at now (unix nanoseconds), what the
// fleet's health says: wait until a time (another process's open period,
// or the trial being claimed or sent elsewhere), or go ahead; trial is
// set when this attempt is the fleet's trial, whose result it must
// publish.
func (fe *fleetEndpoint) gate(e *endpoint, f *fleet, now int64) (wait int64, trial bool) {
	if f.isDown() {
		return 0, false // the breakers are local
	}
	remote := fe.openTill.Load()
	if remote > now {
		return remote - now, false
	}
	// The open period that ended: another process's, or this one's
	// (its breaker now lets a trial through).
	period := remote
	if local := e.breaker.openUntil.Load(); local != 0 && local <= now {
		period = max(period, local)
	}
	if period == 0 || fe.closedAt.Load() >= period {
		return 0, false
	}
	ttl := time.Duration(e.breaker.openTimeout.Load())
	old := fe.claimFor.Load()
	if old == period && now-fe.claimAt.Load() > int64(ttl) {
		// The claim has expired: the trial never reported (its
		// process died, or its caller gave up). Claim again.
		old = -1
	}
	if old != period {
		if !fe.claimFor.CompareAndSwap(fe.claimFor.Load(), period) {
			return claimPoll, false
		}
		fe.claim.Store(claimPending)
		fe.claimAt.Store(now)
		fe.claimTrial(e, f, period, ttl)
		return claimPoll, false
	}
	switch fe.claim.Load() {
	case claimWon:
		if fe.claim.CompareAndSwap(claimWon, claimUsed) {
			return 0, true
		}
	case claimLost:
		return lostPoll, false
	}
	// Pending, or this process's trial is out: its result comes by
	// trialDone.
	return claimPoll, false
}

// claimTrial claims, in the background, the fleet's trial on e at the end
// of the open period period.
func (fe *fleetEndpoint) claimTrial(e *endpoint, f *fleet, period int64, ttl time.Duration) {
	key := "trial:" + e.name
	f.background(func() {
		won := false
		err := f.call(func(ctx context.Context) (err error) {
			won, err = f.shared.Claim(ctx, key, ttl)
			return err
		})
		if fe.claimFor.Load() != period {
			return
		}
		if err != nil || won {
			// Unreachable, the breakers are local and this one's trial
			// is this process's; or won.
			fe.claim.Store(claimWon)
			return
		}
		fe.claim.Store(claimLost)
	})
}

// claimProbe reports whether this process may probe the endpoint named
// name now, for ttl: it won "probe:<name>" in the fleet, or the shared
// state is unreachable (the breakers, and so the probes, are then each
// process's own).
func (f *fleet) claimProbe(_ context.Context, name string, ttl time.Duration) bool {
	won := false
	err := f.call(func(ctx context.Context) (err error) {
		won, err = f.shared.Claim(ctx, "probe:"+name, ttl)
		return err
	})
	return err != nil || won
}

// Waits while a trial is claimed (a Redis round trip) or sent by another
// process (its result comes by the fleet's events).
const (
	claimPoll = int64(5 * time.Millisecond)
	lostPoll  = int64(100 * time.Millisecond)
)

// trialDone publishes the result of the fleet's trial on e: closed after a
// success, else open for another open period from now.
func (fe *fleetEndpoint) trialDone(e *endpoint, failed bool, now time.Time) {
	f := fe.f.Load()
	if f == nil {
		return
	}
	if failed {
		until := now.Add(time.Duration(e.breaker.openTimeout.Load()))
		fe.openTill.Store(until.UnixNano())
		f.publish(SharedEvent{Endpoint: e.name, Kind: SharedBreakerOpen, Until: until})
		return
	}
	fe.openTill.Store(0)
	fe.closedAt.Store(now.UnixNano())
	f.publish(SharedEvent{Endpoint: e.name, Kind: SharedBreakerClosed})
}
