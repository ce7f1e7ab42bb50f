package proximity

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
	"treasure/internal/retention"
	"treasure/internal/testenv"
)

func TestRetentionNamesTheWorkersConsumers(t *testing.T) {
	topo := newTopo("p", 3)
	for k := 0; k < 3; k++ {
		if got, want := retention.ProximityDurable(topo, k), Durable(topo, k); got != want {
			t.Fatalf("retention holds partition %d's log for consumer %q; the worker's is %q", k, got, want)
		}
	}
}

// TestWorkerKilledAfterRetentionTrimmedItsLog: a worker stopped cleanly
// leaves a checkpoint per partition; its successor consumes more and
// retention (the archiver's stand-in key covering all of IN) removes each
// partition's log up to its checkpoint — the drops included. That worker
// is killed (no checkpoint written at the end), more moves arrive, and the
// next start loads the checkpoint, replays the tail that retention kept,
// and carries on: its outputs equal those of one worker that read the
// whole, never-trimmed log (same results, claims and output ids), with
// nothing lost and nothing doubled.
func TestWorkerKilledAfterRetentionTrimmedItsLog(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := newTopo(prefix+"r", f.k)
	testenv.DeleteStreamsOnCleanup(t, js, topo.Prefix)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// The never-trimmed copy of the log, kept in step before every purge.
	topoC := newTopo(topo.Prefix+"u", f.k)
	testenv.DeleteStreamsOnCleanup(t, js, topoC.Prefix)
	if err := topoC.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	var copied uint64
	copyIn := func() {
		t.Helper()
		err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.InStream(), StartSeq: copied + 1, MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if m.Seq != copied+1 {
					t.Fatalf("copying the log: message %d after %d (trimmed before it was copied?)", m.Seq, copied)
				}
				ack, err := js.Publish(ctx, topoC.Prefix+m.Subject[len(topo.Prefix):], m.Data)
				if err != nil {
					return err
				}
				if ack.Sequence != m.Seq {
					t.Fatalf("the copy of message %d got sequence %d", m.Seq, ack.Sequence)
				}
				copied = m.Seq
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	third := len(f.moves) / 3

	w1 := startCkptWorker(t, ctx, f, topo, url, time.Hour, 3, false)
	publishDrops(t, ctx, js, topo, f)
	publishMoves(t, ctx, js, topo, f, f.moves[:third])
	waitOutputs(t, ctx, js, topo, third)
	waitIdle(t, ctx, js, topo)
	w1.stop() // a checkpoint per partition
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := map[int]uint64{}
	for k := 0; k < f.k; k++ {
		seqs, err := store.Seqs(ctx, k)
		if err != nil || len(seqs) != 1 {
			t.Fatalf("partition %d: checkpoints %v, %v", k, seqs, err)
		}
		ckpt[k] = seqs[0]
	}

	w2 := startCkptWorker(t, ctx, f, topo, url, time.Hour, 3, true)
	publishMoves(t, ctx, js, topo, f, f.moves[third:2*third])
	waitOutputs(t, ctx, js, topo, 2*third)
	waitIdle(t, ctx, js, topo)

	// Retention: everything is archived (the test's stand-in for the
	// archiver) and older than MaxAge; each partition's checkpoint is what
	// holds its log back. OUT has no ranker consumer: it is not trimmed.
	copyIn()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: retention.ArchiveBucket(topo)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, retention.KeyIn, []byte(strconv.FormatUint(copied, 10))); err != nil {
		t.Fatal(err)
	}
	// The test's own readers of IN (the copy's ordered consumers) linger
	// until their inactivity threshold and would hold IN back too.
	in, err := js.Stream(ctx, topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	for ci := range in.ListConsumers(ctx).Info() {
		if ci.Config.Durable == "" {
			if err := js.DeleteConsumer(ctx, topo.InStream(), ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatal(err)
			}
		}
	}
	r, err := retention.New(js, retention.Options{Topology: topo, MaxAge: time.Hour, HighWater: -1, Logger: testLog(),
		Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < f.k; k++ {
		var sub *retention.SubjectReport
		for i, s := range rep.Streams[0].Subjects {
			if s.Subject == topo.InSubject(k) {
				sub = &rep.Streams[0].Subjects[i]
			}
		}
		if sub == nil || sub.SafeSeq != ckpt[k] || sub.HeldBy != "proximity-checkpoint" || sub.Purged == 0 {
			t.Fatalf("partition %d: retention report %+v, want its log purged up to its checkpoint at %d", k, sub, ckpt[k])
		}
		if n := countIn(t, ctx, js, topo, k, 0, ckpt[k]); n != 0 {
			t.Fatalf("partition %d: %d messages left up to its checkpoint at %d", k, n, ckpt[k])
		}
	}
	for _, s := range rep.Streams[1].Subjects {
		if s.Purged != 0 || !strings.HasPrefix(s.HeldBy, "missing:") {
			t.Fatalf("OUT subject %s: purged %d, held by %s; want nothing purged without the ranker and the archiver", s.Subject, s.Purged, s.HeldBy)
		}
	}

	w2.stop() // killed: no checkpoint
	publishMoves(t, ctx, js, topo, f, f.moves[2*third:])
	w3 := startCkptWorker(t, ctx, f, topo, url, time.Hour, 3, false)
	b := waitOutputs(t, ctx, js, topo, len(f.moves))
	waitIdle(t, ctx, js, topo)
	w3.stop()
	ready := w3.ready.get()
	for k := 0; k < f.k; k++ {
		r := ready[k]
		if r.checkpoint != ckpt[k] || r.replayed == 0 {
			t.Fatalf("partition %d started from the checkpoint at %d replaying %d messages; want %d and the tail", k, r.checkpoint, r.replayed, ckpt[k])
		}
		if n := countIn(t, ctx, js, topo, k, r.checkpoint, r.floor); n != r.replayed {
			t.Fatalf("partition %d replayed %d messages, %d lie between its checkpoint and ack floor", k, r.replayed, n)
		}
	}
	if n := w3.counter(t, "treasure_proximity_checkpoint_invalid_total"); n != 0 {
		t.Fatalf("%v checkpoints refused", n)
	}
	copyIn()

	// One worker over the never-trimmed copy, without checkpoints.
	wc := startCkptWorker(t, ctx, f, topoC, url, -1, 0, false)
	c := waitOutputs(t, ctx, js, topoC, len(f.moves))
	wc.stop()
	if len(b.claims) == 0 {
		t.Fatal("the fixture produced no claims")
	}
	for key, pb := range b.prox {
		if pc := c.prox[key]; pc == nil || pb.String() != pc.String() {
			t.Fatalf("move %s: restarted run %v, uninterrupted %v", key, pb, pc)
		}
	}
	if len(b.claims) != len(c.claims) {
		t.Fatalf("%d claims in the restarted run, %d uninterrupted", len(b.claims), len(c.claims))
	}
	for id, cb := range b.claims {
		if cc := c.claims[id]; cc == nil || cb.String() != cc.String() {
			t.Fatalf("treasure %s: restarted run %v, uninterrupted %v", id, cb, cc)
		}
	}
	if ib, ic := outIDs(t, ctx, js, topo), outIDs(t, ctx, js, topoC); !slices.Equal(ib, ic) {
		t.Fatalf("output ids differ: %d in the restarted run, %d uninterrupted", len(ib), len(ic))
	}
}
