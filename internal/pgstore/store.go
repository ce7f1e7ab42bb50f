// Package pgstore is the durable score store in PostgreSQL: claims and
// per-player scores written in one statement per batch, idempotently, and the
// leaderboard read back from PostgreSQL alone (the fallback when Redis is
// down). The tables are defined by schemas/sql and created by Migrate.
//
// Semantics (SPEC "Game semantics"): a player's score is the sum of the points
// of their claims; rank = 1 + the number of players with a strictly higher
// score; equal scores share a rank and are listed by who reached that score
// first, that is by the log position (Claim.Pos) of the claim that brought the
// player to it, then by player id in byte order. Only players with a score
// (> 0) are listed and counted by Leaderboard; a seen player without claims
// has score 0 and rank 1 + that count.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"treasure/internal/game"
)

// ErrInvalid is wrapped by the errors returned for input that can never be
// stored (empty ids, points <= 0, positions beyond int64). Nothing of a batch
// holding such input is written.
var ErrInvalid = errors.New("invalid input")

// MaxID is the longest player or treasure id accepted.
const MaxID = 64

// Claim is one treasure claimed by a player, as the log records it.
type Claim struct {
	Treasure string // the treasure id; a treasure counts at most once
	Player   string
	Points   int64  // > 0
	Node     uint32 // the node the treasure was on
	Seq      uint64 // the seq of the move that claimed it (<= math.MaxInt64)
	// Pos is the claim's position in the log, unique per claim and
	// increasing in log order (for example the JetStream sequence of the
	// claim event times a fan-out bound plus the claim's index in it); it
	// orders ties on the leaderboard deterministically under replay.
	// At most math.MaxInt64.
	Pos uint64
}

// ScoreChange is a player's score after a change, in absolute terms:
// applying the same ScoreChange twice, or an older one after it, changes
// nothing (see redisstore.Store.Apply). AllScores streams the same shape.
type ScoreChange struct {
	Player     string
	Score      int64
	ReachedPos uint64 // the Pos of the claim that brought the player to Score; 0 without claims
}

// Store reads and writes scores in the PostgreSQL schema the pool's
// connections use. It is safe for concurrent use, also by several processes
// at once: every write is one transaction, and concurrent batches holding
// the same treasure count it once. It does not own the pool.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store over pool; Migrate must have run on the same schema.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// applySQL inserts a batch of claims and adds the newly inserted ones to the
// players' scores, in one statement (so one transaction, one round trip):
//
//   - input: the batch, one row per treasure (the lowest Pos wins a treasure
//     listed twice in the batch), in treasure order so that concurrent batches
//     lock claims rows in the same order;
//   - inserted: the claims that were new; a treasure already stored, by an
//     earlier batch or a concurrent one, conflicts and yields nothing;
//   - gained: per player, the points of their new claims and the greatest
//     position among them, in player order (lock order again);
//   - upserted: the players' new scores. reached_pos = greatest(old, new)
//     keeps the answer right even if batches are applied out of log order;
//   - newly/board: players whose score was 0 before (new score = gained)
//     join the count of scoring players, in the same transaction.
//
// Data-modifying CTEs all run to completion whether or not they are read.
const applySQL = `
WITH input AS (
	SELECT DISTINCT ON (treasure_id) treasure_id, player, points, node, seq, pos
	FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
		AS u(treasure_id, player, points, node, seq, pos)
	ORDER BY treasure_id, pos
), inserted AS (
	INSERT INTO claims (treasure_id, player, points, node, seq, pos)
	SELECT treasure_id, player, points, node, seq, pos FROM input
	ON CONFLICT (treasure_id) DO NOTHING
	RETURNING player, points, pos
), gained AS (
	SELECT player, sum(points)::bigint AS points, max(pos) AS pos
	FROM inserted GROUP BY player ORDER BY player
), upserted AS (
	INSERT INTO players AS p (player, score, reached_pos)
	SELECT player, points, pos FROM gained
	ON CONFLICT (player) DO UPDATE
		SET score = p.score + excluded.score,
		    reached_pos = greatest(p.reached_pos, excluded.reached_pos)
	RETURNING p.player, p.score, p.reached_pos
), newly AS (
	SELECT count(*) AS n FROM upserted u JOIN gained g USING (player) WHERE u.score = g.points
), counted AS (
	UPDATE board SET scoring = scoring + newly.n FROM newly WHERE board.id AND newly.n > 0
)
SELECT player, score, reached_pos FROM upserted ORDER BY player`

// ApplyClaims stores a batch of claims and returns the new scores of the
// players whose score changed, in player order (byte order). The batch is one
// statement, so one transaction: all of it is stored or none. A treasure
// already stored (a redelivery, an overlapping batch) or listed twice in the
// batch counts once: the first stored wins, and within a batch the claim with
// the lowest Pos. Applying the same batch again returns no changes.
//
// Every claim is validated first; a bad one fails the whole batch with an
// error wrapping ErrInvalid and nothing is written. Ranks are not computed
// here (Redis answers them in O(log n)); Ranks computes them from
// PostgreSQL for a set of scores in one query when Redis is unavailable.
func (s *Store) ApplyClaims(ctx context.Context, batch []Claim) ([]ScoreChange, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	var (
		treasures = make([]string, len(batch))
		players   = make([]string, len(batch))
		points    = make([]int64, len(batch))
		nodes     = make([]int64, len(batch))
		seqs      = make([]int64, len(batch))
		poss      = make([]int64, len(batch))
	)
	for i, c := range batch {
		if err := checkClaim(c); err != nil {
			return nil, fmt.Errorf("apply claims: claim %d: %w", i, err)
		}
		treasures[i], players[i], points[i] = c.Treasure, c.Player, c.Points
		nodes[i], seqs[i], poss[i] = int64(c.Node), int64(c.Seq), int64(c.Pos)
	}
	rows, err := s.pool.Query(ctx, applySQL, treasures, players, points, nodes, seqs, poss)
	if err != nil {
		return nil, fmt.Errorf("apply claims: %w", err)
	}
	changes, err := collectChanges(rows, nil)
	if err != nil {
		return nil, fmt.Errorf("apply claims: %w", err)
	}
	return changes, nil
}

func checkClaim(c Claim) error {
	switch {
	case c.Treasure == "" || len(c.Treasure) > MaxID:
		return fmt.Errorf("%w: treasure id %q must have 1 to %d bytes", ErrInvalid, c.Treasure, MaxID)
	case c.Player == "" || len(c.Player) > MaxID:
		return fmt.Errorf("%w: player id %q must have 1 to %d bytes", ErrInvalid, c.Player, MaxID)
	case c.Points <= 0:
		return fmt.Errorf("%w: treasure %s: points %d must be > 0", ErrInvalid, c.Treasure, c.Points)
	case c.Seq > math.MaxInt64 || c.Pos > math.MaxInt64:
		return fmt.Errorf("%w: treasure %s: seq %d or pos %d beyond int64", ErrInvalid, c.Treasure, c.Seq, c.Pos)
	}
	return nil
}

// collectChanges reads (player, score, reached_pos) rows, appending to dst.
func collectChanges(rows pgx.Rows, dst []ScoreChange) ([]ScoreChange, error) {
	var c ScoreChange
	var pos int64
	_, err := pgx.ForEachRow(rows, []any{&c.Player, &c.Score, &pos}, func() error {
		c.ReachedPos = uint64(pos)
		dst = append(dst, c)
		return nil
	})
	return dst, err
}

// SeePlayers records players as seen (they have moved): a seen player
// without claims has score 0 and is found by Player. Players already known
// are left as they are. One statement, whatever the number of players.
func (s *Store) SeePlayers(ctx context.Context, players []string) error {
	if len(players) == 0 {
		return nil
	}
	for _, p := range players {
		if p == "" || len(p) > MaxID {
			return fmt.Errorf("see players: %w: player id %q must have 1 to %d bytes", ErrInvalid, p, MaxID)
		}
	}
	// Sorted and distinct: concurrent calls lock keys in the same order.
	_, err := s.pool.Exec(ctx, `
		INSERT INTO players (player)
		SELECT DISTINCT p FROM unnest($1::text[]) AS u(p) ORDER BY p
		ON CONFLICT (player) DO NOTHING`, players)
	if err != nil {
		return fmt.Errorf("see players: %w", err)
	}
	return nil
}

// leaderboardSQL reads the top $1 players and the number of scoring players
// in one statement, hence from one snapshot. The board row is always there,
// so an empty leaderboard still yields one row (with a NULL player).
const leaderboardSQL = `
SELECT b.scoring, t.player, t.score
FROM board b LEFT JOIN LATERAL (
	SELECT player, score, reached_pos FROM players
	WHERE score > 0
	ORDER BY score DESC, reached_pos ASC, player ASC
	LIMIT $1
) t ON true
ORDER BY t.score DESC, t.reached_pos ASC, t.player ASC`

// Leaderboard returns the first limit players with a score (> 0) in
// leaderboard order — score descending, then who reached that score first —
// with their ranks, and the number of players with a score. It reads the
// players_board index: the cost grows with limit, not with the number of
// players. limit must be >= 0.
func (s *Store) Leaderboard(ctx context.Context, limit int) ([]game.Entry, int64, error) {
	if limit < 0 {
		return nil, 0, fmt.Errorf("leaderboard: %w: limit %d < 0", ErrInvalid, limit)
	}
	rows, err := s.pool.Query(ctx, leaderboardSQL, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("leaderboard: %w", err)
	}
	var (
		top     = make([]game.Entry, 0, min(limit, 1024))
		scoring int64
		player  *string
		score   *int64
	)
	_, err = pgx.ForEachRow(rows, []any{&scoring, &player, &score}, func() error {
		if player != nil {
			top = append(top, game.Entry{Player: *player, Score: *score})
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("leaderboard: %w", err)
	}
	game.RankTop(top)
	return top, scoring, nil
}

// playerSQL reads one player's score and the number of players with a
// strictly higher score in one statement. "score > 0 AND score > x" lets the
// planner use the partial players_board index (an index-only scan over the
// players above x); for a score of 0 the count is the board's counter.
const playerSQL = `
SELECT p.score,
	CASE WHEN p.score = 0 THEN (SELECT scoring FROM board)
	ELSE (SELECT count(*) FROM players q WHERE q.score > 0 AND q.score > p.score) END
FROM players p WHERE p.player = $1`

// Player returns a player's score and rank. found is false for a player
// never seen (neither SeePlayers nor a claim). The rank costs an index scan
// over the players ranked above, so it is fastest near the top.
func (s *Store) Player(ctx context.Context, id string) (e game.Entry, found bool, err error) {
	var above int64
	err = s.pool.QueryRow(ctx, playerSQL, id).Scan(&e.Score, &above)
	if errors.Is(err, pgx.ErrNoRows) {
		return game.Entry{}, false, nil
	}
	if err != nil {
		return game.Entry{}, false, fmt.Errorf("player: %w", err)
	}
	e.Player, e.Rank = id, above+1
	return e, true, nil
}

// ranksSQL counts, for each score in $1, the players with a strictly higher
// score, from one pass over the index: a histogram of the scores above the
// lowest score asked for, merged with the scores asked for and summed from
// the top. An asked score sorts before an equal histogram score, so its
// running sum counts only strictly higher scores.
const ranksSQL = `
WITH asked AS (
	SELECT s, ord FROM unnest($1::bigint[]) WITH ORDINALITY AS u(s, ord)
), hist AS (
	SELECT score, count(*) AS n FROM players
	WHERE score > 0 AND score > (SELECT min(s) FROM asked)
	GROUP BY score
), merged AS (
	SELECT score AS v, n, 0::bigint AS ord FROM hist
	UNION ALL
	SELECT s, 0, ord FROM asked
), summed AS (
	SELECT ord, (sum(n) OVER (ORDER BY v DESC, ord DESC ROWS UNBOUNDED PRECEDING))::bigint AS above FROM merged
)
SELECT above FROM summed WHERE ord > 0 ORDER BY ord`

// Ranks returns, for each score, 1 + the number of players with a strictly
// higher score, in one query whose cost is one index-only scan over the
// players scoring above the lowest score asked for (plus a lookup per
// score). It is meant for the ranker when Redis is unavailable; with Redis
// up, ZCOUNT answers each rank in O(log n).
func (s *Store) Ranks(ctx context.Context, scores []int64) ([]int64, error) {
	if len(scores) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, ranksSQL, scores)
	if err != nil {
		return nil, fmt.Errorf("ranks: %w", err)
	}
	ranks := make([]int64, 0, len(scores))
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&n}, func() error {
		ranks = append(ranks, n+1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ranks: %w", err)
	}
	return ranks, nil
}

// AllScores calls fn for every known player (seen ones with score 0 too), in
// no particular order, from one consistent snapshot, streaming rows as they
// come: memory does not grow with the number of players. It stops at, and
// returns, the first error of fn. It is the source for rebuilding Redis.
func (s *Store) AllScores(ctx context.Context, fn func(ScoreChange) error) error {
	rows, err := s.pool.Query(ctx, `SELECT player, score, reached_pos FROM players`)
	if err != nil {
		return fmt.Errorf("all scores: %w", err)
	}
	var (
		c   ScoreChange
		pos int64
	)
	_, err = pgx.ForEachRow(rows, []any{&c.Player, &c.Score, &pos}, func() error {
		c.ReachedPos = uint64(pos)
		return fn(c)
	})
	if err != nil {
		return fmt.Errorf("all scores: %w", err)
	}
	return nil
}

// HeldClaim is a stored claim — the one that counts for its treasure —
// with its player's current score, as the ranker needs it to rank the
// claims it has just stored.
type HeldClaim struct {
	Treasure   string
	Player     string
	Points     int64
	Pos        uint64
	Score      int64  // the player's current score
	ReachedPos uint64 // the position that brought the player to Score
}

// heldClaimsSQL returns the stored claim of each treasure asked for, with
// its player's current score: primary-key lookups, one round trip.
const heldClaimsSQL = `
SELECT c.treasure_id, c.player, c.points, c.pos, p.score, p.reached_pos
FROM claims c JOIN players p ON p.player = c.player
WHERE c.treasure_id = ANY($1::text[])`

// HeldClaims returns the stored claim of each of treasures that has one,
// in no order: which claim counts for it (the first stored) and its
// player's current score.
func (s *Store) HeldClaims(ctx context.Context, treasures []string) ([]HeldClaim, error) {
	rows, err := s.pool.Query(ctx, heldClaimsSQL, treasures)
	if err != nil {
		return nil, fmt.Errorf("held claims: %w", err)
	}
	out, err := collectHeld(rows, make([]HeldClaim, 0, len(treasures)))
	if err != nil {
		return nil, fmt.Errorf("held claims: %w", err)
	}
	return out, nil
}

// claimsFromSQL returns every stored claim at a log position at or after
// $1 with its player's current score. It scans the claims table (there is
// no index on pos).
const claimsFromSQL = `
SELECT c.treasure_id, c.player, c.points, c.pos, p.score, p.reached_pos
FROM claims c JOIN players p ON p.player = c.player
WHERE c.pos >= $1`

// ClaimsFrom returns the stored claims at log positions >= from, in no
// order, each with its player's current score. It scans the claims table:
// the ranker calls it at start and after a failed batch only.
func (s *Store) ClaimsFrom(ctx context.Context, from uint64) ([]HeldClaim, error) {
	if from > math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, claimsFromSQL, int64(from))
	if err != nil {
		return nil, fmt.Errorf("claims from %d: %w", from, err)
	}
	out, err := collectHeld(rows, nil)
	if err != nil {
		return nil, fmt.Errorf("claims from %d: %w", from, err)
	}
	return out, nil
}

// collectHeld reads (treasure, player, points, pos, score, reached_pos)
// rows, appending to dst.
func collectHeld(rows pgx.Rows, dst []HeldClaim) ([]HeldClaim, error) {
	var (
		c             HeldClaim
		pos, reachedP int64
	)
	_, err := pgx.ForEachRow(rows, []any{&c.Treasure, &c.Player, &c.Points, &pos, &c.Score, &reachedP}, func() error {
		c.Pos, c.ReachedPos = uint64(pos), uint64(reachedP)
		dst = append(dst, c)
		return nil
	})
	return dst, err
}
