package failover

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// requestState is what one request remembers across its attempts. It lives
// on the request's stack; its sets allocate only past 64 endpoints.
type requestState struct {
	tried   bitset // tried in the current round
	avoid   bitset // not to be tried again (x-should-retry: false)
	spilled bitset // found at their rate limit (counted in metrics once)
	rounds  int    // backoff rounds made
	waited  time.Duration
	// keyRefused is set once an attempt's key was refused: a second
	// refusal counts as an ordinary failure.
	keyRefused bool
	// key is the hash of the request's affinity key (Config.Affinity);
	// 0 for none.
	key uint64
	// model is the model the request's body names, when its
	// configuration routes by model; nil otherwise.
	model   *requestModel
	tokens  tokenEstimate // the request's token estimate, made when first needed (tokens.go)
	charged int64         // the tokens the chosen endpoint's budgets took for it
	trial   bool          // the chosen attempt is the fleet's trial (shared.go)
	// picked is the since reading the choice of the attempt's endpoint
	// took (the least-latency balancer's), 0 if none: the attempt's send
	// time, a clock reading spared.
	picked time.Duration
}

// bitset is a set of endpoint indexes.
type bitset struct {
	small uint64
	big   []uint64
}

func (s *bitset) has(i int) bool {
	if i < 64 {
		return s.small&(1<<i) != 0
	}
	w := i/64 - 1
	return w < len(s.big) && s.big[w]&(1<<(i%64)) != 0
}

func (s *bitset) add(i int) {
	if i < 64 {
		s.small |= 1 << i
		return
	}
	w := i/64 - 1
	for len(s.big) <= w {
		s.big = append(s.big, 0)
	}
	s.big[w] |= 1 << (i % 64)
}

func (s *bitset) clear() {
	s.small = 0
	clear(s.big)
}

// choose returns the endpoint for the next attempt, with the breaker's
// done for it, to be settled exactly once. When no endpoint can take the
// request now it waits, within MaxWait (the request's total) and the
// context, for the soonest to become available (a rate limiter refilling,
// a cooldown ending, an open breaker letting a trial through) or, when
// every eligible endpoint was tried, for a backoff before trying them
// again.
func (s *snapshot) choose(ctx context.Context, st *requestState) (*endpoint, func(error), error) {
	for {
		clk := lazyClock{c: s.clock}
		e, done, p := s.pick(&clk, st)
		if e != nil {
			st.picked = clk.mono
			return e, done, nil
		}
		d, reason, err := s.waitFor(ctx, clk.get(), st, &p)
		if err != nil {
			return nil, nil, err
		}
		if err := s.clock.sleep(ctx, d); err != nil {
			return nil, nil, err
		}
		st.waited += d
		s.metrics.waited(reason, d)
	}
}

// waitFor decides, when no endpoint could be picked, how long to wait
// before looking again and why, or that the request must end: the wait
// would not fit its MaxWait (counted over all its waits) or its deadline.
func (s *snapshot) waitFor(ctx context.Context, now time.Time, st *requestState, p *pickResult) (time.Duration, waitReason, error) {
	fits := func(d time.Duration) bool {
		if st.waited+d > s.maxWait {
			return false
		}
		dl, ok := ctx.Deadline()
		return !ok || !now.Add(d).After(dl)
	}
	switch {
	case p.wait > 0 && fits(p.wait):
		if p.waitTried {
			// Its cooldown serves as the backoff: a new round.
			st.rounds++
			st.tried.clear()
		}
		return p.wait, p.reason, nil
	case p.retryable:
		d := s.backoff(s.backoffMin, s.backoffMax, st.rounds, nil)
		if !fits(d) {
			return 0, 0, p.unavailable()
		}
		st.rounds++
		st.tried.clear()
		return d, waitBackoff, nil
	}
	return 0, 0, p.unavailable()
}

// pickResult says, when no endpoint could be picked, why, and how long until
// the soonest might be.
type pickResult struct {
	wait      time.Duration // until the soonest endpoint is expected free; 0 if none
	reason    waitReason    // what that wait is for
	waitTried bool          // the soonest is an endpoint this request already tried
	retryable bool          // an endpoint tried in this round is eligible again, after a backoff
	open      int
	cooling   int
	limited   int
	avoided   int
	unserved  int           // endpoints that do not serve the request's model
	model     *requestModel // that model
	paced     int
}

func (p *pickResult) unavailable() error {
	if p.open+p.cooling+p.limited+p.avoided+p.unserved+p.paced == 0 {
		return ErrNoEndpointAvailable
	}
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{p.open, "breaker open"}, {p.cooling, "cooling down"}, {p.limited, "at rate limit"}, {p.avoided, "asked not to be retried"},
		{p.unserved, "do not serve model " + p.model.quoted()}, {p.paced, "out of the provider's rate limit"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	return fmt.Errorf("%w (%s)", ErrNoEndpointAvailable, strings.Join(parts, ", "))
}

func (p *pickResult) soonest(d time.Duration, r waitReason, tried bool) {
	d = max(d, time.Millisecond)
	if p.wait == 0 || d < p.wait {
		p.wait, p.reason, p.waitTried = d, r, tried
	}
}

// pick returns the first endpoint that takes the request now, with its
// breaker's done: tiers by priority, each walked from its weighted round
// robin start. It does not wait; when none takes it, p says why.
func (s *snapshot) pick(clk *lazyClock, st *requestState) (*endpoint, func(error), pickResult) {
	var p pickResult
	for _, tr := range s.tiers {
		if s.steered && len(tr.members) > 1 {
			if e, done, ok := s.pickSteered(tr, clk, st, &p); ok {
				return e, done, p
			}
			continue
		}
		n := len(tr.members)
		i := tr.start()
		for range n {
			e := tr.members[i]
			if i++; i == n {
				i = 0
			}
			if done, ok := e.take(clk, st, &p); ok {
				return e, done, p
			}
		}
	}
	return nil, nil, p
}

// take admits one attempt of a request on e now, if e can take it: serving
// the request's model, not to be avoided, not cooling down, breaker not
// open, not tried in this round, admitted by the breaker, and within its
// rate. Cheap atomic checks come first; the happy path reads no clock.
// When e cannot take it, take records why in p.
func (e *endpoint) take(clk *lazyClock, st *requestState, p *pickResult) (func(error), bool) {
	if st.model != nil && st.model.plan.skip.has(e.index) {
		st.model.skip(e, p)
		return nil, false
	}
	if st.avoid.has(e.index) {
		p.avoided++
		return nil, false
	}
	tried := st.tried.has(e.index)
	if e.cooling.until.Load() != 0 {
		ns := clk.get().UnixNano()
		if until := e.cooling.at(ns); until != 0 {
			p.cooling++
			p.soonest(time.Duration(until-ns), waitCooldown, tried)
			return nil, false
		}
	}
	if e.breaker.openUntil.Load() != 0 {
		ns := clk.get().UnixNano()
		if until, open := e.breaker.openAt(ns); open {
			p.open++
			p.soonest(time.Duration(until-ns), waitBreaker, tried)
			return nil, false
		}
		if e.refusesTrials() { // only a probe may be its trial
			p.open++
			p.soonest(probeRequestPoll, waitBreaker, tried)
			return nil, false
		}
	}
	if tried {
		p.retryable = true
		return nil, false
	}
	done, ok := e.breaker.allow(clk)
	if !ok {
		p.open++
		return nil, false
	}
	if e.limiter != nil && !e.allowRate() {
		done(errNotSent)
		p.limited++
		p.soonest(e.untilToken(e.clock.now()), waitRateLimit, false)
		if !st.spilled.has(e.index) {
			st.spilled.add(e.index) // count each request once
			e.m.spilled()
		}
		return nil, false
	}
	if (e.budget != nil || e.bud.pace.active.Load()) && !e.admit(clk, st, p, done) {
		return nil, false
	}
	return done, true
}
