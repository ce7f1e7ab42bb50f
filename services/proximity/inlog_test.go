package proximity

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// TestRebuiltWorkerPublishesNoOutputTwice: a worker's consumers lose the
// acks of inputs whose outputs it had stored (a consumer leader elected
// with an older state, as after a loss of quorum), and the OUT stream
// does not drop the copies that come when they are applied again — its
// duplicate window shrunk to the minimum stands for nats-server 2.9's new
// leader that takes writes before it has applied what it caught up with,
// whose window misses their ids. The restarted worker applies those
// inputs again (its engine needs them) but publishes none of their
// outputs a second time: it read their ids on OUT when it rebuilt
// (readInLog). OUT then holds every output id once, and the
// same ids as before the restart.
func TestRebuiltWorkerPublishesNoOutputTwice(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"d", f.k)

	publishDrops(t, ctx, js, topo, f)
	w1 := startCkptWorker(t, ctx, f, topo, url, -1, 0, false)
	publishMoves(t, ctx, js, topo, f, f.moves)
	before := waitOutputs(t, ctx, js, topo, len(f.moves))
	waitIdle(t, ctx, js, topo)
	w1.stop()
	idsBefore := outIDs(t, ctx, js, topo)

	// No duplicate window to speak of on OUT.
	s, err := js.Stream(ctx, topo.OutStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // past it

	// Every partition's consumer forgets its acks after the first third
	// of its subject: created again to start there.
	in, err := js.Stream(ctx, topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < f.k; k++ {
		first, err := in.GetLastMsgForSubject(ctx, topo.InSubject(k))
		if err != nil {
			t.Fatal(err)
		}
		c, err := js.Consumer(ctx, topo.InStream(), Durable(topo, k))
		if err != nil {
			t.Fatal(err)
		}
		ccfg := c.CachedInfo().Config
		if err := js.DeleteConsumer(ctx, topo.InStream(), ccfg.Durable); err != nil {
			t.Fatal(err)
		}
		ccfg.DeliverPolicy, ccfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(first.Sequence/3, 1)
		if _, err := js.CreateConsumer(ctx, topo.InStream(), ccfg); err != nil {
			t.Fatal(err)
		}
	}

	w2 := startCkptWorker(t, ctx, f, topo, url, -1, 0, false)
	waitIdle(t, ctx, js, topo)
	moves := w2.counter(t, "treasure_proximity_moves_total")
	again := w2.counter(t, "treasure_proximity_outputs_found_in_log_total")
	w2.stop()
	if moves == 0 {
		t.Fatal("no move was applied again: the test does not exercise a rebuild behind outputs stored")
	}
	idsAfter := outIDs(t, ctx, js, topo)
	if len(idsAfter) != len(idsBefore) || !slices.Equal(idsAfter, idsBefore) {
		t.Fatalf("OUT holds %d outputs after the restart, %d before (%d found in the log and not published again)", len(idsAfter), len(idsBefore), int(again))
	}
	after := readOutputs(t, ctx, js, topo)
	sameOutputs(t, after, before, "after the restart", "before it")
	t.Logf("%d moves applied again; %d output batches found in the log", int(moves), int(again))
}
