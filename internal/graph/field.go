package graph

import (
	"cmp"
	"fmt"
	"slices"
)

// Field is the nearest-treasure field of a graph: for every node, the
// active treasure nearest to it within the radius (ties to the smaller
// treasure id in byte order), kept up to date incrementally as treasures
// are dropped and removed. A lookup is two array reads.
//
// Labels are (distance, treasure) pairs compared lexicographically, with
// treasures compared by id. The label of a node is the minimum over its
// neighbours of (their label + the edge length), which is what makes both
// updates local:
//
//   - Drop runs a bounded Dijkstra from the treasure's node that only goes
//     where the new treasure improves a label.
//   - Remove collects the region labelled with the treasure (connected
//     through the treasure's node, since a node's shortest-path predecessor
//     carries the same label), clears it, seeds it from the labels on its
//     border and runs the same Dijkstra inside it.
//
// Treasures are named by slot, a small dense integer the caller manages;
// the id string is used only to break ties of equal distance.
//
// A Field is not safe for concurrent use.
type Field struct {
	g      *Graph
	radius uint32

	dist []uint32 // per node: distance to its treasure, Inf when none
	slot []uint32 // per node: the treasure's slot, NoNode when none

	ids    []string // per slot: the treasure's id, "" when free
	tnodes []uint32 // per slot: the treasure's node

	heap   packedHeap
	region []uint32
	stack  []uint32
}

// NewField returns an empty field over g for proximity radius radius.
func NewField(g *Graph, radius uint32) *Field {
	n := g.NumNodes()
	f := &Field{g: g, radius: radius, dist: make([]uint32, n), slot: make([]uint32, n)}
	for i := range f.dist {
		f.dist[i] = Inf
		f.slot[i] = NoNode
	}
	return f
}

// Radius returns the proximity radius.
func (f *Field) Radius() uint32 { return f.radius }

// Nearest returns the slot of the treasure nearest to v within the radius
// and its distance; ok is false when there is none.
func (f *Field) Nearest(v uint32) (slot, dist uint32, ok bool) {
	s := f.slot[v]
	return s, f.dist[v], s != NoNode
}

// ID returns the id of the treasure in slot s.
func (f *Field) ID(s uint32) string { return f.ids[s] }

// Node returns the node of the treasure in slot s.
func (f *Field) Node(s uint32) uint32 { return f.tnodes[s] }

// less reports whether label (d1, s1) beats (d2, s2).
func (f *Field) less(d1, s1, d2, s2 uint32) bool {
	if d1 != d2 {
		return d1 < d2
	}
	if s2 == NoNode {
		return true
	}
	return s1 != s2 && f.ids[s1] < f.ids[s2]
}

// Drop makes the treasure id in slot s active at node v. The slot must be
// free (never used, or removed) and id non-empty; ids of active treasures
// must be distinct.
func (f *Field) Drop(s uint32, id string, v uint32) {
	for int(s) >= len(f.ids) {
		f.ids = append(f.ids, "")
		f.tnodes = append(f.tnodes, NoNode)
	}
	f.ids[s] = id
	f.tnodes[s] = v
	f.heap = f.heap[:0]
	if f.less(0, s, f.dist[v], f.slot[v]) {
		f.dist[v], f.slot[v] = 0, s
		f.heap.push(uint64(v))
	}
	f.propagate()
}

// Remove deactivates the treasure in slot s (claimed) and frees the slot.
// Removing a free slot does nothing.
func (f *Field) Remove(s uint32) {
	if int(s) >= len(f.ids) || f.ids[s] == "" {
		return
	}
	v0 := f.tnodes[s]
	// Collect the region labelled s; mark visited nodes by clearing them.
	f.region = f.region[:0]
	if f.slot[v0] == s {
		f.stack = append(f.stack[:0], v0)
		f.slot[v0] = NoNode
		f.dist[v0] = Inf
		for len(f.stack) > 0 {
			v := f.stack[len(f.stack)-1]
			f.stack = f.stack[:len(f.stack)-1]
			f.region = append(f.region, v)
			for _, a := range f.g.Neighbors(v) {
				if f.slot[a.To] == s {
					f.slot[a.To] = NoNode
					f.dist[a.To] = Inf
					f.stack = append(f.stack, a.To)
				}
			}
		}
	}
	f.ids[s] = ""
	f.tnodes[s] = NoNode
	f.heap = f.heap[:0]
	// Treasures on the same node that lost the tie to s labelled nothing;
	// they seed the region first. Only co-located treasures can lie inside
	// the region (any other would have beaten s at its own node), so one
	// scan of the slots finds them.
	if len(f.region) > 0 {
		for t, tv := range f.tnodes {
			if tv == v0 && f.less(0, uint32(t), f.dist[v0], f.slot[v0]) {
				f.dist[v0], f.slot[v0] = 0, uint32(t)
			}
		}
		if f.slot[v0] != NoNode {
			f.heap.push(uint64(v0))
		}
	}
	// Seed the rest of the cleared region from its border and fill it again.
	for _, v := range f.region {
		if f.slot[v] != NoNode {
			continue // v0, seeded above
		}
		bd, bs := uint32(Inf), uint32(NoNode)
		for _, a := range f.g.Neighbors(v) {
			us := f.slot[a.To]
			if us == NoNode {
				continue
			}
			nd := uint64(f.dist[a.To]) + uint64(a.Len)
			if nd <= uint64(f.radius) && f.less(uint32(nd), us, bd, bs) {
				bd, bs = uint32(nd), us
			}
		}
		if bs != NoNode {
			f.dist[v], f.slot[v] = bd, bs
			f.heap.push(uint64(bd)<<32 | uint64(v))
		}
	}
	f.propagate()
}

// Reset removes every treasure.
func (f *Field) Reset() {
	for i := range f.dist {
		f.dist[i] = Inf
		f.slot[i] = NoNode
	}
	for i := range f.ids {
		f.ids[i] = ""
		f.tnodes[i] = NoNode
	}
}

// DropAll adds many treasures, with the same rules as Drop. It drops them
// one by one in node order: on large graphs that beats one multi-source
// search from all of them, whose frontier jumps across the whole graph and
// misses the cache on every node (measured on the 2.3 M-node city: 1,000
// treasures in 1.2 s one by one against 5.6 s multi-source, see
// BenchmarkFieldBuild1000), while consecutive drops in node order touch
// neighbouring memory. slots, ids and nodes are parallel slices.
func (f *Field) DropAll(slots []uint32, ids []string, nodes []uint32) {
	order := make([]int, len(slots))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(nodes[a], nodes[b]) })
	for _, i := range order {
		f.Drop(slots[i], ids[i], nodes[i])
	}
}

// propagate runs Dijkstra from the nodes on the heap, improving labels.
// A node may be settled twice when a tie at equal distance later improves
// its label; relaxing it again is harmless.
func (f *Field) propagate() {
	g := f.g
	for len(f.heap) > 0 {
		top := f.heap.pop()
		d, v := uint32(top>>32), uint32(top)
		if d != f.dist[v] {
			continue
		}
		s := f.slot[v]
		for _, a := range g.Arcs[g.Offsets[v]:g.Offsets[v+1]] {
			nd := uint64(d) + uint64(a.Len)
			if nd > uint64(f.radius) {
				continue
			}
			if f.less(uint32(nd), s, f.dist[a.To], f.slot[a.To]) {
				f.dist[a.To], f.slot[a.To] = uint32(nd), s
				f.heap.push(nd<<32 | uint64(a.To))
			}
		}
	}
}

// Labels copies the field's per-node labels into dist and slot (each
// NumNodes long; a node without a treasure has Inf and NoNode) and returns
// them, grown when shorter. Together with the active treasures (slot, id,
// node) they are the field's whole state: Restore rebuilds an identical
// field from them, which behaves exactly like this one under further drops
// and removals. The copy is two memmoves.
func (f *Field) Labels(dist, slot []uint32) ([]uint32, []uint32) {
	dist = append(dist[:0], f.dist...)
	slot = append(slot[:0], f.slot...)
	return dist, slot
}

// Restore sets f, which must be empty (new or Reset), to the state a field
// over the same graph and radius had when Labels returned dist and slot,
// with the active treasures given as parallel slices (slots distinct, ids
// non-empty and distinct). f takes ownership of dist and slot.
//
// It checks, in one pass over the arcs, that the labels are the field of
// those treasures: each node's label is the least of (0, t) for the
// treasures t on it and its neighbours' labels plus the edge length within
// the radius, which, with positive edge lengths, only the true field
// satisfies. It returns an error naming the first node that breaks a rule,
// leaving f empty then.
func (f *Field) Restore(dist, slot []uint32, slots []uint32, ids []string, nodes []uint32) error {
	n := f.g.NumNodes()
	if len(dist) != n || len(slot) != n {
		return fmt.Errorf("field: %d and %d labels for %d nodes", len(dist), len(slot), n)
	}
	for i, s := range slots {
		for int(s) >= len(f.ids) {
			f.ids = append(f.ids, "")
			f.tnodes = append(f.tnodes, NoNode)
		}
		if f.ids[s] != "" || ids[i] == "" || int(nodes[i]) >= n {
			f.Reset()
			return fmt.Errorf("field: treasure %q in slot %d on node %d: slot taken, id empty or node outside the graph", ids[i], s, nodes[i])
		}
		f.ids[s], f.tnodes[s] = ids[i], nodes[i]
	}
	fail := func(v uint32, what string) error {
		err := fmt.Errorf("field: node %d labelled (%d, slot %d): %s", v, dist[v], slot[v], what)
		f.Reset()
		return err
	}
	// Labels name active treasures within the radius.
	for v := range uint32(n) {
		s := slot[v]
		if s == NoNode {
			if dist[v] != Inf {
				return fail(v, "a distance without a treasure")
			}
			continue
		}
		if int(s) >= len(f.ids) || f.ids[s] == "" || dist[v] > f.radius {
			return fail(v, "not an active treasure within the radius")
		}
	}
	// Each label is the least candidate (Bellman's equations).
	at := make(map[uint32]uint32, len(slots)) // node -> best treasure on it
	for i, s := range slots {
		if b, ok := at[nodes[i]]; !ok || f.ids[s] < f.ids[b] {
			at[nodes[i]] = s
		}
	}
	g := f.g
	for v := range uint32(n) {
		bd, bs := uint32(Inf), uint32(NoNode)
		if s, ok := at[v]; ok {
			bd, bs = 0, s
		}
		for _, a := range g.Arcs[g.Offsets[v]:g.Offsets[v+1]] {
			us := slot[a.To]
			if us == NoNode {
				continue
			}
			nd := uint64(dist[a.To]) + uint64(a.Len)
			if nd <= uint64(f.radius) && f.less(uint32(nd), us, bd, bs) {
				bd, bs = uint32(nd), us
			}
		}
		if bd != dist[v] || bs != slot[v] {
			return fail(v, fmt.Sprintf("its least candidate is (%d, slot %d)", bd, bs))
		}
	}
	f.dist, f.slot = dist, slot
	return nil
}
