package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/fakeopenai"
	"github.com/failover-go/failover/internal/redistest"
	"github.com/failover-go/failover/redisshare"
	openai "github.com/sashabaranov/go-openai"
)

// TestGoOpenAIFleetSharesHealth: two replicas of a go-openai service share
// their endpoints' health through one Redis (redisshare): when one finds
// the first endpoint failing and opens its breaker, the other goes to the
// second endpoint at once, without ever trying the first.
func TestGoOpenAIFleetSharesHealth(t *testing.T) {
	u := newUpstreams(t, fakeopenai.StatusFault(500))
	url, prefix := redistest.URL(t), redistest.Prefix(t)
	replica := func() (*failover.Transport, func() (string, error)) {
		store, err := redisshare.Open(url, redisshare.Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.Close() })
		cfg := u.cfg
		cfg.Shared = store
		cfg.Breaker = failover.BreakerConfig{FailureThreshold: 1, OpenTimeout: time.Minute}
		client, tr, err := failover.Wrap(nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		oc := openai.DefaultConfig("")
		oc.HTTPClient = client
		api := openai.NewClientWithConfig(oc)
		return tr, func() (string, error) { return goOpenAIChatContent(testContext(t), api) }
	}
	_, chatA := replica()
	trB, chatB := replica()

	if got, err := chatA(); err != nil || !strings.Contains(got, fakeopenai.Reply(secondName)) {
		t.Fatalf("replica A: %q, %v; want the second endpoint's answer", got, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for trB.Health()[0].State != failover.StateOpen {
		if time.Now().After(deadline) {
			t.Fatal("replica B never learned that A opened the first endpoint's breaker")
		}
		time.Sleep(5 * time.Millisecond) // polling B's health
	}
	if got, err := chatB(); err != nil || !strings.Contains(got, fakeopenai.Reply(secondName)) {
		t.Fatalf("replica B: %q, %v; want the second endpoint's answer", got, err)
	}
	if hits := u.first.Hits(); hits != 1 {
		t.Fatalf("the failing first endpoint got %d requests, want only A's one: B must skip it", hits)
	}
}
