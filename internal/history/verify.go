package history

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"treasure/internal/game"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
)

// posShift is the ranker's: a stored claim's position is its P_OUT
// message's sequence shifted left by posShift, or'ed with its index in
// the batch (services/ranker, ids.go).
const posShift = 20

// StorePos is the position the ranker stores for an event at p in P_OUT.
func StorePos(p Pos) uint64 { return p.Seq<<posShift | uint64(p.Index) }

// Difference is one thing the live stores hold otherwise than the log
// says.
type Difference struct {
	// Store is where the live value was read: "out" (the claims the
	// workers published on P_OUT), "postgres" or "redis".
	Store string `json:"store"`
	// What is compared: claim, score, reached_pos, rank, player, scoring,
	// leaderboard.
	What string `json:"what"`
	// Key is the player or treasure (or the leaderboard line).
	Key string `json:"key"`
	// Log is the value rebuilt from the log, Live the stored one;
	// "(missing)" when there is none.
	Log  string `json:"log"`
	Live string `json:"live"`
}

func (d Difference) String() string {
	return fmt.Sprintf("%-8s %-11s %-20s log: %s  live: %s", d.Store, d.What, d.Key, d.Log, d.Live)
}

// Missing marks a value a side does not hold.
const Missing = "(missing)"

// Report is the outcome of a verification.
type Report struct {
	Claims      int          `json:"claims"`
	Players     int          `json:"players"`
	Scoring     int64        `json:"scoring_players"`
	Checked     []string     `json:"checked"`
	Differences []Difference `json:"differences"`
}

// OK reports whether nothing differs.
func (r *Report) OK() bool { return len(r.Differences) == 0 }

// Stores are the live stores to verify; a nil one is not checked.
type Stores struct {
	Postgres *pgstore.Store
	Redis    *redisstore.Store
}

// Verify compares the claims, scores and ranks rebuilt from the log (r,
// rebuilt to the end of IN, and out, all of P_OUT) with the claims the
// workers published and with what the stores hold. Run it on a quiet
// pipeline: moves in flight show up as differences. It fails only when a
// store cannot be read.
func Verify(ctx context.Context, r *Rebuild, out *Out, st Stores) (*Report, error) {
	board := r.Board(out, Points)
	rep := &Report{Claims: len(r.claims), Players: len(board.Players), Scoring: board.Scoring}
	diff := func(store, what, key, log, live string) {
		rep.Differences = append(rep.Differences, Difference{Store: store, What: what, Key: key, Log: log, Live: live})
	}
	claimStr := func(c Claim) string {
		return fmt.Sprintf("%s seq %d, %d points, node %d", c.Player, c.Seq, c.Points, c.Node)
	}

	// The log against itself: the claims the workers published.
	rep.Checked = append(rep.Checked, "out")
	pos := map[string]uint64{} // treasure → the position the ranker stores
	rebuilt := map[string]Claim{}
	for _, c := range r.claims {
		rebuilt[c.Treasure] = c
		oc, ok := out.Claims[c.Treasure]
		if !ok {
			diff("out", "claim", c.Treasure, claimStr(c), Missing)
			continue
		}
		if oc.Player != c.Player || oc.Seq != c.Seq || oc.Points != c.Points || oc.Node != c.Node || oc.Move != c.Move {
			diff("out", "claim", c.Treasure, claimStr(c), claimStr(oc.Claim))
		}
		pos[c.Treasure] = StorePos(oc.Out)
	}
	for id, oc := range out.Claims {
		if _, ok := rebuilt[id]; !ok {
			diff("out", "claim", id, Missing, claimStr(oc.Claim))
		}
	}
	// The ranker's ScoreChanged events: the score and rank right after
	// each claim.
	afters := r.Afters(out, Points)
	scoreEvents := map[string]bool{}
	afterStr := func(a After) string { return fmt.Sprintf("%s score %d rank %d", a.Player, a.Score, a.Rank) }
	for _, e := range out.Scores {
		id := e.GetCause().GetTreasure()
		if scoreEvents[id] {
			continue
		}
		scoreEvents[id] = true
		got := After{Player: e.Player, Score: int64(e.Score), Rank: int64(e.Rank)}
		want, ok := afters[id]
		switch {
		case !ok:
			diff("out", "score_event", id, Missing, afterStr(got))
		case got != want:
			diff("out", "score_event", id, afterStr(want), afterStr(got))
		}
	}
	for _, c := range r.claims {
		if !scoreEvents[c.Treasure] {
			diff("out", "score_event", c.Treasure, afterStr(afters[c.Treasure]), Missing)
		}
	}
	// What the ranker stores per player: the score and the position of
	// the claim that brought them to it (the greatest).
	reached := map[string]uint64{}
	for _, c := range r.claims {
		reached[c.Player] = max(reached[c.Player], pos[c.Treasure])
	}
	players := slices.Sorted(func(yield func(string) bool) {
		for id := range board.Players {
			if !yield(id) {
				return
			}
		}
	})

	if st.Postgres != nil {
		rep.Checked = append(rep.Checked, "postgres")
		stored := map[string]pgstore.Claim{}
		if err := st.Postgres.AllClaims(ctx, func(c pgstore.Claim) error { stored[c.Treasure] = c; return nil }); err != nil {
			return nil, err
		}
		pgStr := func(c pgstore.Claim) string {
			return fmt.Sprintf("%s seq %d, %d points, node %d", c.Player, c.Seq, c.Points, c.Node)
		}
		for _, c := range r.claims {
			sc, ok := stored[c.Treasure]
			switch {
			case !ok:
				diff("postgres", "claim", c.Treasure, claimStr(c), Missing)
			case sc.Player != c.Player || sc.Seq != c.Seq || uint64(sc.Points) != c.Points || sc.Node != c.Node:
				diff("postgres", "claim", c.Treasure, claimStr(c), pgStr(sc))
			case pos[c.Treasure] != 0 && sc.Pos != pos[c.Treasure]:
				diff("postgres", "claim_pos", c.Treasure, strconv.FormatUint(pos[c.Treasure], 10), strconv.FormatUint(sc.Pos, 10))
			}
		}
		for id, sc := range stored {
			if _, ok := rebuilt[id]; !ok {
				diff("postgres", "claim", id, Missing, pgStr(sc))
			}
		}
		scores := map[string]pgstore.ScoreChange{}
		if err := st.Postgres.AllScores(ctx, func(c pgstore.ScoreChange) error { scores[c.Player] = c; return nil }); err != nil {
			return nil, err
		}
		for _, id := range players {
			want := board.Players[id]
			got, ok := scores[id]
			switch {
			case !ok:
				diff("postgres", "player", id, fmt.Sprintf("score %d", want.Score), Missing)
			case got.Score != want.Score:
				diff("postgres", "score", id, strconv.FormatInt(want.Score, 10), strconv.FormatInt(got.Score, 10))
			case want.Score > 0 && got.ReachedPos != reached[id]:
				diff("postgres", "reached_pos", id, strconv.FormatUint(reached[id], 10), strconv.FormatUint(got.ReachedPos, 10))
			}
		}
		for id, got := range scores {
			if _, ok := board.Players[id]; !ok {
				diff("postgres", "player", id, Missing, fmt.Sprintf("score %d", got.Score))
			}
		}
		top, scoring, err := st.Postgres.Leaderboard(ctx, len(board.Top)+1)
		if err != nil {
			return nil, err
		}
		if scoring != board.Scoring {
			diff("postgres", "scoring", "board", strconv.FormatInt(board.Scoring, 10), strconv.FormatInt(scoring, 10))
		}
		diffTop(diff, "postgres", board.Top, top)
	}

	if st.Redis != nil {
		rep.Checked = append(rep.Checked, "redis")
		scores := map[string]redisstore.ScoreChange{}
		err := st.Redis.AllScores(ctx, func(c redisstore.ScoreChange) error { scores[c.Player] = c; return nil })
		if errors.Is(err, redisstore.ErrNotBuilt) {
			diff("redis", "leaderboard", "board", "built", "not built (flushed, or never filled)")
		} else if err != nil {
			return nil, err
		} else {
			// A rank in Redis is 1 + ZCOUNT of the strictly higher scores.
			all := make([]int64, 0, len(scores))
			for _, c := range scores {
				all = append(all, c.Score)
			}
			slices.Sort(all)
			rankOf := func(s int64) int64 {
				i, _ := slices.BinarySearch(all, s+1)
				return int64(len(all)-i) + 1
			}
			for _, id := range players {
				want := board.Players[id]
				got, ok := scores[id]
				switch {
				case !ok:
					diff("redis", "rank", id, fmt.Sprintf("score %d rank %d", want.Score, want.Rank), Missing)
				case got.Score != want.Score:
					diff("redis", "score", id, strconv.FormatInt(want.Score, 10), strconv.FormatInt(got.Score, 10))
				case rankOf(got.Score) != want.Rank:
					diff("redis", "rank", id, strconv.FormatInt(want.Rank, 10), strconv.FormatInt(rankOf(got.Score), 10))
				case want.Score > 0 && got.ReachedPos != reached[id]:
					diff("redis", "reached_pos", id, strconv.FormatUint(reached[id], 10), strconv.FormatUint(got.ReachedPos, 10))
				}
			}
			for id, got := range scores {
				if _, ok := board.Players[id]; !ok {
					diff("redis", "player", id, Missing, fmt.Sprintf("score %d", got.Score))
				}
			}
			top, scoring, err := st.Redis.Leaderboard(ctx, len(board.Top)+1)
			if err != nil && !errors.Is(err, redisstore.ErrNotBuilt) {
				return nil, err
			}
			if err == nil {
				if scoring != board.Scoring {
					diff("redis", "scoring", "board", strconv.FormatInt(board.Scoring, 10), strconv.FormatInt(scoring, 10))
				}
				diffTop(diff, "redis", board.Top, top)
			}
		}
	}
	slices.SortStableFunc(rep.Differences, func(a, b Difference) int {
		return cmp.Compare(storeOrder(a.Store), storeOrder(b.Store))
	})
	return rep, nil
}

func storeOrder(s string) int {
	switch s {
	case "out":
		return 0
	case "postgres":
		return 1
	}
	return 2
}

// diffTop compares a store's leaderboard listing with the rebuilt one,
// line by line.
func diffTop(diff func(store, what, key, log, live string), store string, want []Standing, got []game.Entry) {
	line := func(player string, score, rank int64) string {
		return fmt.Sprintf("%s score %d rank %d", player, score, rank)
	}
	for i := 0; i < max(len(want), len(got)); i++ {
		w, g := Missing, Missing
		if i < len(want) {
			w = line(want[i].Player, want[i].Score, want[i].Rank)
		}
		if i < len(got) {
			g = line(got[i].Player, got[i].Score, got[i].Rank)
		}
		if w != g {
			diff(store, "leaderboard", fmt.Sprintf("line %d", i+1), w, g)
		}
	}
}
