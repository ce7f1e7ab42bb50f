package push

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
	"treasure/internal/retention"
)

// killableCkpts is the checkpoint store of an instance that can be
// "killed": from then on no checkpoint of it lands, as the final one of
// a process killed with SIGKILL never does.
type killableCkpts struct {
	*natsjs.Checkpoints
	killed atomic.Bool
}

func (k *killableCkpts) PushPut(ctx context.Context, seq uint64, data []byte) error {
	if k.killed.Load() {
		return errors.New("killed")
	}
	return k.Checkpoints.PushPut(ctx, seq, data)
}

// TestKilledInstanceAfterRetentionContinuesIds: retention removes the
// head of OUT up to the push checkpoint (the ranker's stand-in has read
// everything, the archiver's stand-in key covers all); an instance
// running then is killed (its final checkpoint never lands), more
// updates arrive, and a new instance starts from the checkpoint and the
// tail: every player's ids continue without a gap, the same ids and
// contents as an instance that read the whole stream, and nothing is
// doubled.
func TestKilledInstanceAfterRetentionContinuesIds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxFor(t, 60*time.Second)
	for i := 0; i < 4; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("ann", uint64(1+5*i), 5)...) // seqs 1-4: ann ids 1-20
	}
	e.publish(t, e.topo.RankSubject(), board(1, row("ann", 10, 1))) // seq 5
	// The instance that sees the whole stream, for the comparison.
	whole := e.start(t, Options{RingSize: 64, CheckpointEvery: -1})
	store, err := natsjs.OpenCheckpoints(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	a := e.start(t, Options{RingSize: 64, Checkpoints: store, CheckpointEvery: time.Hour})
	waitNext(t, a, "ann", 21)
	a.stop() // the checkpoint at 5
	if seqs := pushSeqs(t, store); fmt.Sprint(seqs) != "[5]" {
		t.Fatalf("push checkpoints at %v, want [5]", seqs)
	}

	kb := &killableCkpts{Checkpoints: store}
	b := e.start(t, Options{RingSize: 64, Checkpoints: kb, CheckpointEvery: time.Hour})
	e.publish(t, e.topo.OutSubject(1), proxN("ann", 21, 5)...)      // seq 6: ids 21-25
	e.publish(t, e.topo.OutSubject(0), prox("bob", 1, 3, "", 0, 0)) // seq 7
	e.publish(t, e.topo.RankSubject(), board(2, row("ann", 20, 1))) // seq 8
	e.publish(t, e.topo.OutSubject(1), proxN("ann", 26, 5)...)      // seq 9: ids 26-30
	e.publish(t, e.topo.OutSubject(0), prox("bob", 2, 4, "", 0, 0)) // seq 10
	e.publish(t, e.topo.RankSubject(), board(3, row("ann", 30, 1))) // seq 11
	waitNext(t, b, "ann", 31)
	waitNext(t, b, "bob", 3)
	// The stopped instance's consumer, which the server removes after its
	// inactivity threshold, is gone; so the push checkpoint is what holds
	// OUT back.
	outStream, err := e.js.Stream(ctx, e.topo.OutStream())
	if err != nil {
		t.Fatal(err)
	}
	for ci := range outStream.ListConsumers(ctx).Info() {
		if ci.Config.Durable == "" && ci.Delivered.Stream < 11 {
			if err := e.js.DeleteConsumer(ctx, e.topo.OutStream(), ci.Name); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Retention, with the ranker's and the archiver's stand-ins ahead.
	c, err := e.js.CreateOrUpdateConsumer(ctx, e.topo.OutStream(), jetstream.ConsumerConfig{Durable: retention.RankerDurable(e.topo),
		FilterSubject: e.topo.Prefix + ".out.*", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 11; i++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: retention.ArchiveBucket(e.topo)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, retention.KeyOut, []byte(strconv.Itoa(11))); err != nil {
		t.Fatal(err)
	}
	r, err := retention.New(e.js, retention.Options{Topology: e.topo, MaxAge: time.Hour, HighWater: -1, Logger: testLog(),
		Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each subject loses what the checkpoint at 5 covers.
	wantPurged := map[string]uint64{e.topo.OutSubject(0): 2, e.topo.OutSubject(1): 2, e.topo.RankSubject(): 1}
	for _, s := range rep.Streams[1].Subjects {
		if s.PurgedTo > 5 || s.SafeSeq != 5 || s.Purged != wantPurged[s.Subject] {
			t.Fatalf("%s: purged %d up to %d (safe %d, held by %s), want %d up to 5", s.Subject, s.Purged, s.PurgedTo, s.SafeSeq, s.HeldBy, wantPurged[s.Subject])
		}
	}
	if rep.Streams[1].FirstSeq != 6 {
		t.Fatalf("OUT starts at %d after retention, want 6", rep.Streams[1].FirstSeq)
	}

	kb.killed.Store(true)
	b.stop() // killed: no checkpoint at 11
	if seqs := pushSeqs(t, store); fmt.Sprint(seqs) != "[5]" {
		t.Fatalf("push checkpoints at %v after the kill, want [5]", seqs)
	}
	e.publish(t, e.topo.OutSubject(0), proxN("ann", 31, 5)...)      // seq 12: ids 31-35
	e.publish(t, e.topo.OutSubject(1), prox("bob", 3, 5, "", 0, 0)) // seq 13

	n := e.start(t, Options{RingSize: 64, Checkpoints: store, CheckpointEvery: time.Hour})
	if v := counter(t, n.s.ckpt.loaded); v != 1 {
		t.Fatalf("checkpoint loaded %v times, want 1", v)
	}
	waitNext(t, n, "ann", 36)
	waitNext(t, n, "bob", 4)
	waitNext(t, whole, "ann", 36)
	waitNext(t, whole, "bob", 4)
	// Every id once, in order, no gap, the same as the instance that read
	// everything.
	for _, player := range []string{"ann", "bob"} {
		got, ref := n.dial(t, player, "after=0"), whole.dial(t, player, "after=0")
		last := map[string]uint64{"ann": 35, "bob": 3}[player]
		for i := uint64(1); i <= last; i++ {
			u, w := got.nextUpdate(), ref.nextUpdate()
			if fmt.Sprint(u) != fmt.Sprint(w) || id(t, u) != i {
				t.Fatalf("%s: update %d after the restart %v, the whole stream's %v", player, i, u, w)
			}
		}
	}
	if n.s.hub.latest.Load() == nil {
		t.Fatal("no leaderboard after the restart")
	}
}
