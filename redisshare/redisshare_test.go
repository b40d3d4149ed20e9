package redisshare

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/redistest"
)

func TestMain(m *testing.M) {
	RouteClientLogs(nil) // go-redis's dial failures while a test's Redis is down
	goleak.VerifyTestMain(m)
}

// waitBound bounds every wait of these tests on real time: generous, as
// the machines are shared and slow.
const waitBound = 10 * time.Second

// open returns a Store on url with prefix, closed with the test.
func open(t testing.TB, url, prefix string, opts Options) *Store {
	t.Helper()
	opts.Prefix = prefix
	s, err := Open(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ctx returns a context bounding one call generously.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return c
}

// eventually polls cond until it holds, failing after waitBound.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, waitBound)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestLease: a lease takes what the bucket holds, up to the burst, and the
// bucket refills at its rate on Redis's clock.
func TestLease(t *testing.T) {
	s := open(t, redistest.URL(t), redistest.Prefix(t), Options{})
	var got []int64
	for range 3 {
		n, err := s.Lease(ctx(t), "rps:a", 10, 10, 4)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if !slices.Equal(got, []int64{4, 4, 2}) {
		t.Fatalf("leases of 4 from a full bucket of 10: %v, want [4 4 2]", got)
	}
	start := time.Now()
	eventually(t, "refilled", func() bool {
		n, err := s.Lease(ctx(t), "rps:a", 10, 10, 1)
		return err == nil && n == 1
	})
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("a unit came back after %v, want about 100ms at 10 a second", d)
	}
	if _, err := s.Lease(ctx(t), "rps:a", 0, 10, 1); err == nil {
		t.Fatal("a lease at rate 0 was taken")
	}
}

// TestClaim: of many processes claiming a key at once, exactly one wins;
// once its expiry passes, the key can be won again.
func TestClaim(t *testing.T) {
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	stores := make([]*Store, 6)
	for i := range stores {
		stores[i] = open(t, url, prefix, Options{})
	}
	var wins atomic.Int64
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Go(func() {
			won, err := s.Claim(ctx(t), "trial:a", 200*time.Millisecond)
			if err != nil {
				t.Error(err)
			}
			if won {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d processes won the claim, want exactly 1", wins.Load())
	}
	eventually(t, "claimable again after its expiry", func() bool {
		won, err := stores[0].Claim(ctx(t), "trial:a", time.Minute)
		return err == nil && won
	})
}

// TestEvents: an event one process publishes reaches the others (not
// itself) within 100ms, and a process that joins later finds the events
// still running.
func TestEvents(t *testing.T) {
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	a, b := open(t, url, prefix, Options{}), open(t, url, prefix, Options{})
	type got struct {
		ev failover.SharedEvent
		at time.Time
	}
	recv := func(s *Store) (chan got, func()) {
		ch := make(chan got, 100)
		stop := s.Subscribe(func(ev failover.SharedEvent) { ch <- got{ev, time.Now()} })
		return ch, stop
	}
	chA, stopA := recv(a)
	defer stopA()
	chB, stopB := recv(b)
	defer stopB()
	// Wait until b's subscription is live: a first event gets through.
	eventually(t, "subscribed", func() bool {
		if err := a.Publish(ctx(t), failover.SharedEvent{Endpoint: "warm-up", Kind: failover.SharedBreakerClosed}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-chB:
			return true
		case <-time.After(20 * time.Millisecond):
			return false
		}
	})
	var lat []time.Duration
	for i := range 20 {
		ev := failover.SharedEvent{Endpoint: "name|with|bars " + strings.Repeat("é", i), Kind: failover.SharedCooldown,
			Until: time.Now().Add(time.Minute).Truncate(time.Nanosecond)}
		sent := time.Now()
		if err := a.Publish(ctx(t), ev); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-chB:
			if g.ev.Endpoint != ev.Endpoint || g.ev.Kind != ev.Kind || !g.ev.Until.Equal(ev.Until) {
				t.Fatalf("b got %+v, want %+v", g.ev, ev)
			}
			lat = append(lat, g.at.Sub(sent))
		case <-time.After(waitBound):
			t.Fatal("b never got the event")
		}
	}
	slices.Sort(lat)
	if med := lat[len(lat)/2]; med > 100*time.Millisecond {
		t.Fatalf("median delivery %v, want within 100ms (all: %v)", med, lat)
	}
	select {
	case g := <-chA:
		if g.ev.Endpoint != "warm-up" {
			t.Fatalf("a got its own event %+v", g.ev)
		}
	default:
	}
	if err := a.Publish(ctx(t), failover.SharedEvent{Endpoint: "x", Kind: failover.SharedBreakerOpen, Until: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	c := open(t, url, prefix, Options{})
	chC, stopC := recv(c)
	defer stopC()
	eventually(t, "told the running open period", func() bool {
		for {
			select {
			case g := <-chC:
				if g.ev.Endpoint == "x" && g.ev.Kind == failover.SharedBreakerOpen {
					return true
				}
			default:
				return false
			}
		}
	})
}

// TestProcesses: the heartbeat counts the processes alive, and forgets
// one that closed.
func TestProcesses(t *testing.T) {
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	var stores []*Store
	for range 3 {
		stores = append(stores, open(t, url, prefix, Options{Heartbeat: 50 * time.Millisecond}))
	}
	eventually(t, "3 processes", func() bool { return stores[0].Processes() == 3 })
	_ = stores[2].Close()
	eventually(t, "2 processes", func() bool { return stores[0].Processes() == 2 })
}

// TestPasswordNeverShown: no error of a URL, a refused password or an
// unreachable server shows the password.
func TestPasswordNeverShown(t *testing.T) {
	const secret = "s3cret-Pa55word"
	srv := redistest.Start(t, "--requirepass", "right-"+secret)
	for _, raw := range []string{
		"redis://:" + secret + "@127.0.0.1:bad/0",
		"redis://:" + secret + "@%zz/0",
		"http://:" + secret + "@127.0.0.1/0",
		"redis://:" + secret + "@127.0.0.1:6379/notanumber",
		"redis://:" + secret + "@127.0.0.1:6379/0?dial_timeout=" + secret,
	} {
		if _, err := Open(raw, Options{}); err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("Open: %v; want an error without the password", err)
		}
	}
	_, err := FromEnviron([]string{EnvURL + "=redis://:" + secret + "@127.0.0.1:bad/0"}, Options{})
	if err == nil || !strings.Contains(err.Error(), EnvURL) || strings.Contains(err.Error(), secret) {
		t.Errorf("FromEnviron: %v; want an error naming %s, without the password", err, EnvURL)
	}
	s := open(t, "redis://:"+secret+"@"+srv.Addr()+"/0", redistest.Prefix(t), Options{})
	if _, err := s.Lease(ctx(t), "rps:a", 1, 1, 1); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Lease with a wrong password: %v; want an error without the password", err)
	}
	if strings.Contains(s.String(), secret) {
		t.Errorf("String shows the password: %s", s)
	}
}

// TestFromEnviron: no URL, no Store; a URL and a prefix, a Store there.
func TestFromEnviron(t *testing.T) {
	s, err := FromEnviron([]string{"OTHER=1"}, Options{})
	if s != nil || err != nil {
		t.Fatalf("FromEnviron without %s: %v, %v; want nil, nil", EnvURL, s, err)
	}
	url := redistest.URL(t)
	s, err = FromEnviron([]string{EnvURL + "=" + url, EnvPrefix + "=fleet-a:"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.prefix != "fleet-a:" || !strings.Contains(s.String(), "fleet-a:") {
		t.Fatalf("prefix %q, want fleet-a:", s.prefix)
	}
	if _, err := s.Lease(ctx(t), "rps:a", 1, 1, 1); err != nil {
		t.Fatal(err)
	}
}
