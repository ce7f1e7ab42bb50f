package history

import (
	"cmp"
	"slices"
	"time"

	"treasure/internal/graph"
)

// PlayerState is a player at a point of the log: score, rank and where
// they stand.
type PlayerState struct {
	Player string `json:"player"`
	Score  int64  `json:"score"`
	Rank   int64  `json:"rank"`
	Claims int    `json:"claims"`
	// Node is the last node of the player's last applied move (wire id),
	// Seq that move's seq; Moves counts their applied moves.
	Node  uint32 `json:"node"`
	Seq   uint64 `json:"seq"`
	Moves int    `json:"moves"`
	// Nearest is the proximity answer at Node at that point (nil: none
	// within the radius).
	Nearest *Answer `json:"nearest"`
}

// Point says where a rebuild stopped.
type Point struct {
	// InSeq is the last IN stream sequence applied (0: none).
	InSeq uint64 `json:"in_seq"`
	// Time is that message's time in the stream.
	Time time.Time `json:"time"`
}

// At returns the point the rebuild has reached.
func (r *Rebuild) At() Point { return Point{InSeq: r.LastSeq, Time: r.LastTime} }

// PlayerState returns a player's state on board b, and false for a player
// with no applied move.
func (r *Rebuild) PlayerState(b *Board, id string) (PlayerState, bool) {
	p, ok := r.players[id]
	if !ok {
		return PlayerState{}, false
	}
	st := b.Players[id]
	ps := PlayerState{Player: id, Score: st.Score, Rank: st.Rank, Claims: st.Claims, Node: p.Node, Seq: p.Seq, Moves: p.Moves}
	if prox, err := r.Nearest(p.Node); err == nil && prox.Found {
		ps.Nearest = &Answer{Treasure: prox.ID, Node: graph.ID(prox.Node), Distance: uint64(prox.Distance)}
	}
	return ps, true
}

// ActiveList returns the active treasures in id order.
func (r *Rebuild) ActiveList() []Treasure {
	out := make([]Treasure, 0, len(r.active))
	for _, t := range r.active {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Treasure) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// PlayerIDs returns the ids of every player with an applied move, sorted.
func (r *Rebuild) PlayerIDs() []string {
	ids := make([]string, 0, len(r.players))
	for id := range r.players {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
