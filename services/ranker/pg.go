package ranker

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The two reads below belong in package pgstore (its tables, its SQL); they
// live here until pgstore offers them. Both read the schema that
// schemas/sql/0001_scores.sql creates.

// storedClaim is a claims row joined with its player's current standing.
type storedClaim struct {
	stored
	score      int64  // the player's current score
	reachedPos uint64 // the position that brought the player to it
}

// lookupClaimsSQL returns the stored claim of each treasure asked for, with
// its player's current score: primary-key lookups, one round trip.
const lookupClaimsSQL = `
SELECT c.treasure_id, c.player, c.points, c.pos, p.score, p.reached_pos
FROM claims c JOIN players p ON p.player = c.player
WHERE c.treasure_id = ANY($1::text[])`

// lookupClaims returns the stored claims of treasures, in no order.
func lookupClaims(ctx context.Context, pool *pgxpool.Pool, treasures []string) ([]storedClaim, error) {
	rows, err := pool.Query(ctx, lookupClaimsSQL, treasures)
	if err != nil {
		return nil, fmt.Errorf("lookup claims: %w", err)
	}
	out, err := collectStored(rows, make([]storedClaim, 0, len(treasures)))
	if err != nil {
		return nil, fmt.Errorf("lookup claims: %w", err)
	}
	return out, nil
}

// claimsFromSQL returns every stored claim at a log position at or after
// $1 with its player's current score. It scans the claims table (there is
// no index on pos): the ranker runs it once, at start.
const claimsFromSQL = `
SELECT c.treasure_id, c.player, c.points, c.pos, p.score, p.reached_pos
FROM claims c JOIN players p ON p.player = c.player
WHERE c.pos >= $1`

// claimsFrom returns the stored claims at positions >= from, in no order.
func claimsFrom(ctx context.Context, pool *pgxpool.Pool, from uint64) ([]storedClaim, error) {
	if from > math.MaxInt64 {
		return nil, nil
	}
	rows, err := pool.Query(ctx, claimsFromSQL, int64(from))
	if err != nil {
		return nil, fmt.Errorf("claims from %d: %w", from, err)
	}
	out, err := collectStored(rows, nil)
	if err != nil {
		return nil, fmt.Errorf("claims from %d: %w", from, err)
	}
	return out, nil
}

func collectStored(rows pgx.Rows, dst []storedClaim) ([]storedClaim, error) {
	var (
		c             storedClaim
		pos, reachedP int64
	)
	_, err := pgx.ForEachRow(rows, []any{&c.treasure, &c.player, &c.points, &pos, &c.score, &reachedP}, func() error {
		c.pos, c.reachedPos = uint64(pos), uint64(reachedP)
		dst = append(dst, c)
		return nil
	})
	return dst, err
}
