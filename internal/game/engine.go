package game

import (
	"errors"
	"fmt"
	"slices"

	"treasure/internal/graph"
)

// MaxTreasureID is the longest treasure id allowed.
const MaxTreasureID = 64

// Treasure is a treasure as dropped: id, node (a whole-graph index) and
// points.
type Treasure struct {
	ID     string
	Node   uint32
	Points uint32
}

// CheckTreasure validates a dropped treasure against SPEC: an id of 1–64
// characters of [A-Za-z0-9_-], points > 0. The node is checked by the
// caller, who knows the graph.
func CheckTreasure(id string, points int64) error {
	if len(id) == 0 || len(id) > MaxTreasureID {
		return fmt.Errorf("treasure id %q must have 1 to %d characters", id, MaxTreasureID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("treasure id %q: character %q not in [A-Za-z0-9_-]", id, c)
		}
	}
	if points <= 0 || points > 1<<31-1 {
		return fmt.Errorf("treasure %s: points %d must be between 1 and %d", id, points, 1<<31-1)
	}
	return nil
}

// Claimed is a treasure claimed by a move, as it was when dropped.
type Claimed = Treasure

// Proximity is the answer for one node: the nearest active treasure within
// the radius. Found is false when there is none.
type Proximity struct {
	Found    bool
	ID       string
	Node     uint32 // whole-graph index of the treasure
	Distance uint32
}

// ErrNotOwned is returned for a move that ends on a node the engine's
// partition does not own.
var ErrNotOwned = errors.New("node not owned by this partition")

// Engine holds the active treasures over a graph or over one partition's
// subgraph (own nodes plus halo) and answers moves: claims on the move's
// last node, then the proximity of that node. Treasures outside the
// subgraph are ignored: they cannot be within the radius of an own node.
//
// The per-move path (Move without a claim) reads two arrays and allocates
// nothing. Drops and claims cost a bounded Dijkstra around the treasure.
//
// An Engine is not safe for concurrent use.
type Engine struct {
	g     *graph.Graph
	field *graph.Field

	byID    map[string]uint32 // every id ever dropped here → slot
	points  []uint32          // per slot
	free    []uint32          // slots of claimed treasures, for reuse
	nActive int

	at map[uint32][]uint32 // local node → active slots on it
}

// NewEngine returns an engine over g (a whole graph, or a subgraph with
// Global set) with the given proximity radius.
func NewEngine(g *graph.Graph, radius uint32) *Engine {
	e := &Engine{
		g:     g,
		field: graph.NewField(g, radius),
		byID:  make(map[string]uint32),
		at:    make(map[uint32][]uint32),
	}
	return e
}

// Graph returns the engine's graph.
func (e *Engine) Graph() *graph.Graph { return e.g }

// Local returns the local index of whole-graph node v and whether the
// engine's graph holds it.
func (e *Engine) Local(v uint32) (uint32, bool) {
	return e.g.LocalIndex(v)
}

// Owns reports whether whole-graph node v is one of the partition's own
// nodes (for a whole graph: whether it exists).
func (e *Engine) Owns(v uint32) bool {
	l, ok := e.Local(v)
	return ok && l < e.g.Own
}

// Active returns the number of active treasures the engine holds.
func (e *Engine) Active() int { return e.nActive }

// Drop makes a treasure active and reports whether it was added. A
// treasure whose id was dropped before (active or claimed) is ignored, and
// so is one on a node outside the engine's graph; its id still counts as
// dropped, so that every partition, seeing every drop in log order, makes
// the same decision about a later drop of that id.
func (e *Engine) Drop(t Treasure) bool {
	if _, seen := e.byID[t.ID]; seen {
		return false
	}
	v, ok := e.Local(t.Node)
	if !ok {
		e.byID[t.ID] = graph.NoNode // seen: a later drop of the id stays ignored
		return false
	}
	s := e.alloc(t, v)
	e.field.Drop(s, t.ID, v)
	return true
}

// Claim deactivates the treasure id, as decided by the partition that owns
// its node, and reports whether it was active here.
func (e *Engine) Claim(id string) bool {
	s, ok := e.byID[id]
	if !ok || s == graph.NoNode {
		return false
	}
	e.remove(id, s)
	return true
}

func (e *Engine) remove(id string, s uint32) {
	v := e.field.Node(s)
	e.field.Remove(s)
	e.nActive--
	// byID keeps the id (so a re-drop stays ignored) but no longer the slot.
	e.byID[id] = graph.NoNode
	list := e.at[v]
	if i := slices.Index(list, s); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(e.at, v)
	} else {
		e.at[v] = list
	}
	e.free = append(e.free, s)
}

// Move applies an accepted move that ends on whole-graph node last: it
// claims every active treasure on that node, in id order, appending them to
// claims, and then answers the node's proximity (computed after the
// claims). It returns ErrNotOwned when the node is not one of the
// partition's own nodes.
func (e *Engine) Move(last uint32, claims []Claimed) ([]Claimed, Proximity, error) {
	v, ok := e.Local(last)
	if !ok || v >= e.g.Own {
		return claims, Proximity{}, fmt.Errorf("node %d: %w", graph.ID(last), ErrNotOwned)
	}
	if _, d, found := e.field.Nearest(v); found && d == 0 {
		claims = e.claimAt(v, claims)
	}
	return claims, e.proximity(v), nil
}

// Nearest answers the proximity of whole-graph node v without moving
// anybody.
func (e *Engine) Nearest(v uint32) (Proximity, error) {
	l, ok := e.Local(v)
	if !ok || l >= e.g.Own {
		return Proximity{}, fmt.Errorf("node %d: %w", graph.ID(v), ErrNotOwned)
	}
	return e.proximity(l), nil
}

func (e *Engine) proximity(v uint32) Proximity {
	s, d, ok := e.field.Nearest(v)
	if !ok {
		return Proximity{}
	}
	return Proximity{Found: true, ID: e.field.ID(s), Node: e.g.GlobalIndex(e.field.Node(s)), Distance: d}
}

func (e *Engine) claimAt(v uint32, claims []Claimed) []Claimed {
	list := slices.Clone(e.at[v])
	slices.SortFunc(list, func(a, b uint32) int {
		ia, ib := e.field.ID(a), e.field.ID(b)
		if ia < ib {
			return -1
		}
		if ia > ib {
			return 1
		}
		return 0
	})
	for _, s := range list {
		id := e.field.ID(s)
		claims = append(claims, Claimed{ID: id, Node: e.g.GlobalIndex(v), Points: e.points[s]})
		e.remove(id, s)
	}
	return claims
}

// DropAll drops many treasures at once, with the same rules as Drop, in
// one multi-source search: far cheaper than one Drop each when they are
// many (a game's initial set, a replay's start). It returns how many were
// added.
func (e *Engine) DropAll(ts []Treasure) int {
	var slots []uint32
	var ids []string
	var nodes []uint32
	for _, t := range ts {
		if _, seen := e.byID[t.ID]; seen {
			continue
		}
		v, ok := e.Local(t.Node)
		if !ok {
			e.byID[t.ID] = graph.NoNode
			continue
		}
		s := e.alloc(t, v)
		slots, ids, nodes = append(slots, s), append(ids, t.ID), append(nodes, v)
	}
	e.field.DropAll(slots, ids, nodes)
	return len(slots)
}

// alloc takes a slot for treasure t on local node v and records it.
func (e *Engine) alloc(t Treasure, v uint32) uint32 {
	var s uint32
	if n := len(e.free); n > 0 {
		s = e.free[n-1]
		e.free = e.free[:n-1]
	} else {
		s = uint32(len(e.points))
		e.points = append(e.points, 0)
	}
	e.byID[t.ID] = s
	e.points[s] = t.Points
	e.nActive++
	e.at[v] = append(e.at[v], s)
	return s
}
