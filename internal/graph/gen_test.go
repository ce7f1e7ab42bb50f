package graph

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"testing"
)

// Original scale of the game's city.
const (
	fullNodes = 2_300_000
	fullEdges = 6_800_000
)

func mustGenerate(tb testing.TB, opt GenOptions) *Graph {
	tb.Helper()
	g, err := Generate(opt)
	if err != nil {
		tb.Fatalf("Generate(%+v): %v", opt, err)
	}
	return g
}

// countComponents counts the connected components of g by BFS.
func countComponents(g *Graph) int {
	n := g.NumNodes()
	seen := make([]bool, n)
	queue := make([]uint32, 0, 1024)
	comps := 0
	for s := 0; s < n; s++ {
		if seen[s] {
			continue
		}
		comps++
		seen[s] = true
		queue = append(queue[:0], uint32(s))
		for i := 0; i < len(queue); i++ {
			for _, a := range g.Neighbors(queue[i]) {
				if !seen[a.To] {
					seen[a.To] = true
					queue = append(queue, a.To)
				}
			}
		}
	}
	return comps
}

// checkLengths fails unless every arc's length is the rounded Euclidean
// distance of its ends, at least 1.
func checkLengths(tb testing.TB, g *Graph) {
	tb.Helper()
	for v := 0; v < g.NumNodes(); v++ {
		for _, a := range g.Neighbors(uint32(v)) {
			dx := float64(g.X[a.To]) - float64(g.X[v])
			dy := float64(g.Y[a.To]) - float64(g.Y[v])
			want := max(uint32(math.Round(math.Hypot(dx, dy))), 1)
			if a.Len != want {
				tb.Fatalf("arc %d-%d: length %d, want %d from coordinates", v, a.To, a.Len, want)
			}
		}
	}
}

func TestGenerateMeetsSizeConnectedAndValid(t *testing.T) {
	cases := []struct {
		name  string
		nodes int
		edges func(lo, hi int) int
	}{
		{"single node", 1, func(lo, hi int) int { return 0 }},
		{"two nodes", 2, func(lo, hi int) int { return 1 }},
		{"tree", 1000, func(lo, hi int) int { return lo }},
		{"sparse like real roads", 1000, func(lo, hi int) int { return 1200 }},
		{"grid density", 4096, func(lo, hi int) int { return 2 * 4096 }},
		{"partial last row", 12_345, func(lo, hi int) int { return 30_000 }},
		{"original density", 23_000, func(lo, hi int) int { return 68_000 }},
		{"maximum", 999, func(lo, hi int) int { return hi }},
		{"maximum, partial row", 1003, func(lo, hi int) int { return hi }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi := GenLimits(tc.nodes)
			m := tc.edges(lo, hi)
			g := mustGenerate(t, GenOptions{Nodes: tc.nodes, Edges: m, Seed: 7})
			if g.NumNodes() != tc.nodes || g.NumArcs() != 2*m {
				t.Fatalf("got %d nodes, %d arcs; want %d nodes, %d arcs", g.NumNodes(), g.NumArcs(), tc.nodes, 2*m)
			}
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			if c := countComponents(g); c != 1 {
				t.Fatalf("%d connected components, want 1", c)
			}
			if !g.HasCoords() || g.Own != uint32(tc.nodes) || g.Global != nil {
				t.Fatalf("coords %v, Own %d, Global %v", g.HasCoords(), g.Own, g.Global != nil)
			}
			checkLengths(t, g)
		})
	}
}

func TestGenerateSameSeedSameArrays(t *testing.T) {
	opt := GenOptions{Nodes: 20_000, Edges: 55_000, Seed: 42}
	a, b := mustGenerate(t, opt), mustGenerate(t, opt)
	if !slices.Equal(a.Offsets, b.Offsets) || !slices.Equal(a.Arcs, b.Arcs) ||
		!slices.Equal(a.X, b.X) || !slices.Equal(a.Y, b.Y) {
		t.Fatal("two runs with the same seed differ")
	}
	opt.Seed++
	c := mustGenerate(t, opt)
	if slices.Equal(a.Arcs, c.Arcs) || slices.Equal(a.X, c.X) {
		t.Fatal("seeds 42 and 43 gave the same city")
	}
}

// TestGenerateLooksLikeACity checks the layout is not a perfect lattice:
// street gaps vary, some grid segments are missing, degrees vary, and a
// 2000 m radius holds a few thousand junctions.
func TestGenerateLooksLikeACity(t *testing.T) {
	const n = 40_000
	g := mustGenerate(t, GenOptions{Nodes: n, Edges: 2 * n, Seed: 3})
	lens := make(map[uint32]int)
	degs := make(map[int]int)
	for v := 0; v < n; v++ {
		degs[g.Degree(uint32(v))]++
		for _, a := range g.Neighbors(uint32(v)) {
			lens[a.Len]++
		}
	}
	if len(lens) < 50 {
		t.Errorf("only %d distinct segment lengths", len(lens))
	}
	if len(degs) < 4 {
		t.Errorf("degrees %v: too regular", degs)
	}
	if degs[4] == n-int(math.Sqrt(n))*4 {
		t.Errorf("every inner node has degree 4: a lattice")
	}
	s := NewSearch(n)
	reached := 0
	s.Run(g, []uint32{n/2 + 100}, 2000, func(v, d uint32) bool { reached++; return true })
	if reached < 1500 || reached > 8000 {
		t.Errorf("%d nodes within 2000 m of the centre, want a few thousand", reached)
	}
}

func TestGenerateRejectsImpossibleSizes(t *testing.T) {
	lo, hi := GenLimits(1000)
	cases := []struct {
		name string
		opt  GenOptions
	}{
		{"no nodes", GenOptions{Nodes: 0}},
		{"negative nodes", GenOptions{Nodes: -5}},
		{"too few edges to connect", GenOptions{Nodes: 1000, Edges: lo - 1}},
		{"too many edges to be planar", GenOptions{Nodes: 1000, Edges: hi + 1}},
		{"negative edges", GenOptions{Nodes: 1000, Edges: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Generate(tc.opt)
			if !errors.Is(err, ErrGenSize) || g != nil {
				t.Fatalf("Generate(%+v) = %v, %v; want ErrGenSize", tc.opt, g != nil, err)
			}
		})
	}
}

func TestGenLimitsAdmitOriginalScale(t *testing.T) {
	lo, hi := GenLimits(fullNodes)
	if fullEdges < lo || fullEdges > hi {
		t.Fatalf("GenLimits(%d) = %d..%d, excludes %d", fullNodes, lo, hi, fullEdges)
	}
	if hi > 3*fullNodes {
		t.Fatalf("maximum %d exceeds the planar bound 3n", hi)
	}
}

// TestGenerateOriginalScale builds the full 2.3 M / 6.8 M city once and
// checks its size and connectivity (Validate and the length check run on
// the smaller cases above; the code paths are the same).
func TestGenerateOriginalScale(t *testing.T) {
	if testing.Short() {
		t.Skip("full-scale city in -short mode")
	}
	g := mustGenerate(t, GenOptions{Nodes: fullNodes, Edges: fullEdges, Seed: 1})
	if g.NumNodes() != fullNodes || g.NumArcs() != 2*fullEdges {
		t.Fatalf("got %d nodes, %d arcs", g.NumNodes(), g.NumArcs())
	}
	if c := countComponents(g); c != 1 {
		t.Fatalf("%d connected components, want 1", c)
	}
}

// BenchmarkGenerateFull builds the original-scale city: 2.3 M nodes, 6.8 M
// edges. B/op is the allocation per city; arrays-MiB the size of the
// result's arrays, for comparison.
func BenchmarkGenerateFull(b *testing.B) {
	b.ReportAllocs()
	var g *Graph
	for b.Loop() {
		var err error
		g, err = Generate(GenOptions{Nodes: fullNodes, Edges: fullEdges, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
	}
	arrays := 4*len(g.Offsets) + 8*len(g.Arcs) + 4*len(g.X) + 4*len(g.Y)
	b.ReportMetric(float64(arrays)/(1<<20), "arrays-MiB")
	runtime.KeepAlive(g)
}
