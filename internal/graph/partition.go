package graph

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Errors of the partition functions.
var (
	ErrParts     = errors.New("bad partition count")
	ErrPartition = errors.New("partition does not fit the graph")
)

// Partition splits g's nodes into k compact parts of nearly equal size and
// returns the part of every node, in 0..k-1. Every part has ⌊N/k⌋ or
// ⌈N/k⌉ nodes: each cut gives each side its share rounded to the nearest.
//
// Graphs with coordinates are cut by recursive coordinate bisection: the
// longer side of a node set's bounding box is split at the node whose rank
// is proportional to the part counts on each side (the median for an even
// count), so k need not be a power of two.
//
// Graphs without coordinates (the -topology graphs) are cut into regions
// grown over the graph, recursively: disconnected pieces go whole to one
// side while they fit, and the piece that must be cut is split between
// two regions grown by BFS from its two ends (found by a double BFS sweep)
// where each holds its share (see regionWork.split). For K=16 on
// luxembourg, moscow, ny-topology and ne-topology (coordinates ignored)
// this left 17–34 % fewer halo nodes, and about half the largest part's
// halo, than growing a single region from one end.
//
// The result is deterministic: it depends on g and k only. k must be in
// 1..N; otherwise the error wraps ErrParts.
func Partition(g *Graph, k int) ([]uint32, error) {
	n := g.NumNodes()
	if k < 1 || k > n {
		return nil, fmt.Errorf("partition %d nodes into %d parts: %w", n, k, ErrParts)
	}
	if g.HasCoords() {
		return partitionCoords(g, k), nil
	}
	return partitionRegions(g, k), nil
}

// shareOf returns the number of nodes out of n that go to k1 parts of k,
// rounded to the nearest.
func shareOf(n, k1, k int) int {
	hi, lo := bits.Mul64(uint64(n), uint64(k1))
	lo, c := bits.Add64(lo, uint64(k/2), 0)
	q, _ := bits.Div64(hi+c, lo, uint64(k))
	return int(q)
}

// partitionCoords is recursive coordinate bisection.
func partitionCoords(g *Graph, k int) []uint32 {
	n := g.NumNodes()
	part := make([]uint32, n)
	keys := make([]uint64, n)
	idx := make([]uint32, n)
	for i := range idx {
		idx[i] = uint32(i)
	}
	var split func(idx []uint32, k int, first uint32)
	split = func(idx []uint32, k int, first uint32) {
		if k == 1 {
			for _, v := range idx {
				part[v] = first
			}
			return
		}
		k1 := k / 2
		n1 := shareOf(len(idx), k1, k)
		minX, maxX, minY, maxY := g.X[idx[0]], g.X[idx[0]], g.Y[idx[0]], g.Y[idx[0]]
		for _, v := range idx {
			minX, maxX = min(minX, g.X[v]), max(maxX, g.X[v])
			minY, maxY = min(minY, g.Y[v]), max(maxY, g.Y[v])
		}
		coord := g.X
		if int64(maxY)-int64(minY) > int64(maxX)-int64(minX) {
			coord = g.Y
		}
		// Keys order by the coordinate, then by node index: a total
		// order, so the cut does not depend on the selection's path.
		ks := keys[:len(idx)]
		for i, v := range idx {
			ks[i] = uint64(uint32(coord[v])^1<<31)<<32 | uint64(v)
		}
		selectNth(ks, n1)
		for i, key := range ks {
			idx[i] = uint32(key)
		}
		split(idx[:n1], k1, first)
		split(idx[n1:], k-k1, first+uint32(k1))
	}
	split(idx, k, 0)
	return part
}

// selectNth reorders a so that a[:i] holds its i smallest values (in some
// order) and a[i:] the rest: quickselect with a median-of-three pivot,
// falling back to sorting when the pivots keep being bad.
func selectNth(a []uint64, i int) {
	lo, hi := 0, len(a) // the boundary i lies in a[lo:hi]
	budget := 2 * bits.Len(uint(len(a)))
	for hi-lo > 16 {
		if budget == 0 {
			slices.Sort(a[lo:hi])
			return
		}
		budget--
		mid := lo + (hi-lo)/2
		p := median3(a[lo], a[mid], a[hi-1])
		// Hoare partition around p.
		l, r := lo, hi-1
		for l <= r {
			for a[l] < p {
				l++
			}
			for a[r] > p {
				r--
			}
			if l <= r {
				a[l], a[r] = a[r], a[l]
				l++
				r--
			}
		}
		// a[lo:r+1] <= p <= a[l:hi], and a[r+1:l] == p.
		switch {
		case i <= r:
			hi = r + 1
		case i >= l:
			lo = l
		default:
			return
		}
	}
	slices.Sort(a[lo:hi])
}

func median3(a, b, c uint64) uint64 {
	if a > b {
		a, b = b, a
	}
	if b > c {
		b = c
	}
	return max(a, b)
}

// regionWork holds the scratch arrays of partitionRegions. Stamps mark
// membership without clearing arrays between steps.
type regionWork struct {
	g      *Graph
	part   []uint32
	inSet  []uint32 // stamp of the node set being split
	taken  []uint32 // stamp of the nodes given to the first side
	swept  []uint32 // stamp of a BFS sweep
	stamp  uint32   // last stamp of inSet and taken
	sweeps uint32   // last stamp of swept
	distA  []uint32 // hops from a piece's first end
	distB  []uint32 // hops from its other end
	queue  []uint32 // BFS queue of the sweep from the first end: the piece
	queue2 []uint32 // BFS queue of the other sweeps
	side   []uint32 // scratch the size of the set: first side, then the rest
	keys   []uint64 // scratch for cutting a piece
}

// partitionRegions is recursive bisection by regions grown over the graph.
func partitionRegions(g *Graph, k int) []uint32 {
	n := g.NumNodes()
	w := newRegionWork(g)
	w.part = make([]uint32, n)
	w.side = make([]uint32, n)
	w.keys = make([]uint64, 0, n)
	idx := make([]uint32, n)
	for i := range idx {
		idx[i] = uint32(i)
	}
	w.split(idx, k, 0)
	return w.part
}

func newRegionWork(g *Graph) *regionWork {
	n := g.NumNodes()
	return &regionWork{
		g:      g,
		inSet:  make([]uint32, n),
		taken:  make([]uint32, n),
		swept:  make([]uint32, n),
		distA:  make([]uint32, n),
		distB:  make([]uint32, n),
		queue:  make([]uint32, 0, n),
		queue2: make([]uint32, 0, n),
	}
}

// next returns a fresh stamp for inSet and taken: two per split, so fewer
// than 2k < 2^32 in all.
func (w *regionWork) next() uint32 {
	w.stamp++
	return w.stamp
}

// split divides the node set idx into k parts numbered from first: the
// first side gets k/2 parts' share of the nodes, the second the rest.
//
// The first side takes the connected pieces of the set whole, in the
// order of their first node in idx, while they fit; the piece that does
// not fit is cut. To cut a piece, find its two ends a and b by a double
// BFS sweep (a is the last node a BFS from some node reaches, b the last
// one a BFS from a reaches), and give the first side the nodes nearest to
// a relative to b: the smallest hops(a,v) - hops(b,v), ties by index.
// This is two regions grown from opposite ends of the piece until they
// meet; the cut runs across the piece's long axis, as coordinate
// bisection cuts the longer side.
func (w *regionWork) split(idx []uint32, k int, first uint32) {
	if k == 1 {
		for _, v := range idx {
			w.part[v] = first
		}
		return
	}
	k1 := k / 2
	n1 := shareOf(len(idx), k1, k)
	set := w.next()
	for _, v := range idx {
		w.inSet[v] = set
	}
	taken := w.next()
	side := w.side[:0]
	cursor := 0
	for len(side) < n1 {
		// Every piece taken so far was taken whole, so the piece of the
		// first node not taken holds no taken node.
		for w.taken[idx[cursor]] == taken {
			cursor++
		}
		_, b, piece := w.ends(idx[cursor], set)
		if len(side)+len(piece) <= n1 {
			for _, v := range piece {
				w.taken[v] = taken
			}
			side = append(side, piece...)
			continue
		}
		w.bfs(b, set, w.distB, &w.queue2)
		keys := w.keys[:0]
		for _, v := range piece {
			d := int64(w.distA[v]) - int64(w.distB[v])
			d = min(max(d, math.MinInt32), math.MaxInt32) // clamps only on paths of 2^31 hops
			keys = append(keys, uint64(d+1<<31)<<32|uint64(v))
		}
		need := n1 - len(side)
		selectNth(keys, need)
		for _, key := range keys[:need] {
			w.taken[uint32(key)] = taken
			side = append(side, uint32(key))
		}
	}
	rest := side
	for _, v := range idx {
		if w.taken[v] != taken {
			rest = append(rest, v)
		}
	}
	copy(idx, rest)
	w.split(idx[:n1], k1, first)
	w.split(idx[n1:], k-k1, first+uint32(k1))
}

// ends finds the two ends of s's piece of the node set stamped set by a
// double BFS sweep: a is the last node reached from s, b the last node
// reached from a, as far from a as any node of the piece. It returns the
// piece in BFS order from a (in w.queue, valid until the next sweep from
// an end) and leaves the hops from a in distA.
func (w *regionWork) ends(s, set uint32) (a, b uint32, piece []uint32) {
	q := w.bfs(s, set, w.distB, &w.queue2)
	a = q[len(q)-1]
	piece = w.bfs(a, set, w.distA, &w.queue)
	return a, piece[len(piece)-1], piece
}

// bfs runs a BFS from s inside the node set stamped set, writes the hops
// from s into dist and returns the nodes reached in BFS order, in *queue,
// which it reuses.
func (w *regionWork) bfs(s, set uint32, dist []uint32, queue *[]uint32) []uint32 {
	w.sweeps++
	if w.sweeps == 0 { // sweeps of tiny pieces can add up on huge graphs
		clear(w.swept)
		w.sweeps = 1
	}
	seen := w.sweeps
	w.swept[s] = seen
	dist[s] = 0
	q := append((*queue)[:0], s)
	for i := 0; i < len(q); i++ {
		v := q[i]
		d := dist[v] + 1
		for _, arc := range w.g.Neighbors(v) {
			if u := arc.To; w.inSet[u] == set && w.swept[u] != seen {
				w.swept[u] = seen
				dist[u] = d
				q = append(q, u)
			}
		}
	}
	*queue = q
	return q
}

// checkPart verifies that part assigns every node of g.
func checkPart(g *Graph, part []uint32) error {
	if len(part) != g.NumNodes() {
		return fmt.Errorf("partition of %d nodes for a graph of %d: %w", len(part), g.NumNodes(), ErrPartition)
	}
	return nil
}

// partNodes returns the nodes of part p, ascending.
func partNodes(part []uint32, p uint32) []uint32 {
	var own []uint32
	for v, q := range part {
		if q == p {
			own = append(own, uint32(v))
		}
	}
	return own
}

// boundary appends to dst the nodes of own (all in part p) with a
// neighbour outside p. A shortest path from an own node to an outside
// node leaves p through such a node, so they are the only sources a halo
// search needs.
func boundary(dst []uint32, g *Graph, part []uint32, p uint32, own []uint32) []uint32 {
	for _, v := range own {
		for _, a := range g.Neighbors(v) {
			if part[a.To] != p {
				dst = append(dst, v)
				break
			}
		}
	}
	return dst
}

// haloInto runs s from part p's boundary and appends to dst the nodes
// outside p within radius, in no particular order.
func haloInto(dst []uint32, s *Search, g *Graph, part []uint32, p uint32, sources []uint32, radius uint32) []uint32 {
	s.Run(g, sources, radius, nil)
	for _, v := range s.Reached() {
		if part[v] != p {
			dst = append(dst, v)
		}
	}
	return dst
}

// Halo returns the halo of part p for radius: the nodes outside p whose
// graph distance to some node of p is at most radius, ascending. Every
// shortest path of length at most radius from a node of p stays inside p
// and its halo. part is a result of Partition (or any assignment of g's
// nodes); p may be any value, and a part with no nodes has no halo.
func Halo(g *Graph, part []uint32, p uint32, radius uint32) ([]uint32, error) {
	if err := checkPart(g, part); err != nil {
		return nil, err
	}
	own := partNodes(part, p)
	src := boundary(nil, g, part, p, own)
	halo := haloInto(nil, NewSearch(g.NumNodes()), g, part, p, src, radius)
	slices.Sort(halo)
	return halo, nil
}

// Subgraph extracts part p of g with its halo for radius: a Graph of the
// part's own nodes followed by its halo nodes, with the arcs between them
// (the induced subgraph) and their coordinates when g has some. Own is the
// number of own nodes and Global[local] the node's index in g.
//
// Local order: own nodes ascending by global index, then halo nodes
// ascending by global index. The subgraph inherits the locality of the
// source's numbering: good for the generator (row-major), luxembourg and
// the -topology graphs, poor for moscow and amsterdam, whose files are not
// in spatial order. A BFS order was measured against it on parts of
// moscow, amsterdam, luxembourg, ny-topology and the synthetic city (K=16,
// bounded searches from own nodes) and gained nothing beyond the noise: a
// part is small enough that a bounded search's working set stays in cache.
// The sorted order has another use: Global[:Own] and Global[Own:] are each
// ascending, so a global index is turned into a local one by binary search
// without a map (see LocalIndex).
//
// For an own node s and any node t, a search on the subgraph finds the
// same distance as on g whenever it is at most radius, and a distance
// above radius otherwise: a bounded proximity query with that radius
// needs nothing beyond the subgraph. A part with no nodes is an error
// wrapping ErrPartition.
func Subgraph(g *Graph, part []uint32, p uint32, radius uint32) (*Graph, error) {
	if err := checkPart(g, part); err != nil {
		return nil, err
	}
	own := partNodes(part, p)
	if len(own) == 0 {
		return nil, fmt.Errorf("subgraph of part %d: no nodes: %w", p, ErrPartition)
	}
	n := g.NumNodes()
	src := boundary(nil, g, part, p, own)
	nodes := haloInto(own, NewSearch(n), g, part, p, src, radius)
	slices.Sort(nodes[len(own):])
	local := make([]uint32, n)
	for i := range local {
		local[i] = NoNode
	}
	for i, v := range nodes {
		local[v] = uint32(i)
	}
	return induced(g, nodes, local, uint32(len(own))), nil
}

// induced builds the subgraph of g on nodes (local i is nodes[i]), given
// local, the map from g's indices to local ones (NoNode outside).
func induced(g *Graph, nodes, local []uint32, own uint32) *Graph {
	offsets := make([]uint32, len(nodes)+1)
	total := uint32(0)
	for i, v := range nodes {
		offsets[i] = total
		for _, a := range g.Neighbors(v) {
			if local[a.To] != NoNode {
				total++
			}
		}
	}
	offsets[len(nodes)] = total
	arcs := make([]Arc, total)
	for i, v := range nodes {
		list := arcs[offsets[i]:offsets[i]:offsets[i+1]]
		for _, a := range g.Neighbors(v) {
			if u := local[a.To]; u != NoNode {
				list = append(list, Arc{To: u, Len: a.Len})
			}
		}
		// Insertion sort: lists are short.
		for j := 1; j < len(list); j++ {
			for l := j; l > 0 && list[l].To < list[l-1].To; l-- {
				list[l], list[l-1] = list[l-1], list[l]
			}
		}
	}
	sub := &Graph{Offsets: offsets, Arcs: arcs, Global: nodes, Own: own}
	if g.HasCoords() {
		sub.X = make([]int32, len(nodes))
		sub.Y = make([]int32, len(nodes))
		for i, v := range nodes {
			sub.X[i], sub.Y[i] = g.X[v], g.Y[v]
		}
	}
	return sub
}

// LocalIndex returns the local index of whole-graph node v in a subgraph
// made by Subgraph, and whether the subgraph holds it; for a whole graph
// (Global nil) it is v itself when in range. It relies on Subgraph's
// order (own and halo nodes each ascending) and costs two binary searches.
func (g *Graph) LocalIndex(v uint32) (uint32, bool) {
	if g.Global == nil {
		return v, int64(v) < int64(g.NumNodes())
	}
	if i, ok := slices.BinarySearch(g.Global[:g.Own], v); ok {
		return uint32(i), true
	}
	if i, ok := slices.BinarySearch(g.Global[g.Own:], v); ok {
		return g.Own + uint32(i), true
	}
	return 0, false
}

// PartStats describes one part with its halo.
type PartStats struct {
	Own  int // nodes of the part
	Halo int // nodes outside the part within the radius of it
	Arcs int // arcs of the subgraph on own and halo nodes
}

// Overhead returns halo nodes per own node.
func (s PartStats) Overhead() float64 {
	if s.Own == 0 {
		return 0
	}
	return float64(s.Halo) / float64(s.Own)
}

// PartitionStats sums up a partition with halos: what each worker would
// hold, and how much the halos replicate the graph.
type PartitionStats struct {
	Nodes  int // nodes of the whole graph
	Arcs   int // arcs of the whole graph
	Radius uint32
	Parts  []PartStats // indexed by part

	Own, Halo, SubArcs int // sums over the parts
}

// Replication returns the sum of own and halo nodes over all parts
// divided by the graph's nodes: 1 means no halo at all.
func (s PartitionStats) Replication() float64 {
	if s.Nodes == 0 {
		return 0
	}
	return float64(s.Own+s.Halo) / float64(s.Nodes)
}

// Overhead returns all halo nodes per node of the graph.
func (s PartitionStats) Overhead() float64 {
	if s.Own == 0 {
		return 0
	}
	return float64(s.Halo) / float64(s.Own)
}

// MeasurePartition computes the sizes of every part of part (values in
// 0..k-1) with its halo for radius, as Subgraph would build them, without
// building them. It runs one bounded search per part from the part's
// boundary.
func MeasurePartition(g *Graph, part []uint32, k int, radius uint32) (PartitionStats, error) {
	if err := checkPart(g, part); err != nil {
		return PartitionStats{}, err
	}
	if k < 1 {
		return PartitionStats{}, fmt.Errorf("measure %d parts: %w", k, ErrParts)
	}
	n := g.NumNodes()
	// Bucket the nodes by part (a counting sort), ascending within each.
	start := make([]int, k+1)
	for v, p := range part {
		if int64(p) >= int64(k) {
			return PartitionStats{}, fmt.Errorf("node %d in part %d of %d: %w", v, p, k, ErrPartition)
		}
		start[p+1]++
	}
	for p := 1; p <= k; p++ {
		start[p] += start[p-1]
	}
	byPart := make([]uint32, n)
	fill := slices.Clone(start[:k])
	for v, p := range part {
		byPart[fill[p]] = uint32(v)
		fill[p]++
	}
	st := PartitionStats{Nodes: n, Arcs: g.NumArcs(), Radius: radius, Parts: make([]PartStats, k)}
	s := NewSearch(n)
	inHalo := make([]uint32, n) // p+1 for the halo of part p
	var src, halo []uint32
	for p := range k {
		own := byPart[start[p]:start[p+1]]
		src = boundary(src[:0], g, part, uint32(p), own)
		halo = haloInto(halo[:0], s, g, part, uint32(p), src, radius)
		mark := uint32(p) + 1
		for _, v := range halo {
			inHalo[v] = mark
		}
		arcs := 0
		for _, nodes := range [2][]uint32{own, halo} {
			for _, v := range nodes {
				for _, a := range g.Neighbors(v) {
					if part[a.To] == uint32(p) || inHalo[a.To] == mark {
						arcs++
					}
				}
			}
		}
		ps := PartStats{Own: len(own), Halo: len(halo), Arcs: arcs}
		st.Parts[p] = ps
		st.Own += ps.Own
		st.Halo += ps.Halo
		st.SubArcs += ps.Arcs
	}
	return st, nil
}
