package push

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// ckptStore binds to e's checkpoint bucket (made by the first Run).
func (e env) ckptStore(tb testing.TB) *natsjs.Checkpoints {
	tb.Helper()
	c, err := natsjs.BindCheckpoints(ctxFor(tb, 30*time.Second), e.js, e.topo)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// pushSeqs returns the stored push checkpoints' sequences, newest first.
func pushSeqs(tb testing.TB, c *natsjs.Checkpoints) []uint64 {
	tb.Helper()
	list, err := c.PushList(ctxFor(tb, 30*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	var seqs []uint64
	for _, ci := range list {
		seqs = append(seqs, ci.Seq)
	}
	return seqs
}

// purgeBelow removes every OUT message with a sequence below seq.
func (e env) purgeBelow(tb testing.TB, seq uint64) {
	tb.Helper()
	ctx := ctxFor(tb, 30*time.Second)
	st, err := e.js.Stream(ctx, e.topo.OutStream())
	if err != nil {
		tb.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(seq)); err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if info.State.FirstSeq != seq {
		tb.Fatalf("after the purge the stream starts at %d, want %d", info.State.FirstSeq, seq)
	}
}

// waitNext waits until r's next id for player is n.
func waitNext(tb testing.TB, r *running, player string, n uint64) {
	tb.Helper()
	testenv.WaitFor(tb, 20*time.Second, func() string {
		if got := r.s.hub.nextID(player); got != n {
			return fmt.Sprintf("%s: next id %d, want %d", player, got, n)
		}
		return ""
	})
}

// TestRestartAfterHeadPurgedContinuesIds: an instance stopped cleanly
// leaves a checkpoint; with the stream's head purged up to it and more
// published, a new instance continues every player's ids without a gap,
// resumes from ids in the checkpoint's ring and the tail, and has the
// leaderboard.
func TestRestartAfterHeadPurgedContinuesIds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := 0; i < 4; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("ann", uint64(1+5*i), 5)...)
	}
	e.publish(t, e.topo.OutSubject(0), prox("bob", 1, 3, "T", 4, 5))
	e.publish(t, e.topo.RankSubject(), board(1, row("ann", 10, 1)))
	a := e.start(t, Options{RingSize: 8})
	waitNext(t, a, "ann", 21)
	a.stop() // clean shutdown: the final checkpoint
	if n := counter(t, a.s.ckpt.written); n != 1 {
		t.Fatalf("%v checkpoints written at shutdown, want 1", n)
	}
	c := e.ckptStore(t)
	seqs := pushSeqs(t, c)
	if len(seqs) != 1 || seqs[0] != 6 {
		t.Fatalf("checkpoints at %v, want [6]", seqs)
	}
	e.publish(t, e.topo.OutSubject(1), proxN("ann", 21, 5)...)      // seq 7: ids 21…25
	e.publish(t, e.topo.OutSubject(0), prox("bob", 2, 3, "", 0, 0)) // seq 8
	e.purgeBelow(t, 5)                                              // a sequence below the checkpoint's

	b := e.start(t, Options{RingSize: 8})
	if n := counter(t, b.s.ckpt.loaded); n != 1 {
		t.Fatalf("checkpoint loaded %v times, want 1", n)
	}
	waitNext(t, b, "ann", 26)
	waitNext(t, b, "bob", 3)
	if b.s.hub.latest.Load() == nil {
		t.Fatal("no leaderboard after the restart")
	}
	// Resume across the checkpoint: 19 and 20 from its ring, 21… from the tail.
	ws := b.dial(t, "ann", "after=18")
	for i := uint64(19); i <= 25; i++ {
		want(t, ws.nextUpdate(), fmt.Sprintf(`{"type":"proximity","id":%d,"seq":%d,"node":%d,"treasure":null}`, i, i, 100+(i-1)%5))
	}
	want(t, b.dial(t, "bob", "after=0").nextUpdate(), `{"type":"proximity","id":1,"seq":1,"node":3,"treasure":{"id":"T","node":4,"distance":5}}`)
	e.publish(t, e.topo.OutSubject(0), prox("ann", 26, 9, "", 0, 0))
	want(t, ws.nextUpdate(), `{"type":"proximity","id":26,"seq":26,"node":9,"treasure":null}`)
}

// TestDamagedNewestPushCheckpointUsesPrevious: the newest checkpoint,
// damaged (a flipped byte, stored as a sound object), is refused, counted
// and deleted, and the one before it plus the tail gives the same ids.
func TestDamagedNewestPushCheckpointUsesPrevious(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("cy", uint64(1+4*i), 4)...)
	}
	a := e.start(t, Options{})
	waitNext(t, a, "cy", 13)
	a.stop() // checkpoint at 3
	for i := 3; i < 5; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("cy", uint64(1+4*i), 4)...)
	}
	a2 := e.start(t, Options{})
	waitNext(t, a2, "cy", 21)
	a2.stop() // checkpoint at 5
	c := e.ckptStore(t)
	if seqs := pushSeqs(t, c); fmt.Sprint(seqs) != "[5 3]" {
		t.Fatalf("checkpoints at %v, want [5 3]", seqs)
	}
	ctx := ctxFor(t, 30*time.Second)
	data, err := c.PushGet(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0x10
	if err := c.PushPut(ctx, 5, bad); err != nil {
		t.Fatal(err)
	}
	e.publish(t, e.topo.OutSubject(1), proxN("cy", 21, 2)...) // seq 6
	e.purgeBelow(t, 4)

	b := e.start(t, Options{})
	if n := counter(t, b.s.ckpt.invalid); n != 1 {
		t.Fatalf("%v checkpoints refused, want 1", n)
	}
	if n := counter(t, b.s.ckpt.loaded); n != 1 {
		t.Fatalf("checkpoint loaded %v times, want 1", n)
	}
	waitNext(t, b, "cy", 23)
	ws := b.dial(t, "cy", "after=11")
	for i := uint64(12); i <= 22; i++ {
		want(t, ws.nextUpdate(), fmt.Sprintf(`{"type":"proximity","id":%d,"seq":%d,"node":%d,"treasure":null}`, i, i, 100+(i-1)%4))
	}
	if seqs := pushSeqs(t, c); fmt.Sprint(seqs) != "[3]" {
		t.Fatalf("after the start, checkpoints at %v, want [3] (the damaged one deleted)", seqs)
	}
}

// TestCheckpointsWhileRunning: with a short interval, a running instance
// writes checkpoints as messages arrive (not only at shutdown), keeps only
// the newest CheckpointKeep, and a second instance started meanwhile loads
// one and gives the same ids.
func TestCheckpointsWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(t, Options{CheckpointEvery: time.Millisecond, CheckpointKeep: 2})
	seq := uint64(1)
	testenv.WaitFor(t, 30*time.Second, func() string {
		e.publish(t, e.topo.OutSubject(0), prox("dee", seq, 1, "", 0, 0))
		seq++
		if n := counter(t, a.s.ckpt.written); n < 4 {
			return fmt.Sprintf("%v checkpoints written", n)
		}
		return ""
	})
	waitNext(t, a, "dee", seq)
	c := e.ckptStore(t)
	testenv.WaitFor(t, 20*time.Second, func() string {
		if seqs := pushSeqs(t, c); len(seqs) != 2 {
			return fmt.Sprintf("checkpoints at %v, want the newest 2", seqs)
		}
		return ""
	})
	b := e.start(t, Options{CheckpointEvery: -1}) // reads, never writes
	if n := counter(t, b.s.ckpt.loaded); n != 0 {
		t.Fatalf("an instance without checkpoints loaded one")
	}
	b2 := e.start(t, Options{})
	if n := counter(t, b2.s.ckpt.loaded); n != 1 {
		t.Fatalf("checkpoint loaded %v times, want 1", n)
	}
	waitNext(t, b, "dee", seq)
	waitNext(t, b2, "dee", seq)
}

// TestInstancesWriteIdenticalCheckpoints: two instances that read the same
// stream (one started before the messages, one after; one with sockets of
// players the stream never names) hold byte-identical checkpoints, which
// is what lets any instance write the checkpoint at a sequence.
func TestInstancesWriteIdenticalCheckpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(t, Options{CheckpointEvery: -1})
	a.dial(t, "zed", "")
	evs := ckptWorkload(3, 600)
	for len(evs) > 0 {
		n := min(9, len(evs))
		e.publish(t, e.topo.OutSubject(len(evs)%2), evs[:n]...)
		evs = evs[n:]
	}
	b := e.start(t, Options{CheckpointEvery: -1})
	b.dial(t, "ann", "after=0")
	testenv.WaitFor(t, 20*time.Second, func() string {
		if x, y := a.s.applied.Load(), b.s.applied.Load(); x != y {
			return fmt.Sprintf("instances at %d and %d", x, y)
		}
		return ""
	})
	a.stop()
	b.stop()
	sa, da := a.s.checkpointData()
	sb, db := b.s.checkpointData()
	if sa != sb || !bytes.Equal(da, db) {
		t.Fatalf("checkpoints at %d (%d bytes) and %d (%d bytes) differ", sa, len(da), sb, len(db))
	}
	if sa == 0 || !bytes.Contains(da, []byte("ann")) || bytes.Contains(da, []byte("zed")) {
		t.Fatalf("checkpoint at %d: want ann's state and not zed's", sa)
	}
}

// TestPushCheckpointDeletedWhileReadIsSkipped: the newest checkpoint is,
// to a reader, one deleted while it reads it (its meta still there, its
// chunks purged). The read gives up (bounded in natsjs, instead of
// waiting for chunks that never come), is counted in
// treasure_push_checkpoint_unreachable_total, the checkpoint is kept (the
// failure may be the connection's), and the one before plus the tail
// gives the same ids.
func TestPushCheckpointDeletedWhileReadIsSkipped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("di", uint64(1+4*i), 4)...)
	}
	a := e.start(t, Options{})
	waitNext(t, a, "di", 13)
	a.stop() // checkpoint at 3
	for i := 3; i < 5; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("di", uint64(1+4*i), 4)...)
	}
	a2 := e.start(t, Options{})
	waitNext(t, a2, "di", 21)
	a2.stop() // checkpoint at 5
	c := e.ckptStore(t)
	if seqs := pushSeqs(t, c); fmt.Sprint(seqs) != "[5 3]" {
		t.Fatalf("checkpoints at %v, want [5 3]", seqs)
	}
	ctx := ctxFor(t, 30*time.Second)
	info, err := c.Store().GetInfo(ctx, natsjs.PushCheckpointName(5))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := e.js.Stream(ctx, "OBJ_"+e.topo.CheckpointBucket())
	if err != nil {
		t.Fatal(err)
	}
	if err := obj.Purge(ctx, jetstream.WithPurgeSubject("$O."+e.topo.CheckpointBucket()+".C."+info.NUID)); err != nil {
		t.Fatal(err)
	}
	e.publish(t, e.topo.OutSubject(1), proxN("di", 21, 2)...) // seq 6

	b := e.start(t, Options{})
	if n := counter(t, b.s.ckpt.unreachable); n != 1 {
		t.Fatalf("%v checkpoints unreachable, want 1", n)
	}
	var g dto.Metric
	if err := b.s.ckpt.seq.Write(&g); err != nil {
		t.Fatal(err)
	}
	if n := counter(t, b.s.ckpt.loaded); n != 1 || g.GetGauge().GetValue() != 3 {
		t.Fatalf("checkpoint loaded %v times, at %v; want once, the one at 3", n, g.GetGauge().GetValue())
	}
	waitNext(t, b, "di", 23)
	ws := b.dial(t, "di", "after=11")
	for i := uint64(12); i <= 22; i++ {
		want(t, ws.nextUpdate(), fmt.Sprintf(`{"type":"proximity","id":%d,"seq":%d,"node":%d,"treasure":null}`, i, i, 100+(i-1)%4))
	}
	if seqs := pushSeqs(t, c); fmt.Sprint(seqs) != "[5 3]" {
		t.Fatalf("after the start, checkpoints at %v, want [5 3] (the unreadable one kept)", seqs)
	}
}
