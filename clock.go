package failover

import (
	"context"
	"time"
)

// clock is the Transport's time. Every part that reads the time or waits
// reads it here (the choice, breakers, cooldowns, limiters, waits and
// statistics), so that tests step all of them on one fake clock without
// sleeping. Only an attempt's Timeout runs on a real timer, as it bounds
// real I/O.
type clock interface {
	// now returns the current time.
	now() time.Time
	// since returns the time elapsed since the clock's origin, for
	// measuring intervals (a monotonic reading: cheaper than now).
	since() time.Duration
	// sleep waits d or until ctx ends, returning the context's cause then.
	sleep(ctx context.Context, d time.Duration) error
}

// realClock is the wall and monotonic clock of the process.
type realClock struct{ epoch time.Time }

func newRealClock() realClock { return realClock{epoch: time.Now()} }

func (realClock) now() time.Time { return time.Now() }

// since reads only the monotonic clock (the epoch carries a monotonic
// reading): half the cost of time.Now on virtual machines.
func (c realClock) since() time.Duration { return time.Since(c.epoch) }

func (realClock) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// lazyClock reads its clock at most once, and only when asked: the happy
// path (no cooldown, breaker closed, no limiter) reads no time at all. It
// keeps a since reading apart (the least-latency balancer's), also read
// at most once.
type lazyClock struct {
	c       clock
	t       time.Time
	set     bool
	mono    time.Duration
	monoSet bool
}

// since returns the clock's since reading, read at the first call.
func (l *lazyClock) since() time.Duration {
	if !l.monoSet {
		l.mono, l.monoSet = l.c.since(), true
	}
	return l.mono
}

func (l *lazyClock) get() time.Time {
	if !l.set {
		l.t, l.set = l.c.now(), true
	}
	return l.t
}
