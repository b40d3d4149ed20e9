package failover

import (
	"errors"
	"log/slog"
	"net/http"
	"reflect"
)

// Update replaces the Transport's configuration with cfg, validated as
// [New] validates it. On any error it changes nothing and returns an error
// naming every problem. Otherwise the new endpoints, priorities, weights,
// limits, timeouts and policies apply from the next request on, while
// requests in flight finish on the configuration they started with.
//
// The exception is what belongs to a kept endpoint's live state rather
// than to a configuration: it changes when Update is called, for every
// request at once, those in flight included. That is the endpoint's
// breaker settings ([BreakerConfig] FailureThreshold and OpenTimeout: an
// attempt in flight settles against the new threshold, and a breaker
// opened after the Update stays open the new OpenTimeout), its rate
// limiter's MaxRPS and Burst and its token budget's MaxTPM and TokenBurst
// (an in-flight request's next attempt takes its token at the new rate),
// and, with Shared, its fleet leases. An endpoint whose MaxRPS or MaxTPM
// goes from zero to a limit is limited from the next request on only.
//
// Endpoints are matched by Name (defaulted as [Endpoint] says): an endpoint
// whose Name is kept keeps its live state (breaker state, cooldown,
// statistics, rate limiter tokens and metric series) under its new
// settings; a new endpoint starts closed; a removed endpoint's metric
// series are deleted. A change of [BreakerConfig].HalfOpenRequests gives
// each kept breaker a new count of failures (an open one stays open).
//
// Base, Registerer, Logger and Shared cannot change: a nil one in cfg
// keeps the Transport's, and any other value than the Transport's is an
// error.
//
// Update is safe for concurrent use with RoundTrip and with itself; a
// request's hot path takes no lock for it.
func (t *Transport) Update(cfg Config) error {
	errs := t.checkFixed(cfg)
	p, err := prepare(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.snap.Load()
	s := t.build(p, old)
	t.snap.Store(s)
	t.heal.watchAll(s)
	added, removed := diffNames(old, s)
	for _, name := range removed {
		t.metrics.forget(old.states()[name].m)
	}
	if t.logger != nil {
		t.logger.Info("failover: configuration updated",
			slog.Int("endpoints", len(s.endpoints)), slog.Any("added", added), slog.Any("removed", removed))
	}
	return nil
}

// checkFixed reports the fields of cfg that Update cannot change and that
// cfg would change.
func (t *Transport) checkFixed(cfg Config) []error {
	var errs []error
	if cfg.Base != nil && !same(cfg.Base, t.base) {
		errs = append(errs, errors.New("failover: Update: Base cannot change after New"))
	}
	if cfg.Registerer != nil && !same(cfg.Registerer, t.registerer) {
		errs = append(errs, errors.New("failover: Update: Registerer cannot change after New"))
	}
	if cfg.Logger != nil && cfg.Logger != t.logger {
		errs = append(errs, errors.New("failover: Update: Logger cannot change after New"))
	}
	if cfg.Shared != nil && (t.fleet == nil || !same(cfg.Shared, t.fleet.shared)) {
		errs = append(errs, errors.New("failover: Update: Shared cannot change after New"))
	}
	return errs
}

// same reports whether a and b are the same value, without the panic of ==
// on interfaces holding values that are not comparable (a function type
// that implements http.RoundTripper, say: two such are the same when they
// are the same function).
func same(a, b any) bool {
	if a == nil || b == nil {
		return a == b
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		return false
	}
	if va.Comparable() {
		return va.Equal(vb)
	}
	switch va.Kind() {
	case reflect.Func, reflect.Map, reflect.Slice, reflect.Pointer:
		return va.Pointer() == vb.Pointer()
	}
	return false
}

// diffNames returns the names of the endpoints s has and old has not, and
// of those old has and s has not, each in configuration order.
func diffNames(old, s *snapshot) (added, removed []string) {
	oldStates, newStates := old.states(), s.states()
	for _, e := range s.endpoints {
		if oldStates[e.name] == nil {
			added = append(added, e.name)
		}
	}
	for _, e := range old.endpoints {
		if newStates[e.name] == nil {
			removed = append(removed, e.name)
		}
	}
	return added, removed
}

// Wrap is [WrapClient] that also returns the Transport, for callers that
// reach [Transport.Update], [Transport.Health] or the handlers: a copy of
// c whose Transport is a failover [Transport] built from cfg, with c's own
// transport as cfg.Base (unless cfg.Base is set). A nil c means
// http.DefaultClient.
func Wrap(c *http.Client, cfg Config) (*http.Client, *Transport, error) {
	if c == nil {
		c = http.DefaultClient
	}
	if cfg.Base == nil {
		cfg.Base = c.Transport
	}
	t, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	out := *c
	out.Transport = t
	return &out, t, nil
}
