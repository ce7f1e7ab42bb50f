package proximity

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// The set-up the restart tests share: fresh streams, a run of a
// checkpointing worker to its clean stop, a copy of a log, and the
// comparison of a restarted run with an uninterrupted one.

// freshTopo returns a topology of k partitions under prefix whose
// streams exist now and are deleted on cleanup.
func freshTopo(tb testing.TB, ctx context.Context, js jetstream.JetStream, prefix string, k int) natsjs.Topology {
	tb.Helper()
	topo := newTopo(prefix, k)
	testenv.DeleteStreamsOnCleanup(tb, js, topo.Prefix)
	if err := topo.Ensure(ctx, js); err != nil {
		tb.Fatal(err)
	}
	return topo
}

// cleanRun starts a worker writing checkpoints (every hour, keeping 3),
// publishes moves, waits until the log's first done moves have their
// results and every input is acked, and stops the worker cleanly, so that
// it writes a checkpoint per partition. Every partition must then hold
// exactly want checkpoints; cleanRun returns the worker and each
// partition's newest checkpoint.
func cleanRun(tb testing.TB, ctx context.Context, js jetstream.JetStream, url string, f fixture, topo natsjs.Topology, store *natsjs.Checkpoints,
	moves []*eventpb.MoveAccepted, done, want int) (*ckptWorker, []uint64) {
	tb.Helper()
	w := startCkptWorker(tb, ctx, f, topo, url, time.Hour, 3, false)
	publishMoves(tb, ctx, js, topo, f, moves)
	waitOutputs(tb, ctx, js, topo, done)
	waitIdle(tb, ctx, js, topo)
	w.stop()
	var newest []uint64
	for k := 0; k < f.k; k++ {
		s, err := store.Seqs(ctx, k)
		if err != nil || len(s) != want {
			tb.Fatalf("partition %d: checkpoints %v, %v; want %d", k, s, err, want)
		}
		newest = append(newest, s[0])
	}
	return w, newest
}

// finalRun starts a worker writing checkpoints (every hour, keeping keep)
// on a log that holds every move, waits until every move has its result
// and every input is acked, stops it cleanly and returns it with the
// outputs.
func finalRun(tb testing.TB, ctx context.Context, js jetstream.JetStream, url string, f fixture, topo natsjs.Topology, keep int) (*ckptWorker, outputs) {
	tb.Helper()
	w := startCkptWorker(tb, ctx, f, topo, url, time.Hour, keep, false)
	b := waitOutputs(tb, ctx, js, topo, len(f.moves))
	waitIdle(tb, ctx, js, topo)
	w.stop()
	return w, b
}

// copyLog copies the messages of from's IN stream after sequence after
// into to's IN stream, subject by subject, and returns the last sequence
// copied. The copy must get the sequences of the original (to's IN holds
// exactly the messages copied before), so a message missing from from
// (trimmed before it was copied) fails the test.
func copyLog(tb testing.TB, ctx context.Context, js jetstream.JetStream, from, to natsjs.Topology, after uint64) uint64 {
	tb.Helper()
	copied := after
	err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: from.InStream(), StartSeq: after + 1, MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if m.Seq != copied+1 {
				tb.Fatalf("copying the log: message %d after %d (trimmed before it was copied?)", m.Seq, copied)
			}
			ack, err := js.Publish(ctx, to.Prefix+m.Subject[len(from.Prefix):], m.Data)
			if err != nil {
				return err
			}
			if ack.Sequence != m.Seq {
				tb.Fatalf("the copy of message %d got sequence %d", m.Seq, ack.Sequence)
			}
			copied = m.Seq
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return copied
}

// sameOutputs requires the outputs b of a run (named run in messages) to
// hold claims, and to be those of c, the reference run (named ref): the
// same proximity result for every move, the same claims.
func sameOutputs(tb testing.TB, b, c outputs, run, ref string) {
	tb.Helper()
	if len(b.claims) == 0 {
		tb.Fatal("the fixture produced no claims")
	}
	for key, pb := range b.prox {
		if pc := c.prox[key]; pc == nil || pb.String() != pc.String() {
			tb.Fatalf("move %s: %s %v, %s %v", key, run, pb, ref, pc)
		}
	}
	if len(b.claims) != len(c.claims) {
		tb.Fatalf("%d claims in the %s, %d in the %s", len(b.claims), run, len(c.claims), ref)
	}
	for id, cb := range b.claims {
		if cc := c.claims[id]; cc == nil || cb.String() != cc.String() {
			tb.Fatalf("treasure %s: %s %v, %s %v", id, run, cb, ref, cc)
		}
	}
}

// checkLikeUninterrupted copies run B's log into fresh streams and
// requires what checkLikeCopy requires of them.
func checkLikeUninterrupted(t *testing.T, ctx context.Context, js jetstream.JetStream, url string, f fixture, topoB natsjs.Topology, b outputs) {
	t.Helper()
	topoC := freshTopo(t, ctx, js, topoB.Prefix+"u", f.k)
	copyLog(t, ctx, js, topoB, topoC, 0)
	checkLikeCopy(t, ctx, js, url, f, topoB, topoC, b)
}

// checkLikeCopy runs topoC, a copy of run B's whole log, through one
// worker that never stops (and uses no checkpoints), and requires the same
// proximity results, claims and output ids as B.
func checkLikeCopy(t *testing.T, ctx context.Context, js jetstream.JetStream, url string, f fixture, topoB, topoC natsjs.Topology, b outputs) {
	t.Helper()
	wc := startCkptWorker(t, ctx, f, topoC, url, -1, 0, false)
	c := waitOutputs(t, ctx, js, topoC, len(f.moves))
	wc.stop()
	sameOutputs(t, b, c, "restarted run", "uninterrupted run")
	if ib, ic := outIDs(t, ctx, js, topoB), outIDs(t, ctx, js, topoC); !slices.Equal(ib, ic) {
		t.Fatalf("output ids differ: %d in the restarted run, %d uninterrupted", len(ib), len(ic))
	}
}
