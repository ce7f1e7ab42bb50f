// Package ratelimit holds per-player token buckets: the move rate limit of
// SPEC.md (default 20 moves/s, bursts of 40), with the exact wait until
// the next token for the "retry_after_ms" of a rate_limited error.
//
// A bucket is kept as one int64, its theoretical arrival time (TAT, the
// generic cell rate algorithm): the instant at which the bucket would be
// full again. A move at now is allowed when max(TAT, now) + interval ≤
// now + burst·interval, and then moves TAT by one interval; a refused move
// changes nothing (hammering while limited does not lengthen the wait).
// The arithmetic is in integer nanoseconds: no drift, no float rounding.
//
// Time is passed in by the caller; nothing here reads the clock or
// sleeps.
package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"
	"unsafe"
)

// Limit is a token bucket's shape.
type Limit struct {
	Rate  float64 // tokens added per second, > 0
	Burst int     // bucket size: moves allowed at once from a full bucket, >= 1
}

// Default is SPEC's default move limit: 20 moves/s, bursts of 40.
var Default = Limit{Rate: 20, Burst: 40}

// String renders l as "20/s burst 40".
func (l Limit) String() string {
	return fmt.Sprintf("%g/s burst %d", l.Rate, l.Burst)
}

// Validate reports whether l can be used: Rate in (0, 1e9] (one token per
// nanosecond at most) and Burst >= 1, with Burst/Rate under about 146
// years.
func (l Limit) Validate() error {
	_, _, err := l.shape()
	return err
}

// shape returns the interval between tokens and the window
// (burst·interval), in nanoseconds.
func (l Limit) shape() (interval, window int64, err error) {
	if math.IsNaN(l.Rate) || l.Rate <= 0 || l.Rate > 1e9 {
		return 0, 0, fmt.Errorf("rate limit: rate %v must be in (0, 1e9] per second", l.Rate)
	}
	if l.Burst < 1 {
		return 0, 0, fmt.Errorf("rate limit: burst %d must be at least 1", l.Burst)
	}
	iv := math.Round(1e9 / l.Rate)
	if iv*float64(l.Burst) > 1<<62 {
		return 0, 0, errors.New("rate limit: burst/rate is too long")
	}
	return int64(iv), int64(iv) * int64(l.Burst), nil
}

// allow applies the GCRA to *tat at now (all in ns since some base).
func allow(tat *int64, now, interval, window int64) (bool, time.Duration) {
	next := max(*tat, now) + interval
	if wait := next - now - window; wait > 0 {
		return false, time.Duration(wait)
	}
	*tat = next
	return true, 0
}

// Bucket is a single token bucket, full at its first use. It is not safe
// for concurrent use; Keyed is.
type Bucket struct {
	interval, window int64
	base             time.Time // the first now seen
	tat              int64     // ns since base
	started          bool
}

// NewBucket returns a full bucket of shape l.
func NewBucket(l Limit) (*Bucket, error) {
	iv, w, err := l.shape()
	if err != nil {
		return nil, err
	}
	return &Bucket{interval: iv, window: w}, nil
}

// Allow takes a token at now if one is there and reports true; otherwise
// it reports false and the exact wait until a token will be there (then
// Allow(now+retryAfter) succeeds, unless tokens are taken meanwhile).
func (b *Bucket) Allow(now time.Time) (ok bool, retryAfter time.Duration) {
	if !b.started {
		b.base, b.started = now, true
	}
	return allow(&b.tat, int64(now.Sub(b.base)), b.interval, b.window)
}

const (
	shardBits = 6
	numShards = 1 << shardBits
	// minSweep is the shortest pause between two sweeps of one shard.
	minSweep = int64(time.Second)
	// shrinkFloor is the map size below which a shard never rebuilds its
	// map to give memory back.
	shrinkFloor = 1024
)

type shardState struct {
	mu        sync.Mutex
	tat       map[uint64]int64 // key hash → TAT, ns since Keyed.base
	lastSweep int64            // ns since Keyed.base
	swept     bool             // lastSweep is set
	peak      int              // largest len(tat) since the map was made
}

// shard is padded to a multiple of a cache line so that two shards'
// locks never share one.
type shard struct {
	shardState
	_ [(64 - unsafe.Sizeof(shardState{})%64) % 64]byte
}

// Keyed is a set of token buckets, one per key (a player id), safe for
// concurrent use. Keys are spread over 64 shards, each a mutex and a
// pointer-free map from the key's 64-bit hash to its TAT, so the garbage
// collector never scans them and no goroutine runs per key. Two keys
// whose 64-bit hashes collide (seeded per Keyed, so not chosen by an
// attacker; about 3e-11 for 35,000 players) share a bucket.
//
// A bucket that has refilled completely is the same as a bucket never
// used, so it is evicted: each shard sweeps its full buckets during an
// Allow at most once per max(burst/rate, 1s) (and again whenever the time
// passed in goes backwards), and Sweep sweeps them all.
// The number of buckets held stays below the number of keys seen in the
// last max(burst/rate, 1s) plus burst/rate (2 s for the default), and a
// shard whose map emptied below a quarter of its peak rebuilds it smaller,
// so memory follows the active players down as well as up. Eviction
// never changes an answer.
type Keyed struct {
	interval, window int64
	sweepEvery       int64
	base             time.Time
	seed             maphash.Seed
	shards           [numShards]shard
}

// NewKeyed returns an empty Keyed limiter of shape l.
func NewKeyed(l Limit) (*Keyed, error) {
	iv, w, err := l.shape()
	if err != nil {
		return nil, err
	}
	k := &Keyed{interval: iv, window: w, sweepEvery: max(w, minSweep), base: time.Now(), seed: maphash.MakeSeed()}
	for i := range k.shards {
		k.shards[i].tat = make(map[uint64]int64)
	}
	return k, nil
}

// Allow takes a token from key's bucket at now, as Bucket.Allow does; a
// key seen for the first time (or again after its bucket was evicted)
// starts with a full bucket. It does not allocate unless the shard's map
// grows.
func (k *Keyed) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	h := maphash.String(k.seed, key)
	s := &k.shards[h>>(64-shardBits)]
	t := int64(now.Sub(k.base))
	s.mu.Lock()
	if !s.swept || t-s.lastSweep >= k.sweepEvery || t < s.lastSweep {
		k.sweep(s, t)
	}
	tat, seen := s.tat[h]
	if !seen {
		tat = t // full
	}
	ok, retryAfter = allow(&tat, t, k.interval, k.window)
	if ok {
		s.tat[h] = tat
		s.peak = max(s.peak, len(s.tat))
	}
	s.mu.Unlock()
	return ok, retryAfter
}

// Sweep evicts every bucket that is full at now. Allow sweeps on its own;
// Sweep is for a caller that wants memory back after a burst without
// waiting for more traffic.
func (k *Keyed) Sweep(now time.Time) {
	t := int64(now.Sub(k.base))
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		k.sweep(s, t)
		s.mu.Unlock()
	}
}

// sweep evicts the full buckets of s, which must be locked, and shrinks
// its map when it has emptied.
func (k *Keyed) sweep(s *shard, t int64) {
	s.lastSweep, s.swept = t, true
	for h, tat := range s.tat {
		if tat <= t {
			delete(s.tat, h)
		}
	}
	if n := len(s.tat); s.peak >= shrinkFloor && n < s.peak/4 {
		m := make(map[uint64]int64, 2*n)
		for h, tat := range s.tat {
			m[h] = tat
		}
		s.tat, s.peak = m, n
	}
}

// Len returns the number of buckets held (those not known to be full).
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}
