package e2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/loadgen"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
)

// startStack runs the four services in this process through
// internal/stack/stacktest (fresh streams, Redis keys and PostgreSQL
// schema, all stopped and removed on cleanup) and returns the pipeline
// and its deployment: what startInProcess and startPipelineOn share.
func startStack(t *testing.T, o stacktest.Options) (inproc, stacktest.Pipeline) {
	t.Helper()
	o.Graph, o.Secret = amsterdam(t), secret
	sp := stacktest.Start(t, o)
	pool := sp.Postgres
	d := deployment{
		ingest: "http://" + sp.Stack.IngestAddr().String(), push: "http://" + sp.Stack.PushAddr().String(),
		secret: secret, g: o.Graph, radius: 2000,
		score: func(player string) int64 {
			var s int64 = -1
			_ = pool.QueryRow(context.Background(), "SELECT score FROM players WHERE player = $1", player).Scan(&s)
			return s
		},
	}
	return inproc{st: sp.Stack, topo: sp.Topology, prefix: sp.RedisPrefix, d: d, js: sp.JS, pool: pool}, sp
}

// runUntilCleanup runs run in the background until the returned stop (or
// the test's cleanup, whichever comes first) cancels its context; stop
// waits for it and reports an error other than the cancellation, or that
// it did not return within 30 s, naming it what.
func runUntilCleanup(t *testing.T, what string, run func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("%s: %v", what, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30 s", what)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// connectJS connects to the NATS server at url (closed on cleanup) and
// returns the connection and a JetStream context on it.
func connectJS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := testenv.ConnectNATS(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// loadDone is what an open-loop run started by runLoad ended with.
type loadDone struct {
	r   *loadgen.Result
	err error
}

// runLoad starts an open-loop run of the load generator in the background
// and returns where its end is delivered.
func runLoad(ctx context.Context, o loadgen.OpenOptions) <-chan loadDone {
	lg := make(chan loadDone, 1)
	go func() {
		r, err := loadgen.RunOpen(ctx, o, nil)
		lg <- loadDone{r, err}
	}()
	return lg
}
