package pgstore

// Benchmarks over a board of 100,000 scoring players (each seeded with one
// claim of 1–1,000 points, then VACUUM ANALYZE as autovacuum would).
//
//	go test -run '^$' -bench . -benchtime 3s ./internal/pgstore/
//
// ApplyClaims reports rows/s (claims per second); the copy variant is the
// alternative the brief asked to weigh: COPY into a temporary table, then the
// same upsert reading from it.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"treasure/internal/testenv"
)

const benchPlayers = 100_000

type benchBoard struct {
	s       *Store
	pool    *pgxpool.Pool
	players []string
	next    uint64 // next treasure number and position
	r       *rand.Rand
}

func newBenchBoard(b *testing.B) *benchBoard {
	b.Helper()
	ctx := b.Context()
	pool, _ := testenv.Postgres(b)
	if err := Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	bb := &benchBoard{s: New(pool), pool: pool, r: rand.New(rand.NewPCG(1, 2))}
	for i := range benchPlayers {
		bb.players = append(bb.players, "player-"+strconv.Itoa(i))
	}
	batch := make([]Claim, 0, 10_000)
	for _, p := range bb.players {
		batch = append(batch, bb.claim(p, int64(bb.r.IntN(1000)+1)))
		if len(batch) == cap(batch) {
			if _, err := bb.s.ApplyClaims(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE players`); err != nil {
		b.Fatal(err)
	}
	return bb
}

func (bb *benchBoard) claim(player string, points int64) Claim {
	bb.next++
	return Claim{Treasure: "t" + strconv.FormatUint(bb.next, 10), Player: player, Points: points, Node: 1, Seq: bb.next, Pos: bb.next}
}

// batch returns n new claims by random players.
func (bb *benchBoard) batch(dst []Claim, n int) []Claim {
	dst = dst[:0]
	for range n {
		dst = append(dst, bb.claim(bb.players[bb.r.IntN(len(bb.players))], int64(bb.r.IntN(50)+1)))
	}
	return dst
}

func BenchmarkApplyClaims(b *testing.B) {
	for _, size := range []int{1000, 5000} {
		for _, v := range []struct {
			name  string
			apply func(*benchBoard, context.Context, []Claim) ([]ScoreChange, error)
		}{
			{"unnest", func(bb *benchBoard, ctx context.Context, c []Claim) ([]ScoreChange, error) {
				return bb.s.ApplyClaims(ctx, c)
			}},
			{"copy", applyCopy},
		} {
			b.Run(fmt.Sprintf("%s/batch=%d", v.name, size), func(b *testing.B) {
				bb := newBenchBoard(b)
				ctx := b.Context()
				var claims []Claim
				rows := 0
				for b.Loop() {
					claims = bb.batch(claims, size)
					if _, err := v.apply(bb, ctx, claims); err != nil {
						b.Fatal(err)
					}
					rows += size
				}
				b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}

// BenchmarkApplyClaimsWithRanks is ApplyClaims followed by Ranks of the
// changed players: the ranker's path when Redis is down.
func BenchmarkApplyClaimsWithRanks(b *testing.B) {
	bb := newBenchBoard(b)
	ctx := b.Context()
	var claims []Claim
	var scores []int64
	rows := 0
	for b.Loop() {
		claims = bb.batch(claims, 1000)
		changes, err := bb.s.ApplyClaims(ctx, claims)
		if err != nil {
			b.Fatal(err)
		}
		scores = scores[:0]
		for _, c := range changes {
			scores = append(scores, c.Score)
		}
		if _, err := bb.s.Ranks(ctx, scores); err != nil {
			b.Fatal(err)
		}
		rows += len(claims)
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

// applyCopy is ApplyClaims with COPY into a temporary table instead of
// unnest: five round trips (begin, create, copy, upsert, commit).
func applyCopy(bb *benchBoard, ctx context.Context, batch []Claim) ([]ScoreChange, error) {
	const from = `FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
		AS u(treasure_id, player, points, node, seq, pos)`
	if !strings.Contains(applySQL, from) {
		return nil, fmt.Errorf("applySQL changed: update applyCopy")
	}
	upsert := strings.Replace(applySQL, from, "FROM claims_in", 1)
	var changes []ScoreChange
	err := pgx.BeginFunc(ctx, bb.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS claims_in (
			treasure_id text COLLATE "C", player text COLLATE "C",
			points bigint, node bigint, seq bigint, pos bigint) ON COMMIT DELETE ROWS`); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"claims_in"},
			[]string{"treasure_id", "player", "points", "node", "seq", "pos"},
			pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
				c := batch[i]
				return []any{c.Treasure, c.Player, c.Points, int64(c.Node), int64(c.Seq), int64(c.Pos)}, nil
			}))
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, upsert)
		if err != nil {
			return err
		}
		changes, err = collectChanges(rows, nil)
		return err
	})
	return changes, err
}

func BenchmarkRanks(b *testing.B) {
	bb := newBenchBoard(b)
	ctx := b.Context()
	scores := make([]int64, 1000)
	for i := range scores {
		scores[i] = int64(bb.r.IntN(1000) + 1)
	}
	for b.Loop() {
		if _, err := bb.s.Ranks(ctx, scores); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeaderboard(b *testing.B) {
	bb := newBenchBoard(b)
	ctx := b.Context()
	for b.Loop() {
		top, n, err := bb.s.Leaderboard(ctx, 100)
		if err != nil || len(top) != 100 || n != benchPlayers {
			b.Fatalf("top %d players %d err %v", len(top), n, err)
		}
	}
}

// BenchmarkPlayer reads random players: the rank's count scans the index
// over the players above, half the board on average.
func BenchmarkPlayer(b *testing.B) {
	bb := newBenchBoard(b)
	ctx := b.Context()
	for b.Loop() {
		if _, found, err := bb.s.Player(ctx, bb.players[bb.r.IntN(len(bb.players))]); err != nil || !found {
			b.Fatalf("found %v err %v", found, err)
		}
	}
}
