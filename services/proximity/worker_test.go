package proximity

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

var small = natsjs.Limits{MaxBytes: 32 << 20, MaxMsgs: 100_000}

type fixture struct {
	g      *graph.Graph
	part   []uint32
	k      int
	radius uint32
	drops  []*eventpb.TreasureDropped
	moves  []*eventpb.MoveAccepted
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

// amsterdamFixture: 40 players walking amsterdam, 30 moves each; 200
// treasures, a quarter of them on nodes where some move ends, so claims
// happen (and some moves end where a treasure was already claimed).
func amsterdamFixture(tb testing.TB) fixture {
	tb.Helper()
	path := testgraph.Path(tb, "amsterdam.gr.gz")
	fixOnce.Do(func() {
		g, err := graph.LoadDIMACS(path)
		if err != nil {
			fixErr = err
			return
		}
		const k = 3
		part, err := graph.Partition(g, k)
		if err != nil {
			fixErr = err
			return
		}
		w := game.NewWorkload(g, 40, 1200, 7)
		f := fixture{g: g, part: part, k: k, radius: 2000}
		for i := 0; i < w.Moves(); i++ {
			p := w.Path(i)
			path := make([]uint32, len(p))
			for j, id := range p {
				path[j] = uint32(id)
			}
			f.moves = append(f.moves, &eventpb.MoveAccepted{Player: fmt.Sprintf("p%02d", w.Player[i]), Seq: w.Seq[i], Path: path, IngestUnixNanos: int64(i)})
		}
		for i := 0; i < 200; i++ {
			node := uint32(1 + (i*7919)%g.NumNodes())
			if i%4 == 0 {
				mv := f.moves[(i*13)%len(f.moves)]
				node = mv.Path[len(mv.Path)-1]
			}
			f.drops = append(f.drops, &eventpb.TreasureDropped{Id: fmt.Sprintf("T%03d", i), Node: node, Points: uint64(1 + i%5)})
		}
		fix = f
	})
	if fixErr != nil {
		tb.Fatal(fixErr)
	}
	return fix
}

// publishInputs writes the fixture's log: the drops to every partition,
// then the moves, each to the partition owning its last node, 25 per
// message, as ingest would.
func publishInputs(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, f fixture) {
	tb.Helper()
	publishDrops(tb, ctx, js, topo, f)
	publishMoves(tb, ctx, js, topo, f, f.moves)
}

func publishDrops(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, f fixture) {
	tb.Helper()
	evs := make([]*eventpb.Event, len(f.drops))
	for i, d := range f.drops {
		evs[i] = &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: d}}
	}
	data, err := event.AppendBatch(nil, evs)
	if err != nil {
		tb.Fatal(err)
	}
	for k := 0; k < f.k; k++ {
		if _, err := js.Publish(ctx, topo.InSubject(k), data); err != nil {
			tb.Fatal(err)
		}
	}
}

func publishMoves(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, f fixture, moves []*eventpb.MoveAccepted) {
	tb.Helper()
	pending := make([][]*eventpb.Event, f.k)
	flush := func(k int) {
		if len(pending[k]) == 0 {
			return
		}
		data, err := event.AppendBatch(nil, pending[k])
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := js.Publish(ctx, topo.InSubject(k), data); err != nil {
			tb.Fatal(err)
		}
		pending[k] = pending[k][:0]
	}
	for _, mv := range moves {
		last := mv.Path[len(mv.Path)-1] - 1
		k := int(f.part[last])
		pending[k] = append(pending[k], &eventpb.Event{Kind: &eventpb.Event_Move{Move: mv}})
		if len(pending[k]) == 25 {
			flush(k)
		}
	}
	for k := range pending {
		flush(k)
	}
}

// outputs reads the whole OUT stream: proximity results by player/seq and
// claims by treasure; a result or claim seen twice fails the test.
type outputs struct {
	prox   map[string]*eventpb.ProximityResult
	claims map[string]*eventpb.Claim
}

func readOutputs(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology) outputs {
	tb.Helper()
	o := outputs{prox: map[string]*eventpb.ProximityResult{}, claims: map[string]*eventpb.Claim{}}
	var b eventpb.Batch
	err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.OutStream(), MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := event.Decode(m.Data, &b); err != nil {
				return err
			}
			for _, ev := range b.Events {
				if p := ev.GetProximity(); p != nil {
					key := fmt.Sprintf("%s/%d", p.Player, p.Seq)
					if _, dup := o.prox[key]; dup {
						return fmt.Errorf("two proximity results for move %s", key)
					}
					o.prox[key] = p
				}
				if c := ev.GetClaim(); c != nil {
					if prev, dup := o.claims[c.Treasure]; dup {
						return fmt.Errorf("treasure %s claimed twice: by %s/%d and %s/%d", c.Treasure, prev.Player, prev.Seq, c.Player, c.Seq)
					}
					o.claims[c.Treasure] = c
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

func newTopo(prefix string, k int) natsjs.Topology {
	return natsjs.Topology{Prefix: prefix, Partitions: k, In: small, Out: small, Upd: small, DLQ: small}
}

func startWorker(tb testing.TB, ctx context.Context, f fixture, topo natsjs.Topology, js jetstream.JetStream, url string, parts []int) (stop func()) {
	tb.Helper()
	nc := testenv.ConnectNATS(tb, url)
	js2, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	w, err := New(Options{Graph: f.g, Part: f.part, Partitions: parts, Radius: f.radius, Topology: topo, NC: nc, JS: js2, Batch: 8, AckWait: 2 * time.Second, Log: testLog()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("worker: %v", err)
		}
	}
}

// waitOutputs polls until every move has its proximity result.
func waitOutputs(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, want int) outputs {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		o := readOutputs(tb, ctx, js, topo)
		if len(o.prox) == want {
			return o
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d proximity results after 60 s", len(o.prox), want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestWorkerAnswersAndSurvivesKill runs a log through workers one of which
// is killed (context cancelled: nothing drained, nothing acked) mid-stream
// and started again. The run gives exactly one result per move and one
// claim per claimed treasure, and exactly what a fresh, uninterrupted
// replay of the same log gives: a killed process loses nothing and doubles
// nothing, and replays are deterministic.
func TestWorkerAnswersAndSurvivesKill(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)

	// Run B: one worker per partition set; the worker of partition 0 is
	// killed after some output, then started again.
	topoB := freshTopo(t, ctx, js, prefix+"b", f.k)
	stop0 := startWorker(t, ctx, f, topoB, js, url, []int{0})
	stop1 := startWorker(t, ctx, f, topoB, js, url, []int{1, 2})
	half := len(f.moves) / 2
	publishDrops(t, ctx, js, topoB, f)
	publishMoves(t, ctx, js, topoB, f, f.moves[:half])
	testenv.WaitUntil(t, 30*time.Second, "no progress before the kill", func() bool {
		return len(readOutputs(t, ctx, js, topoB).prox) >= half/4
	})
	stop0()
	// While partition 0's worker is dead, the log grows; its successor
	// rebuilds the engine from the log and carries on.
	publishMoves(t, ctx, js, topoB, f, f.moves[half:])
	// A player's retry stored twice (ingest crashed before acking it) is
	// applied once: readOutputs fails on a second result for a move.
	publishMoves(t, ctx, js, topoB, f, []*eventpb.MoveAccepted{f.moves[3], f.moves[half+1]})
	stop0 = startWorker(t, ctx, f, topoB, js, url, []int{0})
	b := waitOutputs(t, ctx, js, topoB, len(f.moves))
	stop0()
	stop1()

	// Replay: B's log copied message by message into fresh streams and run
	// by one uninterrupted worker. Claim notices are in the copied log at
	// the positions they had; the ones the replay publishes again land
	// after them and change nothing (the treasure is already claimed).
	topoC := freshTopo(t, ctx, js, prefix+"c", f.k)
	copyLog(t, ctx, js, topoB, topoC, 0)
	stopC := startWorker(t, ctx, f, topoC, js, url, nil)
	c := waitOutputs(t, ctx, js, topoC, len(f.moves))
	stopC()

	sameOutputs(t, b, c, "killed-and-restarted run", "replay")
	// Every treasure on a node where some move ended is claimed, by the
	// first such move of its partition's log.
	ends := map[uint32]bool{}
	for _, mv := range f.moves {
		ends[mv.Path[len(mv.Path)-1]] = true
	}
	for _, d := range f.drops {
		if ends[d.Node] && b.claims[d.Id] == nil {
			t.Fatalf("treasure %s on node %d, where moves end, was never claimed", d.Id, d.Node)
		}
	}
	a := b

	// Every answer is the reference answer for the treasures active when
	// it was computed: check the moves made before any claim could happen
	// against the reference Dijkstra (claims only remove treasures).
	var refs []graph.RefTreasure
	seen := map[string]bool{}
	for _, d := range f.drops {
		if !seen[d.Id] {
			seen[d.Id] = true
			refs = append(refs, graph.RefTreasure{ID: d.Id, Node: d.Node - 1})
		}
	}
	checked := 0
	for _, mv := range f.moves[:200] {
		last := mv.Path[len(mv.Path)-1]
		if _, claimedHere := claimedAt(a, last); claimedHere {
			continue
		}
		if checked >= 40 {
			break
		}
		got := a.prox[fmt.Sprintf("%s/%d", mv.Player, mv.Seq)]
		want := graph.Reference(f.g, refs, f.radius, last-1)
		if want.Found != (got.Treasure != nil) || (want.Found && (want.ID != got.Treasure.Id || uint64(want.Dist) != got.Treasure.Distance || want.Node+1 != got.Treasure.Node)) {
			// A claim elsewhere may have removed the nearest treasure
			// before this move: accept only answers explained that way.
			if !want.Found || a.claims[want.ID] == nil {
				t.Fatalf("move %s/%d at node %d: got %v, reference %+v", mv.Player, mv.Seq, last, got.Treasure, want)
			}
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("only %d moves checked against the reference", checked)
	}
}

func claimedAt(o outputs, node uint32) (string, bool) {
	for id, c := range o.claims {
		if c.Node == node {
			return id, true
		}
	}
	return "", false
}

// testLog shows the workers' log lines with -v only.
func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// TestWorkerAppliesALateMoveAndSkipsACopy: a player's moves reach the log
// of partition 0 as 1, 3, 2 (seq 2's batch published again after a
// JetStream leader change, once the new leader had stored seq 3), then
// copies of 3 and 2 (resent after an ingest restart). Each of seqs 1, 2 and
// 3 gets exactly one result — seq 2 too, although it came after 3 — and a
// restarted worker, rebuilding from the log, gives no second one.
func TestWorkerAppliesALateMoveAndSkipsACopy(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := newTopo(prefix, f.k)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	var nodes []uint32 // wire ids of partition 0's nodes
	for v := 0; v < f.g.NumNodes() && len(nodes) < 3; v += 97 {
		if f.part[v] == 0 {
			nodes = append(nodes, graph.ID(uint32(v)))
		}
	}
	move := func(seq uint64) *eventpb.MoveAccepted {
		return &eventpb.MoveAccepted{Player: "late", Seq: seq, Path: []uint32{nodes[seq-1]}}
	}
	publishMoves(t, ctx, js, topo, f, []*eventpb.MoveAccepted{move(1), move(3), move(2), move(3), move(2)})
	stop := startWorker(t, ctx, f, topo, js, url, []int{0})
	o := waitOutputs(t, ctx, js, topo, 3)
	for seq := uint64(1); seq <= 3; seq++ {
		if _, ok := o.prox[fmt.Sprintf("late/%d", seq)]; !ok {
			t.Fatalf("no result for seq %d: %v", seq, o.prox)
		}
	}
	stop()
	// The next worker starts from the checkpoint its predecessor wrote at
	// its stop, whose seq windows skip further copies.
	publishMoves(t, ctx, js, topo, f, []*eventpb.MoveAccepted{move(2), move(1)})
	stop = startWorker(t, ctx, f, topo, js, url, []int{0})
	defer stop()
	publishMoves(t, ctx, js, topo, f, []*eventpb.MoveAccepted{move(3)})
	// readOutputs fails on a second result for any seq; wait until the
	// worker has consumed everything.
	cons, err := js.Consumer(ctx, topo.InStream(), Durable(topo, 0))
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		info, err := cons.Info(ctx)
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			return ""
		}
		return fmt.Sprintf("the worker did not consume the log: %+v %v", info, err)
	})
	if o := readOutputs(t, ctx, js, topo); len(o.prox) != 3 {
		t.Fatalf("%d results after the copies, want 3", len(o.prox))
	}
}
