package failover

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Shared rate budgets by leases. The fleet's budget for an endpoint is a
// token bucket in the shared state (rate R, burst B). A process takes a
// lease (one Lease call takes a batch of units), spends it locally, one
// atomic add per request, and renews it in the background when it runs
// low, so that no request waits on the shared state in the steady state.
//
// What a process holds (leased, not yet spent) follows its own spending:
// a renewal tops it up to a target of two leaseWindows of that spending,
// at most ceil(R*leaseWindow), and at least two requests' worth (2u, u
// the latest request's units: 1 for requests, its estimate for tokens,
// DefaultCompletionTokens before the first), so that a request never
// needs a renewal of its own; never more than B. It renews when less than
// half the target is left, so that a lease is about leaseWindow of its
// spending: a process doing 1,000 requests a second renews about 10 times
// a second. Units given back (a request not sent, a token estimate
// corrected down to the usage) never take the holding above the target:
// the rest goes back to the fleet's bucket (a Lease of a negative want),
// in the background.
//
// Bound: every unit the fleet spends was granted by the bucket, which
// grants at most R*T + B in any interval of length T; a unit granted before
// the interval and spent in it is the only excess. A process holds at most
// L = min(B, max(ceil(R*leaseWindow), 2E)), E the largest request it has
// sent (1 for requests; for tokens, the largest estimate, and at least
// DefaultCompletionTokens, which the first lease assumes), so in any
// interval N processes send at most R*T + B + N*L, each request counted at
// its charge. For tokens, two more terms when responses report usage: a
// request's charge moves from its estimate to its usage when its response
// ends, so the estimates less the usage of the requests in flight at the
// interval's start come back in it and are spent again; and a usage above
// an estimate is charged when the response ends, as a debt that the
// process's next lease pays first: what is not yet paid at the interval's
// end is spent beyond the grants. The README ("Running many replicas")
// states the same bound.

// While the shared state is unreachable, each process spends instead from
// a local limiter of rate R/N and burst max(1, B/N), N the processes last
// seen by heartbeat. A process cut off while the others are not adds its
// local share to the bound: up to R*T/N + max(1, B/N) each.

// leaseWindow is how much of its own spending a lease covers.
const leaseWindow = 100 * time.Millisecond

// leaseBudget is one endpoint's share of one fleet budget (requests or
// tokens): the units leased and not yet spent, the lease's sizing, and
// the local fallback. It outlives configurations, like the endpoint's
// state.
type leaseBudget struct {
	f    *fleet
	key  string
	kind string // "requests" or "tokens", for metrics
	cfg  atomic.Pointer[leaseConfig]

	pool     atomic.Int64 // leased units not yet spent; negative: a debt (tokens corrected up)
	spent    atomic.Int64 // units spent, ever
	need     atomic.Int64 // the largest spend refused since the last renewal
	unit     atomic.Int64 // the latest spend: what one request takes
	target   atomic.Int64 // what the last renewal topped the holding up to
	renewing atomic.Bool
	excess   atomic.Int64 // units given back beyond the target, to return to the bucket
	giving   atomic.Bool  // a return to the bucket is on its way
	dryUntil atomic.Int64 // unix nanoseconds: the bucket was short, no renewal before

	// Sizing, touched only by the renewal (one at a time).
	lastAt    time.Time
	lastSpent int64
	rate      float64 // this process's spending, units per second (EWMA)

	localMu sync.Mutex
	local   *rate.Limiter // R/N, burst max(1, B/N): the fallback
	localN  int

	leases atomic.Uint64 // leases granted (a metric)
}

// leaseConfig is a budget's rate and burst, as configured.
type leaseConfig struct {
	rate  float64
	burst int64
}

// newLeaseBudget returns the budget key of kind for the fleet f.
func newLeaseBudget(f *fleet, key, kind string, r float64, burst int64, unit int64) *leaseBudget {
	b := &leaseBudget{f: f, key: key, kind: kind}
	b.unit.Store(unit)
	b.configure(r, burst)
	return b
}

// configure sets the budget's rate and burst, and asks for a first lease
// when none is held.
func (b *leaseBudget) configure(r float64, burst int64) {
	b.cfg.Store(&leaseConfig{rate: r, burst: max(burst, 1)})
	b.localMu.Lock()
	b.local = nil // remade at the next fallback, to the new rate
	b.localMu.Unlock()
	if b.pool.Load() <= 0 {
		b.renew(b.f.clock.now())
	}
}

// maxLease is the largest lease of cfg.
func (c *leaseConfig) maxLease() int64 {
	return min(max(1, int64(math.Ceil(c.rate*leaseWindow.Seconds()))), c.burst)
}

// take spends n units at now, from the lease or, while the shared state is
// unreachable, from the local share. When it cannot, it returns how long
// to wait before looking again.
func (b *leaseBudget) take(now time.Time, n int64) (ok bool, wait time.Duration) {
	if n <= 0 {
		return true, 0
	}
	if b.unit.Load() != n {
		b.unit.Store(n)
	}
	if b.f.isDown() {
		if b.f.clock.now().UnixNano() >= b.f.retryAt.Load() {
			b.renew(now) // a try at rejoining
		}
		return b.takeLocal(now, n)
	}
	if left := b.pool.Add(-n); left >= 0 {
		b.spent.Add(n)
		if left < b.target.Load()/2 {
			b.renew(now)
		}
		return true, 0
	}
	b.pool.Add(n)
	for {
		old := b.need.Load()
		if n <= old || b.need.CompareAndSwap(old, n) {
			break
		}
	}
	b.renew(now)
	wait = 2 * time.Millisecond // a renewal's round trip
	if d := time.Duration(b.dryUntil.Load() - now.UnixNano()); d > wait {
		wait = d
	}
	return false, wait
}

// refund gives back n units taken by take for a request that was not sent.
func (b *leaseBudget) refund(now time.Time, n int64) {
	if n <= 0 {
		return
	}
	if b.f.isDown() {
		b.localMu.Lock()
		if b.local != nil {
			b.local.ReserveN(now, int(-n))
		}
		b.localMu.Unlock()
		return
	}
	b.give(n)
	b.spent.Add(-n)
}

// give adds n units to the pool, up to the holding's target, so that a
// process never holds more than the bound counts; the rest goes back to
// the fleet's bucket, in the background.
func (b *leaseBudget) give(n int64) {
	for {
		old := b.pool.Load()
		nw := min(old+n, max(old, b.target.Load()))
		if nw == old || b.pool.CompareAndSwap(old, nw) {
			if rest := n - (nw - old); rest > 0 {
				b.excess.Add(rest)
				b.giveBack()
			}
			return
		}
	}
}

// giveBack returns the excess to the fleet's bucket in the background,
// unless a return is on its way (it takes what has come since). A return
// that fails loses its units: the fleet sends less, never more.
func (b *leaseBudget) giveBack() {
	if !b.giving.CompareAndSwap(false, true) {
		return
	}
	b.f.background(func() {
		for {
			if n := b.excess.Swap(0); n > 0 {
				cfg := b.cfg.Load()
				_ = b.f.call(func(ctx context.Context) error {
					_, err := b.f.shared.Lease(ctx, b.key, cfg.rate, cfg.burst, -n)
					return err
				})
			}
			b.giving.Store(false)
			if b.excess.Load() == 0 || !b.giving.CompareAndSwap(false, true) {
				return
			}
		}
	})
}

// correct charges diff more units (or, negative, fewer) for a request
// already sent: its token estimate against the usage the provider counted.
func (b *leaseBudget) correct(now time.Time, diff int64) {
	if diff == 0 {
		return
	}
	if b.f.isDown() {
		b.localMu.Lock()
		if b.local != nil {
			burst := int64(b.local.Burst())
			b.local.ReserveN(now, int(max(min(diff, burst), -burst)))
		}
		b.localMu.Unlock()
		return
	}
	if diff < 0 {
		b.give(-diff)
	} else {
		b.pool.Add(-diff)
	}
	b.spent.Add(diff)
}

// takeLocal spends n units of the local share: rate R/N, burst
// max(1, B/N).
func (b *leaseBudget) takeLocal(now time.Time, n int64) (bool, time.Duration) {
	cfg := b.cfg.Load()
	procs := max(1, b.f.shared.Processes())
	b.localMu.Lock()
	defer b.localMu.Unlock()
	r := rate.Limit(cfg.rate / float64(procs))
	burst := int(max(1, cfg.burst/int64(procs)))
	switch {
	case b.local == nil:
		b.local = rate.NewLimiter(r, burst)
	case b.localN != procs:
		b.local.SetLimitAt(now, r)
		b.local.SetBurstAt(now, burst)
	}
	b.localN = procs
	n = min(n, int64(burst))
	if b.local.AllowN(now, int(n)) {
		return true, 0
	}
	missing := float64(n) - b.local.TokensAt(now)
	return false, max(time.Millisecond, time.Duration(missing/float64(r)*float64(time.Second)))
}

// renew asks for a lease in the background, unless one is on its way or
// the bucket was short a moment ago.
func (b *leaseBudget) renew(now time.Time) {
	if now.UnixNano() < b.dryUntil.Load() || !b.renewing.CompareAndSwap(false, true) {
		return
	}
	b.f.background(func() {
		defer b.renewing.Store(false)
		b.renewNow()
	})
}

// renewNow tops the holding up to its target, with one lease: this
// process's spending over two leaseWindows, within [1, maxLease], at
// least twice the latest spend and the largest refused one, at most the
// burst; plus any debt.
func (b *leaseBudget) renewNow() {
	cfg := b.cfg.Load()
	now := b.f.clock.now()
	spent := b.spent.Load()
	if !b.lastAt.IsZero() {
		if dt := now.Sub(b.lastAt).Seconds(); dt > 0 {
			sample := float64(spent-b.lastSpent) / dt
			b.rate += 0.5 * (sample - b.rate)
		}
	}
	b.lastAt, b.lastSpent = now, spent
	target := max(1, int64(math.Ceil(2*b.rate*leaseWindow.Seconds())))
	target = max(min(target, cfg.maxLease()), 2*b.unit.Load())
	if spent == 0 {
		target = max(target, cfg.maxLease()) // the first: a window's worth of the rate
	}
	target = min(max(target, b.need.Swap(0)), cfg.burst)
	b.target.Store(target)
	want := target - b.pool.Load() // a negative pool, a debt, is paid first
	if want <= 0 {
		return
	}
	var granted int64
	err := b.f.call(func(ctx context.Context) (err error) {
		granted, err = b.f.shared.Lease(ctx, b.key, cfg.rate, cfg.burst, want)
		return err
	})
	if err != nil {
		return
	}
	if granted > 0 {
		b.give(granted) // requests given back meanwhile may have filled some of it
		b.leases.Add(1)
	}
	if granted < want {
		// The bucket is short: it refills in (want-granted)/rate.
		d := time.Duration(float64(want-granted) / cfg.rate * float64(time.Second))
		b.dryUntil.Store(b.f.clock.now().Add(min(max(d, time.Millisecond), time.Second)).UnixNano())
	}
}
