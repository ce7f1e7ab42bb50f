package history_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/history"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
	"treasure/services/proximity"
)

var (
	amsOnce sync.Once
	ams     *graph.Graph
	amsErr  error
)

func amsterdam(tb testing.TB) *graph.Graph {
	tb.Helper()
	p := testgraph.Path(tb, "amsterdam.gr.gz")
	amsOnce.Do(func() { ams, amsErr = graph.LoadDIMACS(p) })
	if amsErr != nil {
		tb.Fatal(amsErr)
	}
	return ams
}

type drop struct {
	id     string
	node   uint32 // index
	points uint64
}

type move struct {
	player string
	seq    uint64
	node   uint32 // index: a one-node move (a spawn, which a worker accepts anywhere)
}

// TestWhatIfRadiusAgainstReference writes a log by hand — treasures
// dropped, then many one-node moves of several players, one of them onto a
// treasure — and replays it at the live radius and, as a what-if, at a
// larger one. The real rebuild's outputs equal proximity.Replay's (the
// worker's own code); the what-if's answers equal a plain Dijkstra's at
// the larger radius over the treasures active at each move; and an answer
// changed exactly where the reference answers at the two radii differ.
func TestWhatIfRadiusAgainstReference(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	const k, r1, r2 = 2, 1500, 3000
	part, err := graph.Partition(g, k)
	if err != nil {
		t.Fatal(err)
	}
	_, js, prefix := testenv.JetStream(t)
	small := natsjs.Limits{MaxBytes: 8 << 20, MaxMsgs: 10_000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: k, In: small, Out: small, Upd: small, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	n := uint32(g.NumNodes())
	// Treasures around one area so that moves near it see them at
	// different radii.
	center := uint32(20_000)
	dist := graph.ReferenceDistances(g, center)
	var near []uint32
	for v := range n {
		if dist[v] <= 4000 {
			near = append(near, v)
		}
	}
	if len(near) < 100 {
		t.Fatalf("only %d nodes within 4000 of node %d", len(near), center)
	}
	drops := []drop{}
	for i := range 6 {
		drops = append(drops, drop{id: fmt.Sprintf("t%d", i), node: near[rng.IntN(len(near))], points: uint64(1 + i)})
	}
	var batch []*eventpb.Event
	for _, d := range drops {
		batch = append(batch, &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: d.id, Node: graph.ID(d.node), Points: d.points}}})
	}
	data, _ := event.AppendBatch(nil, batch)
	for q := range k {
		if _, err := js.Publish(ctx, topo.InSubject(q), data); err != nil {
			t.Fatal(err)
		}
	}
	// Moves: mostly near the treasures; the 10th lands on t0 and claims it.
	var moves []move
	seqs := map[string]uint64{}
	for i := range 150 {
		p := fmt.Sprintf("p%d", i%7)
		seqs[p]++
		v := near[rng.IntN(len(near))]
		for slices.ContainsFunc(drops, func(d drop) bool { return d.node == v }) {
			v = near[rng.IntN(len(near))]
		}
		if i == 10 {
			v = drops[0].node
		}
		moves = append(moves, move{player: p, seq: seqs[p], node: v})
	}
	for _, m := range moves {
		data, _ := event.AppendBatch(nil, []*eventpb.Event{{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{Player: m.player, Seq: m.seq, Path: []uint32{graph.ID(m.node)}}}}})
		if _, err := js.Publish(ctx, topo.InSubject(int(part[m.node])), data); err != nil {
			t.Fatal(err)
		}
	}

	// The worker's own replay, for the real run.
	var live []*eventpb.Event
	err = proximity.Replay(ctx, proximity.ReplayOptions{Graph: g, Part: part, Radius: r1, Topology: topo, JS: js}, func(_ int, ev *eventpb.Event) error {
		live = append(live, ev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ans history.Answers
	ans.Keep = 1000
	var realOut, whatIfOut []*eventpb.Event
	real, err := history.New(history.Options{Graph: g, Part: part, Topology: topo, Radius: r1, Emit: func(k int, ev *eventpb.Event) error {
		realOut = append(realOut, ev)
		return ans.RealEmit(k, ev)
	}})
	if err != nil {
		t.Fatal(err)
	}
	whatIf, err := history.New(history.Options{Graph: g, Part: part, Topology: topo, Radius: r2, WhatIf: true, Emit: func(k int, ev *eventpb.Event) error {
		whatIfOut = append(whatIfOut, ev)
		return ans.WhatIfEmit(k, ev)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := history.ReadIn(ctx, nil, js, topo, history.Cutoff{}, nil, real, whatIf); err != nil {
		t.Fatal(err)
	}
	ans.Finish()

	// The real rebuild says what the worker says (as sets: the worker's
	// replay goes partition by partition).
	key := func(ev *eventpb.Event) string { b, _ := proto.Marshal(ev); return string(b) }
	a, b := make([]string, len(live)), make([]string, len(realOut))
	for i, ev := range live {
		a[i] = key(ev)
	}
	for i, ev := range realOut {
		b[i] = key(ev)
	}
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Fatalf("rebuild outputs differ from proximity.Replay's: %d vs %d events", len(realOut), len(live))
	}
	if len(real.Claims()) != 1 || real.Claims()[0].Treasure != "t0" || real.Claims()[0].Player != moves[10].player {
		t.Fatalf("claims %+v, want t0 by %s", real.Claims(), moves[10].player)
	}

	// The reference, move by move in log order: t0 is gone from the
	// 10th move on (its own answer comes after its claim).
	// graph.Reference's rule over plain Dijkstras (graph.ReferenceDistances)
	// from each treasure (the graph is symmetric), for both radii.
	fromTreasure := make([][]uint64, len(drops))
	for j, d := range drops {
		fromTreasure[j] = graph.ReferenceDistances(g, d.node)
	}
	ref := func(i int, radius uint32) graph.RefAnswer {
		var best graph.RefAnswer
		for j, d := range drops {
			if d.id == "t0" && i >= 10 {
				continue
			}
			dd := fromTreasure[j][moves[i].node]
			if dd > uint64(radius) {
				continue
			}
			if !best.Found || dd < uint64(best.Dist) || dd == uint64(best.Dist) && d.id < best.ID {
				best = graph.RefAnswer{Found: true, ID: d.id, Node: d.node, Dist: uint32(dd)}
			}
		}
		return best
	}
	results := map[history.MoveKey]*eventpb.ProximityResult{}
	for _, ev := range whatIfOut {
		if r := ev.GetProximity(); r != nil {
			results[history.MoveKey{Player: r.Player, Seq: r.Seq}] = r
		}
	}
	changed := map[history.MoveKey]bool{}
	for _, c := range ans.Examples {
		changed[history.MoveKey{Player: c.Player, Seq: c.Seq}] = true
	}
	wantChanged := 0
	for i, m := range moves {
		w1, w2 := ref(i, r1), ref(i, r2)
		got := results[history.MoveKey{Player: m.player, Seq: m.seq}]
		if got == nil {
			t.Fatalf("move %d (%s/%d): no what-if answer", i, m.player, m.seq)
		}
		if w2.Found != (got.Treasure != nil) || w2.Found && (got.Treasure.Id != w2.ID || got.Treasure.Distance != uint64(w2.Dist) || got.Treasure.Node != graph.ID(w2.Node)) {
			t.Fatalf("move %d at node %d: what-if answer %v, reference at %d: %+v", i, graph.ID(m.node), got.Treasure, r2, w2)
		}
		differ := w1 != w2
		if differ {
			wantChanged++
		}
		if changed[history.MoveKey{Player: m.player, Seq: m.seq}] != differ {
			t.Fatalf("move %d at node %d: reported changed %v, reference %+v at %d and %+v at %d", i, graph.ID(m.node), !differ, w1, r1, w2, r2)
		}
	}
	if ans.Changed != wantChanged || ans.Compared != len(moves) || ans.Unmatched != 0 {
		t.Fatalf("compared %d changed %d unmatched %d; want %d, %d, 0", ans.Compared, ans.Changed, ans.Unmatched, len(moves), wantChanged)
	}
	if wantChanged == 0 || wantChanged == len(moves) {
		t.Fatalf("a test that cannot fail: %d of %d answers change with the radius", wantChanged, len(moves))
	}
	t.Logf("%d of %d answers change from radius %d to %d", wantChanged, len(moves), r1, r2)

	// A what-if at the live radius changes nothing; claims are equal.
	if d := history.DiffClaims(real.Claims(), whatIf.Claims()); len(d) != 0 {
		t.Fatalf("a larger radius changed claims: %+v", d)
	}
}

// TestBoardTiesAndAfters: a hand-written log where two players reach the
// same score, the later one first by the IN order but not by P_OUT's
// positions; the board lists ties by who reached the score first in
// P_OUT's order (the ranker's), shares ranks, ranks seen players without a
// score after every scorer, and the score and rank right after each claim
// are what the ranker publishes.
func TestBoardTiesAndAfters(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	const k = 2
	part, err := graph.Partition(g, k)
	if err != nil {
		t.Fatal(err)
	}
	_, js, prefix := testenv.JetStream(t)
	small := natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: 1000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: k, In: small, Out: small, Upd: small, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// a (3) and b (2) then c (1): ann claims a (3); bob claims b then c
	// (3); cat moves without claiming.
	nodes := []uint32{100, 200, 300, 400}
	var evs []*eventpb.Event
	for i, id := range []string{"a", "b", "c"} {
		evs = append(evs, &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: id, Node: graph.ID(nodes[i]), Points: uint64(3 - i)}}})
	}
	data, _ := event.AppendBatch(nil, evs)
	for q := range k {
		if _, err := js.Publish(ctx, topo.InSubject(q), data); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []move{{"bob", 1, nodes[1]}, {"bob", 2, nodes[2]}, {"ann", 1, nodes[0]}, {"cat", 1, nodes[3]}} {
		data, _ := event.AppendBatch(nil, []*eventpb.Event{{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{Player: m.player, Seq: m.seq, Path: []uint32{graph.ID(m.node)}}}}})
		if _, err := js.Publish(ctx, topo.InSubject(int(part[m.node])), data); err != nil {
			t.Fatal(err)
		}
	}
	r, err := history.New(history.Options{Graph: g, Part: part, Topology: topo, Radius: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := history.ReadIn(ctx, nil, js, topo, history.Cutoff{}, nil, r); err != nil {
		t.Fatal(err)
	}
	line := func(b *history.Board) string {
		var s []string
		for _, st := range b.Top {
			s = append(s, fmt.Sprintf("%s %d %d", st.Player, st.Score, st.Rank))
		}
		c := b.Players["cat"]
		return strings.Join(s, ", ") + fmt.Sprintf("; cat %d %d", c.Score, c.Rank)
	}
	// IN order alone: bob reached 3 first.
	if got, want := line(r.Board(nil, history.Points)), "bob 3 1, ann 3 1; cat 0 3"; got != want {
		t.Errorf("board in IN order: %q, want %q", got, want)
	}
	// P_OUT had ann's result first (her partition's worker was ahead).
	out := &history.Out{Results: map[history.MoveKey]history.Pos{
		{Player: "ann", Seq: 1}: {Seq: 10}, {Player: "bob", Seq: 1}: {Seq: 11}, {Player: "bob", Seq: 2}: {Seq: 12, Index: 1},
	}}
	if got, want := line(r.Board(out, history.Points)), "ann 3 1, bob 3 1; cat 0 3"; got != want {
		t.Errorf("board in P_OUT order: %q, want %q", got, want)
	}
	count, _ := history.ParseScoring("count")
	if got, want := line(r.Board(out, count)), "bob 2 1, ann 1 2; cat 0 3"; got != want {
		t.Errorf("board by count: %q, want %q", got, want)
	}
	afters := r.Afters(out, history.Points)
	var got []string
	for _, id := range []string{"a", "b", "c"} {
		a := afters[id]
		got = append(got, fmt.Sprintf("%s %s %d %d", id, a.Player, a.Score, a.Rank))
	}
	// a: ann 3, alone; b: bob 2, behind ann; c: bob 3, level with ann.
	if want := []string{"a ann 3 1", "b bob 2 2", "c bob 3 1"}; !slices.Equal(got, want) {
		t.Errorf("afters %q, want %q", got, want)
	}
	st, ok := r.PlayerState(r.Board(out, history.Points), "cat")
	if !ok || st.Node != graph.ID(nodes[3]) || st.Rank != 3 || st.Moves != 1 {
		t.Errorf("cat: %+v", st)
	}
	if act := r.ActiveList(); len(act) != 0 {
		t.Errorf("active after every claim: %+v", act)
	}
}
