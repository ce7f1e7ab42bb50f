package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testgraph"

	"treasure/internal/testenv"
)

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

// envDuration reads a duration from the environment (a test's knob, for
// the longer runs of make faults-long), def when unset.
func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration like 30s", name, v)
	}
	return d
}

// dropTreasures drops a treasure on every every-th node of g (points 1–7)
// through the admin API and returns their points by id.
func dropTreasures(t *testing.T, sp stacktest.Pipeline, g *graph.Graph, every int) map[string]int64 {
	t.Helper()
	points := map[string]int64{}
	var b strings.Builder
	b.WriteString(`{"treasures":[`)
	for v := 0; v < g.NumNodes(); v += every {
		id := fmt.Sprintf("k%d", v)
		points[id] = int64(1 + v%7)
		if len(points) > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%q,"node":%d,"points":%d}`, id, graph.ID(uint32(v)), points[id])
	}
	b.WriteString(`]}`)
	adminTok, _ := auth.Sign(secret, "admin", "admin", time.Hour)
	req, _ := http.NewRequest(http.MethodPost, "http://"+sp.Stack.IngestAddr().String()+"/v1/admin/drops", strings.NewReader(b.String()))
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("drop: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("drop of %d treasures: %s", len(points), resp.Status)
	}
	return points
}

// load is a closed-loop load generator (loadgen.Run) running against a
// pipeline until stopped: its players reconnect and resend as SPEC says
// (unavailable: the same move after retry_after_ms), so every move it
// counts as accepted must get its proximity update.
type load struct {
	accepted atomic.Uint64
	errs     atomic.Pointer[map[string]uint64]
	final    loadgen.Stats
	err      error
	done     chan struct{}
	stop     context.CancelFunc
}

func startLoad(t *testing.T, o loadgen.Options) *load {
	t.Helper()
	l := &load{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	t.Cleanup(func() { // on an early failure: before the stack stops
		cancel()
		<-l.done
	})
	if o.ReportEvery == 0 {
		o.ReportEvery = 100 * time.Millisecond
	}
	if o.Drain == 0 {
		o.Drain = 45 * time.Second
	}
	o.Secret = secret
	go func() {
		defer close(l.done)
		l.err = loadgen.Run(ctx, o, func(s loadgen.Stats) {
			l.accepted.Store(s.TotalMoves)
			e := s.Errors
			l.errs.Store(&e)
			if s.Final {
				l.final = s // read after done: Run reports before it returns
			}
		})
	}()
	return l
}

// errors returns the error counts of the last report.
func (l *load) errors() map[string]uint64 {
	if p := l.errs.Load(); p != nil {
		return *p
	}
	return nil
}

// progress waits until n more moves have been accepted.
func (l *load) progress(t *testing.T, what string, n uint64) {
	t.Helper()
	base := l.accepted.Load()
	testenv.WaitUntil(t, guard, what, func() bool {
		select {
		case <-l.done:
			t.Fatalf("loadgen ended early: %v", l.err)
		default:
		}
		return l.accepted.Load() >= base+n
	})
}

// finish stops sending, waits for the drain and checks that every
// accepted move got exactly one proximity update, without push id gaps,
// and that the only errors were the allowed ones.
func (l *load) finish(t *testing.T, allowed ...string) loadgen.Stats {
	t.Helper()
	l.stop()
	select {
	case <-l.done:
	case <-time.After(90 * time.Second):
		t.Fatal("loadgen did not finish within 90 s of its stop")
	}
	if l.err != nil {
		t.Fatal(l.err)
	}
	f := l.final
	if f.Missing != 0 || f.Gaps != 0 || f.Unmatched != 0 || f.Updates != f.TotalMoves {
		t.Fatalf("%d moves accepted, %d proximity updates: %d missing, %d unmatched, %d id gaps, %d duplicate ids",
			f.TotalMoves, f.Updates, f.Missing, f.Unmatched, f.Gaps, f.Duplicates)
	}
	for code, n := range f.Errors {
		ok := false
		for _, a := range allowed {
			ok = ok || code == a
		}
		if !ok {
			t.Errorf("loadgen: %d × %s", n, code)
		}
	}
	return f
}

// checkOut checks OUT against the load's final figures: exactly one
// result per accepted move (the load's and extra others), no treasure
// claimed twice, the claims the players received; it returns OUT.
func checkOut(t *testing.T, sp stacktest.Pipeline, f loadgen.Stats, extra int) outputs {
	t.Helper()
	out := readOut(t, sp)
	if out.dups > 0 {
		t.Errorf("%d moves have more than one result", out.dups)
	}
	if out.claimedTwice > 0 {
		t.Errorf("%d treasures claimed twice", out.claimedTwice)
	}
	if uint64(len(out.prox)) != f.TotalMoves+uint64(extra) {
		t.Errorf("OUT holds %d proximity results for %d accepted moves", len(out.prox), f.TotalMoves+uint64(extra))
	}
	if uint64(out.claims) != f.Claims {
		t.Errorf("OUT holds %d claims, the players received %d", out.claims, f.Claims)
	}
	return out
}

// live is the pipeline's log and stores for LogAgrees.
func live(sp stacktest.Pipeline, g *graph.Graph) Live {
	return Live{Graph: g, Part: sp.Part, Radius: 2000, Topology: sp.Topology, JS: sp.JS,
		Postgres: sp.Postgres, Redis: sp.Redis, RedisPrefix: sp.RedisPrefix}
}
