package proximity

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestWorkerStartSkipsCheckpointDeletedWhileRead: partition 0's newest
// checkpoint is, to a reader, one deleted while it reads it: its meta is
// still there but its chunks are gone (a concurrent delete purges them
// after the reader has read the meta). The worker starts with a context
// that lasts an hour, as a service's does; jetstream's own read waited for
// the missing chunks until that context's deadline, so the start hung.
// Now the read gives up, the start logs it, counts it in
// treasure_proximity_checkpoint_unreachable_total, falls back to the
// checkpoint before, and the outputs equal an uninterrupted run's.
func TestWorkerStartSkipsCheckpointDeletedWhileRead(t *testing.T) {
	f := amsterdamFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"g", f.k)
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	half := len(f.moves) / 2
	publishDrops(t, ctx, js, topo, f)
	var seqs [][]uint64 // per run, per partition: the newest checkpoint
	for run := range 2 {
		_, newest := cleanRun(t, ctx, js, url, f, topo, store, f.moves[run*half/2:(run+1)*half/2], (run+1)*half/2, run+1)
		seqs = append(seqs, newest)
	}
	info, err := store.Store().GetInfo(ctx, natsjs.CheckpointName(0, seqs[1][0]))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := js.Stream(ctx, "OBJ_"+topo.CheckpointBucket())
	if err != nil {
		t.Fatal(err)
	}
	if err := obj.Purge(ctx, jetstream.WithPurgeSubject("$O."+topo.CheckpointBucket()+".C."+info.NUID)); err != nil {
		t.Fatal(err)
	}

	publishMoves(t, ctx, js, topo, f, f.moves[half:])
	w, b := finalRun(t, ctx, js, url, f, topo, 3)
	ready := w.ready.get()
	for k, want := range []uint64{seqs[0][0], seqs[1][1], seqs[1][2]} {
		if ready[k].checkpoint != want {
			t.Fatalf("partition %d started from the checkpoint at %d, want %d (ready lines %v)", k, ready[k].checkpoint, want, ready)
		}
	}
	if n := w.counter(t, "treasure_proximity_checkpoint_unreachable_total"); n != 1 {
		t.Fatalf("%v checkpoints unreachable, want 1", n)
	}
	if n := w.counter(t, "treasure_proximity_rebuilds_trimmed_log_total"); n != 0 {
		t.Fatalf("%v rebuilds from a trimmed log reported; nothing was trimmed", n)
	}
	checkLikeUninterrupted(t, ctx, js, url, f, topo, b)
}

// TestWorkerReportsRebuildFromTrimmedLog: a worker without checkpoints
// restarts after the head of its log was removed (an operator's purge, or
// retention guarded by nothing the worker wrote): every partition whose
// consumer had acked messages rebuilds from what is left, and says so —
// an error line and treasure_proximity_rebuilds_trimmed_log_total — as
// push does. A restart on the untrimmed log reports nothing.
func TestWorkerReportsRebuildFromTrimmedLog(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"t", f.k)
	half := len(f.moves) / 2
	w := startCkptWorker(t, ctx, f, topo, url, -1, 0, false)
	publishDrops(t, ctx, js, topo, f)
	publishMoves(t, ctx, js, topo, f, f.moves[:half])
	waitOutputs(t, ctx, js, topo, half)
	waitIdle(t, ctx, js, topo)
	w.stop()

	// Untrimmed: nothing to report.
	w = startCkptWorker(t, ctx, f, topo, url, -1, 0, false)
	waitReady(t, w, f.k)
	w.stop()
	if n := w.counter(t, "treasure_proximity_rebuilds_trimmed_log_total"); n != 0 {
		t.Fatalf("%v rebuilds from a trimmed log reported on an untrimmed log", n)
	}

	in, err := js.Stream(ctx, topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Purge(ctx, jetstream.WithPurgeSequence(uint64(half/2))); err != nil {
		t.Fatal(err)
	}
	w = startCkptWorker(t, ctx, f, topo, url, -1, 0, false)
	waitReady(t, w, f.k)
	w.stop()
	if n := w.counter(t, "treasure_proximity_rebuilds_trimmed_log_total"); n != float64(f.k) {
		t.Fatalf("%v rebuilds from a trimmed log reported, want one per partition (%d)", n, f.k)
	}
}

// waitReady polls until each of the worker's n partitions has logged
// "partition ready".
func waitReady(tb testing.TB, w *ckptWorker, n int) {
	tb.Helper()
	testenv.WaitFor(tb, 60*time.Second, func() string {
		if got := len(w.ready.get()); got < n {
			return fmt.Sprintf("%d of %d partitions ready", got, n)
		}
		return ""
	})
}
