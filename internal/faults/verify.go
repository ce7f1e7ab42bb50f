package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"treasure/internal/graph"
	"treasure/internal/history"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
)

// Live is a pipeline's log and stores, for LogAgrees.
type Live struct {
	Graph    *graph.Graph
	Part     []uint32 // graph.Partition(Graph, Topology.Partitions)
	Radius   uint32
	Topology natsjs.Topology
	JS       jetstream.JetStream
	// Postgres is a pool on the ranker's schema; Redis and RedisPrefix
	// where it keeps the live board (nil: not checked).
	Postgres    *pgxpool.Pool
	Redis       redis.UniversalClient
	RedisPrefix string
}

// LogAgrees is the fault tests' "the final leaderboard equals a fault-free
// replay": it rebuilds the game from the IN stream alone (internal/history,
// the rules of the proximity workers and the ranker, as `treasure replay
// --verify` does) and compares every claim, score change, score, rank and
// leaderboard line with what the workers published on OUT and what
// PostgreSQL and Redis hold. The pipeline must be quiet (load stopped);
// LogAgrees polls until the stores agree — the ranker may still be
// catching up — and fails the test with the differences when they still
// differ after wait. It returns the last report.
func LogAgrees(tb testing.TB, l Live, wait time.Duration) *history.Report {
	tb.Helper()
	deadline := time.Now().Add(wait)
	for {
		rep, err := verifyOnce(l)
		if err == nil && rep.OK() {
			return rep
		}
		if time.Now().After(deadline) {
			if err != nil {
				tb.Fatalf("verify the stores against the log: %v", err)
			}
			var b strings.Builder
			for i, d := range rep.Differences {
				if i == 30 {
					fmt.Fprintf(&b, "  … and %d more\n", len(rep.Differences)-i)
					break
				}
				fmt.Fprintf(&b, "  %s\n", d)
			}
			tb.Fatalf("the live stores differ from a replay of the log in %d places (%d claims, %d players, checked %v):\n%s",
				len(rep.Differences), rep.Claims, rep.Players, rep.Checked, b.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func verifyOnce(l Live) (*history.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := history.New(history.Options{Graph: l.Graph, Part: l.Part, Topology: l.Topology, Radius: l.Radius})
	if err != nil {
		return nil, err
	}
	if _, err := history.ReadIn(ctx, nil, l.JS, l.Topology, history.Cutoff{}, nil, r); err != nil {
		return nil, err
	}
	out, err := history.ReadOut(ctx, nil, l.JS, l.Topology, history.ClaimMoves(r), nil)
	if err != nil {
		return nil, err
	}
	var st history.Stores
	if l.Postgres != nil {
		st.Postgres = pgstore.New(l.Postgres)
	}
	if l.Redis != nil {
		st.Redis = redisstore.New(l.Redis, l.RedisPrefix)
	}
	return history.Verify(ctx, r, out, st)
}
