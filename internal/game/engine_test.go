package game

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"treasure/internal/graph"
)

// model is the obviously-correct game: a list of active treasures, a set
// of ids ever dropped, proximity by full reference Dijkstra.
type model struct {
	g      *graph.Graph
	radius uint32
	seen   map[string]bool
	active []Treasure
}

func (m *model) drop(t Treasure) bool {
	if m.seen[t.ID] {
		return false
	}
	m.seen[t.ID] = true
	m.active = append(m.active, t)
	return true
}

func (m *model) claim(id string) bool {
	for i, t := range m.active {
		if t.ID == id {
			m.active = slices.Delete(m.active, i, i+1)
			return true
		}
	}
	return false
}

func (m *model) move(last uint32) ([]Claimed, Proximity) {
	var claims []Claimed
	for _, t := range m.active {
		if t.Node == last {
			claims = append(claims, t)
		}
	}
	slices.SortFunc(claims, func(a, b Claimed) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	for _, c := range claims {
		m.claim(c.ID)
	}
	refs := make([]graph.RefTreasure, len(m.active))
	for i, t := range m.active {
		refs[i] = graph.RefTreasure{ID: t.ID, Node: t.Node}
	}
	a := graph.Reference(m.g, refs, m.radius, last)
	return claims, Proximity{Found: a.Found, ID: a.ID, Node: a.Node, Distance: a.Dist}
}

func randomGraph(t *rapid.T) *graph.Graph {
	n := rapid.IntRange(1, 30).Draw(t, "n")
	m := rapid.IntRange(0, 3*n).Draw(t, "m")
	edges := make([]graph.Edge, m)
	for i := range edges {
		edges[i] = graph.Edge{
			U:   uint32(rapid.IntRange(0, n-1).Draw(t, "u")),
			V:   uint32(rapid.IntRange(0, n-1).Draw(t, "v")),
			Len: rapid.Uint32Range(1, 9).Draw(t, "len"),
		}
	}
	g, err := graph.FromEdges(n, edges, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestEngineMatchesModel runs random drop/claim/move sequences through the
// engine and the model and requires identical claims and answers.
func TestEngineMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := randomGraph(t)
		radius := rapid.Uint32Range(0, 40).Draw(t, "radius")
		e := NewEngine(g, radius)
		m := &model{g: g, radius: radius, seen: map[string]bool{}}
		nodes := rapid.IntRange(0, g.NumNodes()-1)
		// Few distinct ids: re-drops of old ids are common.
		ids := rapid.SampledFrom([]string{"a", "b", "c", "B", "a1", "a-2", "z_z", "Q"})
		var claims []Claimed
		for i := rapid.IntRange(1, 40).Draw(t, "steps"); i > 0; i-- {
			switch rapid.IntRange(0, 5).Draw(t, "op") {
			case 0, 1:
				tr := Treasure{ID: ids.Draw(t, "id"), Node: uint32(nodes.Draw(t, "node")), Points: rapid.Uint32Range(1, 100).Draw(t, "pts")}
				if got, want := e.Drop(tr), m.drop(tr); got != want {
					t.Fatalf("Drop(%+v) = %v, model %v", tr, got, want)
				}
			case 5:
				batch := make([]Treasure, rapid.IntRange(0, 5).Draw(t, "batch"))
				want := 0
				for i := range batch {
					batch[i] = Treasure{ID: ids.Draw(t, "id"), Node: uint32(nodes.Draw(t, "node")), Points: 3}
					if m.drop(batch[i]) {
						want++
					}
				}
				if got := e.DropAll(batch); got != want {
					t.Fatalf("DropAll(%v) = %d, model %d", batch, got, want)
				}
			case 2:
				id := ids.Draw(t, "claim")
				if got, want := e.Claim(id), m.claim(id); got != want {
					t.Fatalf("Claim(%s) = %v, model %v", id, got, want)
				}
			default:
				v := uint32(nodes.Draw(t, "move"))
				var prox Proximity
				var err error
				claims, prox, err = e.Move(v, claims[:0])
				if err != nil {
					t.Fatal(err)
				}
				wantClaims, wantProx := m.move(v)
				if fmt.Sprint(claims) != fmt.Sprint(wantClaims) {
					t.Fatalf("move to %d claims %v, model %v", v, claims, wantClaims)
				}
				if prox != wantProx {
					t.Fatalf("move to %d: proximity %+v, model %+v", v, prox, wantProx)
				}
			}
			if e.Active() != len(m.active) {
				t.Fatalf("%d active, model %d", e.Active(), len(m.active))
			}
		}
	})
}

func TestEngineClaimOrderAndAfterClaims(t *testing.T) {
	g := line(t)
	e := NewEngine(g, 100)
	for _, tr := range []Treasure{{"b", 2, 5}, {"a", 2, 7}, {"far", 0, 1}} {
		if !e.Drop(tr) {
			t.Fatalf("drop %v refused", tr)
		}
	}
	// Passing through node 2 (index 2) claims nothing: only the last node counts.
	claims, prox, err := e.Move(1, nil)
	if err != nil || len(claims) != 0 {
		t.Fatalf("move to 1: claims %v err %v", claims, err)
	}
	// far (node 0) and a, b (node 2) are all 5 away: "a" is the smallest id.
	if !prox.Found || prox.ID != "a" || prox.Distance != 5 || prox.Node != 2 {
		t.Fatalf("proximity %+v, want a at 5", prox)
	}
	claims, prox, err = e.Move(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(claims) != 2 || claims[0].ID != "a" || claims[1].ID != "b" || claims[0].Points != 7 {
		t.Fatalf("claims %v, want a then b", claims)
	}
	if !prox.Found || prox.ID != "far" || prox.Distance != 10 {
		t.Fatalf("proximity after claims %+v, want far at 10", prox)
	}
	if e.Drop(Treasure{"a", 3, 1}) {
		t.Fatal("re-drop of a claimed id accepted")
	}
	if claims, _, _ = e.Move(2, nil); len(claims) != 0 {
		t.Fatalf("second move to the node claims again: %v", claims)
	}
}

// A move that hits a node with no treasure must not allocate.
func TestEngineMoveAllocs(t *testing.T) {
	g := line(t)
	e := NewEngine(g, 100)
	e.Drop(Treasure{"a", 0, 1})
	claims := make([]Claimed, 0, 4)
	allocs := testing.AllocsPerRun(1000, func() {
		claims, _, _ = e.Move(3, claims[:0])
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per move", allocs)
	}
}
