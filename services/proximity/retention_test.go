package proximity

import (
	"context"
	"errors"
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
	topo := freshTopo(t, ctx, js, prefix+"r", f.k)
	// The never-trimmed copy of the log, kept in step before every purge.
	topoC := freshTopo(t, ctx, js, topo.Prefix+"u", f.k)
	var copied uint64
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	third := len(f.moves) / 3

	publishDrops(t, ctx, js, topo, f)
	_, ckpt := cleanRun(t, ctx, js, url, f, topo, store, f.moves[:third], third, 1) // a checkpoint per partition

	w2 := startCkptWorker(t, ctx, f, topo, url, time.Hour, 3, true)
	publishMoves(t, ctx, js, topo, f, f.moves[third:2*third])
	waitOutputs(t, ctx, js, topo, 2*third)
	waitIdle(t, ctx, js, topo)

	// Retention: everything is archived (the test's stand-in for the
	// archiver) and older than MaxAge; each partition's checkpoint is what
	// holds its log back. OUT has no ranker consumer: it is not trimmed.
	copied = copyLog(t, ctx, js, topo, topoC, copied)
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
	w3, b := finalRun(t, ctx, js, url, f, topo, 3)
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
	copyLog(t, ctx, js, topo, topoC, copied)

	// One worker over the never-trimmed copy, without checkpoints.
	checkLikeCopy(t, ctx, js, url, f, topo, topoC, b)
}
