package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"treasure/internal/testenv"
)

// holderLog records the holders a waiting Acquire reported.
type holderLog struct {
	mu      sync.Mutex
	holders []string
}

func (h *holderLog) waiting(st LeaseState, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		h.holders = append(h.holders, st.Holder)
	}
}

func (h *holderLog) saw(holder string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.holders {
		if s == holder {
			return true
		}
	}
	return false
}

// async is a call of Acquire or Keep running in a goroutine: done closes
// when it has returned err. The test's end cancels it.
type async struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func start(tb testing.TB, f func(ctx context.Context) error) *async {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &async{cancel: cancel, done: make(chan struct{})}
	go func() {
		a.err = f(ctx)
		close(a.done)
	}()
	tb.Cleanup(func() { a.stop() })
	return a
}

// stop cancels the call and returns its result.
func (a *async) stop() error {
	a.cancel()
	<-a.done
	return a.err
}

// ended reports whether the call has returned.
func (a *async) ended() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func holderOf(tb testing.TB, ls *Leases, key string) string {
	tb.Helper()
	st, ok, err := ls.Get(ctxFor(tb, 10*time.Second), key)
	if err != nil {
		tb.Fatal(err)
	}
	if !ok {
		return ""
	}
	return st.Holder
}

// TestLeaseIsExclusiveAndReleaseHandsOverAtOnce: while a holds the lease b
// waits (and reports a as the holder); a's release hands it to b at once —
// with a TTL of an hour, only the watch on the key can wake b (its polls
// come every 7.5 minutes).
func TestLeaseIsExclusiveAndReleaseHandsOverAtOnce(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		ctx := ctxFor(t, 60*time.Second)
		ls, err := OpenLeases(ctx, e.js, e.topo, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key := PartitionLeaseKey(1)
		a := ls.Lease(key, LeaseOptions{Holder: "a"})
		if a.Valid() {
			t.Fatal("a lease not acquired yet is valid")
		}
		if err := a.Acquire(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if !a.Valid() || holderOf(t, ls, key) != "a" {
			t.Fatalf("after Acquire: valid %v, holder %q", a.Valid(), holderOf(t, ls, key))
		}
		var h holderLog
		b := ls.Lease(key, LeaseOptions{Holder: "b"})
		bAcq := start(t, func(ctx context.Context) error { return b.Acquire(ctx, h.waiting) })
		testenv.WaitUntil(t, 30*time.Second, "b reporting a as the holder", func() bool { return h.saw("a") })
		if bAcq.ended() {
			t.Fatalf("b acquired a held lease: %v", bAcq.err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if a.Valid() {
			t.Fatal("a released lease is valid")
		}
		select {
		case <-bAcq.done:
			if bAcq.err != nil {
				t.Fatal(bAcq.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("b did not acquire the released lease within 30 s")
		}
		if !b.Valid() || holderOf(t, ls, key) != "b" {
			t.Fatalf("after the handover: b valid %v, holder %q", b.Valid(), holderOf(t, ls, key))
		}
		// Another key is independent.
		if err := ls.Lease(PartitionLeaseKey(0), LeaseOptions{Holder: "a"}).Acquire(ctx, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLeaseOfAStoppedHolderExpires: a holder that stops renewing (killed,
// or frozen) counts its lease invalid before the server lets anybody else
// acquire it: at the instant b acquires, a's Valid is already false. a's
// Keep then reports the loss, and a's Release leaves b's lease alone.
func TestLeaseOfAStoppedHolderExpires(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		ctx := ctxFor(t, 60*time.Second)
		ls, a, key := heldLease(ctx, t, e, 2*time.Second)
		// No Keep: a stands for a holder that stopped. b contends, and
		// looks at a the instant it acquires.
		b := ls.Lease(key, LeaseOptions{Holder: "b"})
		var aValidAtB atomic.Bool
		bDone := make(chan error, 1)
		go func() {
			err := b.Acquire(ctx, nil)
			aValidAtB.Store(a.Valid())
			bDone <- err
		}()
		select {
		case err := <-bDone:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("b did not acquire the expired lease within 30 s")
		}
		if aValidAtB.Load() {
			t.Fatal("a's lease was still valid when b acquired it: two holders at once")
		}
		if err := a.Keep(ctx); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("a's Keep after its lease expired: %v, want ErrLeaseLost", err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := holderOf(t, ls, key); got != "b" || !b.Valid() {
			t.Fatalf("after a's late release: holder %q, b valid %v; want b's lease untouched", got, b.Valid())
		}
	})
}

// TestLeaseRenewedKeepsOthersOut: a holder that keeps renewing holds its
// lease for three TTLs while another contends, and stays valid; stopping
// Keep is not a loss.
func TestLeaseRenewedKeepsOthersOut(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		ctx := ctxFor(t, 60*time.Second)
		ttl := 3 * time.Second
		ls, a, key := heldLease(ctx, t, e, ttl)
		keep := start(t, a.Keep)
		var h holderLog
		bctx, cancel := context.WithTimeout(ctx, 3*ttl)
		defer cancel()
		b := ls.Lease(key, LeaseOptions{Holder: "b"})
		bDone := make(chan error, 1)
		go func() { bDone <- b.Acquire(bctx, h.waiting) }()
		for {
			select {
			case err := <-bDone:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("b's Acquire while a renews: %v, want the context's deadline", err)
				}
			case <-keep.done:
				t.Fatalf("a's Keep ended: %v", keep.err)
			case <-time.After(20 * time.Millisecond):
				if !a.Valid() {
					t.Fatal("a renewing lease turned invalid")
				}
				continue
			}
			break
		}
		if !h.saw("a") {
			t.Fatal("b never reported a as the holder")
		}
		if err := keep.stop(); err != nil {
			t.Fatalf("Keep stopped by its context: %v, want nil", err)
		}
		if !a.Valid() || holderOf(t, ls, key) != "a" {
			t.Fatal("a's lease ended with its Keep")
		}
	})
}

// TestLeaseLostWhenDeletedOrTaken: an operator deleting the key, or
// another holder writing it, ends the holder's lease at its next renewal:
// Keep returns ErrLeaseLost saying which, and Valid is false.
func TestLeaseLostWhenDeletedOrTaken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, want string
		do         func(ctx context.Context, ls *Leases, key string) error
	}{
		{"deleted", "deleted or expired", func(ctx context.Context, ls *Leases, key string) error { return ls.kv.Delete(ctx, key) }},
		{"taken", "taken by intruder", func(ctx context.Context, ls *Leases, key string) error {
			_, err := ls.kv.Put(ctx, key, []byte(`{"holder":"intruder"}`))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := sharedEnv(t)
			ctx := ctxFor(t, 60*time.Second)
			ls, a, key := heldLease(ctx, t, e, 3*time.Second)
			keep := start(t, a.Keep)
			if err := tc.do(ctx, ls, key); err != nil {
				t.Fatal(err)
			}
			select {
			case <-keep.done:
				if err := keep.err; !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Keep: %v, want ErrLeaseLost saying %q", err, tc.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Keep did not notice within 30 s")
			}
			if a.Valid() {
				t.Fatal("a lost lease is valid")
			}
		})
	}
}

// TestLeaseRenewalWhoseAnswerWasLostIsKept: when the last write of the key
// is the holder's own (a renewal stored but unanswered, stood for here by
// a Put of the holder's value), the next renewal's refusal is not a loss:
// the holder renews from that revision and keeps its lease.
func TestLeaseRenewalWhoseAnswerWasLostIsKept(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	ls, a, key := heldLease(ctx, t, e, 3*time.Second)
	val, _ := json.Marshal(LeaseValue{Holder: "a", Acquired: time.Now()})
	rev, err := ls.kv.Put(ctx, key, val)
	if err != nil {
		t.Fatal(err)
	}
	keep := start(t, a.Keep)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if keep.ended() {
			t.Fatalf("Keep ended: %v", keep.err)
		}
		st, ok, err := ls.Get(ctx, key)
		if err != nil || !ok || st.Holder != "a" {
			t.Fatalf("lease %+v %v %v, want a's", st, ok, err)
		}
		if st.Revision <= rev+1 {
			return "waiting for two renewals after the unanswered write"
		}
		return ""
	})
	if err := keep.stop(); err != nil || !a.Valid() {
		t.Fatalf("Keep: %v, valid %v; want a's lease kept", err, a.Valid())
	}
	// A contender with a's name (a restarted worker must not share one)
	// would take it for its own: Acquire takes the holder's key back.
	again := ls.Lease(key, LeaseOptions{Holder: "a"})
	if err := again.Acquire(ctx, nil); err != nil || !again.Valid() {
		t.Fatalf("Acquire of a key holding our own name: %v", err)
	}
}

// TestOpenLeases: the first TTL a bucket is created with applies to every
// later opener; a TTL below MinLeaseTTL is refused; BindLeases finds no
// bucket before one is created.
func TestOpenLeases(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ctx := ctxFor(t, 30*time.Second)
	if _, err := BindLeases(ctx, e.js, e.topo); !errors.Is(err, ErrNoLeases) {
		t.Fatalf("BindLeases without a bucket: %v, want ErrNoLeases", err)
	}
	if _, err := OpenLeases(ctx, e.js, e.topo, MinLeaseTTL/2); err == nil {
		t.Fatal("a TTL below MinLeaseTTL was accepted")
	}
	first, err := OpenLeases(ctx, e.js, e.topo, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	second, err := OpenLeases(ctx, e.js, e.topo, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bound, err := BindLeases(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, ls := range []*Leases{first, second, bound} {
		if ls.TTL() != 5*time.Second || ls.Bucket() != e.topo.Prefix+"-leases" {
			t.Fatalf("bucket %s TTL %v, want %s-leases with the first opener's 5s", ls.Bucket(), ls.TTL(), e.topo.Prefix)
		}
	}
	if def, err := OpenLeases(ctx, e.js, Topology{Prefix: e.topo.Prefix + "d", Partitions: 1}, 0); err != nil || def.TTL() != DefaultLeaseTTL {
		t.Fatalf("default TTL: %v %v", def, err) // its bucket, KV_<prefix>d-leases, goes with e's
	}
}

// TestConsumerFenceStopsRun: a Fence that starts refusing ends Run with
// ErrFenced before the next handler call: what follows stays
// unacknowledged for the consumer's next Run.
func TestConsumerFenceStopsRun(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	seqs := e.publishSync(t, e.topo.InSubject(0), 20)
	var fenced atomic.Bool
	var calls atomic.Int32
	c := e.newConsumer(t, ConsumerOptions{Subjects: []string{e.topo.InSubject(0)}, Batch: 5, MaxAckPending: 5,
		Fence: func() error {
			if fenced.Load() {
				return errors.New("lease lapsed")
			}
			return nil
		}})
	ctx := ctxFor(t, 30*time.Second)
	err := c.Run(ctx, func(_ context.Context, msgs []Msg) error {
		calls.Add(1)
		fenced.Store(true)
		return nil
	})
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "lease lapsed") {
		t.Fatalf("Run: %v, want ErrFenced with the fence's reason", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d handler calls, want 1 (the fence refused before the second)", calls.Load())
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream >= seqs[len(seqs)-1] {
		t.Fatalf("ack floor %d: everything acked after the fence", info.AckFloor.Stream)
	}
}

// BenchmarkLeaseValid: the check a proximity partition makes before every
// input it applies (and every pull and batch).
func BenchmarkLeaseValid(b *testing.B) {
	l := (&Leases{ttl: time.Hour}).Lease("k", LeaseOptions{Holder: "h"})
	l.wrote(1, time.Now())
	for b.Loop() {
		if !l.Valid() {
			b.Fatal("invalid")
		}
	}
}

// heldLease opens e's lease bucket with ttl and has holder "a" acquire
// partition 0's lease.
func heldLease(ctx context.Context, t *testing.T, e env, ttl time.Duration) (*Leases, *Lease, string) {
	t.Helper()
	ls, err := OpenLeases(ctx, e.js, e.topo, ttl)
	if err != nil {
		t.Fatal(err)
	}
	key := PartitionLeaseKey(0)
	a := ls.Lease(key, LeaseOptions{Holder: "a"})
	if err := a.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return ls, a, key
}
