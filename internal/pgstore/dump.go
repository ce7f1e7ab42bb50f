package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// AllClaims calls fn for every stored claim, in no particular order, from
// one consistent snapshot, streaming rows as they come. It stops at, and
// returns, the first error of fn. It is what `treasure replay --verify`
// compares with the claims rebuilt from the log.
func (s *Store) AllClaims(ctx context.Context, fn func(Claim) error) error {
	rows, err := s.pool.Query(ctx, `SELECT treasure_id, player, points, node, seq, pos FROM claims`)
	if err != nil {
		return fmt.Errorf("all claims: %w", err)
	}
	var (
		c              Claim
		node, seq, pos int64
	)
	_, err = pgx.ForEachRow(rows, []any{&c.Treasure, &c.Player, &c.Points, &node, &seq, &pos}, func() error {
		c.Node, c.Seq, c.Pos = uint32(node), uint64(seq), uint64(pos)
		return fn(c)
	})
	if err != nil {
		return fmt.Errorf("all claims: %w", err)
	}
	return nil
}
