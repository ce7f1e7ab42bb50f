package ranker

import (
	"context"
	"fmt"
	"time"

	"treasure/internal/event/eventpb"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
)

// applyClaims stores b's claims, finds which of them count (the claim
// PostgreSQL holds for its treasure), merges those into r.ahead with their
// players' current scores, and returns those players' standings for Redis.
func (r *Ranker) applyClaims(ctx context.Context, b *batch, effective *[]int) ([]redisstore.ScoreChange, error) {
	claims := make([]pgstore.Claim, len(b.claims))
	for i := range b.claims {
		claims[i] = b.claims[i].Claim
	}
	// Until the claims stored here are recorded in r.ahead, a failure
	// leaves r.ahead short of what PostgreSQL holds.
	r.aheadStale = true
	for lo := 0; lo < len(claims); lo += r.o.MaxClaims {
		chunk := claims[lo:min(lo+r.o.MaxClaims, len(claims))]
		t0 := time.Now()
		if _, err := r.pg.ApplyClaims(ctx, chunk); err != nil {
			return nil, err
		}
		r.m.commit.Observe(time.Since(t0).Seconds())
		r.m.claims.Add(float64(len(chunk)))
		r.m.batchClaims.Observe(float64(len(chunk)))
	}
	if err := r.callHook("stored"); err != nil {
		return nil, err
	}
	treasures := make([]string, len(claims))
	for i, c := range claims {
		treasures[i] = c.Treasure
	}
	rows, err := r.pg.HeldClaims(ctx, treasures)
	if err != nil {
		return nil, err
	}
	held := make(map[string]*pgstore.HeldClaim, len(rows))
	for i := range rows {
		held[rows[i].Treasure] = &rows[i]
	}
	var (
		changes []redisstore.ScoreChange
		added   []stored
		player  = map[string]bool{}
	)
	for i, c := range b.claims {
		h := held[c.Treasure]
		if h == nil || h.Pos != c.Pos || h.Player != c.Player {
			r.m.duplicates.Inc()
			continue
		}
		*effective = append(*effective, i)
		added = append(added, storedOf(h))
		r.now[h.Player] = h.Score
		if !player[h.Player] {
			player[h.Player] = true
			changes = append(changes, redisstore.ScoreChange{Player: h.Player, Score: h.Score, ReachedPos: h.ReachedPos})
		}
	}
	sortStored(added) // already in log order; cheap insurance
	r.ahead = mergeStored(r.ahead, added)
	r.aheadStale = false
	return changes, nil
}

// reloadAhead replaces r.ahead and r.now with the claims PostgreSQL holds
// from input seq on (the first input not accepted yet). It scans the
// claims table, so it runs at start and after a failed call only.
func (r *Ranker) reloadAhead(ctx context.Context, seq uint64) error {
	rows, err := r.pg.ClaimsFrom(ctx, position(seq, 0))
	if err != nil {
		return err
	}
	r.ahead = r.ahead[:0]
	clear(r.now)
	var changes []redisstore.ScoreChange
	for i := range rows {
		c := &rows[i]
		r.ahead = append(r.ahead, storedOf(c))
		if _, dup := r.now[c.Player]; !dup {
			changes = append(changes, redisstore.ScoreChange{Player: c.Player, Score: c.Score, ReachedPos: c.ReachedPos})
		}
		r.now[c.Player] = c.Score
	}
	sortStored(r.ahead)
	r.aheadStale = false
	// Redis may have missed these players' scores (the failed call stored
	// them in PostgreSQL only); the ranks counted in Redis need them.
	if r.redisOK {
		if err := r.rs.Apply(ctx, changes); err != nil {
			r.redisDown(ctx, err)
		}
	}
	return nil
}

// scoreEvents returns the ScoreChanged events of the effective claims of b
// whose input has no published events yet, in log order, each with the
// input sequence it belongs to.
func (r *Ranker) scoreEvents(ctx context.Context, b *batch, effective []int) ([]outEvent, error) {
	var want, from []int // indices into r.ahead and b.claims
	for _, i := range effective {
		c := b.claims[i]
		if c.msgSeq <= r.published {
			continue
		}
		j, found := findStored(r.ahead, c.Pos)
		if !found {
			return nil, fmt.Errorf("claim of %s at %d missing from the claims ahead", c.Treasure, c.Pos)
		}
		want = append(want, j)
		from = append(from, i)
	}
	if len(want) == 0 {
		return nil, nil
	}
	st, err := standings(r.ahead, r.now, want, r.countAbove(ctx))
	if err != nil {
		return nil, err
	}
	events := make([]outEvent, len(want))
	for k, i := range from {
		c := b.claims[i]
		events[k] = outEvent{msgSeq: c.msgSeq, ev: &eventpb.Event{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{
			Player: c.Player,
			Score:  uint64(st[k].score),
			Rank:   uint64(st[k].rank),
			Cause:  &eventpb.ClaimRef{Treasure: c.Treasure, Move: c.cause},
		}}}}
	}
	return events, nil
}

func findStored(s []stored, pos uint64) (int, bool) {
	lo, hi := 0, len(s)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if s[mid].pos < pos {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(s) && s[lo].pos == pos
}

// countAbove returns the function standings asks the board with: Redis
// when it is in step with PostgreSQL, else PostgreSQL.
func (r *Ranker) countAbove(ctx context.Context) func([]int64) ([]int64, error) {
	return func(scores []int64) ([]int64, error) {
		if r.redisOK {
			counts, err := r.rs.CountAbove(ctx, scores)
			if err == nil {
				return counts, nil
			}
			r.redisDown(ctx, err)
		}
		ranks, err := r.pg.Ranks(ctx, scores)
		if err != nil {
			return nil, err
		}
		for i := range ranks {
			ranks[i]--
		}
		return ranks, nil
	}
}

// trimAhead forgets the claims of inputs up to seq, now accepted.
func (r *Ranker) trimAhead(seq uint64) {
	cut := position(seq+1, 0)
	i := 0
	for i < len(r.ahead) && r.ahead[i].pos < cut {
		i++
	}
	if i == 0 {
		return
	}
	r.ahead = append(r.ahead[:0], r.ahead[i:]...)
	keep := make(map[string]bool, len(r.ahead))
	for _, s := range r.ahead {
		keep[s.player] = true
	}
	for p := range r.now {
		if !keep[p] {
			delete(r.now, p)
		}
	}
}

// noteSeen remembers players recorded as seen, clearing the set when it
// reaches its cap.
func (r *Ranker) noteSeen(players []string) {
	if len(r.seen)+len(players) > r.o.SeenCap {
		clear(r.seen)
	}
	for _, p := range players {
		r.seen[p] = struct{}{}
	}
	r.m.seen.Add(float64(len(players)))
}

// storedOf is the part of a held claim that standings works with.
func storedOf(h *pgstore.HeldClaim) stored {
	return stored{pos: h.Pos, treasure: h.Treasure, player: h.Player, points: h.Points}
}
