package failover

import (
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerConfig configures the circuit breaker of each endpoint (a
// github.com/sony/gobreaker/v2 two-step breaker). The zero value means the
// defaults below.
type BreakerConfig struct {
	// FailureThreshold is how many consecutive failed attempts open the
	// breaker. Zero means 5. A rejected key (401) opens it at once
	// whatever this is.
	FailureThreshold int

	// OpenTimeout is how long an open breaker refuses requests before it
	// lets trial requests through (half-open). Zero means 1 minute. With
	// recovery probes on ([Config].Probe), a probe is the trial instead,
	// sent [ProbeConfig].Interval after the breaker opened, or OpenTimeout
	// after a refused key opened it.
	OpenTimeout time.Duration

	// HalfOpenRequests is how many trial requests a half-open breaker lets
	// through; that many consecutive successes close it, and one failure
	// opens it again. Zero means 1.
	HalfOpenRequests int
}

// Defaults for the zero fields of BreakerConfig.
const (
	defaultFailures    = 5
	defaultOpenTimeout = time.Minute
)

// Results reported to a breaker for attempts that were sent.
var (
	errFailed      = errors.New("failover: attempt failed")
	errThrottled   = errors.New("failover: endpoint throttled")
	errKeyRejected = errors.New("failover: key rejected")
	// errNotSent is reported for an attempt the breaker admitted that was
	// not sent, or failed through no fault of the endpoint's; the breaker
	// ignores it.
	errNotSent = errors.New("failover: attempt not sent")
)

// breaker is an endpoint's circuit breaker: gobreaker's two-step breaker,
// which admits every attempt and counts every result, with the open period
// held on the Transport's clock.
//
// gobreaker reads the wall clock, so its own open timeout is a nanosecond:
// once open it would let trials through at its next call. What keeps it
// open is openUntil, set when it opens and read on the Transport's clock
// before asking gobreaker: until then, the endpoint is skipped without
// taking gobreaker's lock. After it, gobreaker admits the half-open trials
// and counts them. openUntil is also the cheap read the choice needs.
type breaker struct {
	s  *endpointState
	cb atomic.Pointer[gobreaker.TwoStepCircuitBreaker[struct{}]]

	threshold   atomic.Uint32
	openTimeout atomic.Int64 // time.Duration
	halfOpen    uint32       // the current cb's MaxRequests; guarded by the Transport's update lock

	openUntil atomic.Int64 // unix nanoseconds; 0 while closed
	since     atomic.Int64 // unix nanoseconds of the last change
	forced    atomic.Int32 // results being reported that must open the breaker at once

	pendingMu  sync.Mutex
	pending    []transition // changes to log, outside gobreaker's lock
	hasPending atomic.Bool
	trialShown atomic.Bool // the current open period's end was logged
	keyOpened  atomic.Bool // the current open period began with a refused key (probes wait it out)
}

// transition is a breaker state change waiting to be logged.
type transition struct{ from, to gobreaker.State }

// init readies b, closed, for the endpoint state s with the settings bc.
func (b *breaker) init(s *endpointState, bc BreakerConfig) {
	b.s = s
	b.since.Store(s.clock.now().UnixNano())
	b.configure(bc)
}

// configure applies bc. The threshold and open timeout apply at once;
// a new number of half-open requests needs a new gobreaker breaker, which
// starts where the old one was: open (its open period kept) or closed,
// with no failures counted.
func (b *breaker) configure(bc BreakerConfig) {
	b.threshold.Store(clampUint32(orDefault(bc.FailureThreshold, defaultFailures)))
	b.openTimeout.Store(int64(orDefault(bc.OpenTimeout, defaultOpenTimeout)))
	halfOpen := clampUint32(orDefault(bc.HalfOpenRequests, 1))
	if b.cb.Load() != nil && halfOpen == b.halfOpen {
		return
	}
	wasOpen := b.openUntil.Load() != 0
	b.halfOpen = halfOpen
	var cb *gobreaker.TwoStepCircuitBreaker[struct{}]
	cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        b.s.name,
		MaxRequests: halfOpen,
		Timeout:     time.Nanosecond, // the open period is openUntil's
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return b.forced.Load() > 0 || c.ConsecutiveFailures >= b.threshold.Load()
		},
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return err == errNotSent || err == errThrottled },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if b.cb.Load() == cb { // not a breaker configure replaced
				b.changed(from, to)
			}
		},
	})
	if wasOpen {
		// Open the new breaker too; its change is not recorded (it is
		// not yet b's), so the open period and its start stay.
		if done, err := cb.Allow(); err == nil {
			b.forced.Add(1)
			done(errFailed)
			b.forced.Add(-1)
		}
	}
	b.cb.Store(cb)
}

// changed records a state change of gobreaker's. It runs under gobreaker's
// lock, so it only records: the goroutine that caused it logs it
// afterwards (flush).
func (b *breaker) changed(from, to gobreaker.State) {
	now := b.s.clock.now()
	switch to {
	case gobreaker.StateOpen:
		// Before the state: whoever sees it open must find when it
		// reopens.
		b.openUntil.Store(now.Add(time.Duration(b.openTimeout.Load())).UnixNano())
		b.trialShown.Store(false)
		b.keyOpened.Store(b.forced.Load() > 0)
		defer b.s.heal.opened(b.s, from == gobreaker.StateClosed)
		b.s.bud.fleet.breakerChanged(b.s.name, true, b.openUntil.Load())
	case gobreaker.StateClosed:
		b.openUntil.Store(0)
		b.keyOpened.Store(false)
		defer b.s.heal.recovered(b.s, now.UnixNano())
		b.s.bud.fleet.breakerChanged(b.s.name, false, 0)
	case gobreaker.StateHalfOpen:
		// gobreaker turns half-open at its first call after opening,
		// which may be before openUntil: the change shows, and is
		// logged, when the first trial is let through (allow).
		return
	}
	b.since.Store(now.UnixNano())
	b.record(from, to)
}

func (b *breaker) record(from, to gobreaker.State) {
	if b.s.logger == nil {
		return // nothing to log later
	}
	b.pendingMu.Lock()
	b.pending = append(b.pending, transition{from: from, to: to})
	b.pendingMu.Unlock()
	b.hasPending.Store(true)
}

// holdOpen keeps b, while it is open, open until until (unix
// nanoseconds), longer or shorter than its open period: recovery probes
// set when the next probe, the next trial, is due. It reports whether b
// was open.
func (b *breaker) holdOpen(until int64) bool {
	for {
		old := b.openUntil.Load()
		if old == 0 {
			return false
		}
		if b.openUntil.CompareAndSwap(old, until) {
			return true
		}
	}
}

// openAt reports whether b refuses every attempt at now (unix
// nanoseconds), and until when: its open period has not ended. It reads
// two atomics and takes no lock.
func (b *breaker) openAt(now int64) (until int64, open bool) {
	until = b.openUntil.Load()
	return until, until != 0 && now < until
}

// allow asks b to admit an attempt. The caller has checked openAt: b is
// closed, or its open period is over and gobreaker lets half-open trials
// through. done must then run exactly once with the attempt's result
// (settle).
func (b *breaker) allow(clk *lazyClock) (done func(error), ok bool) {
	done, err := b.cb.Load().Allow()
	if err != nil {
		return nil, false
	}
	if until := b.openUntil.Load(); until != 0 {
		if clk.get().UnixNano() < until {
			// It opened since the caller looked, and gobreaker's
			// nanosecond open period is over: refuse, as it is open.
			done(errNotSent)
			return nil, false
		}
		if b.s.logger != nil && b.trialShown.CompareAndSwap(false, true) {
			b.record(gobreaker.StateOpen, gobreaker.StateHalfOpen)
			b.flush()
		}
	}
	return done, true
}

// settle reports an attempt's result through done, the breaker's callback
// from allow: nil for a success, errFailed, errKeyRejected (which opens
// the breaker at once), or errThrottled or errNotSent (ignored). Then it
// logs the state changes the result caused.
func (b *breaker) settle(done func(error), result error) {
	if result == errKeyRejected {
		b.forced.Add(1)
		done(result)
		b.forced.Add(-1)
	} else {
		done(result)
	}
	b.flush()
}

// current returns b's state as the Transport's clock sees it at now: open
// until the open period ends, then half-open until a trial closes it.
func (b *breaker) current(now time.Time) (gobreaker.State, time.Time) {
	until := b.openUntil.Load()
	switch {
	case until == 0:
		return gobreaker.StateClosed, time.Unix(0, b.since.Load())
	case now.UnixNano() < until:
		return gobreaker.StateOpen, time.Unix(0, b.since.Load())
	}
	return gobreaker.StateHalfOpen, time.Unix(0, until)
}

// flush logs b's state changes recorded since the last flush (recorded
// only when there is a logger). It is called after calls into gobreaker,
// outside its lock.
func (b *breaker) flush() {
	if !b.hasPending.Load() {
		return
	}
	b.pendingMu.Lock()
	pending := b.pending
	b.pending = nil
	b.hasPending.Store(false)
	b.pendingMu.Unlock()
	for _, tr := range pending {
		b.s.logger.Warn("failover: circuit breaker state changed",
			slog.String("endpoint", b.s.name), slog.String("from", tr.from.String()), slog.String("to", tr.to.String()))
	}
}

// clampUint32 converts n, not negative, to the breaker's uint32 counts,
// saturating: a threshold above them is one never reached.
func clampUint32(n int) uint32 {
	if uint64(n) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}
