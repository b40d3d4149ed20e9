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
// A lease's size follows this process's own spending: about leaseWindow
// of it, at most ceil(R*leaseWindow), so a process doing 1,000 requests a
// second renews about 10 times a second; and at least two requests'
// worth (for a token budget, two of the latest request's estimate), so
// that a request never needs a renewal of its own.
//
// Bound: every unit the fleet spends was granted by the bucket, which
// grants at most R*T + B in any interval of length T; a unit leased
// before the interval and spent in it is the only excess. A process holds
// at most 1.5 leases, so in any interval the fleet sends at most
// R*T + B + N*1.5*ceil(R*leaseWindow) for N processes, and much less in
// practice, since the leases follow each process's share of the traffic.
//
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
	lease    atomic.Int64 // the size of the last lease asked
	renewing atomic.Bool
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
		if left < b.lease.Load()/2 {
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
	b.pool.Add(n)
	b.spent.Add(-n)
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
	b.pool.Add(-diff)
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

// renewNow takes one lease: this process's spending over leaseWindow,
// within [1, maxLease], plus any debt and the largest refused spend.
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
	want := max(1, int64(math.Ceil(b.rate*leaseWindow.Seconds())))
	want = max(min(want, cfg.maxLease()), 2*b.unit.Load())
	if b.lastSpent == 0 && spent == 0 {
		want = max(want, cfg.maxLease()) // the first: a window's worth of the rate
	}
	if debt := -b.pool.Load(); debt > 0 {
		want += debt
	}
	want = max(want, b.need.Swap(0)-max(b.pool.Load(), 0))
	want = min(want, cfg.burst+max(-b.pool.Load(), 0))
	b.lease.Store(want)
	var granted int64
	err := b.f.call(func(ctx context.Context) (err error) {
		granted, err = b.f.shared.Lease(ctx, b.key, cfg.rate, cfg.burst, want)
		return err
	})
	if err != nil {
		return
	}
	if granted > 0 {
		b.pool.Add(granted)
		b.leases.Add(1)
	}
	if granted < want {
		// The bucket is short: it refills in (want-granted)/rate.
		d := time.Duration(float64(want-granted) / cfg.rate * float64(time.Second))
		b.dryUntil.Store(b.f.clock.now().Add(min(max(d, time.Millisecond), time.Second)).UnixNano())
	}
}
