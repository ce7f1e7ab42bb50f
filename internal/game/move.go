// Package game is treasure's deterministic state machine: move validation,
// the active treasures with drops and claims, and proximity answers. It is
// pure: no I/O, no clocks, no goroutines. Given the same events in the same
// order it produces the same results, which is what makes a replay of the
// log reproduce a live run.
package game

import (
	"fmt"

	"treasure/internal/graph"
)

// Code is an error code of the wire contract (SPEC.md, "Wire contract").
type Code string

// The error codes of SPEC.md. Where several apply to one move, the first
// in the order of ValidateMove's checks wins: bad_json, bad_request,
// path_too_long, unknown_node, stale_seq, discontinuous, not_adjacent.
const (
	CodeBadJSON      Code = "bad_json"
	CodeBadRequest   Code = "bad_request"
	CodeUnknownNode  Code = "unknown_node"
	CodeNotAdjacent  Code = "not_adjacent"
	CodeDiscontinous Code = "discontinuous"
	CodeStaleSeq     Code = "stale_seq"
	CodePathTooLong  Code = "path_too_long"
	CodeRateLimited  Code = "rate_limited"
	CodeUnauthorized Code = "unauthorized"
	CodeUnavailable  Code = "unavailable"
)

// MaxPath is the longest path a move may carry.
const MaxPath = 16

// Error is a rejected command: a wire code and a message for people.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Msg }

// Errorf returns an *Error with the given code.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Player is what validation needs to know of a player: the seq and end
// node of the last accepted move. The zero value is a player who has not
// moved yet. Node is a whole-graph index.
type Player struct {
	Seq   uint64
	Node  uint32
	Moved bool
}

// ValidateMove checks a move by player p against g in SPEC order and, when
// it is valid, writes the path's node indices to idx (which must have room
// for len(path) entries) and returns nil. path holds wire ids (DIMACS ids).
// It allocates only when it returns an error.
func ValidateMove(g *graph.Graph, p Player, seq uint64, path []uint64, idx []uint32) *Error {
	if seq == 0 {
		return Errorf(CodeBadRequest, "seq must be a positive integer")
	}
	if len(path) == 0 {
		return Errorf(CodeBadRequest, "path must hold at least one node")
	}
	if len(path) > MaxPath {
		return Errorf(CodePathTooLong, "path has %d nodes, at most %d allowed", len(path), MaxPath)
	}
	n := g.NumNodes()
	for i, id := range path {
		v, ok := graph.Index(id, n)
		if !ok {
			return Errorf(CodeUnknownNode, "path[%d]: node %d does not exist", i, id)
		}
		idx[i] = v
	}
	if p.Moved && seq <= p.Seq {
		return Errorf(CodeStaleSeq, "seq %d is not above the last accepted seq %d", seq, p.Seq)
	}
	if p.Moved && idx[0] != p.Node {
		return Errorf(CodeDiscontinous, "path starts at node %d but the player is at node %d", path[0], graph.ID(p.Node))
	}
	// Read every node's adjacency bounds first: the loads are independent,
	// so the CPU overlaps their cache misses instead of taking them one at a
	// time inside the scan below (on the 2.3 M-node city this is most of a
	// move's cost; see BENCHMARKS.md).
	var lo, hi [MaxPath]uint32
	for i := 0; i < len(path)-1; i++ {
		lo[i], hi[i] = g.Offsets[idx[i]], g.Offsets[idx[i]+1]
	}
	// Touch each list's first arc for the same reason: their misses overlap.
	var touch uint32
	for i := 0; i < len(path)-1; i++ {
		if lo[i] < hi[i] {
			touch += g.Arcs[lo[i]].To
		}
	}
	if touch == graph.NoNode && lo[0] > hi[0] { // never true; keeps the loads
		return Errorf(CodeNotAdjacent, "corrupt graph")
	}
	for i := 1; i < len(path); i++ {
		if !hasArc(g.Arcs[lo[i-1]:hi[i-1]], idx[i]) {
			return Errorf(CodeNotAdjacent, "nodes %d and %d (path[%d], path[%d]) share no edge", path[i-1], path[i], i-1, i)
		}
	}
	return nil
}

// Advance returns the player's state after the accepted move (seq, path).
func (p Player) Advance(seq uint64, last uint32) Player {
	return Player{Seq: seq, Node: last, Moved: true}
}

func hasArc(arcs []graph.Arc, v uint32) bool {
	for _, a := range arcs {
		if a.To == v {
			return true
		}
	}
	return false
}
