package game

import (
	"math/rand/v2"
	"testing"

	"treasure/internal/graph"
)

// TestPartitionsAnswerLikeTheWholeGraph: engines over partition subgraphs
// (own nodes + halo) give, for every own node, the answer the engine over
// the whole graph gives — before and after claims decided elsewhere — on a
// real city (coordinate bisection) and a topology graph (grown regions).
func TestPartitionsAnswerLikeTheWholeGraph(t *testing.T) {
	cases := []struct {
		file   string
		k      int
		radius uint32
	}{
		{"luxembourg.gr.gz", 6, 2000},
		{"ny-topology.gr.gz", 4, 40},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			g := loadReal(t, tc.file)
			part, err := graph.Partition(g, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(11, 12))
			ts := make([]Treasure, 3000)
			for i := range ts {
				ts[i] = Treasure{ID: "t" + itoa(r.IntN(5000)), Node: uint32(r.IntN(g.NumNodes())), Points: 1}
			}
			whole := NewEngine(g, tc.radius)
			whole.DropAll(ts[:2000])
			for _, tr := range ts[2000:] {
				whole.Drop(tr)
			}
			parts := make([]*Engine, tc.k)
			for p := range parts {
				sub, err := graph.Subgraph(g, part, uint32(p), tc.radius)
				if err != nil {
					t.Fatal(err)
				}
				parts[p] = NewEngine(sub, tc.radius)
				parts[p].DropAll(ts[:2000])
				for _, tr := range ts[2000:] {
					parts[p].Drop(tr)
				}
			}
			compare := func(stage string) {
				t.Helper()
				found := 0
				for v := uint32(0); int(v) < g.NumNodes(); v++ {
					want, err := whole.Nearest(v)
					if err != nil {
						t.Fatal(err)
					}
					e := parts[part[v]]
					if !e.Owns(v) {
						t.Fatalf("%s: node %d is not owned by its partition %d", stage, v, part[v])
					}
					got, err := e.Nearest(v)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Fatalf("%s: node %d (partition %d): %+v, whole graph %+v", stage, graph.ID(v), part[v], got, want)
					}
					if got.Found {
						found++
					}
				}
				if found == 0 || found == g.NumNodes() {
					t.Fatalf("%s: %d of %d nodes see a treasure: the check exercises one case only", stage, found, g.NumNodes())
				}
			}
			compare("after drops")
			// Moves claim in the owning partition; the claim reaches every
			// other partition as Claim(id), as the pipeline routes it.
			claimed := 0
			for _, tr := range ts[:600] {
				claims, _, err := parts[part[tr.Node]].Move(tr.Node, nil)
				if err != nil {
					t.Fatal(err)
				}
				wantClaims, _, _ := whole.Move(tr.Node, nil)
				if len(claims) != len(wantClaims) {
					t.Fatalf("move to %d: partition claims %v, whole graph %v", tr.Node, claims, wantClaims)
				}
				for i, c := range claims {
					if c != wantClaims[i] {
						t.Fatalf("move to %d: partition claims %v, whole graph %v", tr.Node, claims, wantClaims)
					}
					for p, e := range parts {
						if uint32(p) != part[tr.Node] {
							e.Claim(c.ID)
						}
					}
				}
				claimed += len(claims)
			}
			if claimed == 0 {
				t.Fatal("no claims happened")
			}
			compare("after claims")
		})
	}
}
