package history

import (
	"cmp"
	"slices"

	"treasure/internal/event/eventpb"
)

// Answer is a proximity answer: the nearest treasure, or none.
type Answer struct {
	Treasure string `json:"treasure,omitempty"`
	Node     uint32 `json:"node,omitempty"`
	Distance uint64 `json:"distance,omitempty"`
	None     bool   `json:"none,omitempty"`
}

func answerOf(r *eventpb.ProximityResult) Answer {
	if r.Treasure == nil {
		return Answer{None: true}
	}
	return Answer{Treasure: r.Treasure.Id, Node: r.Treasure.Node, Distance: r.Treasure.Distance}
}

// AnswerChange is a move whose proximity answer differs between two
// rebuilds.
type AnswerChange struct {
	Player string `json:"player"`
	Seq    uint64 `json:"seq"`
	Node   uint32 `json:"node"`
	Real   Answer `json:"real"`
	WhatIf Answer `json:"what_if"`
}

// Answers compares the proximity answers of two rebuilds fed the same
// messages: pass RealEmit as the real rebuild's Options.Emit and
// WhatIfEmit as the what-if's (chained with whatever else it emits to),
// and apply each message to the real rebuild first.
type Answers struct {
	// Keep is how many changes to keep as examples (default 20).
	Keep int

	Compared, Changed int
	Examples          []AnswerChange
	// Unmatched counts answers one rebuild gave and the other did not
	// (never, when both see the same moves).
	Unmatched int

	pending map[MoveKey]*eventpb.ProximityResult
}

// RealEmit records the real rebuild's answers.
func (a *Answers) RealEmit(_ int, ev *eventpb.Event) error {
	if r := ev.GetProximity(); r != nil {
		if a.pending == nil {
			a.pending = map[MoveKey]*eventpb.ProximityResult{}
		}
		a.pending[MoveKey{r.Player, r.Seq}] = r
	}
	return nil
}

// WhatIfEmit compares the what-if's answers with the real ones.
func (a *Answers) WhatIfEmit(_ int, ev *eventpb.Event) error {
	w := ev.GetProximity()
	if w == nil {
		return nil
	}
	key := MoveKey{w.Player, w.Seq}
	r, ok := a.pending[key]
	if !ok {
		a.Unmatched++
		return nil
	}
	delete(a.pending, key)
	a.Compared++
	ra, wa := answerOf(r), answerOf(w)
	if ra == wa {
		return nil
	}
	a.Changed++
	keep := a.Keep
	if keep == 0 {
		keep = 20
	}
	if len(a.Examples) < keep {
		a.Examples = append(a.Examples, AnswerChange{Player: w.Player, Seq: w.Seq, Node: w.Node, Real: ra, WhatIf: wa})
	}
	return nil
}

// Finish counts the real answers the what-if never gave.
func (a *Answers) Finish() {
	a.Unmatched += len(a.pending)
	clear(a.pending)
}

// ClaimChange is a treasure claimed differently (or only) in one rebuild.
type ClaimChange struct {
	Treasure string `json:"treasure"`
	Real     *Claim `json:"real"`    // nil: not claimed in the real run
	WhatIf   *Claim `json:"what_if"` // nil: not claimed in the what-if
}

// DiffClaims lists the treasures whose claim (claiming player and move)
// differs, in treasure id order.
func DiffClaims(real, whatIf []Claim) []ClaimChange {
	index := func(cs []Claim) map[string]*Claim {
		m := make(map[string]*Claim, len(cs))
		for i := range cs {
			if m[cs[i].Treasure] == nil {
				m[cs[i].Treasure] = &cs[i]
			}
		}
		return m
	}
	ri, wi := index(real), index(whatIf)
	var out []ClaimChange
	for id, r := range ri {
		w := wi[id]
		if w == nil || w.Player != r.Player || w.Seq != r.Seq || w.Points != r.Points {
			out = append(out, ClaimChange{Treasure: id, Real: r, WhatIf: w})
		}
	}
	for id, w := range wi {
		if ri[id] == nil {
			out = append(out, ClaimChange{Treasure: id, WhatIf: w})
		}
	}
	slices.SortFunc(out, func(a, b ClaimChange) int { return cmp.Compare(a.Treasure, b.Treasure) })
	return out
}

// StandingChange is a player whose score or rank differs between two
// boards.
type StandingChange struct {
	Player      string `json:"player"`
	RealScore   int64  `json:"real_score"`
	RealRank    int64  `json:"real_rank"`
	WhatIfScore int64  `json:"what_if_score"`
	WhatIfRank  int64  `json:"what_if_rank"`
}

// DiffBoards lists the players whose score or rank differs, ordered by
// their what-if rank, then real rank, then id.
func DiffBoards(real, whatIf *Board) []StandingChange {
	var out []StandingChange
	seen := map[string]bool{}
	add := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		r, rok := real.Players[id]
		w, wok := whatIf.Players[id]
		if !rok {
			r.Rank = real.Scoring + 1
		}
		if !wok {
			w.Rank = whatIf.Scoring + 1
		}
		if r.Score != w.Score || r.Rank != w.Rank {
			out = append(out, StandingChange{Player: id, RealScore: r.Score, RealRank: r.Rank, WhatIfScore: w.Score, WhatIfRank: w.Rank})
		}
	}
	for id := range real.Players {
		add(id)
	}
	for id := range whatIf.Players {
		add(id)
	}
	slices.SortFunc(out, func(a, b StandingChange) int {
		if c := cmp.Compare(a.WhatIfRank, b.WhatIfRank); c != 0 {
			return c
		}
		if c := cmp.Compare(a.RealRank, b.RealRank); c != 0 {
			return c
		}
		return cmp.Compare(a.Player, b.Player)
	})
	return out
}
