package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
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

// walkers is a loadgen.Run in the background for the process tests:
// players walking while services are killed, frozen and restarted.
type walkers struct {
	accepted atomic.Uint64
	final    loadgen.Stats // set by Run's final report, read after finished
	err      error
	finished chan struct{}
	stop     context.CancelFunc
}

// startWalkers starts loadgen.Run with o (its ReportEvery, if zero,
// 100 ms); a cleanup stops it and waits for it before the processes
// stop, on an early failure.
func startWalkers(t *testing.T, o loadgen.Options) *walkers {
	t.Helper()
	if o.ReportEvery == 0 {
		o.ReportEvery = 100 * time.Millisecond
	}
	w := &walkers{finished: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	w.stop = stop
	t.Cleanup(func() {
		stop()
		<-w.finished
	})
	go func() {
		defer close(w.finished)
		w.err = loadgen.Run(ctx, o, func(s loadgen.Stats) {
			w.accepted.Store(s.TotalMoves)
			if s.Final {
				w.final = s // Run reports before it returns
			}
		})
	}()
	return w
}

// progress waits until n more moves have been accepted; the walkers
// ending first fails the test.
func (w *walkers) progress(t *testing.T, what string, n uint64) {
	t.Helper()
	base := w.accepted.Load()
	testenv.WaitUntil(t, 60*time.Second, what, func() bool {
		select {
		case <-w.finished:
			t.Fatalf("loadgen ended early: %v", w.err)
		default:
		}
		return w.accepted.Load() >= base+n
	})
}

// finish stops the walkers, waits for their drain and returns their
// final figures, having logged them and checked that every accepted
// move got exactly one proximity update with gap-free ids.
func (w *walkers) finish(t *testing.T) loadgen.Stats {
	t.Helper()
	w.stop()
	select {
	case <-w.finished:
		if w.err != nil {
			t.Fatal(w.err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("loadgen did not finish within 90 s of its stop")
	}
	f := w.final
	t.Logf("%d moves accepted, %d updates, %d claims, %d scores, %d reconnects, errors %v",
		f.TotalMoves, f.Updates, f.Claims, f.Scores, f.Reconnects, f.Errors)
	if f.Missing != 0 || f.Gaps != 0 || f.Unmatched != 0 || f.Updates != f.TotalMoves {
		t.Fatalf("%d moves accepted, %d proximity updates: %d missing, %d unmatched, %d id gaps, %d duplicate ids",
			f.TotalMoves, f.Updates, f.Missing, f.Unmatched, f.Gaps, f.Duplicates)
	}
	return f
}

// replicas is what replicasCaughtUp reads of a cluster: testenv's
// embedded Cluster and its ProcCluster.
type replicas interface {
	Len() int
	LocalStream(i int, stream string) (server.StreamState, bool)
}

// replicasCaughtUp waits until every node's own replica of stream holds
// what the stream held when it was called: restarted nodes caught up.
func replicasCaughtUp(t *testing.T, js jetstream.JetStream, c replicas, stream string) {
	t.Helper()
	first, last, msgs := streamFirst(t, js, stream)
	for i := range c.Len() {
		// A minute: a replica started again catches up while the
		// cluster still works through the load's backlog (one run on a
		// loaded box missed 30 s).
		testenv.WaitFor(t, time.Minute, func() string {
			st, ok := c.LocalStream(i, stream)
			if !ok {
				return fmt.Sprintf("node %d's replica of %s unreadable", i, stream)
			}
			if st.LastSeq < last || st.Msgs < msgs {
				return fmt.Sprintf("node %d's replica of %s: last seq %d, %d messages (first %d, %d deleted); the leader's: last %d, %d messages (first %d)",
					i, stream, st.LastSeq, st.Msgs, st.FirstSeq, st.NumDeleted, last, msgs, first)
			}
			return ""
		})
	}
}

// scoresMatchClaims waits (up to within) until PostgreSQL's scores add up
// to the points of the treasures claimed in out: the ranker counted every
// claim once.
func scoresMatchClaims(t *testing.T, pool *pgxpool.Pool, out outLog, points map[string]int64, within time.Duration) {
	t.Helper()
	var want int64
	for id := range out.claims {
		want += points[id]
	}
	var got int64
	testenv.WaitUntil(t, within, fmt.Sprintf("PostgreSQL scores adding up to the %d points claimed", want), func() bool {
		err := pool.QueryRow(context.Background(), "SELECT coalesce(sum(score), 0) FROM players").Scan(&got)
		return err == nil && got == want
	})
}
