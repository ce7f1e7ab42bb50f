package graph

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
)

var (
	benchCityOnce sync.Once
	benchCity     *Graph
	benchCityErr  error
)

// fullCity is the synthetic city at the original scale (2.3 M nodes, 6.8 M
// edges), generated once per benchmark binary.
func fullCity(b *testing.B) *Graph {
	benchCityOnce.Do(func() {
		benchCity, benchCityErr = Generate(GenOptions{Nodes: 2300000, Edges: 6800000, Seed: 1})
	})
	if benchCityErr != nil {
		b.Fatal(benchCityErr)
	}
	return benchCity
}

func benchTreasures(g *Graph, k int, seed uint64) ([]uint32, []string, []uint32) {
	r := rand.New(rand.NewPCG(seed, 1))
	slots, ids, nodes := make([]uint32, k), make([]string, k), make([]uint32, k)
	for i := range slots {
		slots[i], ids[i], nodes[i] = uint32(i), "t"+strconv.Itoa(i), uint32(r.IntN(g.NumNodes()))
	}
	return slots, ids, nodes
}

// BenchmarkFieldBuild1000 rebuilds the field of 1,000 treasures on the full
// synthetic city, radius 2000 m: once as one multi-source run (DropAll),
// once as 1,000 incremental drops.
func BenchmarkFieldBuild1000(b *testing.B) {
	g := fullCity(b)
	slots, ids, nodes := benchTreasures(g, 1000, 1)
	f := NewField(g, 2000)
	b.Run("DropAll", func(b *testing.B) {
		for range b.N {
			f.Reset()
			f.DropAll(slots, ids, nodes)
		}
	})
	b.Run("Drop", func(b *testing.B) {
		for range b.N {
			f.Reset()
			for i, s := range slots {
				f.Drop(s, ids[i], nodes[i])
			}
		}
	})
}

// BenchmarkFieldClaim measures one claim (Remove) and re-drop with 1,000
// treasures active on the full synthetic city.
func BenchmarkFieldClaim(b *testing.B) {
	g := fullCity(b)
	slots, ids, nodes := benchTreasures(g, 1000, 2)
	f := NewField(g, 2000)
	f.DropAll(slots, ids, nodes)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s := slots[i%len(slots)]
		f.Remove(s)
		f.Drop(s, ids[s], nodes[s])
	}
}
