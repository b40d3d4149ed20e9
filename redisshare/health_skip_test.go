package redisshare

import (
	"net/http"
	"testing"
	"time"

	"github.com/failover-go/failover"
)

// TestHealthFleetSkips: a 429 with a delay (Retry-After, retry-after-ms),
// or a response saying the provider's remaining requests are spent
// (x-ratelimit-remaining-requests: 0 and its reset), on one process of a
// fleet of three makes the other two skip that endpoint until the same
// instant, learned within 100ms (nine in ten of the delays from the
// provider's answer to another process's Health showing it); none
// of them sends to it before that instant, and each goes back to it
// after. The process hit rotates with the rounds.
func TestHealthFleetSkips(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rounds   int
		status   int
		header   []string
		lasts    time.Duration // how long the skip lasts, as the header says
		answered string        // the endpoint that answers the request that met it
		state    failover.State
		until    func(failover.EndpointHealth) time.Time
	}{
		{"cooldown Retry-After", 2, http.StatusTooManyRequests, []string{"Retry-After", "1"}, time.Second, "y",
			failover.StateCoolingDown, func(h failover.EndpointHealth) time.Time { return h.CooldownUntil }},
		{"cooldown retry-after-ms", 10, http.StatusTooManyRequests, []string{"Retry-After-Ms", "400"}, 400 * time.Millisecond, "y",
			failover.StateCoolingDown, func(h failover.EndpointHealth) time.Time { return h.CooldownUntil }},
		{"pacing", 10, http.StatusOK, []string{"X-Ratelimit-Limit-Requests", "60", "X-Ratelimit-Remaining-Requests", "0",
			"X-Ratelimit-Reset-Requests", "400ms"}, 400 * time.Millisecond, "x",
			failover.StatePaced, func(h failover.EndpointHealth) time.Time { return h.PacedUntil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 3
			p := newHealthProvider()
			trs := healthFleet(t, n, p, failover.Config{})
			var lat []time.Duration
			for round := range tc.rounds {
				from := len(p.hitsOf("x.test"))
				hit, others := trs[round%n], make([]*failover.Transport, 0, n-1)
				for i, tr := range trs {
					if i != round%n {
						others = append(others, tr)
					}
				}
				p.set("x.test", tc.status, tc.header...)
				watch := watchHealth(t, others, "x", func(h failover.EndpointHealth) bool { return !tc.until(h).IsZero() })
				if got := sendVia(t, hit); got != tc.answered {
					t.Fatalf("round %d: the request that met the %d was answered by %q, want %q", round, tc.status, got, tc.answered)
				}
				p.set("x.test", http.StatusOK)
				hits := p.hitsOf("x.test")[from:]
				if len(hits) != 1 || hits[0].proc != round%n || hits[0].status != tc.status {
					t.Fatalf("round %d: x got %+v, want one %d to process %d", round, hits, tc.status, round%n)
				}
				answeredAt := hits[0].at
				seen := watch()
				until := tc.until(endpointHealth(t, hit, "x"))
				if d := until.Sub(answeredAt); d < tc.lasts || d > tc.lasts+time.Second {
					t.Fatalf("round %d: process %d skips x for %v after the answer, want %v as the header says", round, round%n, d, tc.lasts)
				}
				for i, tr := range others {
					lat = append(lat, seen[i].Sub(answeredAt))
					h := endpointHealth(t, tr, "x")
					if time.Now().Before(until) && (h.State != tc.state || !tc.until(h).Equal(until)) {
						t.Fatalf("round %d: another process's x: %v until %v, want %v until %v", round, h.State, tc.until(h), tc.state, until)
					}
					sendVia(t, tr) // skips x until then: checked at the provider below
				}
				eventually(t, "x taken again by every process", func() bool {
					for _, tr := range trs {
						if !endpointHealth(t, tr, "x").Eligible() {
							return false
						}
					}
					return true
				})
				for _, tr := range others {
					if got := sendVia(t, tr); got != "x" {
						t.Fatalf("round %d: after the skip another process's request went to %q, want x", round, got)
					}
				}
				for _, h := range p.hitsOf("x.test")[from+1:] {
					if h.at.Before(until) {
						t.Fatalf("round %d: process %d sent to x %v before the skip it learned ended", round, h.proc, until.Sub(h.at))
					}
				}
			}
			t.Logf("%s: delay from the provider's answer to another process's Health showing the skip: %s", tc.name, latencySpread(lat))
			learnedWithin100ms(t, tc.name, lat)
		})
	}
}
