package ranker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
	"treasure/internal/testenv"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// stopped Ranker must have stopped its consumer, its maintenance loop and
// its publisher.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

var small = natsjs.Limits{MaxBytes: 16 << 20, MaxMsgs: 100_000}

// wait bounds every wait for the ranker (testenv.WaitFor).
const wait = 30 * time.Second

// env is one test's servers: its own streams, schema and Redis prefix.
type env struct {
	js      jetstream.JetStream
	topo    natsjs.Topology
	pool    *pgxpool.Pool
	rdb     *redis.Client
	rprefix string
	pg      *pgstore.Store
	rs      *redisstore.Store
}

func newEnv(tb testing.TB) env {
	tb.Helper()
	_, js, prefix := testenv.JetStream(tb)
	topo := natsjs.Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}
	if err := topo.Ensure(tb.Context(), js); err != nil {
		tb.Fatal(err)
	}
	pool, _ := testenv.Postgres(tb)
	rdb, rprefix := testenv.Redis(tb)
	return env{js: js, topo: topo, pool: pool, rdb: rdb, rprefix: rprefix, pg: pgstore.New(pool), rs: redisstore.New(rdb, rprefix)}
}

// options are the test defaults: fast checks, small batches.
func (e env) options() Options {
	return Options{
		Topology: e.topo, Pool: e.pool, Redis: e.rdb, RedisPrefix: e.rprefix,
		TopN: 5, SnapshotEvery: 100 * time.Millisecond, RedisCheck: 50 * time.Millisecond,
		Batch: 4, MaxWait: 500 * time.Millisecond, Logger: testLog(),
	}
}

// start runs a Ranker on its own NATS connection (a process of its own),
// with o's settings and hook; stop cancels it and closes the connection,
// as a killed process would leave things: nothing drained or acked.
func start(tb testing.TB, o Options, hook func(stage string, cancel func()) error, tweaks ...func(*Ranker)) (r *Ranker, stop func()) {
	tb.Helper()
	nc := testenv.ConnectNATS(tb, testenv.NATSURL())
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	o.NC, o.JS = nc, js
	r, err = New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if hook != nil {
		r.hook = func(stage string) error { return hook(stage, cancel) }
	}
	for _, t := range tweaks {
		t(r)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("ranker: %v", err)
			}
			nc.Close()
		})
	}
	tb.Cleanup(stop)
	return r, stop
}

// input is one message of the workers' output.
type input struct {
	part   int
	events []*eventpb.Event
}

func claimEv(player, treasure string, points uint64) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{
		Player: player, Treasure: treasure, Points: points, Seq: 1, Node: 7,
		Move: &eventpb.LogPosition{StreamSeq: uint64(len(treasure)), Index: uint32(points)},
	}}}
}

func proxEv(player string, seq uint64) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: player, Seq: seq, Node: 3}}}
}

func publish(tb testing.TB, e env, ins ...input) {
	tb.Helper()
	for _, in := range ins {
		data, err := event.AppendBatch(nil, in.events)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := e.js.Publish(tb.Context(), e.topo.OutSubject(in.part), data); err != nil {
			tb.Fatal(err)
		}
	}
}

// output is what the ranker published on P.out.rank, in order.
type output struct {
	scores    []*eventpb.ScoreChanged
	ids       []string // the Nats-Msg-Id of each score's message
	snapshots []snap
}

type snap struct {
	s    *eventpb.LeaderboardSnapshot
	time time.Time
}

func readOutput(tb testing.TB, e env) output {
	tb.Helper()
	var out output
	var b eventpb.Batch
	err := natsjs.Replay(tb.Context(), e.js, natsjs.ReplayOptions{Stream: e.topo.OutStream(), Subjects: []string{e.topo.RankSubject()}, MaxWait: 100 * time.Millisecond},
		func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if err := event.Decode(m.Data, &b); err != nil {
					return err
				}
				for _, ev := range b.Events {
					if s := ev.GetScore(); s != nil {
						out.scores = append(out.scores, s)
						out.ids = append(out.ids, m.Header.Get(jetstream.MsgIDHeader))
					}
					if s := ev.GetLeaderboard(); s != nil {
						out.snapshots = append(out.snapshots, snap{s: s, time: m.Time})
					}
				}
			}
			return nil
		})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// waitScores polls until n ScoreChanged events are out and the ranker has
// acked every input, and fails on more events (a duplicate published late
// included).
func waitScores(tb testing.TB, e env, n int) output {
	tb.Helper()
	testenv.WaitFor(tb, wait, func() string {
		out := readOutput(tb, e)
		if len(out.scores) > n {
			tb.Fatalf("%d score events, want %d: %v", len(out.scores), n, scoreLines(out.scores))
		}
		if len(out.scores) < n {
			return fmt.Sprintf("%d of %d score events", len(out.scores), n)
		}
		return ""
	})
	waitAcked(tb, e)
	out := readOutput(tb, e)
	if len(out.scores) != n {
		tb.Fatalf("%d score events once all was acked, want %d: %v", len(out.scores), n, scoreLines(out.scores))
	}
	return out
}

// waitAcked polls until the ranker's consumer has acked every input
// message in the OUT stream (its own output included).
func waitAcked(tb testing.TB, e env) {
	tb.Helper()
	ctx := tb.Context()
	testenv.WaitFor(tb, wait, func() string {
		st, err := e.js.Stream(ctx, e.topo.OutStream())
		if err != nil {
			return err.Error()
		}
		si, err := st.Info(ctx)
		if err != nil {
			return err.Error()
		}
		cons, err := e.js.Consumer(ctx, e.topo.OutStream(), e.topo.Prefix+"-ranker")
		if err != nil {
			return err.Error()
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return err.Error()
		}
		if floor, last := ci.AckFloor.Stream, si.State.LastSeq; floor != last {
			return fmt.Sprintf("ack floor %d, last message %d", floor, last)
		}
		return ""
	})
}

func scoreLines(scores []*eventpb.ScoreChanged) []string {
	var s []string
	for _, e := range scores {
		s = append(s, fmt.Sprintf("%s %d #%d (%s)", e.Player, e.Score, e.Rank, e.Cause.GetTreasure()))
	}
	return s
}

// model is the game's scoring rule applied to a log of claims in order:
// the definition the ranker must agree with.
type model struct {
	score   map[string]int64
	reached map[string]int // index in the log of the claim that brought the score
	claimed map[string]bool
	events  []string
	n       int
}

func newModel() *model {
	return &model{score: map[string]int64{}, reached: map[string]int{}, claimed: map[string]bool{}}
}

func (m *model) see(player string) {
	if _, ok := m.score[player]; !ok {
		m.score[player] = 0
	}
}

func (m *model) feed(ins ...input) {
	for _, in := range ins {
		for _, ev := range in.events {
			if p := ev.GetProximity(); p != nil {
				m.see(p.Player)
			}
			c := ev.GetClaim()
			if c == nil {
				continue
			}
			m.n++
			if m.claimed[c.Treasure] {
				continue
			}
			m.claimed[c.Treasure] = true
			m.score[c.Player] += int64(c.Points)
			m.reached[c.Player] = m.n
			s := m.score[c.Player]
			above := 0
			for _, v := range m.score {
				if v > s {
					above++
				}
			}
			m.events = append(m.events, fmt.Sprintf("%s %d #%d (%s)", c.Player, s, 1+above, c.Treasure))
		}
	}
}

// board lists the players with a score: score descending, then who
// reached it first.
func (m *model) board() []game.Entry {
	var top []game.Entry
	for p, s := range m.score {
		if s > 0 {
			top = append(top, game.Entry{Player: p, Score: s})
		}
	}
	slices.SortFunc(top, func(a, b game.Entry) int {
		if a.Score != b.Score {
			return int(b.Score - a.Score)
		}
		return m.reached[a.Player] - m.reached[b.Player]
	})
	game.RankTop(top)
	return top
}

// checkBoards compares PostgreSQL's and Redis's leaderboards and a few
// players' standings with the model's.
func checkBoards(tb testing.TB, e env, m *model) {
	tb.Helper()
	want := m.board()
	ctx := tb.Context()
	pgTop, pgN, err := e.pg.Leaderboard(ctx, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	if !slices.Equal(pgTop, want) || pgN != int64(len(want)) {
		tb.Fatalf("PostgreSQL board %v (%d players), want %v", pgTop, pgN, want)
	}
	rTop, rN, err := e.rs.Leaderboard(ctx, 1000)
	if err != nil {
		tb.Fatalf("Redis board: %v", err)
	}
	got := rTop
	if !slices.Equal(got, want) || rN != int64(len(want)) {
		tb.Fatalf("Redis board %v (%d players), want %v", got, rN, want)
	}
	for p, s := range m.score {
		above := int64(0)
		for _, v := range m.score {
			if v > s {
				above++
			}
		}
		wantE := game.Entry{Player: p, Score: s, Rank: 1 + above}
		pe, found, err := e.pg.Player(ctx, p)
		if err != nil || !found || pe != wantE {
			tb.Fatalf("PostgreSQL player %s: %v found=%v err=%v, want %v", p, pe, found, err, wantE)
		}
		re, found, err := e.rs.Player(ctx, p)
		if err != nil || !found || re != wantE {
			tb.Fatalf("Redis player %s: %v found=%v err=%v, want %v", p, re, found, err, wantE)
		}
	}
}

// TestRankerScoresRanksAndPublishes runs a small log through the ranker:
// scores and ranks in PostgreSQL, Redis and the ScoreChanged events agree
// with the game's rule; ties share a rank and are listed by who reached
// the score first (here against byte order); a treasure claimed twice
// counts once; a message that is not an event batch is dead-lettered and
// the ranker carries on.
func TestRankerScoresRanksAndPublishes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	o := e.options()
	o.Registerer = reg
	start(t, o, nil)
	m := newModel()
	log := []input{
		{0, []*eventpb.Event{proxEv("alice", 1), proxEv("bob", 1), proxEv("carol", 1), proxEv("aaron", 1), proxEv("dave", 1)}},
		{1, []*eventpb.Event{claimEv("bob", "T1", 5), proxEv("bob", 2)}},
		{0, []*eventpb.Event{claimEv("alice", "T2", 3), claimEv("alice", "T3", 2), proxEv("alice", 2)}}, // alice ties bob at 5, after him
		{1, []*eventpb.Event{claimEv("carol", "T4", 7)}},
		{0, []*eventpb.Event{claimEv("dave", "T1", 9)}}, // T1 is bob's already
		{1, []*eventpb.Event{claimEv("bob", "T5", 1)}},
		{1, []*eventpb.Event{claimEv("bob", "T5", 1)}},   // the same claim stored twice
		{0, []*eventpb.Event{claimEv("aaron", "T6", 6)}}, // aaron ties bob at 6, after him
	}
	publish(t, e, log[:3]...)
	// Not an event batch: dead-lettered, and nothing stops.
	if _, err := e.js.Publish(t.Context(), e.topo.OutSubject(0), []byte("not protobuf \xff")); err != nil {
		t.Fatal(err)
	}
	publish(t, e, log[3:]...)
	m.feed(log...)
	want := m.events
	if len(want) != 6 {
		t.Fatalf("model: %d events, the log was meant to give 6: %v", len(want), want)
	}
	out := waitScores(t, e, len(want))
	if got := scoreLines(out.scores); !slices.Equal(got, want) {
		t.Fatalf("score events\n got %v\nwant %v", got, want)
	}
	for i, id := range out.ids {
		if !strings.HasPrefix(id, "rank-") {
			t.Fatalf("score event %d in a message with id %q, want rank-<seq>", i, id)
		}
	}
	// Every check above passed with the final state published; the
	// boards must match the model too, dave included (seen, no score).
	checkBoards(t, e, m)
	if got := m.board(); got[1].Player != "bob" || got[2].Player != "aaron" || got[1].Rank != 2 || got[2].Rank != 2 {
		t.Fatalf("model board %v: the fixture lost its tie", got)
	}
	// The rows: one per treasure, the first claim in log order, positions
	// increasing with the log.
	rows, err := e.pool.Query(t.Context(), `SELECT treasure_id || ':' || player FROM claims ORDER BY pos`)
	if err != nil {
		t.Fatal(err)
	}
	var claims []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		claims = append(claims, s)
	}
	if rows.Err() != nil || fmt.Sprint(claims) != "[T1:bob T2:alice T3:alice T4:carol T5:bob T6:aaron]" {
		t.Fatalf("claims rows in log order %v (%v)", claims, rows.Err())
	}
	if de, found, _ := e.pg.Player(t.Context(), "dave"); !found || de.Score != 0 || de.Rank != 5 {
		t.Fatalf("dave (seen, no claim): %v found=%v, want score 0 rank 5", de, found)
	}
	if _, found, _ := e.pg.Player(t.Context(), "nobody"); found {
		t.Fatal("a player never seen was found")
	}
	testenv.WaitUntil(t, wait, "no dead letter", func() bool {
		info, err := dlqInfo(t, e)
		return err == nil && info.State.Msgs == 1
	})
	// natsjs's dead letter: its headers name the ranker's consumer and
	// the input, and the reason is one line.
	dlq, err := e.js.Stream(t.Context(), e.topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	dl, err := dlq.GetLastMsgForSubject(t.Context(), e.topo.DLQSubject())
	if err != nil {
		t.Fatal(err)
	}
	if got := dl.Header.Get(natsjs.HeaderDLQConsumer); got != e.topo.Prefix+"-ranker" {
		t.Fatalf("dead letter consumer header %q", got)
	}
	if got := dl.Header.Get(natsjs.HeaderDLQSubject); got != e.topo.OutSubject(0) {
		t.Fatalf("dead letter subject header %q", got)
	}
	if reason := dl.Header.Get(natsjs.HeaderDLQReason); reason == "" || strings.ContainsAny(reason, "\r\n") {
		t.Fatalf("dead letter reason %q", reason)
	}
	if n := metric(reg, "treasure_ranker_invalid_events_total"); n != 1 {
		t.Fatalf("invalid events metric %v, want 1", n)
	}
	if n := metric(reg, "treasure_ranker_claims_duplicate_total"); n != 2 {
		t.Fatalf("duplicate claims metric %v, want 2 (T1 by dave, T5 again)", n)
	}
}

func dlqInfo(tb testing.TB, e env) (*jetstream.StreamInfo, error) {
	s, err := e.js.Stream(tb.Context(), e.topo.DLQStream())
	if err != nil {
		return nil, err
	}
	return s.Info(tb.Context())
}

// metric returns the value of a counter or gauge of reg (0 if absent).
func metric(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			m := mf.Metric[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return 0
}

// randomLog is a log of n messages over players: proximity results and
// claims, some treasures claimed twice, points chosen so that ties happen.
func randomLog(seed uint64, n, players int) []input {
	rng := rand.New(rand.NewPCG(seed, 1))
	var log []input
	treasure := 0
	for i := 0; i < n; i++ {
		in := input{part: rng.IntN(2)}
		for k := rng.IntN(4); k > 0; k-- {
			in.events = append(in.events, proxEv(fmt.Sprintf("p%02d", rng.IntN(players)), uint64(i)))
		}
		for k := rng.IntN(3); k > 0; k-- {
			id := fmt.Sprintf("T%04d", treasure)
			if treasure > 0 && rng.IntN(8) == 0 {
				id = fmt.Sprintf("T%04d", rng.IntN(treasure)) // claimed before
			} else {
				treasure++
			}
			in.events = append(in.events, claimEv(fmt.Sprintf("p%02d", rng.IntN(players)), id, uint64(1+rng.IntN(3))))
		}
		log = append(log, in)
	}
	return log
}

// TestRankerKilledBeforeAckCountsOnce kills a ranker after it stored a
// batch but before it published the batch's events, then its successor
// after it published them but before the ack; a third, batching
// differently, finishes. Every claim counts once and has exactly one
// ScoreChanged, the one the game's rule gives. With output messages that
// hold one event, the events of one call are cut into several messages, at
// input boundaries and inside inputs with two claims (ids rank-<s>-<k>).
func TestRankerKilledBeforeAckCountsOnce(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		tweak func(*Ranker)
	}{
		{"one output message per call", func(*Ranker) {}},
		{"one event per output message", func(r *Ranker) { r.out.MaxBytes = 40 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testKilled(t, c.tweak)
		})
	}
}

func testKilled(t *testing.T, tweak func(*Ranker)) {
	e := newEnv(t)
	log := randomLog(7, 40, 6)
	m := newModel()
	m.feed(log...)
	publish(t, e, log...)

	kill := func(at string) func(stage string, cancel func()) error {
		return func(stage string, cancel func()) error {
			if stage != at {
				return nil
			}
			cancel()
			return context.Canceled
		}
	}
	// A: stores a batch, dies before publishing its events.
	o := e.options()
	o.Batch = 5
	_, stopA := start(t, o, kill("applied"), tweak)
	testenv.WaitUntil(t, wait, "A stored nothing", func() bool {
		_, n, err := e.pg.Leaderboard(t.Context(), 0)
		return err == nil && n > 0
	})
	stopA()
	if out := readOutput(t, e); len(out.scores) != 0 {
		t.Fatalf("A published %d events before dying", len(out.scores))
	}
	// B: stores and publishes a (differently cut) batch, dies before the ack.
	o.Batch = 9
	_, stopB := start(t, o, kill("published"), tweak)
	testenv.WaitUntil(t, wait, "B published nothing", func() bool { return len(readOutput(t, e).scores) > 0 })
	stopB()
	// C: one message at a time, to the end.
	o.Batch = 1
	start(t, o, nil, tweak)
	out := waitScores(t, e, len(m.events))
	if got := scoreLines(out.scores); !slices.Equal(got, m.events) {
		t.Fatalf("score events\n got %v\nwant %v", got, m.events)
	}
	checkBoards(t, e, m)
	ids := map[string]bool{}
	for i, id := range out.ids {
		if i > 0 && id == out.ids[i-1] {
			continue // same message
		}
		if ids[id] {
			t.Fatalf("two messages with id %s", id)
		}
		ids[id] = true
		if _, _, board, ok := resumePoint(id); !ok || board {
			t.Fatalf("score message with id %q", id)
		}
	}
}

// TestRankerRetriesAfterAFailureMidBatch fails a batch once, then lets
// the consumer hand its messages again one at a time; the events are still
// exactly the game's, none missing, none twice:
//   - right after the claims were stored, before the ranker recorded them
//     (PostgreSQL then holds claims beyond each retried message, which the
//     ranker must read back to score the earlier ones right);
//   - after one of the call's output messages was stored but its ack was
//     lost (the retry must not publish its events again).
func TestRankerRetriesAfterAFailureMidBatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, stage string
		outMax      int
	}{
		{"after storing the claims", "stored", 0},
		{"after an output message was stored, its ack lost", "ack", 0},
		{"after one of several output messages was stored, its ack lost", "ack", 40},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			// The first output message covers inputs 1-3 (2 and 3 hold no
			// claim); a retry of input 1 alone would name its message
			// differently, so JetStream's duplicate window cannot hide a
			// second publish.
			log := append([]input{
				{0, []*eventpb.Event{claimEv("p09", "first", 4)}},
				{1, []*eventpb.Event{proxEv("p09", 2)}},
				{0, []*eventpb.Event{proxEv("p08", 2)}},
			}, randomLog(5, 30, 5)...)
			m := newModel()
			m.feed(log...)
			publish(t, e, log...)
			o := e.options()
			o.Batch = len(log)
			var injected atomic.Bool
			start(t, o, func(at string, cancel func()) error {
				if at == c.stage && injected.CompareAndSwap(false, true) {
					return errors.New("injected failure")
				}
				return nil
			}, func(r *Ranker) {
				if c.outMax > 0 {
					r.out.MaxBytes = c.outMax
				}
			})
			testenv.WaitUntil(t, wait, "the failure was never injected", injected.Load)
			out := waitScores(t, e, len(m.events))
			if got := scoreLines(out.scores); !slices.Equal(got, m.events) {
				t.Fatalf("score events\n got %v\nwant %v", got, m.events)
			}
			checkBoards(t, e, m)
		})
	}
}

// TestRankerRebuildsFlushedRedis deletes the ranker's Redis keys mid-run
// (a flushed or restarted Redis): the board comes back from PostgreSQL,
// and later batches rank right.
func TestRankerRebuildsFlushedRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	o := e.options()
	o.Registerer = reg
	start(t, o, nil)
	log := randomLog(11, 30, 5)
	m := newModel()
	m.feed(log[:15]...)
	publish(t, e, log[:15]...)
	waitScores(t, e, len(m.events))
	checkBoards(t, e, m)
	rebuilds := metric(reg, "treasure_ranker_redis_rebuilds_total")

	if _, err := testenv.DeleteKeys(t.Context(), e.rdb, e.rprefix); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, wait, "Redis never rebuilt", func() bool {
		_, _, err := e.rs.Leaderboard(t.Context(), 1)
		return err == nil && metric(reg, "treasure_ranker_redis_rebuilds_total") > rebuilds
	})
	checkBoards(t, e, m)

	m.feed(log[15:]...)
	publish(t, e, log[15:]...)
	out := waitScores(t, e, len(m.events))
	if got := scoreLines(out.scores); !slices.Equal(got, m.events) {
		t.Fatalf("score events\n got %v\nwant %v", got, m.events)
	}
	checkBoards(t, e, m)
}

// TestRankerCarriesOnWithoutRedis cuts the ranker off Redis (a proxy that
// stops answering): batches go on against PostgreSQL, ranks included; once
// Redis answers again the board is rebuilt with every change.
func TestRankerCarriesOnWithoutRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	px := newProxy(t, e.rdb.Options().Addr)
	cut := redis.NewClient(&redis.Options{Addr: px.addr, DB: e.rdb.Options().DB, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { cut.Close() })
	o := e.options()
	o.Redis = cut
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	start(t, o, nil)
	log := randomLog(13, 36, 5)
	m := newModel()
	m.feed(log[:12]...)
	publish(t, e, log[:12]...)
	waitScores(t, e, len(m.events))
	checkBoards(t, e, m)

	px.down()
	m.feed(log[12:24]...)
	publish(t, e, log[12:24]...)
	out := waitScores(t, e, len(m.events))
	if got := scoreLines(out.scores); !slices.Equal(got, m.events) {
		t.Fatalf("score events while Redis was down\n got %v\nwant %v", got, m.events)
	}
	if up := metric(reg, "treasure_ranker_redis_up"); up != 0 {
		t.Fatalf("redis_up %v while Redis is cut off", up)
	}
	pgTop, _, err := e.pg.Leaderboard(t.Context(), 1000)
	if err != nil || !slices.Equal(pgTop, m.board()) {
		t.Fatalf("PostgreSQL board %v (err %v), want %v", pgTop, err, m.board())
	}

	px.up()
	testenv.WaitUntil(t, wait, "Redis never caught up", func() bool {
		top, _, err := e.rs.Leaderboard(t.Context(), 1000)
		if err != nil || len(top) != len(m.board()) {
			return false
		}
		for i, x := range top {
			if x != m.board()[i] {
				return false
			}
		}
		return true
	})
	m.feed(log[24:]...)
	publish(t, e, log[24:]...)
	out = waitScores(t, e, len(m.events))
	if got := scoreLines(out.scores); !slices.Equal(got, m.events) {
		t.Fatalf("score events\n got %v\nwant %v", got, m.events)
	}
	checkBoards(t, e, m)
}

// TestRankerSnapshotsThrottledAndVersioned feeds claims in waves under a
// clock of the test's own, which moves only when the test moves it: while
// it stands still the ranker holds back every snapshot however often it
// looks (the throttle), once it has moved SnapshotEvery the ranker
// publishes one if the top changed. The snapshots have strictly increasing
// versions and the last one is the final top. Nothing here depends on how
// fast the ranker runs or on the time between two stored snapshots.
func TestRankerSnapshotsThrottledAndVersioned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.options()
	o.TopN = 3
	o.SnapshotEvery = 100 * time.Millisecond // the real ticker looks every 25 ms
	var (
		now    atomic.Int64 // the test's clock, in ns after base
		base   = time.Now()
		stages sync.Map // stage -> *atomic.Int64
	)
	count := func(stage string) *atomic.Int64 {
		v, _ := stages.LoadOrStore(stage, new(atomic.Int64))
		return v.(*atomic.Int64)
	}
	_, stop := start(t, o, func(stage string, _ func()) error {
		count(stage).Add(1)
		return nil
	}, func(r *Ranker) {
		r.clock = func() time.Time { return base.Add(time.Duration(now.Load())) }
	})
	log := randomLog(17, 40, 8)
	m := newModel()
	published, same := count("snapshot-published"), count("snapshot-same")
	for w := 0; w < 40; w += 4 {
		m.feed(log[w : w+4]...)
		publish(t, e, log[w:w+4]...)
		waitScores(t, e, len(m.events))
		if w == 0 {
			// The first snapshot after a start is not held back.
			testenv.WaitUntil(t, wait, "no first snapshot", func() bool { return published.Load() == 1 })
			continue
		}
		// The clock stands still: the ranker sees claims to show and
		// holds them back, again and again.
		throttled := count("snapshot-throttled")
		t0, p0, s0 := throttled.Load(), published.Load(), same.Load()
		testenv.WaitUntil(t, wait, "the ranker never looked at the board", func() bool {
			if published.Load() != p0 {
				t.Fatalf("wave %d: a snapshot was published while the clock stood still", w/4)
			}
			return throttled.Load() >= t0+3
		})
		// SnapshotEvery later it shows them, or finds the top unchanged.
		now.Add(int64(o.SnapshotEvery))
		testenv.WaitUntil(t, wait, "no snapshot once the clock moved", func() bool {
			return published.Load() > p0 || same.Load() > s0
		})
	}
	want := m.board()
	wantTop := want[:min(3, len(want))]
	out := readOutput(t, e)
	stop()
	if len(out.snapshots) < 2 || int64(len(out.snapshots)) != published.Load() {
		t.Fatalf("%d snapshots stored over 10 waves of claims, %d published", len(out.snapshots), published.Load())
	}
	if last := out.snapshots[len(out.snapshots)-1].s; int(last.Players) != len(want) || !sameTop(last, wantTop) {
		t.Fatalf("last snapshot %v, want top %v of %d", last, wantTop, len(want))
	}
	for i := 1; i < len(out.snapshots); i++ {
		a, b := out.snapshots[i-1], out.snapshots[i]
		if b.s.Version <= a.s.Version {
			t.Fatalf("snapshot %d has version %d after %d", i, b.s.Version, a.s.Version)
		}
	}
	// A successor goes on above the last version.
	last := out.snapshots[len(out.snapshots)-1].s.Version
	start(t, o, nil)
	m.feed(input{0, []*eventpb.Event{claimEv("p00", "late", 50)}})
	publish(t, e, input{0, []*eventpb.Event{claimEv("p00", "late", 50)}})
	testenv.WaitUntil(t, wait, "no snapshot from the successor", func() bool {
		out = readOutput(t, e)
		s := out.snapshots[len(out.snapshots)-1].s
		return len(s.Top) > 0 && s.Top[0].Player == "p00"
	})
	if v := out.snapshots[len(out.snapshots)-1].s.Version; v <= last {
		t.Fatalf("successor's snapshot version %d not above %d", v, last)
	}
}

// TestRankerReplayIsDeterministic consumes a log live, in small batches
// while it is written, then copies that log into fresh streams, schema and
// Redis prefix and consumes it again at once in large batches: the same
// ScoreChanged events in the same order, the same boards.
func TestRankerReplayIsDeterministic(t *testing.T) {
	t.Parallel()
	log := randomLog(23, 60, 7)
	m := newModel()
	m.feed(log...)

	a := newEnv(t)
	o := a.options()
	o.Batch = 2
	start(t, o, nil)
	for w := 0; w < len(log); w += 10 {
		publish(t, a, log[w:w+10]...)
		time.Sleep(10 * time.Millisecond) // let batches form differently; not asserted
	}
	outA := waitScores(t, a, len(m.events))
	checkBoards(t, a, m)

	b := newEnv(t)
	err := natsjs.Replay(t.Context(), a.js, natsjs.ReplayOptions{Stream: a.topo.OutStream(), MaxWait: 100 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, msg := range msgs {
			if msg.Subject == a.topo.RankSubject() {
				continue
			}
			subject := b.topo.Prefix + msg.Subject[len(a.topo.Prefix):]
			if _, err := b.js.Publish(ctx, subject, msg.Data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	o = b.options()
	o.Batch = 256
	start(t, o, nil)
	outB := waitScores(t, b, len(m.events))
	checkBoards(t, b, m)
	for i := range outA.scores {
		x, y := outA.scores[i], outB.scores[i]
		if x.String() != y.String() {
			t.Fatalf("score event %d: live %v, replay %v", i, x, y)
		}
	}
	if got := scoreLines(outA.scores); !slices.Equal(got, m.events) {
		t.Fatalf("score events\n got %v\nwant %v", got, m.events)
	}
}

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// TestRankerRestartsAfterRankSubjectPurged purges every message of
// P.out.rank (as retention does once push and the archive are past them)
// and starts the ranker again: it goes on from its ack floor, not from 0.
// No score is counted twice, no ScoreChanged is published again for the
// inputs already handled, and no snapshot version goes back or repeats.
func TestRankerRestartsAfterRankSubjectPurged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.options()
	log := randomLog(29, 30, 6)
	m := newModel()
	m.feed(log[:20]...)
	publish(t, e, log[:20]...)
	_, stopA := start(t, o, nil)
	before := waitScores(t, e, len(m.events))
	// The final top of the first part is out as a snapshot, and stays the
	// last message.
	want := m.board()[:min(o.TopN, len(m.board()))]
	var lastV uint64
	testenv.WaitUntil(t, wait, "no snapshot of the first part's final top", func() bool {
		out := readOutput(t, e)
		if len(out.snapshots) == 0 {
			return false
		}
		s := out.snapshots[len(out.snapshots)-1].s
		lastV = s.Version
		return sameTop(s, want)
	})
	stopA()
	before = readOutput(t, e)
	for _, s := range before.snapshots {
		lastV = max(lastV, s.s.Version)
	}

	st, err := e.js.Stream(t.Context(), e.topo.OutStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context(), jetstream.WithPurgeSubject(e.topo.RankSubject())); err != nil {
		t.Fatal(err)
	}
	if out := readOutput(t, e); len(out.scores)+len(out.snapshots) != 0 {
		t.Fatalf("purge left %d scores and %d snapshots", len(out.scores), len(out.snapshots))
	}

	// B starts on the purged subject. Its first snapshot (the board is
	// dirty after a start) must take a version above A's.
	start(t, o, nil)
	testenv.WaitUntil(t, wait, "no snapshot from the restarted ranker", func() bool {
		return len(readOutput(t, e).snapshots) > 0
	})
	if out := readOutput(t, e); len(out.scores) != 0 {
		t.Fatalf("restarted ranker published %d score events again: %v", len(out.scores), scoreLines(out.scores))
	}
	m.feed(log[20:]...)
	publish(t, e, log[20:]...)
	newEvents := m.events[len(before.scores):]
	out := waitScores(t, e, len(newEvents))
	if got := scoreLines(out.scores); !slices.Equal(got, newEvents) {
		t.Fatalf("score events after the purge\n got %v\nwant %v", got, newEvents)
	}
	checkBoards(t, e, m)
	want = m.board()[:min(o.TopN, len(m.board()))]
	testenv.WaitUntil(t, wait, "no snapshot of the final top", func() bool {
		out = readOutput(t, e)
		return len(out.snapshots) > 0 && sameTop(out.snapshots[len(out.snapshots)-1].s, want)
	})
	prev := lastV
	for i, s := range out.snapshots {
		if s.s.Version <= prev {
			t.Fatalf("snapshot %d after the purge has version %d, not above %d (the last before the purge was %d)", i, s.s.Version, prev, lastV)
		}
		prev = s.s.Version
	}
}

// sameTop reports whether snapshot s lists want.
func sameTop(s *eventpb.LeaderboardSnapshot, want []game.Entry) bool {
	if len(s.Top) != len(want) {
		return false
	}
	for i, x := range s.Top {
		if x.Player != want[i].Player || int64(x.Score) != want[i].Score || int64(x.Rank) != want[i].Rank {
			return false
		}
	}
	return true
}
