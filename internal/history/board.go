package history

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Scoring turns a claim's points into what it adds to a score. The live
// ranker's rule is Points: score = the sum of the points of the claims.
type Scoring struct {
	Name  string
	value func(points uint64) int64
}

// Points is the live scoring: a claim adds its treasure's points.
var Points = Scoring{Name: "points", value: func(p uint64) int64 { return int64(p) }}

// ScoringNames lists the scorings ParseScoring knows, for help texts.
const ScoringNames = `points (the live rule: a claim adds its treasure's points), count (every claim adds 1), capped:N (a claim adds min(points, N))`

// ParseScoring returns the scoring named s (see ScoringNames).
func ParseScoring(s string) (Scoring, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	switch {
	case name == "points" && !hasArg:
		return Points, nil
	case name == "count" && !hasArg:
		return Scoring{Name: "count", value: func(uint64) int64 { return 1 }}, nil
	case name == "capped" && hasArg:
		n, err := strconv.ParseUint(arg, 10, 31)
		if err != nil || n == 0 {
			return Scoring{}, fmt.Errorf("scoring %q: capped:N wants N between 1 and %d", s, math.MaxInt32)
		}
		return Scoring{Name: s, value: func(p uint64) int64 { return int64(min(p, n)) }}, nil
	}
	return Scoring{}, fmt.Errorf("unknown scoring %q; known: %s", s, ScoringNames)
}

// Value is what a claim of points adds under s.
func (s Scoring) Value(points uint64) int64 {
	if s.value == nil {
		return Points.value(points)
	}
	return s.value(points)
}

// reachKey orders claims as the ranker's log positions do: by the P_OUT
// position of the claiming move's proximity result (a live worker
// publishes a move's claims right before its result, and the moves of a
// partition in log order), then, for moves without a result on P_OUT (not
// processed live yet, at the time of the read), by IN position; then by
// the claim's place among its move's claims.
type reachKey struct {
	out Pos // Pos{math.MaxUint64, 0} when unknown
	in  Pos
	nth int
}

func (a reachKey) compare(b reachKey) int {
	if c := comparePos(a.out, b.out); c != 0 {
		return c
	}
	if c := comparePos(a.in, b.in); c != 0 {
		return c
	}
	return cmp.Compare(a.nth, b.nth)
}

func comparePos(a, b Pos) int {
	if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
		return c
	}
	return cmp.Compare(a.Index, b.Index)
}

// Standing is a player's score and rank on a board.
type Standing struct {
	Player string `json:"player"`
	Score  int64  `json:"score"`
	Rank   int64  `json:"rank"`
	Claims int    `json:"claims"`

	reached reachKey
}

// Board is a leaderboard rebuilt from claims: the ranker's rules (score
// descending; equal scores share a rank, 1 + the number of players with a
// strictly higher score, and are listed by who reached the score first,
// then by player id).
type Board struct {
	// Top lists every player with a score > 0, in leaderboard order.
	Top []Standing `json:"top"`
	// Players holds every known player's standing, zero scores included
	// (rank 1 + the number of players with a score).
	Players map[string]Standing `json:"-"`
	// Scoring is the number of players with a score (the leaderboard's
	// "players").
	Scoring int64  `json:"players"`
	Rule    string `json:"scoring"`
}

// Board computes the leaderboard of the rebuild's claims under scoring s,
// ordering ties by out's positions (nil: IN order only). Every player with
// an applied move is on it, with score 0 when they claimed nothing.
func (r *Rebuild) Board(out *Out, s Scoring) *Board {
	type acc struct {
		score   int64
		claims  int
		reached reachKey
	}
	accs := make(map[string]*acc, len(r.players))
	for id := range r.players {
		accs[id] = &acc{}
	}
	for _, c := range r.claims {
		a := accs[c.Player]
		if a == nil {
			a = &acc{}
			accs[c.Player] = a
		}
		k := reachKey{out: Pos{Seq: math.MaxUint64}, in: c.Move, nth: c.Nth}
		if out != nil {
			if p, ok := out.Results[MoveKey{c.Player, c.Seq}]; ok {
				k.out = p
			}
		}
		a.score += s.Value(c.Points)
		a.claims++
		if a.claims == 1 || k.compare(a.reached) > 0 {
			a.reached = k
		}
	}
	b := &Board{Players: make(map[string]Standing, len(accs)), Rule: s.Name}
	for id, a := range accs {
		st := Standing{Player: id, Score: a.score, Claims: a.claims, reached: a.reached}
		if a.score > 0 {
			b.Top = append(b.Top, st)
		}
		b.Players[id] = st
	}
	slices.SortFunc(b.Top, func(x, y Standing) int {
		if c := cmp.Compare(y.Score, x.Score); c != 0 {
			return c
		}
		if c := x.reached.compare(y.reached); c != 0 {
			return c
		}
		return strings.Compare(x.Player, y.Player)
	})
	for i := range b.Top {
		if i > 0 && b.Top[i].Score == b.Top[i-1].Score {
			b.Top[i].Rank = b.Top[i-1].Rank
		} else {
			b.Top[i].Rank = int64(i) + 1
		}
		b.Players[b.Top[i].Player] = b.Top[i]
	}
	b.Scoring = int64(len(b.Top))
	for id, st := range b.Players {
		if st.Score == 0 {
			st.Rank = b.Scoring + 1
			b.Players[id] = st
		}
	}
	return b
}

// Player returns a player's standing and whether the board knows them.
func (b *Board) Player(id string) (Standing, bool) {
	st, ok := b.Players[id]
	return st, ok
}

// After is a player's score and rank right after one claim.
type After struct {
	Player string `json:"player"`
	Score  int64  `json:"score"`
	Rank   int64  `json:"rank"`
}

// Afters returns, for every claim of the rebuild, its player's score and
// rank right after it, taking the claims in the ranker's order (out's
// positions): what the ranker's ScoreChanged events say. Keyed by
// treasure.
func (r *Rebuild) Afters(out *Out, s Scoring) map[string]After {
	type item struct {
		c Claim
		k reachKey
	}
	items := make([]item, len(r.claims))
	for i, c := range r.claims {
		k := reachKey{out: Pos{Seq: math.MaxUint64}, in: c.Move, nth: c.Nth}
		if out != nil {
			if p, ok := out.Results[MoveKey{c.Player, c.Seq}]; ok {
				k.out = p
			}
		}
		items[i] = item{c, k}
	}
	slices.SortStableFunc(items, func(a, b item) int { return a.k.compare(b.k) })
	// Every value a score takes, for a Fenwick tree of the players'
	// current scores.
	cur := map[string]int64{}
	vals := []int64{0}
	for _, it := range items {
		cur[it.c.Player] += s.Value(it.c.Points)
		vals = append(vals, cur[it.c.Player])
	}
	slices.Sort(vals)
	vals = slices.Compact(vals)
	idx := func(v int64) int { i, _ := slices.BinarySearch(vals, v); return i }
	tree := make([]int, len(vals)+1)
	add := func(i, d int) {
		for i++; i < len(tree); i += i & -i {
			tree[i] += d
		}
	}
	upTo := func(i int) int { // players with a score at or below vals[i]
		n := 0
		for i++; i > 0; i -= i & -i {
			n += tree[i]
		}
		return n
	}
	clear(cur)
	scoring := 0
	out2 := make(map[string]After, len(items))
	for _, it := range items {
		p := it.c.Player
		old := cur[p]
		if old > 0 {
			add(idx(old), -1)
		} else {
			scoring++
		}
		now := old + s.Value(it.c.Points)
		cur[p] = now
		add(idx(now), 1)
		out2[it.c.Treasure] = After{Player: p, Score: now, Rank: int64(1 + scoring - upTo(idx(now)))}
	}
	return out2
}
