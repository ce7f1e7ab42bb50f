package proximity

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestMoveNotOwnedIsDeadLettered: one input message on partition 0's
// subject holds two moves partition 0 owns, one whose last node partition
// 1 owns (routed by another partitioning) and one whose last node is not
// in the graph (another graph). The two good ones get their results; the
// other two are not applied, not dropped silently: counted, and
// dead-lettered in one message naming the input, its subject and their
// indexes, carrying exactly those moves. A restarted worker (rebuilding
// from the log) dead-letters nothing twice.
func TestMoveNotOwnedIsDeadLettered(t *testing.T) {
	t.Parallel()
	f := amsterdamFixture(t)
	ctx := context.Background()
	nc, js, prefix := testenv.JetStream(t)
	topo := newTopo(prefix, f.k)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Two moves ending in partition 0, one ending in partition 1.
	var own []*eventpb.MoveAccepted
	var foreign *eventpb.MoveAccepted
	for _, mv := range f.moves {
		k := f.part[mv.Path[len(mv.Path)-1]-1]
		switch {
		case k == 0 && len(own) < 2 && (len(own) == 0 || own[0].Player != mv.Player):
			own = append(own, mv)
		case k == 1 && foreign == nil:
			foreign = mv
		}
	}
	if len(own) < 2 || foreign == nil {
		t.Fatal("fixture lacks moves of partitions 0 and 1")
	}
	alien := &eventpb.MoveAccepted{Player: "alien", Seq: 1, Path: []uint32{uint32(f.g.NumNodes() + 5)}}
	evs := []*eventpb.Event{}
	for _, mv := range []*eventpb.MoveAccepted{own[0], foreign, alien, own[1]} {
		evs = append(evs, &eventpb.Event{Kind: &eventpb.Event_Move{Move: mv}})
	}
	data, err := event.AppendBatch(nil, evs)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, topo.InSubject(0), data)
	if err != nil {
		t.Fatal(err)
	}

	run := func() (*prometheus.Registry, func()) {
		reg := prometheus.NewRegistry()
		w, err := New(Options{Graph: f.g, Part: f.part, Radius: f.radius, Topology: topo, NC: nc, JS: js, Batch: 8,
			AckWait: 2 * time.Second, Log: testLog(), Registerer: reg, CheckpointEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		return reg, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		}
	}
	reg, stop := run()
	out := waitOutputs(t, ctx, js, topo, 2)
	for _, mv := range own {
		if out.prox[mv.Player+"/"+itoa(mv.Seq)] == nil {
			t.Fatalf("no result for owned move %s/%d", mv.Player, mv.Seq)
		}
	}
	if n := counterValue(t, reg, "treasure_proximity_moves_not_owned_total"); n != 2 {
		t.Errorf("moves_not_owned_total = %v, want 2", n)
	}
	stop()

	dl := readDLQ(t, ctx, js, topo)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	h := dl[0].Header
	for k, want := range map[string]string{
		natsjs.HeaderDLQSubject: topo.InSubject(0),
		natsjs.HeaderDLQStream:  topo.InStream(),
		natsjs.HeaderDLQSeq:     itoa(ack.Sequence),
		natsjs.HeaderDLQIndex:   "1,2",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("dead letter header %s = %q, want %q", k, got, want)
		}
	}
	if r := h.Get(natsjs.HeaderDLQReason); !strings.Contains(r, "2 move(s) not applied by partition 0 of 3") || !strings.Contains(r, "not owned by this partition") {
		t.Errorf("reason %q", r)
	}
	var b eventpb.Batch
	if err := event.Decode(dl[0].Data, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Events) != 2 || b.Events[0].GetMove().GetPlayer() != foreign.Player || b.Events[0].GetMove().GetSeq() != foreign.Seq ||
		b.Events[1].GetMove().GetPlayer() != "alien" {
		t.Fatalf("dead letter holds %v, want the foreign and the alien move", b.Events)
	}

	// A restart rebuilds from the log (no checkpoints): nothing new.
	_, stop = run()
	stop()
	if n := len(readDLQ(t, ctx, js, topo)); n != 1 {
		t.Fatalf("%d dead letters after a restart, want 1", n)
	}
}

func readDLQ(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology) []natsjs.Msg {
	tb.Helper()
	var got []natsjs.Msg
	err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.DLQStream(), MaxWait: 200 * time.Millisecond}, func(_ context.Context, msgs []natsjs.Msg) error {
		got = append(got, msgs...)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return got
}

func counterValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatalf("metric %s not registered", name)
	return 0
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
