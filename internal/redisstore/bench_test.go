package redisstore_test

// Benchmarks over a board of 100,000 scoring players (scores 1–1,000).
//
//	go test -run '^$' -bench . -benchtime 3s ./internal/redisstore/

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"treasure/internal/redisstore"
)

const benchPlayers = 100_000

func newBenchBoard(b *testing.B) (*redisstore.Store, []redisstore.ScoreChange) {
	b.Helper()
	rs := newRedis(b)
	r := rand.New(rand.NewPCG(1, 2))
	board := make([]redisstore.ScoreChange, benchPlayers)
	for i := range board {
		board[i] = sc("player-"+strconv.Itoa(i), int64(r.IntN(1000)+1), uint64(i+1))
	}
	err := rs.Rebuild(b.Context(), func(yield func(redisstore.ScoreChange) error) error {
		for _, c := range board {
			if err := yield(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return rs, board
}

// BenchmarkApply applies batches of 1,000 changes (random players, each a
// higher score than before, so every change moves a board member).
func BenchmarkApply(b *testing.B) {
	rs, board := newBenchBoard(b)
	ctx := b.Context()
	r := rand.New(rand.NewPCG(3, 4))
	pos := uint64(len(board))
	batch := make([]redisstore.ScoreChange, 1000)
	ops := 0
	for b.Loop() {
		for i := range batch {
			c := &board[r.IntN(len(board))]
			pos++
			c.Score += int64(r.IntN(50) + 1)
			c.ReachedPos = pos
			batch[i] = *c
		}
		if err := rs.Apply(ctx, batch); err != nil {
			b.Fatal(err)
		}
		ops += len(batch)
	}
	b.ReportMetric(float64(ops)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkLeaderboard(b *testing.B) {
	rs, _ := newBenchBoard(b)
	ctx := b.Context()
	for b.Loop() {
		top, n, err := rs.Leaderboard(ctx, 100)
		if err != nil || len(top) != 100 || n != benchPlayers {
			b.Fatalf("top %d players %d err %v", len(top), n, err)
		}
	}
}

func BenchmarkPlayer(b *testing.B) {
	rs, board := newBenchBoard(b)
	ctx := b.Context()
	r := rand.New(rand.NewPCG(5, 6))
	for b.Loop() {
		if _, found, err := rs.Player(ctx, board[r.IntN(len(board))].Player); err != nil || !found {
			b.Fatalf("found %v err %v", found, err)
		}
	}
}

// BenchmarkRebuild refills 100,000 players under temporary keys and swaps.
func BenchmarkRebuild(b *testing.B) {
	rs, board := newBenchBoard(b)
	ctx := b.Context()
	n := 0
	for b.Loop() {
		n += len(board)
		err := rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
			for _, c := range board {
				if err := yield(c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "players/s")
}
