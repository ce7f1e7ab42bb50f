// Package e2e runs treasure end to end: the four services over real NATS
// JetStream, Redis and PostgreSQL, driven by real WebSocket clients, both in
// one process (internal/stack, as `treasure dev` runs them) and as four
// separate processes of the treasure binary.
package e2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/stack"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

const secret = "e2e-secret"

var (
	amsOnce sync.Once
	ams     *graph.Graph
	amsErr  error
)

func amsterdam(tb testing.TB) *graph.Graph {
	tb.Helper()
	p := testgraph.Path(tb, "amsterdam.gr.gz")
	amsOnce.Do(func() { ams, amsErr = graph.LoadDIMACS(p) })
	if amsErr != nil {
		tb.Fatal(amsErr)
	}
	return ams
}

var small = natsjs.Limits{MaxBytes: 64 << 20, MaxMsgs: 200_000}

type inproc struct {
	js     jetstream.JetStream
	pool   *pgxpool.Pool
	st     *stack.Stack
	topo   natsjs.Topology
	prefix string // Redis
	d      deployment
}

// startInProcess runs the four services in this process on fresh streams,
// Redis keys and a PostgreSQL schema, stopped on cleanup.
func startInProcess(t *testing.T, partitions int) inproc {
	t.Helper()
	return startInProcessWith(t, partitions, nil)
}

// startInProcessWith calls before (when not nil) once the streams exist and
// before any service starts: a replay fills the log there.
func startInProcessWith(t *testing.T, partitions int, before func(topo natsjs.Topology, js jetstream.JetStream)) inproc {
	t.Helper()
	return startInProcessConf(t, partitions, before, nil)
}

// startInProcessConf is startInProcessWith that lets conf (when not nil)
// change the stack's options before it starts.
func startInProcessConf(t *testing.T, partitions int, before func(topo natsjs.Topology, js jetstream.JetStream), conf func(*stack.Options)) inproc {
	t.Helper()
	g := amsterdam(t)
	part, err := graph.Partition(g, partitions)
	if err != nil {
		t.Fatal(err)
	}
	nc, js, prefix := testenv.JetStream(t)
	rdb, rprefix := testenv.Redis(t)
	pool, _ := testenv.Postgres(t)
	topo := natsjs.Topology{Prefix: prefix, Partitions: partitions, In: small, Out: small, Upd: small, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(topo, js)
	}
	so := stack.Options{Graph: g, Part: part, Radius: 2000, Topology: topo, NC: nc, JS: js,
		Redis: rdb, RedisPrefix: rprefix, Postgres: pool, JWTSecret: secret,
		// The tests poll the leaderboard every 20 ms: no per-address rate
		// limit (services/push tests it).
		Limits: platform.Limits{LeaderboardRate: platform.Off}}
	if conf != nil {
		conf(&so)
	}
	st, err := stack.New(so)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("stack: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30 s")
		}
	})
	testenv.WaitUntil(t, 30*time.Second, "stack ready", func() bool { return st.Ready() == nil })
	d := deployment{
		ingest: "http://" + st.IngestAddr().String(), push: "http://" + st.PushAddr().String(),
		secret: secret, g: g, radius: 2000,
		score: func(player string) int64 {
			var s int64 = -1
			_ = pool.QueryRow(context.Background(), "SELECT score FROM players WHERE player = $1", player).Scan(&s)
			return s
		},
	}
	return inproc{st: st, topo: topo, prefix: rprefix, d: d, js: js, pool: pool}
}

func TestEndToEndInOneProcess(t *testing.T) {
	t.Parallel()
	p := startInProcess(t, 2)
	scenario(t, p.d, "alice")
}
