package loadgen

import (
	"math/rand/v2"

	"treasure/internal/graph"
)

// Path lengths of a walking move, in nodes (SPEC's story: 6–12).
const (
	minPath = 6
	maxPath = 12
)

// walker is one simulated player's position and its random source. It
// builds moves continuing from the node of the player's last accepted move,
// stepping back only where a node has no other neighbour (the idea of
// game.NewWorkload). A walker is owned by one goroutine.
type walker struct {
	g    *graph.Graph
	rng  *rand.Rand
	at   uint32 // index of the node the player stands on (last accepted move)
	prev uint32 // index of the node before at, or graph.NoNode
}

// newWalker returns a walker seeded from (seed, player) standing on a
// random node that has a neighbour. g must hold at least one such node
// (see hasEdge).
func newWalker(g *graph.Graph, seed uint64, player int) *walker {
	w := &walker{g: g, rng: rand.New(rand.NewPCG(seed, uint64(player)*0x9e3779b97f4a7c15+1)), prev: graph.NoNode}
	w.at = w.spawnNode()
	return w
}

// spawnNode picks a random node with a neighbour: a few random tries, then
// a scan from a random start, so that a graph with few such nodes costs at
// most one pass.
func (w *walker) spawnNode() uint32 {
	n := w.g.NumNodes()
	for range 64 {
		if v := uint32(w.rng.IntN(n)); w.g.Degree(v) > 0 {
			return v
		}
	}
	start := w.rng.IntN(n)
	for i := range n {
		if v := uint32((start + i) % n); w.g.Degree(v) > 0 {
			return v
		}
	}
	return 0 // unreachable for a graph that passed hasEdge
}

// spawn appends the first move's path, the single node the player stands
// on, to dst.
func (w *walker) spawn(dst []uint64) []uint64 {
	return append(dst, uint64(graph.ID(w.at)))
}

// next appends a path of minPath..maxPath nodes starting at the player's
// node (wire ids) to dst. It does not move the player: accept does, once
// the move is acknowledged.
func (w *walker) next(dst []uint64) []uint64 {
	v, prev := w.at, w.prev
	dst = append(dst, uint64(graph.ID(v)))
	for steps := minPath - 1 + w.rng.IntN(maxPath-minPath+1); steps > 0; steps-- {
		next, ok := w.stepFrom(v, prev)
		if !ok { // only for a spawn on a node without neighbours
			break
		}
		prev, v = v, next
		dst = append(dst, uint64(graph.ID(v)))
	}
	return dst
}

// stepFrom picks the node a walk at v that came from prev goes to: a
// neighbour of v, uniformly, but not prev unless it is the only one. ok
// is false on a node without neighbours. next and nextIdx share it so that
// both draw the same numbers for the same walk.
func (w *walker) stepFrom(v, prev uint32) (next uint32, ok bool) {
	arcs := w.g.Neighbors(v)
	if len(arcs) == 0 {
		return 0, false
	}
	next = arcs[w.rng.IntN(len(arcs))].To
	if next == prev && len(arcs) > 1 {
		// Any neighbour but prev, uniformly.
		k := w.rng.IntN(len(arcs) - 1)
		for _, a := range arcs {
			if a.To == prev {
				continue
			}
			if k == 0 {
				next = a.To
				break
			}
			k--
		}
	}
	return next, true
}

// accept moves the player to the end of path (wire ids of a valid move).
func (w *walker) accept(path []uint64) {
	last := uint32(path[len(path)-1] - 1)
	w.prev = graph.NoNode
	if len(path) > 1 {
		w.prev = uint32(path[len(path)-2] - 1)
	}
	w.at = last
}

// place puts the player on node index v (a resynchronisation), forgetting
// where it came from.
func (w *walker) place(v uint32) {
	w.at, w.prev = v, graph.NoNode
}

// hasEdge reports whether g has a node with a neighbour.
func hasEdge(g *graph.Graph) bool { return g.NumArcs() > 0 }

// nextIdx is next with node indexes: it appends a path of minPath..maxPath
// node indexes starting at the player's node to dst.
func (w *walker) nextIdx(dst []uint32) []uint32 {
	v, prev := w.at, w.prev
	dst = append(dst, v)
	for steps := minPath - 1 + w.rng.IntN(maxPath-minPath+1); steps > 0; steps-- {
		next, ok := w.stepFrom(v, prev)
		if !ok {
			break
		}
		prev, v = v, next
		dst = append(dst, v)
	}
	return dst
}

// acceptIdx moves the player to the end of path (node indexes).
func (w *walker) acceptIdx(path []uint32) {
	w.prev = graph.NoNode
	if len(path) > 1 {
		w.prev = path[len(path)-2]
	}
	w.at = path[len(path)-1]
}
