// Package redisshare is a [failover.Shared] on Redis: one rate budget and
// one view of the endpoints' health for a fleet of processes that send
// through failover Transports (or run failover proxy) with the same
// endpoints.
//
//	store, err := redisshare.Open("redis://redis.internal:6379/0", redisshare.Options{})
//	if err != nil { ... }           // never shows the URL's password
//	defer store.Close()
//	cfg.Shared = store              // failover.Config
//
// What it keeps in Redis, every key under Options.Prefix ("failover:"):
//
//   - "rps:<endpoint>" and "tpm:<endpoint>": a token bucket per budget
//     (a hash of its level and the time of its last refill, on Redis's
//     clock), from which one Lua script call takes a lease;
//   - "h:<kind>:<endpoint>": the last health change of each kind (open,
//     cooldown, paced), expiring when it ends, for processes that join
//     later; every change is also published on the channel "events";
//   - "trial:<endpoint>" and "probe:<endpoint>": claims, SET NX with an
//     expiry;
//   - "procs": a sorted set of the processes alive, by heartbeat.
//
// Each call is bounded by the caller's context (the Transport's
// SharedTimeout, 10ms by default); the client neither retries nor waits
// beyond it. A Store serves any number of Transports of one process.
package redisshare

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/failover-go/failover"
)

// DefaultPrefix is the key prefix when [Options].Prefix is empty.
const DefaultPrefix = "failover:"

// DefaultHeartbeat is how often a Store reports its process alive when
// [Options].Heartbeat is zero; a process not heard of for three of them
// is no longer counted.
const DefaultHeartbeat = time.Second

// Options configures a [Store]. The zero value means the defaults.
type Options struct {
	// Prefix is put before every key and the channel, so that several
	// fleets can share one Redis. Empty means [DefaultPrefix].
	Prefix string

	// Heartbeat is how often the process reports itself alive. Zero means
	// [DefaultHeartbeat].
	Heartbeat time.Duration

	// Logger receives the Store's own logs (losing and regaining the
	// event subscription) at Warn. Nil means silent. No line carries the
	// URL's password.
	Logger *slog.Logger
}

// Store is a [failover.Shared] on one Redis. Create it with [Open], [New]
// or [FromEnv]; the zero value is not usable. It is safe for concurrent
// use. Close it when no Transport uses it any more.
type Store struct {
	c       *redis.Client
	own     bool // Close closes c
	prefix  string
	id      string // this process's, in the heartbeat set and its events
	beat    time.Duration
	logger  *slog.Logger
	channel string

	procs atomic.Int64

	mu   sync.Mutex
	subs map[int]func(failover.SharedEvent)
	next int

	ps     *redis.PubSub
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// Open connects to the Redis at rawURL (redis:// or rediss://, with an
// optional user, password and database number:
// redis://user:password@host:6379/0) and returns a Store on it. Its error
// never shows the URL's password. It does not wait for Redis: a Store
// whose Redis is down works as one that went down later (the Transport
// falls back to local shares).
func Open(rawURL string, opts Options) (*Store, error) {
	ro, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	s := New(redis.NewClient(ro), opts)
	s.own = true
	return s, nil
}

// parseURL parses a Redis URL into client options fit for a budget on the
// critical path's side: no retry, deadlines from the context.
func parseURL(rawURL string) (*redis.Options, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil {
		// url.Parse's error quotes the URL, password and all.
		return nil, errors.New("redisshare: the Redis URL does not parse (not shown: it may carry a password)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, errors.New("redisshare: the Redis URL's scheme is not redis or rediss")
	}
	if u.Host == "" {
		return nil, errors.New("redisshare: the Redis URL has no host")
	}
	ro, err := redis.ParseURL(u.String())
	if err != nil {
		msg := err.Error()
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "[REDACTED]")
			msg = strings.ReplaceAll(msg, url.PathEscape(p), "[REDACTED]")
		}
		return nil, fmt.Errorf("redisshare: the Redis URL: %s", msg)
	}
	ro.MaxRetries = -1              // a budget call fails within its deadline, never retried late
	ro.ContextTimeoutEnabled = true // the caller's deadline bounds each call
	ro.DisableIdentity = true       // no CLIENT SETINFO (Redis before 7.2 refuses it)
	ro.Protocol = 2                 // plain replies, no push notifications
	ro.DialTimeout = time.Second
	ro.DialerRetries = 1 // one dial per call: a Redis that is down fails the call at once
	return ro, nil
}

// RouteClientLogs sends the log lines of the Redis client (go-redis's, such
// as "connection pool: failed to dial", printed to stderr by default, one
// per failed call while Redis is down) to logger at Debug; a nil logger
// drops them. It sets go-redis's logger for the whole process: call it
// once, from main. The lines carry Redis's address, never a password.
func RouteClientLogs(logger *slog.Logger) {
	redis.SetLogger(clientLogger{logger})
}

// clientLogger adapts go-redis's logging to log/slog.
type clientLogger struct{ l *slog.Logger }

func (c clientLogger) Printf(ctx context.Context, format string, v ...any) {
	if c.l != nil {
		c.l.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
	}
}

// New returns a Store on the client c, which it does not close. It starts
// the heartbeat and the event subscription.
func New(c *redis.Client, opts Options) *Store {
	s := &Store{
		c:      c,
		prefix: opts.Prefix,
		id:     newID(),
		beat:   opts.Heartbeat,
		logger: opts.Logger,
		subs:   map[int]func(failover.SharedEvent){},
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.beat <= 0 {
		s.beat = DefaultHeartbeat
	}
	s.channel = s.prefix + "events"
	s.procs.Store(1)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.heartbeat()
	s.ps = c.Subscribe(s.ctx, s.channel)
	s.wg.Add(2)
	go s.beatLoop()
	go s.receiveLoop()
	return s
}

// newID returns a random process ID.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ID returns this process's ID in the fleet.
func (s *Store) ID() string { return s.id }

// String names the Store by its prefix and ID, never its URL.
func (s *Store) String() string {
	return "redisshare.Store{prefix: " + strconv.Quote(s.prefix) + ", id: " + s.id + "}"
}

// Close stops the heartbeat and the subscription, removes the process
// from the fleet's count, and closes the client if Open made it.
func (s *Store) Close() error {
	var err error
	s.closed.Do(func() {
		s.cancel()
		_ = s.ps.Close()
		s.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = s.c.ZRem(ctx, s.prefix+"procs", s.id).Err()
		if s.own {
			err = s.c.Close()
		}
	})
	return err
}

// leaseScript takes up to ARGV[3] units from the bucket KEYS[1] (rate
// ARGV[1] per second, burst ARGV[2]), on Redis's clock, and returns how
// many it took; a negative ARGV[3] gives units back (up to the burst) and
// is returned as is.
var leaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(v[1])
local at = tonumber(v[2])
if level == nil or at == nil then
  level = burst
  at = now
end
if now > at then
  level = math.min(burst, level + (now - at) * rate / 1000000)
end
local granted = want
if want < 0 then
  level = math.min(burst, level - want)
else
  granted = math.floor(math.min(want, level))
  if granted < 0 then granted = 0 end
  level = level - granted
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return granted
`)

// Lease takes up to want units from the bucket key, or gives -want back;
// see [failover.Shared].
func (s *Store) Lease(ctx context.Context, key string, rate float64, burst, want int64) (int64, error) {
	if rate <= 0 || math.IsNaN(rate) || math.IsInf(rate, 0) || burst < 1 || want == 0 {
		return 0, fmt.Errorf("redisshare: lease of %d from a bucket of rate %v and burst %d", want, rate, burst)
	}
	n, err := leaseScript.Run(ctx, s.c, []string{s.prefix + key},
		strconv.FormatFloat(rate, 'g', -1, 64), burst, want).Int64()
	if err != nil {
		return 0, fmt.Errorf("redisshare: lease: %w", err)
	}
	return n, nil
}

// Claim reports whether this process won key for ttl (SET NX PX).
func (s *Store) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := s.c.SetArgs(ctx, s.prefix+key, s.id, redis.SetArgs{Mode: "NX", TTL: max(ttl, time.Millisecond)}).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("redisshare: claim: %w", err)
	}
	return ok == "OK", nil
}

// Processes returns the processes last seen alive, at least 1.
func (s *Store) Processes() int { return int(max(1, s.procs.Load())) }

// heartbeatScript adds ARGV[1] to the set KEYS[1] at Redis's time, drops
// the members older than ARGV[2] milliseconds, and counts the rest.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
`)

// heartbeat reports this process alive and counts the fleet.
func (s *Store) heartbeat() {
	ctx, cancel := context.WithTimeout(s.ctx, max(s.beat/2, 100*time.Millisecond))
	defer cancel()
	n, err := heartbeatScript.Run(ctx, s.c, []string{s.prefix + "procs"}, s.id, (3 * s.beat).Milliseconds()).Int64()
	if err == nil && n > 0 {
		s.procs.Store(n)
	}
}

// beatLoop beats every s.beat; at first more often (from 50ms, doubling),
// so that processes started together soon count each other.
func (s *Store) beatLoop() {
	defer s.wg.Done()
	every := min(50*time.Millisecond, s.beat)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.heartbeat()
			every = min(2*every, s.beat)
			t.Reset(every)
		}
	}
}

// Subscribe calls fn with every event of the other processes; see
// [failover.Shared].
func (s *Store) Subscribe(fn func(failover.SharedEvent)) (stop func()) {
	s.mu.Lock()
	id := s.next
	s.next++
	s.subs[id] = fn
	s.mu.Unlock()
	// The events kept so far, for a subscriber that comes late.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.catchUp(fn)
	}()
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

// healthKey is where the last event of ev's kind for its endpoint is kept.
func (s *Store) healthKey(kind failover.SharedEventKind, endpoint string) string {
	return s.prefix + "h:" + kind.String() + ":" + endpoint
}

// Publish keeps ev until its Until and publishes it; see
// [failover.Shared].
func (s *Store) Publish(ctx context.Context, ev failover.SharedEvent) error {
	msg := encodeEvent(ev, s.id)
	pipe := s.c.Pipeline()
	if ev.Kind == failover.SharedBreakerClosed {
		pipe.Del(ctx, s.healthKey(failover.SharedBreakerOpen, ev.Endpoint))
	} else if ttl := time.Until(ev.Until); ttl > 0 {
		pipe.Set(ctx, s.healthKey(ev.Kind, ev.Endpoint), msg, ttl)
	}
	pipe.Publish(ctx, s.channel, msg)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redisshare: publish: %w", err)
	}
	return nil
}

// encodeEvent is "kind|until (unix ns)|origin|endpoint": the name last, as
// it may hold any character.
func encodeEvent(ev failover.SharedEvent, origin string) string {
	var until int64
	if !ev.Until.IsZero() {
		until = ev.Until.UnixNano()
	}
	return ev.Kind.String() + "|" + strconv.FormatInt(until, 10) + "|" + origin + "|" + ev.Endpoint
}

// decodeEvent reverses encodeEvent.
func decodeEvent(msg string) (ev failover.SharedEvent, origin string, ok bool) {
	parts := strings.SplitN(msg, "|", 4)
	if len(parts) != 4 {
		return ev, "", false
	}
	kind, ok := failover.ParseSharedEventKind(parts[0])
	until, err := strconv.ParseInt(parts[1], 10, 64)
	if !ok || err != nil {
		return ev, "", false
	}
	ev = failover.SharedEvent{Endpoint: parts[3], Kind: kind}
	if until != 0 {
		ev.Until = time.Unix(0, until)
	}
	return ev, parts[2], true
}

// deliver hands an event of another process to every subscriber.
func (s *Store) deliver(msg string) {
	ev, origin, ok := decodeEvent(msg)
	if !ok || origin == s.id {
		return
	}
	s.mu.Lock()
	fns := make([]func(failover.SharedEvent), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(ev)
	}
}

// catchUp hands fn (or, for nil, every subscriber) the events kept.
func (s *Store) catchUp(fn func(failover.SharedEvent)) {
	ctx, cancel := context.WithTimeout(s.ctx, time.Second)
	defer cancel()
	iter := s.c.Scan(ctx, 0, s.prefix+"h:*", 100).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if iter.Err() != nil || len(keys) == 0 {
		return
	}
	vals, err := s.c.MGet(ctx, keys...).Result()
	if err != nil {
		return
	}
	for _, v := range vals {
		msg, ok := v.(string)
		if !ok {
			continue
		}
		if fn == nil {
			s.deliver(msg)
			continue
		}
		if ev, origin, ok := decodeEvent(msg); ok && origin != s.id {
			fn(ev)
		}
	}
}

// receiveLoop delivers the channel's events until Close; at each
// (re)subscription it catches up with the events kept, so that a process
// that lost Redis for a while learns what it missed.
func (s *Store) receiveLoop() {
	defer s.wg.Done()
	failing := false
	for {
		msg, err := s.ps.Receive(s.ctx)
		if s.ctx.Err() != nil {
			return
		}
		if err != nil {
			if !failing && s.logger != nil {
				s.logger.Warn("redisshare: event subscription lost; retrying", "error", err.Error())
			}
			failing = true
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if failing && s.logger != nil {
				s.logger.Warn("redisshare: event subscription back")
			}
			failing = false
			s.catchUp(nil)
		case *redis.Message:
			s.deliver(m.Payload)
		}
	}
}
