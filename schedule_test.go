package failover

import (
	"fmt"
	"math"
	"net/http"
	"testing"
)

func TestScheduleSWRRIsSmooth(t *testing.T) {
	got := swrrSchedule([]int{5, 1, 1})
	want := []uint16{0, 0, 1, 0, 2, 0, 0} // nginx's classic example: a a b a c a a
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	long := swrrSchedule([]int{1 << 20, 1})
	if len(long) > maxSchedule {
		t.Fatalf("schedule of %d entries, want at most %d", len(long), maxSchedule)
	}
	ones := 0
	for _, i := range long {
		if i == 1 {
			ones++
		}
	}
	if ones != 1 {
		t.Fatalf("weight-1 endpoint appears %d times in the scaled schedule, want 1", ones)
	}
}

func TestScheduleWeightsSplitTraffic(t *testing.T) {
	for _, weights := range [][]int{{1, 1}, {1, 2, 7}, {3, 0, 5}, {100, 1}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			base := newScriptedBase(alwaysOK)
			var eps []Endpoint
			total := 0
			for i, w := range weights {
				e := hostEndpoint(fmt.Sprintf("w%d", i), 0)
				e.Weight = w
				eps = append(eps, e)
				total += max(w, 1)
			}
			tr, _ := newTestTransport(t, Config{Base: base, Endpoints: eps})
			const n = 2000
			for range n {
				req, _ := http.NewRequest(http.MethodGet, clientBase+"/models", nil)
				roundTrip(t, tr, req)
			}
			for i, w := range weights {
				want := float64(n) * float64(max(w, 1)) / float64(total)
				got := float64(base.Hits(fmt.Sprintf("w%d.test", i)))
				if math.Abs(got-want) > 0.02*n {
					t.Errorf("endpoint %d (weight %d): %v requests, want %.0f ± 2%%", i, w, got, want)
				}
			}
		})
	}
}

// TestScheduleHugeWeightsAndThresholds: weights whose sum overflows int and
// breaker counts beyond uint32 are accepted and mean what they say.
func TestScheduleHugeWeightsAndThresholds(t *testing.T) {
	big := uint64(1) << 32 // truncates to 0 where int has 32 bits: the default then
	base := newScriptedBase(func(req *http.Request, _ int) (*http.Response, error) {
		if req.URL.Host == "a.test" {
			return reply(500, "down"), nil
		}
		return reply(200, "ok"), nil
	})
	a, b := hostEndpoint("a", 0), hostEndpoint("b", 0)
	a.Weight, b.Weight = math.MaxInt, math.MaxInt-1
	tr, _ := newTestTransport(t, Config{Base: base, Endpoints: []Endpoint{a, b},
		Breaker: BreakerConfig{FailureThreshold: int(big), HalfOpenRequests: int(big)}})
	for range 4 {
		if status, _ := chat(t, tr); status != 200 {
			t.Fatalf("status %d, want 200 (b answers)", status)
		}
	}
	if base.Hits("a.test") == 0 || base.Hits("b.test") == 0 {
		t.Errorf("hits a=%d b=%d, want both weighted in", base.Hits("a.test"), base.Hits("b.test"))
	}
	if h := healthOf(t, tr, "a"); h.State != StateClosed {
		t.Errorf("a is %v after %d failures, want closed (threshold 1<<32)", h.State, h.Failures)
	}
}
