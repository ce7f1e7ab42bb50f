// Package graph holds treasure's road graph in flat arrays: a compressed
// sparse row (CSR) adjacency with 8-byte arcs, optional planar coordinates,
// the DIMACS reader, the binary snapshot, the synthetic city generator,
// partitions with halos and the nearest-treasure field.
//
// Nodes are numbered 0..N-1 inside the package. On the wire a node is the
// DIMACS file's id, which is the index plus one (see ID and Index). A
// partition's subgraph renumbers its nodes locally and keeps the map back to
// the whole graph's indices in Global.
//
// Nothing in a Graph holds a pointer per node or per arc: the garbage
// collector sees a handful of large pointer-free slices.
package graph

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Arc is one direction of a road segment: the neighbour's index and the
// segment's length. Eight bytes, no pointers.
type Arc struct {
	To  uint32
	Len uint32
}

// Edge is an undirected road segment as read from input, before the graph is
// built. U and V are node indices (0-based).
type Edge struct {
	U, V uint32
	Len  uint32
}

// Graph is an undirected graph in CSR form. The arcs of node v are
// Arcs[Offsets[v]:Offsets[v+1]], sorted by To, without duplicates or
// self-loops; every edge appears as two arcs. X and Y are nil when the graph
// has no coordinates.
//
// A Graph is immutable once built and safe for concurrent reads.
type Graph struct {
	Offsets []uint32 // len N+1
	Arcs    []Arc    // len Offsets[N]
	X, Y    []int32  // len N, or nil

	// Global maps a local node index to the whole graph's index. It is nil
	// for a whole graph and set for a partition's subgraph (see Partition).
	Global []uint32
	// Own is the number of nodes the subgraph's partition owns: local
	// indices below Own are owned, the rest are halo. For a whole graph it
	// equals NumNodes.
	Own uint32

	// mapped is the snapshot mapping the arrays view (MapSnapshot), nil
	// for a graph in the heap.
	mapped []byte
}

// MaxNodes is the largest node count a Graph holds: indices are uint32 and
// the value 1<<32-1 is reserved as "no node".
const MaxNodes = 1<<32 - 2

// NoNode marks the absence of a node index.
const NoNode = ^uint32(0)

// Errors returned by the builders and readers.
var (
	ErrNodeRange = errors.New("node out of range")
	ErrZeroLen   = errors.New("edge length must be positive")
)

// NumNodes returns the number of nodes.
func (g *Graph) NumNodes() int { return len(g.Offsets) - 1 }

// NumArcs returns the number of arcs (twice the number of distinct edges).
func (g *Graph) NumArcs() int { return len(g.Arcs) }

// HasCoords reports whether the graph carries planar coordinates.
func (g *Graph) HasCoords() bool { return g.X != nil }

// Neighbors returns the arcs leaving v. The slice aliases the graph; do not
// modify it.
func (g *Graph) Neighbors(v uint32) []Arc {
	return g.Arcs[g.Offsets[v]:g.Offsets[v+1]]
}

// Degree returns the number of arcs leaving v.
func (g *Graph) Degree(v uint32) int { return int(g.Offsets[v+1] - g.Offsets[v]) }

// ArcLen returns the length of the edge between u and v and whether it
// exists. u and v must be valid indices. Adjacency lists are short on road
// graphs, so a linear scan beats a binary search here.
func (g *Graph) ArcLen(u, v uint32) (uint32, bool) {
	for _, a := range g.Arcs[g.Offsets[u]:g.Offsets[u+1]] {
		if a.To == v {
			return a.Len, true
		}
	}
	return 0, false
}

// ID returns the wire id (the DIMACS id) of whole-graph index v.
func ID(v uint32) uint32 { return v + 1 }

// Index returns the whole-graph index of wire id id in a graph of n nodes,
// and false when id names no node.
func Index(id uint64, n int) (uint32, bool) {
	if id < 1 || id > uint64(n) {
		return 0, false
	}
	return uint32(id - 1), true
}

// GlobalIndex returns the whole-graph index of local node v.
func (g *Graph) GlobalIndex(v uint32) uint32 {
	if g.Global == nil {
		return v
	}
	return g.Global[v]
}

// FromEdges builds a Graph of n nodes from undirected edges. Self-loops are
// dropped; an edge given several times (in either direction) keeps its
// smallest length. x and y are either both nil or both of length n. edges
// is reordered but not kept.
func FromEdges(n int, edges []Edge, x, y []int32) (*Graph, error) {
	if n < 0 || n > MaxNodes {
		return nil, fmt.Errorf("graph: %d nodes: %w", n, ErrNodeRange)
	}
	if (x == nil) != (y == nil) || (x != nil && (len(x) != n || len(y) != n)) {
		return nil, fmt.Errorf("graph: coordinates for %d/%d nodes, want %d", len(x), len(y), n)
	}
	deg := make([]uint32, n+1)
	for i, e := range edges {
		if int64(e.U) >= int64(n) || int64(e.V) >= int64(n) {
			return nil, fmt.Errorf("graph: edge %d (%d-%d) in a graph of %d nodes: %w", i, e.U, e.V, n, ErrNodeRange)
		}
		if e.Len == 0 {
			return nil, fmt.Errorf("graph: edge %d (%d-%d): %w", i, e.U, e.V, ErrZeroLen)
		}
		if e.U == e.V {
			continue
		}
		deg[e.U+1]++
		deg[e.V+1]++
	}
	var total uint64
	for i := 1; i <= n; i++ {
		total += uint64(deg[i])
		if total > 1<<32-1 {
			return nil, fmt.Errorf("graph: more than 2^32-1 arcs")
		}
		deg[i] = uint32(total)
	}
	offsets := deg
	arcs := make([]Arc, total)
	fill := make([]uint32, n)
	copy(fill, offsets[:n])
	for _, e := range edges {
		if e.U == e.V {
			continue
		}
		arcs[fill[e.U]] = Arc{To: e.V, Len: e.Len}
		fill[e.U]++
		arcs[fill[e.V]] = Arc{To: e.U, Len: e.Len}
		fill[e.V]++
	}
	// Sort each list by (To, Len) and keep the first of each To: the
	// shortest of duplicate segments. Compact in place.
	w := uint32(0)
	for v := 0; v < n; v++ {
		lo, hi := offsets[v], offsets[v+1]
		list := arcs[lo:hi]
		slices.SortFunc(list, func(a, b Arc) int {
			if a.To != b.To {
				if a.To < b.To {
					return -1
				}
				return 1
			}
			return int(int64(a.Len) - int64(b.Len))
		})
		offsets[v] = w
		for i, a := range list {
			if i > 0 && a.To == list[i-1].To {
				continue
			}
			arcs[w] = a
			w++
		}
	}
	offsets[n] = w
	arcs = slices.Clip(arcs[:w])
	if int(w) < len(arcs)/2 { // many duplicates: give the memory back
		arcs = slices.Clone(arcs)
	}
	return &Graph{Offsets: offsets, Arcs: arcs, X: x, Y: y, Own: uint32(n)}, nil
}

// Validate checks the CSR invariants: monotone offsets, arcs in range and
// sorted without duplicates or self-loops, positive lengths, symmetry, and
// coordinate and Global lengths. It is O(arcs · degree) and meant for
// loaders of untrusted files and for tests.
func (g *Graph) Validate() error {
	if err := g.checkCSR(); err != nil {
		return err
	}
	n := g.NumNodes()
	for v := 0; v < n; v++ {
		for _, a := range g.Neighbors(uint32(v)) {
			if l, ok := g.ArcLen(a.To, uint32(v)); !ok || l != a.Len {
				return fmt.Errorf("graph: arc %d-%d has no equal reverse arc", v, a.To)
			}
		}
	}
	return nil
}

// checkCSR checks in O(N+M) every invariant of Validate except symmetry:
// what code indexing the graph relies on not to go out of range.
func (g *Graph) checkCSR() error {
	if len(g.Offsets) == 0 {
		return errors.New("graph: no offsets")
	}
	n := len(g.Offsets) - 1
	if uint64(n) > MaxNodes || uint64(len(g.Arcs)) > math.MaxUint32 {
		return fmt.Errorf("graph: %d nodes and %d arcs are too many", n, len(g.Arcs))
	}
	m := uint32(len(g.Arcs))
	if g.Offsets[0] != 0 || g.Offsets[n] != m {
		return fmt.Errorf("graph: offsets span %d..%d, want 0..%d", g.Offsets[0], g.Offsets[n], m)
	}
	if (g.X == nil) != (g.Y == nil) || (g.X != nil && (len(g.X) != n || len(g.Y) != n)) {
		return fmt.Errorf("graph: coordinates for %d/%d nodes, want %d", len(g.X), len(g.Y), n)
	}
	if g.Global != nil && len(g.Global) != n {
		return fmt.Errorf("graph: %d global ids for %d nodes", len(g.Global), n)
	}
	if uint64(g.Own) > uint64(n) {
		return fmt.Errorf("graph: %d own nodes of %d", g.Own, n)
	}
	for v := 0; v < n; v++ {
		lo, hi := g.Offsets[v], g.Offsets[v+1]
		if lo > hi || hi > m {
			return fmt.Errorf("graph: offsets of node %d (%d..%d) out of order or beyond %d arcs", v, lo, hi, m)
		}
		prev := int64(-1)
		for _, a := range g.Arcs[lo:hi] {
			if uint64(a.To) >= uint64(n) {
				return fmt.Errorf("graph: node %d has an arc to %d of %d: %w", v, a.To, n, ErrNodeRange)
			}
			if int(a.To) == v {
				return fmt.Errorf("graph: self-loop at node %d", v)
			}
			if int64(a.To) <= prev {
				return fmt.Errorf("graph: arcs of node %d unsorted or duplicated", v)
			}
			if a.Len == 0 {
				return fmt.Errorf("graph: arc %d-%d: %w", v, a.To, ErrZeroLen)
			}
			prev = int64(a.To)
		}
	}
	for i, id := range g.Global {
		if id > MaxNodes {
			return fmt.Errorf("graph: node %d has global index %d: %w", i, id, ErrNodeRange)
		}
	}
	return nil
}
