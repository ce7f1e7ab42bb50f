package game

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"treasure/internal/graph"
	"treasure/internal/testgraph"
)

func loadReal(tb testing.TB, name string) *graph.Graph {
	tb.Helper()
	g, err := graph.LoadDIMACS(testgraph.Path(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// Every move of a workload is valid in order, and a Core accepts them all.
func TestWorkloadValid(t *testing.T) {
	g := loadReal(t, "amsterdam.gr.gz")
	w := NewWorkload(g, 50, 5000, 1)
	e := NewEngine(g, 2000)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 300; i++ {
		e.Drop(Treasure{ID: "t" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Node: uint32(r.IntN(g.NumNodes())), Points: 1})
	}
	c := NewCore(e, w.Players)
	for i := 0; i < w.Moves(); i++ {
		if n := len(w.Path(i)); n < 6 || n > 12 {
			t.Fatalf("move %d has %d nodes", i, n)
		}
		if err := c.Step(w.Player[i], w.Seq[i], w.Path(i)); err != nil {
			t.Fatalf("move %d rejected: %v", i, err)
		}
	}
	if c.Accepted != uint64(w.Moves()) || c.Found == 0 {
		t.Fatalf("accepted %d of %d, %d found a treasure", c.Accepted, w.Moves(), c.Found)
	}
	// Replaying without Reset: every move is now stale.
	if err := c.Step(w.Player[0], w.Seq[0], w.Path(0)); err == nil || err.Code != CodeStaleSeq {
		t.Fatalf("replayed move: %v, want stale_seq", err)
	}
}

// BenchmarkMoveEval measures one move evaluation as SPEC's story counts it:
// a 6–12 node path validated, the player advanced, claims checked and the
// proximity answered. Graphs: amsterdam (in the repo) by default; set
// TREASURE_BENCH_GRAPH to a .gr.gz or .snap for another (see BENCHMARKS.md).
func BenchmarkMoveEval(b *testing.B) {
	g := loadReal(b, "amsterdam.gr.gz")
	radius := uint32(2000)
	if p := os.Getenv("TREASURE_BENCH_GRAPH"); p != "" {
		var err error
		if g, err = graph.Open(p); err != nil {
			b.Fatal(err)
		}
	}
	if r := os.Getenv("TREASURE_BENCH_RADIUS"); r != "" {
		v, err := strconv.ParseUint(r, 10, 31)
		if err != nil {
			b.Fatalf("TREASURE_BENCH_RADIUS: %v", err)
		}
		radius = uint32(v)
	}
	benchMoves(b, g, radius)
}

func benchMoves(b *testing.B, g *graph.Graph, radius uint32) {
	w := NewWorkload(g, 10000, 200000, 1)
	e := NewEngine(g, radius)
	r := rand.New(rand.NewPCG(5, 6))
	ts := make([]Treasure, 5000)
	for i := range ts {
		ts[i] = Treasure{ID: "t" + itoa(i), Node: uint32(r.IntN(g.NumNodes())), Points: 1}
	}
	e.DropAll(ts)
	c := NewCore(e, w.Players)
	b.ReportAllocs()
	b.ResetTimer()
	for i, j := 0, 0; i < b.N; i++ {
		if j == w.Moves() {
			j = 0
			c.Reset()
		}
		c.Step(w.Player[j], w.Seq[j], w.Path(j))
		j++
	}
	b.StopTimer()
	if c.Rejected != 0 {
		b.Fatalf("%d moves rejected", c.Rejected)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "moves/s")
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			break
		}
	}
	return string(b[n:])
}
