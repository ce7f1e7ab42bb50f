package graph

import (
	"math/rand/v2"
	"testing"
)

// dijkstraNearest is the baseline the field replaces: a bounded Dijkstra
// from v per query, stopping once every node closer than the best treasure
// found is settled. at[u] is the slot of the treasure on node u (the
// smallest id, for this benchmark), or NoNode.
func dijkstraNearest(s *Search, g *Graph, at []uint32, v, radius uint32) (slot, dist uint32, ok bool) {
	best, bestD := NoNode, uint32(Inf)
	s.Run(g, []uint32{v}, radius, func(u, d uint32) bool {
		if d > bestD {
			return false
		}
		if t := at[u]; t != NoNode && (d < bestD || t < best) {
			best, bestD = t, d
		}
		return true
	})
	return best, bestD, best != NoNode
}

// BenchmarkProximity compares the two algorithms the issue names on the
// full synthetic city with 1,000 treasures and a 2000 m radius: a bounded
// Dijkstra per query against a lookup in the incrementally kept field.
func BenchmarkProximity(b *testing.B) {
	g := fullCity(b)
	slots, ids, nodes := benchTreasures(g, 1000, 3)
	at := make([]uint32, g.NumNodes())
	for i := range at {
		at[i] = NoNode
	}
	for i, v := range nodes {
		if at[v] == NoNode {
			at[v] = slots[i]
		}
	}
	f := NewField(g, 2000)
	f.DropAll(slots, ids, nodes)
	r := rand.New(rand.NewPCG(9, 9))
	queries := make([]uint32, 1<<16)
	for i := range queries {
		queries[i] = uint32(r.IntN(g.NumNodes()))
	}
	// Both must agree on distances before they are timed.
	s := NewSearch(g.NumNodes())
	for _, v := range queries[:200] {
		_, d1, ok1 := dijkstraNearest(s, g, at, v, 2000)
		_, d2, ok2 := f.Nearest(v)
		if ok1 != ok2 || (ok1 && d1 != d2) {
			b.Fatalf("node %d: dijkstra %v/%d, field %v/%d", v, ok1, d1, ok2, d2)
		}
	}
	b.Run("dijkstra-per-query", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			dijkstraNearest(s, g, at, queries[i&(len(queries)-1)], 2000)
		}
	})
	b.Run("field-lookup", func(b *testing.B) {
		b.ReportAllocs()
		var sum uint64
		for i := range b.N {
			if _, d, ok := f.Nearest(queries[i&(len(queries)-1)]); ok {
				sum += uint64(d)
			}
		}
		if b.N > 1000 && sum == 0 {
			b.Fatal("no query found a treasure")
		}
	})
}
