package failover

import (
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// budgetState is the live state of an endpoint's rate budgets beyond its
// request limiter: the provider's limits from its headers (pacing), the
// MaxTPM limiter, the shared leases and the fleet's view of its health.
// Like the rest of endpointState it outlives configurations.
type budgetState struct {
	// pace is written by every request to an endpoint that sends the
	// headers: on cache lines of its own, away from the read-mostly
	// fields every request reads.
	_     [64]byte
	pace  pacing
	_     [64]byte
	tpm   tokenLimiter
	fleet fleetEndpoint

	rpsLease atomic.Pointer[leaseBudget] // made at the first configuration with Shared and MaxRPS
	tpmLease atomic.Pointer[leaseBudget] // likewise with MaxTPM
}

// endpointBudget is an endpoint's token limit and shared budgets in one
// configuration; nil when it has neither (pacing alone needs none).
type endpointBudget struct {
	tpm      *rate.Limiter // nil without MaxTPM
	fleet    *fleet        // nil without Shared
	rpsLease *leaseBudget  // nil without Shared and MaxRPS
	tpmLease *leaseBudget  // nil without Shared and MaxTPM
}

// budgetFor returns the budget of st under cfg for a Transport linked to
// f (nil without Shared), creating or reconfiguring the state's limiter
// and leases; nil when cfg has no MaxTPM and there is no f.
func (st *endpointState) budgetFor(cfg Endpoint, f *fleet) *endpointBudget {
	tpm := st.bud.tpm.forConfig(cfg, st.clock)
	if tpm == nil && f == nil {
		return nil
	}
	b := &endpointBudget{tpm: tpm, fleet: f}
	if f == nil {
		return b
	}
	st.bud.fleet.f.Store(f)
	if cfg.MaxRPS > 0 {
		burst := int64(max(cfg.Burst, 1))
		if b.rpsLease = st.bud.rpsLease.Load(); b.rpsLease == nil {
			b.rpsLease = newLeaseBudget(f, "rps:"+st.name, "requests", cfg.MaxRPS, burst, 1)
			st.bud.rpsLease.Store(b.rpsLease)
		} else {
			b.rpsLease.configure(cfg.MaxRPS, burst)
		}
	}
	if cfg.MaxTPM > 0 {
		tr, burst := cfg.MaxTPM/60, int64(tokenBurst(cfg))
		if b.tpmLease = st.bud.tpmLease.Load(); b.tpmLease == nil {
			b.tpmLease = newLeaseBudget(f, "tpm:"+st.name, "tokens", tr, burst, DefaultCompletionTokens)
			st.bud.tpmLease.Store(b.tpmLease)
		} else {
			b.tpmLease.configure(tr, burst)
		}
	}
	return b
}

// admit is the last step of take, for an endpoint that paces or has a
// budget: the provider's remaining counts, the fleet's health, the MaxTPM
// limiter and the shared leases. done is the breaker's for the attempt:
// when admit refuses, it settles it as not sent, gives back what the
// request limiter and the budgets took, and records why in p.
func (e *endpoint) admit(clk *lazyClock, st *requestState, p *pickResult, done func(error)) bool {
	now := clk.get()
	ns := now.UnixNano()
	trial := false // this attempt was handed the fleet's trial on e
	refuse := func(wait time.Duration, reason waitReason) bool {
		done(errNotSent)
		if trial {
			// Not sent: the trial this process won stays due.
			st.trial = false
			e.bud.fleet.claim.CompareAndSwap(claimUsed, claimWon)
		}
		if e.limiter != nil {
			e.limMu.Lock()
			e.limiter.ReserveN(now, -1) // give back the request's token
			e.limMu.Unlock()
		}
		p.soonest(wait, reason, false)
		return false
	}
	if e.bud.pace.active.Load() {
		if until := e.bud.pace.block(ns, st.tokens.get); until != 0 {
			p.paced++
			if !st.spilled.has(e.index) {
				st.spilled.add(e.index)
				e.m.budgetMetrics().pacedSkip()
			}
			return refuse(time.Duration(until-ns), waitPacing)
		}
	}
	b := e.budget
	if b == nil {
		e.bud.pace.spend(ns, st.tokens.n)
		return true
	}
	if b.fleet != nil {
		var wait int64
		wait, trial = e.bud.fleet.gate(e, b.fleet, ns)
		if wait > 0 {
			p.open++
			return refuse(time.Duration(wait), waitBreaker)
		}
		st.trial = trial
	}
	var est int64
	if b.tpm != nil || b.tpmLease != nil {
		est = st.tokens.get()
	}
	if wait, ok := e.takeBudgets(b, now, est); !ok {
		p.limited++
		return refuse(wait, waitRateLimit)
	}
	st.charged = est
	e.bud.pace.spend(ns, st.tokens.n)
	return true
}

// takeBudgets takes a request's share of b's token limiter and shared
// leases at now: est tokens and one request. When one of them refuses, it
// gives back what the others took and returns how long until that one may
// have it.
func (e *endpoint) takeBudgets(b *endpointBudget, now time.Time, est int64) (time.Duration, bool) {
	if b.tpm != nil && !e.bud.tpm.take(b.tpm, e.clock, est) {
		return time.Duration(e.bud.tpm.until(b.tpm, e.clock, est)), false
	}
	if b.rpsLease != nil {
		if ok, wait := b.rpsLease.take(now, 1); !ok {
			e.bud.tpm.refund(b.tpm, e.clock, est)
			return wait, false
		}
	}
	if b.tpmLease != nil {
		if ok, wait := b.tpmLease.take(now, est); !ok {
			e.bud.tpm.refund(b.tpm, e.clock, est)
			if b.rpsLease != nil {
				b.rpsLease.refund(now, 1)
			}
			return wait, false
		}
	}
	return 0, true
}

// refund gives back n tokens taken for a request not sent; lim may be nil.
func (l *tokenLimiter) refund(lim *rate.Limiter, c clock, n int64) {
	if lim != nil && n > 0 {
		l.adjust(lim, c, -n)
	}
}

// afterResponse reads the provider's limits from the headers of resp (any
// response, failed or not), announces to the fleet that they are spent,
// and, when this attempt was the fleet's trial, its result.
// A response without the headers, and no trial, reads no clock.
func (r *request) afterResponse(e *endpoint, resp *http.Response, failed bool) {
	if resp != nil {
		if rh, ok := parseRateHeaders(resp.Header); ok {
			until := e.bud.pace.observe(rh, r.sent, r.s.clock.now(), e.cool.max, e.hot.inflight(), r.st.tokens.n)
			if f := e.bud.fleet.f.Load(); f != nil && until != 0 {
				f.publish(SharedEvent{Endpoint: e.name, Kind: SharedPaced, Until: time.Unix(0, until)})
			}
		}
	}
	if r.st.trial {
		r.st.trial = false
		e.bud.fleet.trialDone(e, failed, r.s.clock.now())
	}
}

// tapUsage wraps a successful response's body to correct the request's
// token charge from the usage the provider counted, when e has a token
// budget.
func (r *request) tapUsage(e *endpoint, resp *http.Response) {
	if b := e.budget; b == nil || (b.tpm == nil && b.tpmLease == nil) || resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return // an upgraded connection: its body must stay the connection's writer, and carries no usage
	}
	resp.Body = newUsageBody(resp.Body, e, r.st.charged)
}

// correctTokens charges e's token budgets for the usage the provider
// counted instead of the estimate est a request was charged.
func (e *endpoint) correctTokens(est, usage int64) {
	e.m.budgetMetrics().estimated(est, usage)
	b := e.budget
	if b == nil || usage == est {
		return
	}
	if b.tpm != nil {
		e.bud.tpm.adjust(b.tpm, e.clock, usage-est)
	}
	if b.tpmLease != nil {
		b.tpmLease.correct(e.clock.now(), usage-est)
	}
}

// budgetHealth adds to h what the budgets say at now: the provider's
// limits, the MaxTPM limiter's tokens, a pacing or another process's open
// period in the state.
func (e *endpoint) budgetHealth(h *EndpointHealth, now time.Time) {
	h.TokenBudget = -1
	h.Provider = e.bud.pace.limits(now)
	if b := e.budget; b != nil && b.tpm != nil {
		e.bud.tpm.mu.Lock()
		h.TokenBudget = b.tpm.TokensAt(now)
		e.bud.tpm.mu.Unlock()
	}
	if e.cfg.Disabled || h.State != StateClosed {
		return
	}
	ns := now.UnixNano()
	if until := e.bud.fleet.openTill.Load(); until > ns {
		h.State, h.FleetOpenUntil = StateOpen, time.Unix(0, until)
		return
	}
	if until := e.bud.pace.block(ns, func() int64 { return 0 }); until != 0 {
		h.State, h.PacedUntil = StatePaced, time.Unix(0, until)
	}
}
