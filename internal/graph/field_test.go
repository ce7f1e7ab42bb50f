package graph

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

// smallGraph draws a random graph of up to 40 nodes with duplicate edges,
// self-loops and, often, several components.
func smallGraph(t *rapid.T) *Graph {
	n := rapid.IntRange(1, 40).Draw(t, "n")
	m := rapid.IntRange(0, 3*n).Draw(t, "m")
	maxLen := rapid.SampledFrom([]uint32{1, 3, 20, 1000}).Draw(t, "maxLen")
	edges := make([]Edge, m)
	for i := range edges {
		edges[i] = Edge{
			U:   uint32(rapid.IntRange(0, n-1).Draw(t, "u")),
			V:   uint32(rapid.IntRange(0, n-1).Draw(t, "v")),
			Len: uint32(rapid.Uint32Range(1, maxLen).Draw(t, "len")),
		}
	}
	g, err := FromEdges(n, edges, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	return g
}

// checkField compares the field's answer for every node with the
// reference Dijkstra over the active treasures.
// fataler is what checkField needs of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func checkField(tb fataler, g *Graph, f *Field, active map[uint32]RefTreasure) {
	tb.Helper()
	ts := make([]RefTreasure, 0, len(active))
	for _, t := range active {
		ts = append(ts, t)
	}
	for v := uint32(0); int(v) < g.NumNodes(); v++ {
		want := Reference(g, ts, f.Radius(), v)
		s, d, ok := f.Nearest(v)
		if ok != want.Found {
			tb.Fatalf("node %d: field found=%v (slot %d), reference found=%v %+v", v, ok, s, want.Found, want)
		}
		if !ok {
			continue
		}
		if got := f.ID(s); got != want.ID || d != want.Dist || f.Node(s) != want.Node {
			tb.Fatalf("node %d: field says %s@%d at %d, reference %s@%d at %d", v, got, f.Node(s), d, want.ID, want.Node, want.Dist)
		}
	}
}

func TestFieldMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := smallGraph(t)
		radius := rapid.SampledFrom([]uint32{0, 1, 5, 40, 3000, Inf - 1}).Draw(t, "radius")
		f := NewField(g, radius)
		active := map[uint32]RefTreasure{}
		// A small id alphabet makes distance ties between ids common.
		idOf := func(s uint32) string { return fmt.Sprintf("t%c%d", 'a'+rune(s*7%5), s) }
		next := uint32(0)
		steps := rapid.IntRange(1, 25).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			switch op := rapid.IntRange(0, 3).Draw(t, "op"); {
			case op <= 1 || len(active) == 0:
				v := uint32(rapid.IntRange(0, g.NumNodes()-1).Draw(t, "node"))
				// Reuse a freed slot sometimes, as the engine does.
				s := next
				for fs := uint32(0); fs < next; fs++ {
					if _, used := active[fs]; !used && rapid.Bool().Draw(t, "reuse") {
						s = fs
						break
					}
				}
				if s == next {
					next++
				}
				f.Drop(s, idOf(s), v)
				active[s] = RefTreasure{ID: idOf(s), Node: v}
			case op == 2:
				slots := make([]uint32, 0, len(active))
				for s := range active {
					slots = append(slots, s)
				}
				s := rapid.SampledFrom(sortedSlots(slots)).Draw(t, "remove")
				f.Remove(s)
				delete(active, s)
			default:
				// Removing a free slot is a no-op.
				f.Remove(next + 5)
			}
			checkField(t, g, f, active)
		}
	})
}

func sortedSlots(s []uint32) []uint32 {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

func TestFieldDropAllEqualsDrops(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := smallGraph(t)
		radius := rapid.SampledFrom([]uint32{2, 30, 500}).Draw(t, "radius")
		k := rapid.IntRange(0, 12).Draw(t, "k")
		slots, ids, nodes := make([]uint32, k), make([]string, k), make([]uint32, k)
		active := map[uint32]RefTreasure{}
		for i := range slots {
			slots[i] = uint32(i)
			ids[i] = fmt.Sprintf("x%d", (i*5)%7) + fmt.Sprint(i)
			nodes[i] = uint32(rapid.IntRange(0, g.NumNodes()-1).Draw(t, "node"))
			active[uint32(i)] = RefTreasure{ID: ids[i], Node: nodes[i]}
		}
		f := NewField(g, radius)
		f.DropAll(slots, ids, nodes)
		checkField(t, g, f, active)
		f.Reset()
		checkField(t, g, f, nil)
	})
}

// Ties: two treasures at the same distance, the smaller id wins whatever
// the order of drops; several treasures on one node.
func TestFieldTies(t *testing.T) {
	// A path 0 - 1 - 2 with equal lengths.
	g, err := FromEdges(3, []Edge{{0, 1, 10}, {1, 2, 10}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, order := range [][2]string{{"b", "a"}, {"a", "b"}} {
		f := NewField(g, 100)
		f.Drop(0, order[0], 0)
		f.Drop(1, order[1], 2)
		s, d, ok := f.Nearest(1)
		if !ok || f.ID(s) != "a" || d != 10 {
			t.Fatalf("drop order %v: node 1 nearest %q at %d (ok=%v), want a at 10", order, f.ID(s), d, ok)
		}
	}
	f := NewField(g, 100)
	f.Drop(0, "zz", 1)
	f.Drop(1, "Zz", 1) // byte order: upper case first
	f.Drop(2, "z", 1)
	if s, _, _ := f.Nearest(0); f.ID(s) != "Zz" {
		t.Fatalf("nearest to 0 is %q, want Zz (byte order)", f.ID(s))
	}
	f.Remove(1)
	if s, _, _ := f.Nearest(0); f.ID(s) != "z" {
		t.Fatalf("after removing Zz nearest is %q, want z", f.ID(s))
	}
}

// Radius edges: a treasure exactly at the radius counts, one unit beyond
// does not.
func TestFieldRadiusEdge(t *testing.T) {
	g, err := FromEdges(3, []Edge{{0, 1, 7}, {1, 2, 1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := NewField(g, 7)
	f.Drop(0, "t", 0)
	if _, d, ok := f.Nearest(1); !ok || d != 7 {
		t.Fatalf("node at exactly the radius: ok=%v d=%d, want 7", ok, d)
	}
	if _, _, ok := f.Nearest(2); ok {
		t.Fatal("node one beyond the radius sees the treasure")
	}
}

func TestFieldRandomMedium(t *testing.T) {
	// A larger random planar-ish graph, checked on sampled nodes.
	r := rand.New(rand.NewPCG(7, 9))
	const side = 30
	var edges []Edge
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			v := uint32(y*side + x)
			if x+1 < side && r.IntN(10) > 0 {
				edges = append(edges, Edge{v, v + 1, uint32(1 + r.IntN(50))})
			}
			if y+1 < side && r.IntN(10) > 0 {
				edges = append(edges, Edge{v, v + side, uint32(1 + r.IntN(50))})
			}
		}
	}
	g, err := FromEdges(side*side, edges, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := NewField(g, 150)
	active := map[uint32]RefTreasure{}
	for i := 0; i < 300; i++ {
		if len(active) > 0 && r.IntN(3) == 0 {
			for s := range active {
				f.Remove(s)
				delete(active, s)
				break
			}
		} else {
			s := uint32(i)
			id := fmt.Sprintf("m%03d", r.IntN(1000))
			v := uint32(r.IntN(g.NumNodes()))
			f.Drop(s, id+fmt.Sprint(s), v)
			active[s] = RefTreasure{ID: id + fmt.Sprint(s), Node: v}
		}
		if i%50 == 49 {
			checkField(t, g, f, active)
		}
	}
}

// TestFieldRestore: a field restored from another's Labels and active
// treasures has the same labels, and keeps having them through further
// random drops (reusing freed slots) and removals, each checked against
// the reference; a label changed at any one node is refused.
func TestFieldRestore(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := smallGraph(t)
		radius := rapid.SampledFrom([]uint32{0, 1, 5, 40, 3000, Inf - 1}).Draw(t, "radius")
		f := NewField(g, radius)
		active := map[uint32]RefTreasure{}
		idOf := func(s, gen uint32) string { return fmt.Sprintf("t%c%d.%d", 'a'+rune(s*7%5), s, gen) }
		next, gen := uint32(0), uint32(0)
		var f2 *Field
		step := func(fs ...*Field) {
			gen++
			if op := rapid.IntRange(0, 2).Draw(t, "op"); op <= 1 || len(active) == 0 {
				v := uint32(rapid.IntRange(0, g.NumNodes()-1).Draw(t, "node"))
				s := next
				for fs := uint32(0); fs < next; fs++ {
					if _, used := active[fs]; !used && rapid.Bool().Draw(t, "reuse") {
						s = fs
						break
					}
				}
				if s == next {
					next++
				}
				for _, f := range fs {
					f.Drop(s, idOf(s, gen), v)
				}
				active[s] = RefTreasure{ID: idOf(s, gen), Node: v}
			} else {
				slots := make([]uint32, 0, len(active))
				for s := range active {
					slots = append(slots, s)
				}
				s := rapid.SampledFrom(sortedSlots(slots)).Draw(t, "remove")
				for _, f := range fs {
					f.Remove(s)
				}
				delete(active, s)
			}
		}
		for range rapid.IntRange(0, 15).Draw(t, "before") {
			step(f)
		}
		var slots, nodes []uint32
		var ids []string
		for s, tr := range active {
			slots, ids, nodes = append(slots, s), append(ids, tr.ID), append(nodes, tr.Node)
		}
		dist, slot := f.Labels(nil, nil)
		// Any one label changed is refused.
		if v := rapid.IntRange(0, g.NumNodes()-1).Draw(t, "tamper"); true {
			d2, s2 := f.Labels(nil, nil)
			switch rapid.IntRange(0, 2).Draw(t, "how") {
			case 0:
				d2[v] = rapid.SampledFrom([]uint32{0, 1, 7, radius, Inf}).Draw(t, "dist")
			case 1:
				s2[v] = rapid.SampledFrom(append([]uint32{NoNode}, slots...)).Draw(t, "slot")
			default:
				d2[v]++
			}
			if d2[v] != dist[v] || s2[v] != slot[v] {
				if err := NewField(g, radius).Restore(d2, s2, slots, ids, nodes); err == nil {
					t.Fatalf("node %d relabelled (%d, %d) from (%d, %d): accepted", v, d2[v], s2[v], dist[v], slot[v])
				}
			}
		}
		f2 = NewField(g, radius)
		if err := f2.Restore(dist, slot, slots, ids, nodes); err != nil {
			t.Fatal(err)
		}
		for range rapid.IntRange(1, 20).Draw(t, "after") {
			step(f, f2)
			d1, s1 := f.Labels(nil, nil)
			d2, s2 := f2.Labels(nil, nil)
			if fmt.Sprint(d1, s1) != fmt.Sprint(d2, s2) {
				t.Fatalf("labels differ: %v %v, restored %v %v", d1, s1, d2, s2)
			}
			checkField(t, g, f2, active)
		}
	})
}
