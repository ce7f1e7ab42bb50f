package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
	"treasure/services/proximity"
	"treasure/services/push"
)

// The helpers of the scale-out tests (cluster_test.go, scale_test.go): a
// pipeline on any NATS URL, a treasure drop, an open-loop load that runs
// until told to stop, and the exactly-once checks.

// pipeOptions says where and how startPipelineOn runs the stack.
type pipeOptions struct {
	url         string // NATS URL(s), comma-separated
	replicas    int    // of every stream (Topology.Replicas)
	partitions  int
	noProximity bool // proximity workers run beside the stack (stack.Options.NoProximity)
}

// startPipelineOn runs the stack in this process on fresh streams (with
// o.replicas copies) on the NATS server or cluster at o.url, fresh Redis
// keys and a fresh PostgreSQL schema, all removed on cleanup. It returns
// the pipeline and its NATS connection.
func startPipelineOn(t *testing.T, o pipeOptions) (inproc, *nats.Conn) {
	t.Helper()
	// The services' log, shown when the test fails.
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(testenv.KeepLog(t, "stack", logs.bytes(), 10))
		}
	})
	p, sp := startStack(t, stacktest.Options{NATSURL: o.url, Replicas: o.replicas, Partitions: o.partitions, NoProximity: o.noProximity,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		// The leaderboard's default rate limit (stacktest's zero Limits
		// would turn it off).
		Limits: platform.Limits{LeaderboardRate: push.DefaultLeaderboardRate},
		// Before the stack's cleanup: the streams go once it has stopped.
		Before: func(topo natsjs.Topology, js jetstream.JetStream) {
			testenv.DeleteStreamsOnCleanup(t, js, topo.Prefix)
		},
		ReadyWithin: 60 * time.Second})
	return p, sp.NC
}

// dropTreasures drops a treasure on every 10th node (points 1 to 7), so
// that a few thousand moves surely claim some, and returns their points
// by id.
func dropTreasures(t *testing.T, d deployment) map[string]int64 {
	t.Helper()
	points := map[string]int64{}
	var ts []loadgen.Treasure
	for v := 0; v < d.g.NumNodes(); v += 10 {
		id := fmt.Sprintf("k%d", v)
		points[id] = int64(1 + v%7)
		ts = append(ts, loadgen.Treasure{ID: id, Node: uint64(graph.ID(uint32(v))), Points: int(points[id])})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := loadgen.PostDrop(ctx, http.DefaultClient, d.ingest, d.token(t, "admin", "admin"), ts)
	if err != nil || n != len(ts) {
		t.Fatalf("drop of %d treasures: %d accepted, %v", len(ts), n, err)
	}
	return points
}

// load is an open-loop run (internal/loadgen) against a pipeline, in the
// background, until finish. Marks note instants of the run (a node
// stopped, a worker started) for the figures.
type load struct {
	acked    atomic.Uint64 // acked moves, summed at the end of every second
	answered atomic.Uint64 // proximity updates of acked moves, likewise
	stop     chan struct{}
	finished chan struct{}
	res      *loadgen.Result
	err      error

	mu    sync.Mutex
	marks []mark
}

type mark struct {
	what string
	at   time.Time
}

// startLoad starts players players of a fresh id prefix, each sending
// rate moves a second until finish (at most ten minutes).
func startLoad(t *testing.T, d deployment, players int, rate float64, prefix string) *load {
	t.Helper()
	l := &load{stop: make(chan struct{}), finished: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { // on an early failure: before the pipeline stops
		cancel()
		<-l.finished
	})
	go func() {
		defer close(l.finished)
		l.res, l.err = loadgen.RunOpen(ctx, loadgen.OpenOptions{
			Ingest: []string{ws(d.ingest)}, Push: []string{ws(d.push)}, Graph: d.g, Secret: secret,
			PlayerPrefix: prefix, Players: players, Seed: 9,
			Schedule: loadgen.Schedule{Rate: rate, Duration: 10 * time.Minute},
			Drain:    60 * time.Second, Stop: l.stop,
		}, func(s loadgen.Second) {
			l.acked.Add(s.Acked)
			l.answered.Add(s.Answered)
		})
	}()
	return l
}

// mark notes what happens now.
func (l *load) mark(what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.marks = append(l.marks, mark{what, time.Now()})
}

// waitMore waits until n more moves than now have been acked (the load
// goes on meanwhile), failing the test if the run ends first or that
// takes over two minutes.
func (l *load) waitMore(t *testing.T, n uint64, what string) {
	t.Helper()
	want := l.acked.Load() + n
	deadline := time.Now().Add(2 * time.Minute)
	for l.acked.Load() < want {
		select {
		case <-l.finished:
			t.Fatalf("%s: the load ended early: %v", what, l.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d moves acked, want %d within 2 minutes", what, l.acked.Load(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAnswered waits until as many proximity updates have arrived as
// moves had been acked when it was called (the load goes on meanwhile):
// the pipeline behind ingest has caught up with them. It fails the test
// if the run ends first or that takes over two minutes.
func (l *load) waitAnswered(t *testing.T, what string) {
	t.Helper()
	want := l.acked.Load()
	deadline := time.Now().Add(2 * time.Minute)
	for l.answered.Load() < want {
		select {
		case <-l.finished:
			t.Fatalf("%s: the load ended early: %v", what, l.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d updates, want %d within 2 minutes", what, l.answered.Load(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish ends the schedule, waits for the drain and returns the result.
func (l *load) finish(t *testing.T) *loadgen.Result {
	t.Helper()
	close(l.stop)
	select {
	case <-l.finished:
	case <-time.After(2 * time.Minute):
		t.Fatal("the load did not drain within 2 minutes")
	}
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.res
}

// checkExactlyOnce checks the run's accounting — every move sent was
// answered, every acked move got exactly one proximity update, in order,
// and no error but unavailable and rate_limited (and discontinuous for
// moves sent behind one of those and then sent again) — and the log behind it:
// OUT holds exactly one proximity result per acked move and at most one
// claim per treasure, and PostgreSQL's scores add up to the claims'
// points. It returns the claims.
func checkExactlyOnce(t *testing.T, p inproc, r *loadgen.Result, points map[string]int64) outLog {
	t.Helper()
	if r.Sent == 0 || r.Acked == 0 {
		t.Fatalf("nothing sent or acked: %+v", *r)
	}
	if r.Failed() || r.Lost != 0 || r.Duplicated != 0 || r.OutOfOrder != 0 || r.Unexpected != 0 || r.Reordered != 0 || r.Answered != r.Acked ||
		r.Sent != r.Acked+r.Rejected {
		t.Errorf("accounting: sent %d, acked %d, rejected %d, answered %d; lost %d (%d unanswered, %d without update), duplicated %d, out of order %d, reordered %d, unexpected %d",
			r.Sent, r.Acked, r.Rejected, r.Answered, r.Lost, r.LostUnanswered, r.LostNoUpdate, r.Duplicated, r.OutOfOrder, r.Reordered, r.Unexpected)
	}
	for code, n := range r.Errors {
		switch {
		case n == 0, code == "unavailable", code == "rate_limited":
		case code == "discontinuous" && r.Rejected == 0:
			// Moves in flight behind one answered unavailable, which
			// ingest then checked without it (SPEC: a rejected move
			// does not use up its seq). The load generator sends such
			// a chain again from the refused move; a move it could not
			// send again would count as Rejected.
		default:
			t.Errorf("%d answers %q: only unavailable and rate_limited (and discontinuous for the moves behind one, all sent again) may come while the log fails over", n, code)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			diagnose(t, p)
		}
	})
	// The ranker may trail the players: poll until it has consumed OUT.
	out := quiet(t, p, int(r.Acked))
	if uint64(len(out.prox)) != r.Acked {
		t.Errorf("OUT holds %d proximity results for %d acked moves", len(out.prox), r.Acked)
	}
	if len(out.claims) == 0 {
		t.Error("no treasure was claimed: the run does not exercise claims")
	}
	scoresMatchClaims(t, p.pool, out, points, 30*time.Second)
	return out
}

// windowFigures sums the seconds of r whose end falls in (from, to]: moves
// acked and answered there, error answers, and the latencies of the acks
// and updates that arrived then (each from its move's scheduled send).
type windowFigures struct {
	seconds                        int
	acked, answered, errs          uint64
	ackP99, ackMax, updP99, updMax float64 // ms
}

func window(r *loadgen.Result, from, to time.Time) windowFigures {
	var w windowFigures
	ack, upd := hdr.New(1, int64(10*time.Minute/time.Microsecond), 2), hdr.New(1, int64(10*time.Minute/time.Microsecond), 2)
	for _, s := range r.Seconds {
		end := r.Start.Add(time.Duration(s.Index+1) * time.Second)
		if !end.After(from) || end.After(to) {
			continue
		}
		w.seconds++
		w.acked += s.Acked
		w.answered += s.Answered
		w.errs += s.Errors
		if s.Ack != nil {
			ack.Merge(s.Ack)
		}
		if s.Update != nil {
			upd.Merge(s.Update)
		}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	w.ackP99, w.ackMax = ms(ack.ValueAtQuantile(99)), ms(ack.Max())
	w.updP99, w.updMax = ms(upd.ValueAtQuantile(99)), ms(upd.Max())
	return w
}

func (w windowFigures) String() string {
	return fmt.Sprintf("%2d s: %5d acked, %5d updates, %4d errors; ack p99 %7.1f ms max %7.1f ms; update p99 %7.1f ms max %7.1f ms",
		w.seconds, w.acked, w.answered, w.errs, w.ackP99, w.ackMax, w.updP99, w.updMax)
}

// logFigures logs the whole run and every stretch between two marks, each
// second in the stretch its end falls in.
func logFigures(t *testing.T, l *load, r *loadgen.Result) {
	t.Helper()
	t.Logf("run: %d players, %.0f s, %d moves sent, %d acked, %d rejected, %d retries; errors %v",
		r.Players, r.ElapsedS, r.Sent, r.Acked, r.Rejected, r.Retries, r.Errors)
	t.Logf("whole run: ack p50 %.1f p99 %.1f max %.1f ms; update p50 %.1f p99 %.1f max %.1f ms",
		float64(r.Ack.ValueAtQuantile(50))/1000, float64(r.Ack.ValueAtQuantile(99))/1000, float64(r.Ack.Max())/1000,
		float64(r.Update.ValueAtQuantile(50))/1000, float64(r.Update.ValueAtQuantile(99))/1000, float64(r.Update.Max())/1000)
	l.mu.Lock()
	marks := slices.Clone(l.marks)
	l.mu.Unlock()
	prev := mark{"start", r.Start}
	// The last stretch takes every second left (the partial last one too).
	for _, m := range append(marks, mark{"end", r.Start.Add(time.Duration(len(r.Seconds)+1) * time.Second)}) {
		t.Logf("%-44s %s", strings.TrimSpace(prev.what+" → "+m.what), window(r, prev.at, m.at))
		prev = m
	}
}

// diagnose logs, for a failed run, where moves went missing: each
// partition's proximity consumer, and the moves in IN without a result in
// OUT (or several times in IN).
func diagnose(t *testing.T, p inproc) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for k := range p.topo.Partitions {
		c, err := p.js.Consumer(ctx, p.topo.InStream(), proximity.Durable(p.topo, k))
		if err != nil {
			t.Logf("diagnosis: partition %d consumer: %v", k, err)
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Logf("diagnosis: partition %d consumer info: %v", k, err)
			continue
		}
		t.Logf("diagnosis: partition %d consumer: delivered %d (stream %d), ack floor %d (stream %d), pending %d, ack pending %d, config start %v %d",
			k, info.Delivered.Consumer, info.Delivered.Stream, info.AckFloor.Consumer, info.AckFloor.Stream, info.NumPending, info.NumAckPending,
			info.Config.DeliverPolicy, info.Config.OptStartSeq)
	}
	in := map[string][]uint64{}       // player/seq → IN sequences
	byPlayer := map[string][]string{} // player → "seq@IN seq/subject", in IN order
	var b eventpb.Batch
	err := natsjs.Replay(ctx, p.js, natsjs.ReplayOptions{Stream: p.topo.InStream(), MaxWait: 200 * time.Millisecond}, func(_ context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := event.Decode(m.Data, &b); err != nil {
				return err
			}
			for _, ev := range b.Events {
				if mv := ev.GetMove(); mv != nil {
					key := fmt.Sprintf("%s/%d", mv.Player, mv.Seq)
					in[key] = append(in[key], m.Seq)
					byPlayer[mv.Player] = append(byPlayer[mv.Player], fmt.Sprintf("%d@%d/%s", mv.Seq, m.Seq, m.Subject))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Logf("diagnosis: reading IN: %v", err)
		return
	}
	out, err := readOutErr(p.js, p.topo)
	if err != nil {
		// A result twice: which IN messages hold its move.
		t.Logf("diagnosis: reading OUT: %v", err)
		for key, seqs := range in {
			if strings.Contains(err.Error(), " "+key+":") {
				player, _, _ := strings.Cut(key, "/")
				t.Logf("diagnosis: %s is at IN %v; the player's moves in IN order (seq@IN seq/subject): %v", key, seqs, byPlayer[player])
			}
		}
	}
	var missing, twice []string
	for key, seqs := range in {
		if _, ok := out.prox[key]; !ok {
			missing = append(missing, fmt.Sprintf("%s at IN %v", key, seqs))
			player, _, _ := strings.Cut(key, "/")
			t.Logf("diagnosis: %s has no result; the player's moves in IN order (seq@IN seq/subject): %v", key, byPlayer[player])
		}
		if len(seqs) > 1 {
			twice = append(twice, fmt.Sprintf("%s at IN %v", key, seqs))
		}
	}
	slices.Sort(missing)
	t.Logf("diagnosis: IN holds %d moves, OUT %d results; %d moves of IN have no result: %.40v; %d are in IN more than once: %.10v",
		len(in), len(out.prox), len(missing), missing, len(twice), twice)
}
