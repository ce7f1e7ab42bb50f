// Package e2e runs treasure end to end: the four services over real NATS
// JetStream, Redis and PostgreSQL, driven by real WebSocket clients, both in
// one process (internal/stack, as `treasure dev` runs them) and as four
// separate processes of the treasure binary.
package e2e

import (
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/stack"
	"treasure/internal/stack/stacktest"
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
func startInProcessConf(t *testing.T, partitions int, before func(topo natsjs.Topology, js jetstream.JetStream), conf func(*stacktest.Options)) inproc {
	t.Helper()
	// The tests poll the leaderboard every 20 ms: stacktest turns its
	// per-address rate limit off (services/push tests it).
	o := stacktest.Options{Partitions: partitions, Before: before}
	if conf != nil {
		conf(&o)
	}
	p, _ := startStack(t, o)
	return p
}

func TestEndToEndInOneProcess(t *testing.T) {
	t.Parallel()
	p := startInProcess(t, 2)
	scenario(t, p.d, "alice")
}
