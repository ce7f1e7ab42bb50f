package pgstore_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"treasure/internal/pgstore"
	"treasure/internal/testenv"
)

// The leaderboard semantics (ties, listing order, limits, counts, unknown
// and zero-score players) are checked by the suite shared with Redis in
// internal/redisstore (board_test.go). This file covers what only
// PostgreSQL does: migrations, ApplyClaims' results, Ranks, AllScores.

// newStore returns a Store over a fresh, migrated schema.
func newStore(tb testing.TB) (*pgstore.Store, *pgxpool.Pool) {
	tb.Helper()
	pool, _ := testenv.Postgres(tb)
	if err := pgstore.Migrate(tb.Context(), pool); err != nil {
		tb.Fatal(err)
	}
	return pgstore.New(pool), pool
}

func TestMigrateConcurrentlyAndAgainAppliesEachFileOnce(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Postgres(t)
	ctx := t.Context()
	// Four "processes" starting at once, each on its own connection.
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = pgstore.Migrate(ctx, pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
	}
	if err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatalf("second run: %v", err)
	}
	var versions []string
	rows, err := pool.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(versions) == 0 || versions[0] != "0001_scores.sql" || len(slices.Compact(slices.Clone(versions))) != len(versions) {
		t.Fatalf("schema_migrations = %v, want each file once starting with 0001_scores.sql", versions)
	}
	var boards int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM board`).Scan(&boards); err != nil {
		t.Fatal(err)
	}
	if boards != 1 {
		t.Fatalf("board has %d rows after concurrent migrations, want 1", boards)
	}
}

func TestMigrateRefusesAChangedMigration(t *testing.T) {
	t.Parallel()
	_, pool := newStore(t)
	if _, err := pool.Exec(t.Context(), `UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001_scores.sql'`); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Migrate(t.Context(), pool); err == nil {
		t.Fatal("Migrate accepted a migration whose checksum changed")
	}
}

func claim(treasure, player string, points int64, pos uint64) pgstore.Claim {
	return pgstore.Claim{Treasure: treasure, Player: player, Points: points, Node: 7, Seq: pos, Pos: pos}
}

func TestApplyClaimsReturnsOnlyChangedPlayersOnce(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	first := []pgstore.Claim{
		claim("t1", "bob", 5, 10),
		claim("t2", "ann", 3, 11),
		claim("t3", "bob", 2, 12),
		claim("t1", "bob", 5, 13), // the same treasure again in the batch
	}
	got, err := s.ApplyClaims(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	want := []pgstore.ScoreChange{sc("ann", 3, 11), sc("bob", 7, 12)}
	if !slices.Equal(got, want) {
		t.Fatalf("first batch: changes %v, want %v", got, want)
	}
	// The same batch again (a redelivery) changes nothing.
	got, err = s.ApplyClaims(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("redelivered batch: changes %v, want none", got)
	}
	// An overlapping batch counts only its new claims; a treasure already
	// claimed by bob does not move to cat.
	got, err = s.ApplyClaims(ctx, []pgstore.Claim{
		claim("t3", "bob", 2, 12),
		claim("t2", "cat", 3, 20),
		claim("t4", "ann", 4, 21),
	})
	if err != nil {
		t.Fatal(err)
	}
	want = []pgstore.ScoreChange{sc("ann", 7, 21)}
	if !slices.Equal(got, want) {
		t.Fatalf("overlapping batch: changes %v, want %v", got, want)
	}
	if _, found, err := s.Player(ctx, "cat"); err != nil || found {
		t.Fatalf("cat, who only sent an already claimed treasure: found=%v err=%v, want not found", found, err)
	}
}

func TestApplyClaimsKeepsLowestPositionOfADuplicateInBatch(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	got, err := s.ApplyClaims(t.Context(), []pgstore.Claim{
		claim("t1", "late", 9, 50),
		claim("t1", "early", 9, 40),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []pgstore.ScoreChange{sc("early", 9, 40)}; !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
}

func TestApplyClaimsOutOfOrderKeepsGreatestPosition(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	if _, err := s.ApplyClaims(ctx, []pgstore.Claim{claim("t2", "ann", 1, 30)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ApplyClaims(ctx, []pgstore.Claim{claim("t1", "ann", 1, 20)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []pgstore.ScoreChange{sc("ann", 2, 30)}; !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
}

func TestApplyClaimsRejectsBadBatchWholly(t *testing.T) {
	t.Parallel()
	bad := map[string]pgstore.Claim{
		"empty treasure": claim("", "ann", 1, 1),
		"long treasure":  claim(string(make([]byte, 65)), "ann", 1, 1),
		"empty player":   claim("t9", "", 1, 1),
		"zero points":    claim("t9", "ann", 0, 1),
		"negative":       claim("t9", "ann", -4, 1),
		"huge pos":       claim("t9", "ann", 1, math.MaxInt64+1),
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, _ := newStore(t)
			_, err := s.ApplyClaims(t.Context(), []pgstore.Claim{claim("t1", "bob", 5, 1), c})
			if !errors.Is(err, pgstore.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if _, found, err := s.Player(t.Context(), "bob"); err != nil || found {
				t.Fatalf("bob from the rejected batch: found=%v err=%v, want nothing written", found, err)
			}
		})
	}
}

func TestApplyClaimsConcurrentOverlappingBatchesCountOnce(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	// 4 writers apply the same 200 claims in different orders and chunkings.
	var claims []pgstore.Claim
	for i := range 200 {
		claims = append(claims, claim(fmt.Sprintf("t%03d", i), fmt.Sprintf("p%d", i%7), int64(i%5+1), uint64(i+1)))
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range 4 {
		wg.Go(func() {
			mine := slices.Clone(claims)
			rand.New(rand.NewPCG(uint64(w), 1)).Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
			for lo := 0; lo < len(mine); lo += 30 + w {
				if _, err := s.ApplyClaims(ctx, mine[lo:min(lo+30+w, len(mine))]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, c := range claims {
		want[c.Player] += c.Points
	}
	for p, score := range want {
		e, found, err := s.Player(ctx, p)
		if err != nil || !found || e.Score != score {
			t.Fatalf("%s: %+v found=%v err=%v, want score %d", p, e, found, err, score)
		}
	}
}

func TestSeePlayersKeepsScores(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	if _, err := s.ApplyClaims(ctx, []pgstore.Claim{claim("t1", "ann", 4, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SeePlayers(ctx, []string{"ann", "bob", "bob"}); err != nil {
		t.Fatal(err)
	}
	if e, _, err := s.Player(ctx, "ann"); err != nil || e.Score != 4 {
		t.Fatalf("ann after SeePlayers: %+v %v, want score 4", e, err)
	}
	if err := s.SeePlayers(ctx, []string{""}); !errors.Is(err, pgstore.ErrInvalid) {
		t.Fatalf("empty id: err = %v, want ErrInvalid", err)
	}
}

func TestRanksCountStrictlyHigherScores(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(3, 4))
	var claims []pgstore.Claim
	for i := range 300 {
		claims = append(claims, claim(fmt.Sprintf("t%d", i), fmt.Sprintf("p%d", r.IntN(80)), int64(r.IntN(4)+1), uint64(i+1)))
	}
	if _, err := s.ApplyClaims(ctx, claims); err != nil {
		t.Fatal(err)
	}
	if err := s.SeePlayers(ctx, []string{"idle"}); err != nil {
		t.Fatal(err)
	}
	var all []int64
	err := s.AllScores(ctx, func(c pgstore.ScoreChange) error {
		all = append(all, c.Score)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	asked := []int64{0, 1000, 3, 3, 1, 25, 7, 2, 1}
	asked = append(asked, all...)
	got, err := s.Ranks(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(asked) {
		t.Fatalf("%d ranks for %d scores", len(got), len(asked))
	}
	for i, x := range asked {
		want := int64(1)
		for _, y := range all {
			if y > x {
				want++
			}
		}
		if got[i] != want {
			t.Fatalf("rank of score %d = %d, want %d", x, got[i], want)
		}
	}
}

func TestAllScoresStreamsEveryPlayerAndStopsOnError(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := t.Context()
	if _, err := s.ApplyClaims(ctx, []pgstore.Claim{claim("t1", "ann", 4, 9), claim("t2", "bob", 1, 10)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SeePlayers(ctx, []string{"cat"}); err != nil {
		t.Fatal(err)
	}
	var got []pgstore.ScoreChange
	err := s.AllScores(ctx, func(c pgstore.ScoreChange) error {
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b pgstore.ScoreChange) int { return strings.Compare(a.Player, b.Player) })
	want := []pgstore.ScoreChange{sc("ann", 4, 9), sc("bob", 1, 10), sc("cat", 0, 0)}
	if !slices.Equal(got, want) {
		t.Fatalf("AllScores = %v, want %v", got, want)
	}
	stop := errors.New("stop")
	calls := 0
	err = s.AllScores(ctx, func(pgstore.ScoreChange) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("AllScores with a failing fn: err=%v after %d calls, want stop after 1", err, calls)
	}
}

func sc(player string, score int64, pos uint64) pgstore.ScoreChange {
	return pgstore.ScoreChange{Player: player, Score: score, ReachedPos: pos}
}
