package failover

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Affinity names what keeps related requests on one endpoint. The zero
// value, [AffinityNone], keeps none.
type Affinity string

const (
	// AffinityNone balances every request as [Config].Balancer says.
	AffinityNone Affinity = ""

	// AffinityPromptCacheKey keeps the requests of one conversation on
	// one endpoint of their tier, so that the provider's prompt cache
	// (kept per organization, routed by prefix and prompt_cache_key)
	// serves each turn. A request's key is the prompt_cache_key member of
	// its JSON body or, when it names none, its user, else its
	// safety_identifier. Requests with the same key go to the same
	// endpoint of their tier, chosen by a consistent hash weighted by
	// Weight (rendezvous hashing: adding or removing an endpoint moves
	// only the keys that it takes or held), while that endpoint is
	// eligible; when it is not (open, cooling down, at its rate limit,
	// paced by the provider's rate limit headers, or in slow start for
	// this key), the request goes at once, without an error, to the
	// key's next endpoint in the same order, and returns when it is
	// back. Requests without a key are balanced as usual.
	//
	// Its cost: a routed POST with a JSON body has its body's top-level
	// members scanned (not decoded) for the three names, the body read
	// once more from GetBody (or from the Transport's own copy) when it
	// has one; a request with a key then hashes it against each endpoint
	// of the tier. A body larger than [Config].MaxBodyBuffer (8 MiB by
	// default, and when buffering is off) is not scanned.
	AffinityPromptCacheKey Affinity = "prompt_cache_key"
)

// check returns what is wrong with a.
func (a Affinity) check() error {
	switch a {
	case AffinityNone, AffinityPromptCacheKey:
		return nil
	}
	return fmt.Errorf("failover: Affinity %q is not %q or empty", string(a), AffinityPromptCacheKey)
}

// Members of a request body that carry an affinity key, by preference.
var affinityMembers = [...]string{"prompt_cache_key", "user", "safety_identifier"}

// affinityKey returns the affinity key of req, whose body b holds, as a
// hash; 0 for none. It reads at most limit bytes of the body.
func affinityKey(req *http.Request, b *replayBody, limit int64) uint64 {
	if req.Method != http.MethodPost || req.Body == nil || req.Body == http.NoBody || !jsonContent(req.Header) {
		return 0
	}
	if req.ContentLength > limit {
		return 0
	}
	return keyOf(b.peek(limit))
}

// jsonContent reports whether h's Content-Type is JSON, or absent.
func jsonContent(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 || ct[0] == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct[0])
	return err == nil && (mt == "application/json" || (len(mt) > 5 && mt[len(mt)-5:] == "+json"))
}

// keyOf returns the hash of doc's affinity key, 0 for none: the first of
// affinityMembers that is a non-empty string at its top level.
func keyOf(doc []byte) uint64 {
	var found [len(affinityMembers)][]byte
	topFields(doc, func(k []byte, start, end int) bool {
		for i, name := range affinityMembers {
			if string(k) == name && end-start > 2 && doc[start] == '"' {
				found[i] = doc[start:end]
			}
		}
		return true
	})
	for _, lit := range found {
		if lit == nil {
			continue
		}
		raw := lit[1 : len(lit)-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			s, ok := unquoteJSON(lit)
			if !ok || s == "" {
				continue
			}
			raw = []byte(s)
		}
		if h := xxhash.Sum64(raw); h != 0 {
			return h
		}
		return 1
	}
	return 0
}

// bodyPool holds the buffers peek reads bodies into (*[]byte).
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledBody bounds the buffers kept in bodyPool.
const maxPooledBody = 1 << 20

// peek returns the whole body, for reading its fields: the bytes buffered
// for replay, else the bytes read once through GetBody into a pooled slice
// that b keeps until the request ends (close), so that every feature that
// reads the body (affinity, the token estimate) reads it once. It returns
// nil for a body it cannot read or above limit bytes.
func (b *replayBody) peek(limit int64) []byte {
	switch {
	case b.buffered:
		return b.data
	case b.peekBuf != nil:
		return b.peeked
	case b.getBody == nil:
		return nil
	}
	rc, err := b.getBody()
	if err != nil || rc == nil {
		return nil
	}
	buf := bodyPool.Get().(*[]byte)
	d := (*buf)[:0]
	if n := b.req.ContentLength; n > 0 && n <= limit && int(n) > cap(d) {
		d = make([]byte, 0, n+1)
	}
	for int64(len(d)) <= limit {
		if len(d) == cap(d) {
			d = append(d, 0)[:len(d)]
		}
		n, rerr := rc.Read(d[len(d):cap(d)])
		d = d[:len(d)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			d = nil
			break
		}
	}
	_ = rc.Close()
	if d != nil {
		*buf = d[:0]
	}
	b.peekBuf = buf
	if int64(len(d)) > limit {
		d = nil
	}
	b.peeked = d
	return d
}

// releaseBody returns a buffer of peek to the pool.
func releaseBody(buf *[]byte) {
	if buf != nil && cap(*buf) <= maxPooledBody {
		bodyPool.Put(buf)
	}
}

// pickByKey walks tr's members in the order of the request's key, its
// rendezvous order (highest score first), and returns the first that
// takes the request. During a slow start, a starting endpoint takes the
// keys of a share of it that grows with its factor (the same keys each
// time), and the others go to their next endpoint.
func (s *snapshot) pickByKey(tr *tier, clk *lazyClock, st *requestState, p *pickResult) (*endpoint, func(error), bool) {
	var buf, fbuf [16]float64
	scores := buf[:0]
	if len(tr.members) > len(buf) {
		scores = make([]float64, 0, len(tr.members))
	}
	var factors []float64
	if now := s.slowNow(clk); now != 0 {
		factors = s.slowFactors(tr, now, fbuf[:])
	}
	for i, e := range tr.members {
		sc := rendezvousScore(st.key, e)
		if factors != nil && unitFloat(splitmix64(st.key^e.hrw^slowSalt)) >= factors[i] {
			sc = -1 / sc // after every endpoint that takes the key now, in the same order
		}
		scores = append(scores, sc)
	}
	for range tr.members {
		best, bestScore := -1, math.Inf(-1)
		for i, sc := range scores {
			if sc > bestScore {
				best, bestScore = i, sc
			}
		}
		scores[best] = math.Inf(-1)
		e := tr.members[best]
		if done, ok := e.take(clk, st, p); ok {
			return e, done, true
		}
	}
	return nil, nil, false
}

// slowSalt separates the draw that decides whether a starting endpoint
// takes a key from the key's rendezvous score.
const slowSalt = 0x5d1e_57a2_7c0f_f1a3

// rendezvousScore is the weighted rendezvous score of key on e: Weight
// over the negated logarithm of a uniform draw from the key and the
// endpoint's name, so that each endpoint wins a share of the keys in
// proportion to its weight, and a key's winner changes only when that
// endpoint leaves or a new one outscores it.
func rendezvousScore(key uint64, e *endpoint) float64 {
	u := openUnitFloat(splitmix64(key ^ e.hrw))
	return float64(e.cfg.Weight) / -math.Log(u)
}

// nameHash is the hash of an endpoint's name that its rendezvous scores
// mix in: stable across processes and configurations.
func nameHash(name string) uint64 {
	return xxhash.Sum64String(name)
}
