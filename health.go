package failover

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is an endpoint's condition as [Transport.Health] reports it. The
// zero value is [StateClosed].
type State int

const (
	// StateClosed: the breaker is closed and the endpoint takes traffic.
	StateClosed State = iota
	// StateHalfOpen: the breaker lets trial requests through.
	StateHalfOpen
	// StateOpen: the breaker is open; the endpoint gets no requests until
	// its open timeout passes.
	StateOpen
	// StateCoolingDown: the breaker is closed but the endpoint rests after
	// a 429 or a Retry-After until CooldownUntil.
	StateCoolingDown
	// StateDisabled: the endpoint is configured Disabled and never chosen.
	StateDisabled
	// StatePaced: the breaker is closed but the provider's rate limit
	// headers said its remaining requests are spent until PacedUntil.
	StatePaced
)

var stateNames = [...]string{"closed", "half-open", "open", "cooling-down", "disabled", "paced"}

// String returns the state's name: "closed", "half-open", "open",
// "cooling-down" or "disabled".
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalText encodes the state as its name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a state from its name, so that a [HealthReport]
// read back from JSON has its states.
func (s *State) UnmarshalText(b []byte) error {
	for i, name := range stateNames {
		if string(b) == name {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("failover: unknown endpoint state %q", b)
}

// EndpointHealth is a snapshot of one endpoint's live state, for health
// pages and decisions. It never carries a key. [Transport.Health] fills
// it; the zero value names no endpoint and, its State being "", is not
// eligible.
type EndpointHealth struct {
	// Name is the endpoint's Name (defaulted as [Endpoint] says).
	Name string `json:"name"`
	// BaseURL is the endpoint's, without query or user information.
	BaseURL string `json:"base_url"`
	// Priority is as configured.
	Priority int `json:"priority"`
	// Weight is as configured, defaulted to 1.
	Weight int `json:"weight"`
	// State is the breaker's state, or cooling-down or disabled.
	State State `json:"state"`
	// StateSince is when the breaker last changed state (or New ran).
	StateSince time.Time `json:"state_since"`
	// Requests counts attempts sent to the endpoint.
	Requests uint64 `json:"requests"`
	// Failures counts attempts that failed (any failed [Outcome]).
	Failures uint64 `json:"failures"`
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures uint64 `json:"consecutive_failures"`
	// InFlight counts attempts awaiting their response headers.
	InFlight int64 `json:"in_flight"`
	// LastError describes the last failed attempt: a status or a transport
	// error. Empty when none failed.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened; zero when none failed.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Latency is an exponentially weighted moving average of the time to
	// the response headers (the newest attempt weighs 0.2).
	Latency time.Duration `json:"latency_ns"`
	// FirstToken is an exponentially weighted moving average of the time
	// from sending an attempt to its event stream's first event that
	// carries content (the newest stream weighs 0.2); zero before the
	// first stream.
	FirstToken time.Duration `json:"first_token_ns,omitempty"`
	// CooldownUntil is when a cooldown ends; zero when none is running.
	CooldownUntil time.Time `json:"cooldown_until,omitzero"`
	// Tokens is the rate limiter's available tokens; -1 when the endpoint
	// is not rate limited.
	Tokens float64 `json:"tokens"`
	// ProbeState is the recovery probes' state of the endpoint
	// ([ProbeConfig]): [ProbeStateScheduled] while it is out and its next
	// probe is planned, [ProbeStateProbing] while a probe is under way;
	// empty when it is not probed.
	ProbeState string `json:"probe_state,omitempty"`
	// NextProbeAt is when the next probe is planned; zero when none is.
	NextProbeAt time.Time `json:"next_probe_at,omitzero"`
	// LastProbeAt is when the last probe of the endpoint ended; zero
	// before the first.
	LastProbeAt time.Time `json:"last_probe_at,omitzero"`
	// LastProbeResult is the last probe's result: "success" (a 2xx),
	// "failure" (another status), "key_rejected" (401) or "error" (no
	// response); empty before the first.
	LastProbeResult string `json:"last_probe_result,omitempty"`
	// SlowStart is the share of its weight the endpoint takes now in its
	// slow start ([Config].SlowStart), from 0.1 up; zero when it is not
	// starting.
	SlowStart float64 `json:"slow_start,omitempty"`
	// LatencyEstimate is the least-latency balancer's estimate of the
	// endpoint's latency now (see [BalancerLeastLatency]): a
	// peak-sensitive moving average that decays with time; zero before
	// the first sample.
	LatencyEstimate time.Duration `json:"latency_estimate_ns,omitempty"`
	// Models maps each model the endpoint serves to the name it sends
	// it under ([Endpoint].Models, with "" shown as the model's own
	// name): names only. Nil when it serves every model.
	Models map[string]string `json:"models,omitempty"`
	// ModelSkips counts the requests that passed the endpoint by because
	// it does not serve the model they name: not failures.
	ModelSkips uint64 `json:"model_skips,omitempty"`
	// Provider is what the provider's x-ratelimit-* headers said last of
	// its limits; nil when no window they gave is running.
	Provider *ProviderLimits `json:"provider,omitempty"`
	// PacedUntil is when the provider's spent request window resets, for
	// an endpoint in StatePaced; zero otherwise.
	PacedUntil time.Time `json:"paced_until,omitzero"`
	// TokenBudget is the MaxTPM limiter's available tokens; -1 when the
	// endpoint has no MaxTPM.
	TokenBudget float64 `json:"token_budget"`
	// FleetOpenUntil is when another process's open period ends, for an
	// endpoint that is open because the fleet said so ([Config].Shared);
	// zero otherwise.
	FleetOpenUntil time.Time `json:"fleet_open_until,omitzero"`
}

// Health returns a snapshot of every endpoint, in configuration order. It is
// safe for concurrent use and cheap enough for a health page, not meant for
// every request.
func (t *Transport) Health() []EndpointHealth {
	s := t.snap.Load()
	now := t.clock.now()
	out := make([]EndpointHealth, len(s.endpoints))
	for i, e := range s.endpoints {
		out[i] = e.health(now)
		s.healHealth(e, &out[i], now)
	}
	return out
}

// health returns e's snapshot at now.
func (e *endpoint) health(now time.Time) EndpointHealth {
	bs, since := e.breaker.current(now)
	h := EndpointHealth{
		Name:                e.name,
		BaseURL:             redactURL(e.cfg.BaseURL),
		Priority:            e.cfg.Priority,
		Weight:              e.cfg.Weight,
		State:               State(bs),
		StateSince:          since,
		Requests:            e.hot.started.Load(),
		Failures:            e.stats.failures.Load(),
		ConsecutiveFailures: e.stats.consecutive.Load(),
		InFlight:            e.hot.inflight(),
		Latency:             e.hot.latency.value(),
		FirstToken:          e.hot.firstToken.value(),
		Tokens:              -1,
		Models:              modelNames(e.cfg.Models),
		ModelSkips:          e.hot.modelSkips.Load(),
	}
	if le := e.stats.lastErr.Load(); le != nil {
		h.LastError, h.LastErrorAt = le.msg, le.at
	}
	if until := e.cooling.at(now.UnixNano()); until != 0 {
		h.CooldownUntil = time.Unix(0, until)
		if bs == gobreaker.StateClosed {
			h.State = StateCoolingDown
		}
	}
	if e.limiter != nil {
		h.Tokens = e.limiter.TokensAt(now)
	}
	if e.cfg.Disabled {
		h.State = StateDisabled
	} else if h.State == StateHalfOpen {
		// This process's open period is over, but the fleet's runs on
		// (its trial failed in another process): the choice skips the
		// endpoint until then (fleetEndpoint.gate), so it is open.
		if until := e.bud.fleet.openTill.Load(); until > now.UnixNano() {
			h.State, h.FleetOpenUntil = StateOpen, time.Unix(0, until)
		}
	}
	e.budgetHealth(&h, now)
	return h
}

// Eligible reports whether the endpoint can take a request now, as far as
// its state tells: enabled, breaker not open, not cooling down, not paced.
// (A momentarily exhausted rate limiter does not make it ineligible.)
func (h EndpointHealth) Eligible() bool {
	return h.State == StateClosed || h.State == StateHalfOpen
}

// HealthReport is the JSON document [Transport.HealthHandler] serves. The
// handler fills it; the zero value, with an empty Status and no
// endpoints, is never served.
type HealthReport struct {
	// Status is "ok" while at least one endpoint is eligible, else
	// "unavailable".
	Status string `json:"status"`
	// Eligible counts the endpoints that can take a request now.
	Eligible int `json:"eligible"`
	// Endpoints is [Transport.Health].
	Endpoints []EndpointHealth `json:"endpoints"`
	// Shared is the state of [Config].Shared: "connected", or "degraded"
	// while it is unreachable (each budget in a local share, each breaker
	// on its own); empty without Shared.
	Shared string `json:"shared,omitempty"`
}

// HealthHandler returns an http.Handler serving a [HealthReport] as JSON,
// for a host application's health page or a load balancer's check: status
// 200 while at least one endpoint is eligible, 503 when none is. It carries
// no key. It answers GET and HEAD, and 405 to other methods.
func (t *Transport) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		rep := HealthReport{Status: "ok", Endpoints: t.Health(), Shared: t.fleet.state()}
		for _, h := range rep.Endpoints {
			if h.Eligible() {
				rep.Eligible++
			}
		}
		code := http.StatusOK
		if rep.Eligible == 0 {
			rep.Status, code = "unavailable", http.StatusServiceUnavailable
		}
		body, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			http.Error(w, "encoding health: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		if r.Method == http.MethodGet {
			_, _ = w.Write(append(body, '\n'))
		}
	})
}
