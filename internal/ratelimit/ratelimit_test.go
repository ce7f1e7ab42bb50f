package ratelimit

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func newBucket(tb testing.TB, l Limit) *Bucket {
	tb.Helper()
	b, err := NewBucket(l)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func newKeyed(tb testing.TB, l Limit) *Keyed {
	tb.Helper()
	k, err := NewKeyed(l)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestLimitValidate(t *testing.T) {
	for _, l := range []Limit{Default, {Rate: 0.001, Burst: 1}, {Rate: 1e9, Burst: 1 << 20}, {Rate: 3, Burst: 1}} {
		if err := l.Validate(); err != nil {
			t.Errorf("%v: %v", l, err)
		}
	}
	for _, l := range []Limit{{}, {Rate: 20}, {Rate: -1, Burst: 5}, {Rate: 20, Burst: -1}, {Rate: 2e9, Burst: 1},
		{Rate: 1e-12, Burst: 40}} {
		if err := l.Validate(); err == nil {
			t.Errorf("%v accepted", l)
		}
		if _, err := NewKeyed(l); err == nil {
			t.Errorf("NewKeyed(%v) accepted", l)
		}
	}
	if nan := (Limit{Rate: float64(0) / zero(), Burst: 1}); nan.Validate() == nil {
		t.Error("NaN rate accepted")
	}
}

func zero() float64 { return 0 }

func TestBurstThenSteadyRate(t *testing.T) {
	b := newBucket(t, Default)
	for i := range 40 {
		if ok, _ := b.Allow(t0); !ok {
			t.Fatalf("move %d of the burst refused", i+1)
		}
	}
	ok, wait := b.Allow(t0)
	if ok || wait != 50*time.Millisecond {
		t.Fatalf("41st move: ok %v, retry after %v; want refused, 50ms", ok, wait)
	}
	// From an empty bucket, exactly one move per 50 ms, for 10 s.
	for i := 1; i <= 200; i++ {
		now := at(time.Duration(i) * 50 * time.Millisecond)
		if ok, _ := b.Allow(now); !ok {
			t.Fatalf("steady move %d refused", i)
		}
		if ok, wait := b.Allow(now); ok || wait != 50*time.Millisecond {
			t.Fatalf("second move at step %d: ok %v, retry %v", i, ok, wait)
		}
	}
}

func TestRefillIsProportional(t *testing.T) {
	b := newBucket(t, Default)
	for range 40 {
		b.Allow(t0)
	}
	// 1 s idle refills 20 tokens, not more.
	n := 0
	for {
		ok, _ := b.Allow(at(time.Second))
		if !ok {
			break
		}
		n++
	}
	if n != 20 {
		t.Fatalf("1 s refilled %d tokens, want 20", n)
	}
	// A long idle fills the bucket to the burst, not beyond.
	n = 0
	for ok := true; ok; n++ {
		ok, _ = b.Allow(at(time.Hour))
	}
	if n-1 != 40 {
		t.Fatalf("after an hour %d tokens, want 40", n-1)
	}
}

func TestRetryAfterIsExact(t *testing.T) {
	b := newBucket(t, Default)
	for range 40 {
		b.Allow(t0)
	}
	now := at(30 * time.Millisecond)
	ok, wait := b.Allow(now)
	if ok || wait != 20*time.Millisecond {
		t.Fatalf("ok %v, retry %v; want refused, 20ms", ok, wait)
	}
	// Refusals take nothing: asking again at once gives the same wait.
	if ok, again := b.Allow(now); ok || again != wait {
		t.Fatalf("repeated ask: ok %v, retry %v", ok, again)
	}
	if ok, _ := b.Allow(now.Add(wait - 1)); ok {
		t.Fatal("allowed 1 ns before the promised time")
	}
	if ok, _ := b.Allow(now.Add(wait)); !ok {
		t.Fatal("refused at the promised time")
	}
}

// TestRetryAfterProperty drives random limits and arrival times: every
// refusal's wait is exact (refused 1 ns earlier, allowed then), and the
// number allowed in [0,T] never exceeds burst + T·rate.
func TestRetryAfterProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		l := Limit{Rate: float64(1 + rng.IntN(100)), Burst: 1 + rng.IntN(50)}
		iv, _, err := l.shape()
		if err != nil {
			t.Fatal(err)
		}
		b := newBucket(t, l)
		var now time.Duration
		allowed := 0
		for range 2000 {
			now += time.Duration(rng.Int64N(int64(2 * time.Duration(iv))))
			ok, wait := b.Allow(at(now))
			if ok {
				allowed++
				continue
			}
			if wait <= 0 {
				t.Fatalf("%v: refused with wait %v", l, wait)
			}
			probe := *b
			if ok, _ := probe.Allow(at(now + wait - 1)); ok {
				t.Fatalf("%v: allowed before the wait %v", l, wait)
			}
			probe = *b
			if ok, _ := probe.Allow(at(now + wait)); !ok {
				t.Fatalf("%v: refused after the wait %v", l, wait)
			}
		}
		if bound := l.Burst + int(now/time.Duration(iv)); allowed > bound {
			t.Fatalf("%v: allowed %d in %v, bound %d", l, allowed, now, bound)
		}
	}
}

func TestClockGoingBackwardsIsSafe(t *testing.T) {
	b := newBucket(t, Limit{Rate: 1, Burst: 1})
	if ok, _ := b.Allow(t0); !ok {
		t.Fatal("first refused")
	}
	ok, wait := b.Allow(t0.Add(-time.Hour))
	if ok || wait != time.Hour+time.Second {
		t.Fatalf("ok %v wait %v", ok, wait)
	}
}

func TestKeyedKeysAreIndependent(t *testing.T) {
	k := newKeyed(t, Limit{Rate: 10, Burst: 2})
	for _, key := range []string{"alice", "bob", ""} {
		for i := range 2 {
			if ok, _ := k.Allow(key, t0); !ok {
				t.Fatalf("%q move %d refused", key, i)
			}
		}
		if ok, wait := k.Allow(key, t0); ok || wait != 100*time.Millisecond {
			t.Fatalf("%q third move: ok %v wait %v", key, ok, wait)
		}
	}
	if n := k.Len(); n != 3 {
		t.Fatalf("Len %d, want 3", n)
	}
}

// TestKeyedMatchesBuckets runs random traffic over many keys against one
// Bucket per key: the answers are the same, evictions notwithstanding.
func TestKeyedMatchesBuckets(t *testing.T) {
	l := Limit{Rate: 20, Burst: 5}
	k := newKeyed(t, l)
	ref := map[string]*Bucket{}
	rng := rand.New(rand.NewPCG(3, 4))
	var now time.Duration
	for i := range 50000 {
		now += time.Duration(rng.Int64N(int64(2 * time.Millisecond)))
		key := "p" + strconv.Itoa(rng.IntN(300))
		b, ok := ref[key]
		if !ok {
			b = newBucket(t, l)
			ref[key] = b
		}
		wantOK, wantWait := b.Allow(at(now))
		gotOK, gotWait := k.Allow(key, at(now))
		if gotOK != wantOK || gotWait != wantWait {
			t.Fatalf("call %d key %s at %v: keyed %v %v, bucket %v %v", i, key, now, gotOK, gotWait, wantOK, wantWait)
		}
		if i%7919 == 0 {
			k.Sweep(at(now))
		}
	}
}

func TestKeyedEvictsFullBuckets(t *testing.T) {
	k := newKeyed(t, Default) // an empty bucket refills in 2 s
	const n = 3000
	for i := range n {
		for range 40 {
			k.Allow("p"+strconv.Itoa(i), t0)
		}
	}
	k.Allow("light", t0) // one move: full again after 50 ms
	if got := k.Len(); got != n+1 {
		t.Fatalf("Len %d, want %d", got, n+1)
	}
	k.Sweep(at(50 * time.Millisecond))
	if got := k.Len(); got != n {
		t.Fatalf("after 50 ms Len %d, want %d", got, n)
	}
	// Not yet full 1 ns before 2 s: nothing more may go.
	k.Sweep(at(2*time.Second - 1))
	if got := k.Len(); got != n {
		t.Fatalf("before 2 s Len %d, want %d", got, n)
	}
	// Traffic alone brings memory down: from 2 s on every old bucket is
	// full, and once a shard's last sweep is 2 s old, its next move sweeps.
	for i := range 1000 {
		k.Allow("q"+strconv.Itoa(i), at(4*time.Second-2))
	}
	if got := k.Len(); got != n+1000 {
		t.Fatalf("before the sweep period Len %d, want %d", got, n+1000)
	}
	for i := range 1000 {
		k.Allow("q"+strconv.Itoa(i), at(4*time.Second-1))
	}
	if got := k.Len(); got != 1000 {
		t.Fatalf("after the sweep period Len %d, want 1000 (the new keys)", got)
	}
	k.Sweep(at(time.Hour))
	if got := k.Len(); got != 0 {
		t.Fatalf("after an hour Len %d, want 0", got)
	}
	// An evicted key starts full again, as it would have been.
	for i := range 40 {
		if ok, _ := k.Allow("p1", at(time.Hour)); !ok {
			t.Fatalf("evicted key: move %d refused", i)
		}
	}
}

func TestSweepShrinksEmptiedMaps(t *testing.T) {
	k := newKeyed(t, Default)
	s := &k.shards[0]
	for h := range uint64(4 * shrinkFloor) {
		s.tat[h] = int64(h) // full from t = h ns on
	}
	s.peak = len(s.tat)
	k.sweep(s, int64(3*shrinkFloor)) // keeps a quarter minus one
	if len(s.tat) != shrinkFloor-1 || s.peak != len(s.tat) {
		t.Fatalf("after sweep: %d buckets, peak %d; want %d, map rebuilt", len(s.tat), s.peak, shrinkFloor-1)
	}
	for h, tat := range s.tat {
		if tat <= int64(3*shrinkFloor) || uint64(tat) != h {
			t.Fatalf("bucket %d kept with TAT %d", h, tat)
		}
	}
	// Below the floor a shard keeps its map.
	s.peak = shrinkFloor - 1
	k.sweep(s, int64(4*shrinkFloor))
	if len(s.tat) != 0 || s.peak != shrinkFloor-1 {
		t.Fatalf("%d buckets, peak %d", len(s.tat), s.peak)
	}
}

func TestKeyedSweepsAfterClockGoesBack(t *testing.T) {
	k := newKeyed(t, Default)
	k.Sweep(t0) // every shard last swept at t0
	back := at(-time.Hour)
	for i := range 500 {
		k.Allow("p"+strconv.Itoa(i), back)
	}
	// Sweeping restarted from the earlier time: 2 s later, traffic alone
	// evicts the (long full) buckets, rather than an hour later. A shard
	// sweeps only when it sees traffic, and keys land in shards by a hash
	// seeded per process: 5,000 keys reach every one of the 64 shards
	// (the chance that one is missed is about 1e-34; with 500 it was 2 %).
	for i := range 5000 {
		k.Allow("q"+strconv.Itoa(i), back.Add(2*time.Second))
	}
	if got := k.Len(); got != 5000 {
		t.Fatalf("Len %d, want 5000 (the q keys)", got)
	}
}

// TestKeyedConcurrent hammers one shared key and many own keys from
// several goroutines at one instant: exactly burst moves pass per key.
// Run it with -race.
func TestKeyedConcurrent(t *testing.T) {
	k := newKeyed(t, Default)
	const workers, tries = 8, 200
	var shared atomic.Int64
	own := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := "own-" + strconv.Itoa(w)
			for range tries {
				if ok, _ := k.Allow("shared", t0); ok {
					shared.Add(1)
				}
				if ok, _ := k.Allow(key, t0); ok {
					own[w]++
				}
			}
			k.Sweep(t0)
			_ = k.Len()
		})
	}
	wg.Wait()
	if got := shared.Load(); got != 40 {
		t.Errorf("shared key allowed %d, want 40", got)
	}
	for w, n := range own {
		if n != 40 {
			t.Errorf("worker %d own key allowed %d, want 40", w, n)
		}
	}
}

func TestKeyedAllowDoesNotAllocate(t *testing.T) {
	k := newKeyed(t, Default)
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "player-" + strconv.Itoa(i)
		k.Allow(keys[i], t0)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		k.Allow(keys[i%len(keys)], at(time.Duration(i)*time.Millisecond))
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per Allow", allocs)
	}
}

func BenchmarkKeyedAllow(b *testing.B) {
	k := newKeyed(b, Default)
	keys := make([]string, 35000)
	for i := range keys {
		keys[i] = "player-" + strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k.Allow(keys[i%len(keys)], now.Add(time.Duration(i)*time.Microsecond))
		i++
	}
}

func BenchmarkKeyedAllowParallel(b *testing.B) {
	k := newKeyed(b, Default)
	keys := make([]string, 35000)
	for i := range keys {
		keys[i] = "player-" + strconv.Itoa(i)
	}
	now := time.Now()
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			k.Allow(keys[int(i)%len(keys)], now.Add(time.Duration(i)*time.Microsecond))
		}
	})
}
