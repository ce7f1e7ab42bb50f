package redisstore

import (
	"context"
	"fmt"
	"strconv"
)

// dumpChunk is the number of members read per round trip by AllScores.
const dumpChunk = 10_000

// AllScores calls fn for every player of the scores set with their score
// and the ReachedPos their board entry records (0 for a player without
// one), in no particular order, a chunk of players per round trip. It is
// not atomic: run it against a board nobody writes (`treasure replay
// --verify` on a quiet pipeline). It returns ErrNotBuilt when the board
// has not been built, and stops at the first error of fn.
func (s *Store) AllScores(ctx context.Context, fn func(ScoreChange) error) error {
	n, err := s.c.Exists(ctx, s.marker).Result()
	if err != nil {
		return fmt.Errorf("all scores: %w", err)
	}
	if n == 0 {
		return ErrNotBuilt
	}
	pos, err := s.c.HGetAll(ctx, s.pos).Result()
	if err != nil {
		return fmt.Errorf("all scores: %w", err)
	}
	for lo := int64(0); ; lo += dumpChunk {
		zs, err := s.c.ZRangeWithScores(ctx, s.scores, lo, lo+dumpChunk-1).Result()
		if err != nil {
			return fmt.Errorf("all scores: %w", err)
		}
		for _, z := range zs {
			p, _ := z.Member.(string)
			c := ScoreChange{Player: p, Score: int64(z.Score)}
			if h, ok := pos[p]; ok {
				v, err := strconv.ParseUint(h, 16, 64)
				if err != nil {
					return fmt.Errorf("all scores: player %s: position %q: %w", p, h, err)
				}
				c.ReachedPos = v
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		if len(zs) < dumpChunk {
			return nil
		}
	}
}
