package loadgen

import (
	"slices"
	"sync"
	"testing"

	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/testgraph"
)

var (
	amsOnce sync.Once
	ams     *graph.Graph
	amsErr  error
)

// amsterdam loads the real amsterdam road graph once per test binary.
func amsterdam(tb testing.TB) *graph.Graph {
	tb.Helper()
	path := testgraph.Path(tb, "amsterdam.gr.gz")
	amsOnce.Do(func() { ams, amsErr = graph.LoadDIMACS(path) })
	if amsErr != nil {
		tb.Fatal(amsErr)
	}
	return ams
}

// walkAndValidate plays moves for each player as a load generator player
// does (spawn, then walks accepted as they come) and checks every move
// against game.ValidateMove, path lengths and back-steps.
func walkAndValidate(t *testing.T, g *graph.Graph, players, moves int, seed uint64) {
	t.Helper()
	var idx [game.MaxPath]uint32
	for pl := range players {
		w := newWalker(g, seed, pl)
		var st game.Player
		var path []uint64
		prev := graph.NoNode // the node before the player's current one
		for i := range moves {
			if i == 0 {
				path = w.spawn(path[:0])
				if len(path) != 1 {
					t.Fatalf("player %d: spawn path %v, want one node", pl, path)
				}
				if g.Degree(uint32(path[0]-1)) == 0 {
					t.Fatalf("player %d: spawned on node %d, which has no neighbour", pl, path[0])
				}
			} else {
				path = w.next(path[:0])
				if len(path) < minPath || len(path) > maxPath {
					t.Fatalf("player %d move %d: %d nodes, want %d..%d", pl, i, len(path), minPath, maxPath)
				}
			}
			seq := uint64(i + 1)
			if err := game.ValidateMove(g, st, seq, path, idx[:len(path)]); err != nil {
				t.Fatalf("player %d move %d %v: %v", pl, i, path, err)
			}
			// No immediate back-step where another way exists, across
			// moves too.
			for k := 1; k < len(path); k++ {
				before := prev
				if k >= 2 {
					before = idx[k-2]
				}
				if idx[k] == before && g.Degree(idx[k-1]) > 1 {
					t.Fatalf("player %d move %d %v: steps back at %d though node %d has %d neighbours", pl, i, path, k, path[k-1], g.Degree(idx[k-1]))
				}
			}
			if len(path) > 1 {
				prev = idx[len(path)-2]
			}
			st = st.Advance(seq, idx[len(path)-1])
			w.accept(path)
		}
	}
}

func TestWalkerMovesAreValidOnAmsterdam(t *testing.T) {
	t.Parallel()
	walkAndValidate(t, amsterdam(t), 200, 60, 42)
}

func TestWalkerOnTinyGraphs(t *testing.T) {
	t.Parallel()
	// Nodes 0 and 3 are isolated; 1-2 is a dead end both ways, so every
	// step is a forced back-step; 4-5-6 is a triangle.
	g, err := graph.FromEdges(7, []graph.Edge{{U: 1, V: 2, Len: 5}, {U: 4, V: 5, Len: 1}, {U: 5, V: 6, Len: 1}, {U: 6, V: 4, Len: 1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	walkAndValidate(t, g, 50, 20, 1)
}

func TestWalkerSpawnsOnTheOnlyEdge(t *testing.T) {
	t.Parallel()
	// 10,000 nodes, one edge: random tries miss, the scan finds it.
	g, err := graph.FromEdges(10_000, []graph.Edge{{U: 7777, V: 7778, Len: 1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pl := range 20 {
		w := newWalker(g, 3, pl)
		if w.at != 7777 && w.at != 7778 {
			t.Fatalf("player %d spawned on node index %d, which has no neighbour", pl, w.at)
		}
	}
}

func TestWalkerIsReproducible(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	a, b := newWalker(g, 9, 4), newWalker(g, 9, 4)
	c := newWalker(g, 9, 5)
	pa, pb, pc := a.next(nil), b.next(nil), c.next(nil)
	if !slices.Equal(pa, pb) {
		t.Fatalf("same seed and player, different walks: %v and %v", pa, pb)
	}
	if slices.Equal(pa, pc) {
		t.Fatalf("players 4 and 5 walk the same path %v", pa)
	}
}
