package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/archive"
	"treasure/internal/cli"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/retention"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
	"treasure/services/proximity"
)

// Issue 7's two end-to-end must-shows about retention and the archive, on
// the real pipeline (internal/stack/stacktest: the four services over the
// real NATS, Redis and PostgreSQL), with a real archiver and a real
// retention Retainer.

// walker is a player driven move by move over its own ingest socket: each
// move steps from where the last accepted one ended to a neighbour.
type walker struct {
	t     *testing.T
	g     *graph.Graph
	sock  *socket
	seq   uint64
	at    uint32
	spawn bool // the next move is the spawn
	// acked and refused: the seqs answered ack and, last, unavailable
	// (a refused seq sent again and acked is in acked only).
	acked map[uint64]bool
}

func newWalker(t *testing.T, d deployment, ingestWS, player string, start uint32) *walker {
	tok := d.token(t, player, "")
	return &walker{t: t, g: d.g, sock: dial(t, ingestWS+"/v1/moves/ws", tok), at: start, spawn: true, acked: map[uint64]bool{}}
}

// next returns the path of the walker's next move (not yet sent).
func (w *walker) path(to uint32) []uint32 {
	if w.spawn {
		return []uint32{graph.ID(to)}
	}
	return []uint32{graph.ID(w.at), graph.ID(to)}
}

// step picks the node the walker moves to next.
func (w *walker) step() uint32 {
	if w.spawn {
		return w.at
	}
	arcs := w.g.Neighbors(w.at)
	return arcs[int(w.seq)%len(arcs)].To
}

// send sends the move onto node to and returns its answer.
func (w *walker) send(to uint32) msg {
	w.t.Helper()
	seq := w.seq + 1
	w.sock.send(moveJSON(seq, w.path(to)...))
	m := w.sock.next(30 * time.Second)
	if m.Seq != seq {
		w.t.Fatalf("move %d answered %+v", seq, m)
	}
	if m.Type == "ack" {
		w.seq, w.at, w.spawn = seq, to, false
		w.acked[seq] = true
	}
	return m
}

// move sends the move onto to until it is acked, waiting as told on
// rate_limited and unavailable, and returns the unavailable answers seen.
func (w *walker) move(to uint32, deadline time.Duration) []msg {
	w.t.Helper()
	var refused []msg
	end := time.Now().Add(deadline)
	for {
		m := w.send(to)
		switch {
		case m.Type == "ack":
			return refused
		case m.Type == "error" && (m.Code == "unavailable" || m.Code == "rate_limited"):
			if m.Code == "unavailable" {
				refused = append(refused, m)
			}
			if time.Now().After(end) {
				w.t.Fatalf("move %d still refused after %v: %+v", w.seq+1, deadline, m)
			}
			time.Sleep(time.Duration(max(m.RetryAfterMS, 10)) * time.Millisecond)
		default:
			w.t.Fatalf("move %d: %+v", w.seq+1, m)
		}
	}
}

// readAll reads a whole stream through archive.ReplayAll (the archive for
// what the stream no longer holds), checking that sequences strictly grow.
func readAll(t *testing.T, js jetstream.JetStream, dir, stream string) []natsjs.Msg {
	t.Helper()
	var all []natsjs.Msg
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := archive.ReplayAll(ctx, js, dir, natsjs.ReplayOptions{Stream: stream}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if n := len(all); n > 0 && m.Seq <= all[n-1].Seq {
				return fmt.Errorf("%s: seq %d after %d", stream, m.Seq, all[n-1].Seq)
			}
			m.Data = bytes.Clone(m.Data)
			all = append(all, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ReplayAll %s: %v", stream, err)
	}
	return all
}

func streamFirst(t *testing.T, js jetstream.JetStream, stream string) (first, last, msgs uint64) {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.FirstSeq, info.State.LastSeq, info.State.Msgs
}

// rankerIdle reports "" once the ranker has consumed all of OUT.
func rankerIdle(js jetstream.JetStream, topo natsjs.Topology) string {
	c, err := js.Consumer(context.Background(), topo.OutStream(), retention.RankerDurable(topo))
	if err != nil {
		return "ranker consumer: " + err.Error()
	}
	info, err := c.Info(context.Background())
	if err != nil {
		return "ranker consumer: " + err.Error()
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		return fmt.Sprintf("ranker: %d pending, %d unacked", info.NumPending, info.NumAckPending)
	}
	return ""
}

func startArchiver(t *testing.T, js jetstream.JetStream, topo natsjs.Topology, dir string) (stop func()) {
	t.Helper()
	a, err := archive.New(js, archive.Options{Dir: dir, Topology: topo, Segment: time.Second, Grace: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return runUntilCleanup(t, "archiver", a.Run)
}

// TestLongRunTrimmedReplayEqualsLive (issue 7, must show 3): a run long
// enough that retention trims both streams several times (checkpoints every
// second, an archiver with 1 s segments, a Retainer with a 1 ms age bound
// passed by the test every round, about a second), with players under the open-loop load
// generator and a walker claiming a treasure dropped next to it at every
// round; partition 1's proximity worker (run by the test, the stack's
// serves partition 0) is stopped and started again once its subject has
// been trimmed, so it resumes from a checkpoint. Then, on the quiet pipeline, with both streams' heads gone:
// `treasure replay --check` (IN and OUT read through archive.ReplayAll)
// finds the replay equal to what OUT holds, `treasure replay --verify`
// finds no difference against P_OUT, PostgreSQL and Redis, and OUT read
// through ReplayAll is exactly what the services published live (one
// message per Nats-Msg-Id: see outCapture).
func TestLongRunTrimmedReplayEqualsLive(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	// The stack's proximity worker serves partition 0; partition 1's
	// worker is the test's, restarted mid-run after trims.
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: secret, Partitions: 2, CheckpointEvery: time.Second, ProximityPartitions: []int{0}})
	topo := sp.Topology
	nc, js := connectJS(t, sp.NATSURL)
	live := captureOut(t, nc, topo)
	part, err := graph.Partition(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	startWorker := func() (stop func()) {
		pw, err := proximity.New(proximity.Options{Graph: g, Part: part, Partitions: []int{1}, Radius: 2000, Topology: topo,
			NC: nc, JS: js, CheckpointEvery: time.Second, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		stop = runUntilCleanup(t, "partition 1's worker", pw.Run)
		testenv.WaitFor(t, 30*time.Second, func() string {
			if err := pw.Ready(); err != nil {
				return err.Error()
			}
			return ""
		})
		return stop
	}
	stopWorker := startWorker()
	restarted := false
	dir := t.TempDir()
	startArchiver(t, js, topo, dir)
	ret, err := retention.New(js, retention.Options{Topology: topo, MaxAge: time.Millisecond, HighWater: -1})
	if err != nil {
		t.Fatal(err)
	}
	d := deployment{ingest: "http" + strings.TrimPrefix(sp.IngestURL, "ws"), secret: secret, g: g}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Treasures for the load generator's players to stumble on.
	admin := d.token(t, "admin-longrun", "admin")
	if _, err := loadgen.PostDrop(ctx, nil, d.ingest, admin, loadgen.RandomTreasures(g, 3000, 7, "lr-")); err != nil {
		t.Fatal(err)
	}
	lg := runLoad(ctx, loadgen.OpenOptions{
		Ingest: []string{sp.IngestURL}, Push: []string{sp.PushURL}, Graph: g, Secret: secret,
		PlayerPrefix: "lr-", Players: 30, Seed: 7,
		Schedule: loadgen.Schedule{Rate: 4, Duration: 12 * time.Second},
	})

	// Rounds: the walker claims a treasure dropped next to it, then
	// retention passes; count each stream's trims (its first seq moving).
	w := newWalker(t, d, sp.IngestURL, "lr-walker", 1234)
	w.move(w.step(), 30*time.Second)
	firsts := map[string]uint64{topo.InStream(): 1, topo.OutStream(): 1}
	trims := map[string]int{}
	var passes []retention.Report // every pass's report, for a failure's diagnosis
	countTrims := func(rep retention.Report) {
		passes = append(passes, rep)
		for _, s := range rep.Streams {
			if s.FirstSeq > firsts[s.Stream] {
				trims[s.Stream]++
				firsts[s.Stream] = s.FirstSeq
			}
		}
	}
	claims := 0
	var res loadDone
	for round := 0; ; round++ {
		to := w.step()
		drop := fmt.Sprintf(`{"treasures":[{"id":"lr-walk-%d","node":%d,"points":%d}]}`, round, graph.ID(to), 10+round)
		if code, body := postJSON(t, d.ingest+"/v1/admin/drops", admin, drop); code != 202 {
			t.Fatalf("drop: %d %s", code, body)
		}
		w.move(to, 30*time.Second)
		claims++
		rep, err := ret.Once(ctx)
		if err != nil {
			t.Logf("retention pass %d: %v", round, err)
		}
		countTrims(rep)
		// Partition 1's worker restarts once its subject has been
		// trimmed: from its checkpoint, the head of its log gone.
		if !restarted && trims[topo.InStream()] >= 2 && subjectFirst(t, js, topo.InStream(), topo.InSubject(1)) > 1 {
			stopWorker()
			reg = prometheus.NewRegistry() // the new worker's metrics
			stopWorker = startWorker()
			restarted = true
			if n := counterValue(t, reg, "treasure_proximity_checkpoint_loads_total"); n != 1 {
				t.Fatalf("partition 1's restarted worker started from %v checkpoints, want 1", n)
			}
			t.Logf("partition 1's worker restarted at round %d, its subject starting at seq %d", round, subjectFirst(t, js, topo.InStream(), topo.InSubject(1)))
		}
		done := false
		select {
		case res = <-lg:
			done = true
		case <-time.After(time.Second):
		}
		if done {
			break
		}
	}
	if res.err != nil {
		t.Fatalf("load generator: %v", res.err)
	}
	if !restarted {
		t.Fatalf("partition 1's worker was never restarted: trims %v", trims)
	}
	r := res.r
	t.Logf("load: sent %d acked %d answered %d lost %d duplicated %d errors %v; walker claims %d; trims %v, first seqs %v",
		r.Sent, r.Acked, r.Answered, r.Lost, r.Duplicated, r.Errors, claims, trims, firsts)
	if r.Acked == 0 || r.Failed() {
		t.Fatalf("load generator's accounting: %+v", *r)
	}

	// Quiet: the ranker has everything; a last pass trims what the
	// holders now allow.
	testenv.WaitFor(t, 60*time.Second, func() string { return rankerIdle(js, topo) })
	testenv.WaitFor(t, 60*time.Second, func() string {
		rep, err := ret.Once(ctx)
		if err != nil {
			return err.Error()
		}
		countTrims(rep)
		for _, s := range []string{topo.InStream(), topo.OutStream()} {
			if trims[s] < 3 {
				return fmt.Sprintf("%s trimmed %d times (first seq %d), want 3 or more", s, trims[s], firsts[s])
			}
		}
		return ""
	})
	for _, s := range []string{topo.InStream(), topo.OutStream()} {
		first, last, _ := streamFirst(t, js, s)
		t.Logf("%s: first seq %d, last %d, %d trims", s, first, last, trims[s])
		if first <= 1 {
			t.Fatalf("%s still holds its first message", s)
		}
	}

	// What the services published live on OUT = OUT through ReplayAll,
	// message for message by Nats-Msg-Id (outCapture), but for what was
	// published after the read (the ranker's last leaderboard snapshot).
	out := readAll(t, js, dir, topo.OutStream())
	lm := live.matchRead(t, js, topo.OutStream(), out, 15*time.Second)
	t.Logf("OUT through ReplayAll: %d messages; %v", len(out), lm)
	if len(lm.problems) > 0 {
		explainMissing(t, js, live, lm, passes, dir, topo.OutStream())
		t.Fatalf("OUT through ReplayAll (%d messages) is not what was published live (%v):\n%s", len(out), lm, strings.Join(lm.problems, "\n"))
	}
	// And nothing doubled: every move has one proximity result.
	var b eventpb.Batch
	results := map[string]bool{}
	for _, m := range out {
		if err := event.Decode(m.Data, &b); err != nil {
			t.Fatalf("OUT seq %d: %v", m.Seq, err)
		}
		for _, ev := range b.Events {
			if p := ev.GetProximity(); p != nil {
				k := fmt.Sprintf("%s/%d", p.Player, p.Seq)
				if results[k] {
					t.Fatalf("two proximity results for %s", k)
				}
				results[k] = true
			}
		}
	}
	if want := int(r.Acked) + len(w.acked); len(results) != want {
		t.Fatalf("%d proximity results on OUT, %d moves acked", len(results), want)
	}

	// treasure replay --check and --verify, through the archive.
	env := map[string]string{"TREASURE_NATS_URL": sp.NATSURL, "TREASURE_STREAM_PREFIX": topo.Prefix,
		"TREASURE_PARTITIONS": "2", "TREASURE_GRAPH": testgraph.Path(t, "amsterdam.gr.gz"), "TREASURE_RADIUS": "2000",
		"TREASURE_ARCHIVE_DIR": dir, "TREASURE_LOG_LEVEL": "warn",
		"TREASURE_DATABASE_URL": testenv.SchemaURL(t, sp.Schema), "TREASURE_REDIS_URL": testenv.RedisURL()}
	run := func(args ...string) (int, string, string) {
		var so, se bytes.Buffer
		code := cli.Run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(""), &so, &se)
		return code, so.String(), se.String()
	}
	code, stdout, stderr := run("replay", "--check")
	t.Logf("replay --check: %s", strings.TrimSpace(stdout))
	if code != 0 || !strings.Contains(stdout, " identical") {
		t.Fatalf("replay --check: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var nres, nclaims int
	if _, err := fmt.Sscanf(stdout, "%d results and %d claims identical", &nres, &nclaims); err != nil || nres != len(results) {
		t.Fatalf("replay --check compared %d results (%v), OUT holds %d", nres, err, len(results))
	}
	if nclaims < claims {
		t.Fatalf("replay --check compared %d claims, the walker alone made %d", nclaims, claims)
	}
	code, stdout, stderr = run("replay", "--verify", "--json", "--quiet", "--redis-prefix", sp.RedisPrefix)
	if code != 0 {
		t.Fatalf("replay --verify: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var v struct {
		OK          bool     `json:"ok"`
		Claims      int      `json:"claims"`
		Players     int      `json:"players"`
		Checked     []string `json:"checked"`
		Differences []any    `json:"differences"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("replay --verify --json: %v\n%s", err, stdout)
	}
	t.Logf("replay --verify: ok %v, %d claims, %d players, checked %v", v.OK, v.Claims, v.Players, v.Checked)
	if !v.OK || len(v.Differences) != 0 || v.Claims != nclaims || strings.Join(v.Checked, ",") != "out,postgres,redis" {
		t.Fatalf("replay --verify: %s", stdout)
	}
}

// TestArchiverStoppedHoldsRetentionThenResumes (issue 7, must show 4): IN
// is capped at 300 messages; the archiver runs a while, then stops, while
// retention (1 ms age bound, every 100 ms) keeps running and players move
// under the open-loop load generator. IN is never trimmed past what the
// archiver archived; it fills and ingest answers `unavailable` with
// retry_after_ms; once the archiver runs again retention trims and moves
// are accepted again. Every acked move has exactly one result (the load
// generator's accounting: nothing lost, doubled or unexpected — a move
// answered unavailable and not sent again that reached the log would show
// as unexpected), and the walker's moves are in the log (archive + IN)
// exactly once each, its refused-and-not-acked ones not at all.
func TestArchiverStoppedHoldsRetentionThenResumes(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	inCap := natsjs.Limits{MaxMsgs: 300, MaxBytes: 4 << 20}
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: secret, Partitions: 2, CheckpointEvery: time.Second, In: inCap})
	topo := sp.Topology
	_, js := connectJS(t, sp.NATSURL)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	retDone := make(chan error, 1)
	go func() {
		retDone <- retention.Run(ctx, js, retention.Options{Topology: topo, MaxAge: time.Millisecond, HighWater: 0.5,
			Every: 100 * time.Millisecond, Timeout: 10 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-retDone; err != nil {
			t.Errorf("retention: %v", err)
		}
	})
	d := deployment{ingest: "http" + strings.TrimPrefix(sp.IngestURL, "ws"), secret: secret, g: g}

	// The archiver archives the first moves, then stops.
	w := newWalker(t, d, sp.IngestURL, "hold-walker", 4321)
	stop := startArchiver(t, js, topo, dir)
	testenv.WaitFor(t, 30*time.Second, func() string {
		w.move(w.step(), 30*time.Second)
		in, _, err := archive.Progress(ctx, js, topo)
		if err != nil || in < 5 {
			return fmt.Sprintf("archived IN up to %d (%v)", in, err)
		}
		return ""
	})
	stop()
	archivedIn, _, err := archive.Progress(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	// Until every partition's oldest kept checkpoint is past what was
	// archived (a drop is an input of every partition; a partition
	// checkpoints only after inputs), so that the archiver alone holds IN
	// back once it fills. (A partition whose checkpoints all predate the
	// archiver's stop holds retention there itself, and with no input
	// while the stream is full they never move: see the report.)
	admin := d.token(t, "admin-hold", "admin")
	pads := 0
	testenv.WaitFor(t, 30*time.Second, func() string {
		time.Sleep(250 * time.Millisecond)
		pads++
		drop := fmt.Sprintf(`{"treasures":[{"id":"hold-pad-%d","node":%d,"points":1}]}`, pads, graph.ID(uint32(pads)))
		if code, body := postJSON(t, d.ingest+"/v1/admin/drops", admin, drop); code != 202 {
			t.Fatalf("drop: %d %s", code, body)
		}
		return heldByArchiver(ctx, js, topo, archivedIn)
	})

	stopLoad := make(chan struct{})
	lg := runLoad(ctx, loadgen.OpenOptions{
		Ingest: []string{sp.IngestURL}, Push: []string{sp.PushURL}, Graph: g, Secret: secret,
		PlayerPrefix: "hold-", Players: 20, Seed: 11, Stop: stopLoad,
		Schedule: loadgen.Schedule{Rate: 5, Duration: 40 * time.Second},
	})

	// The walker moves until refused.
	var refused msg
	testenv.WaitFor(t, 40*time.Second, func() string {
		to := w.step()
		m := w.send(to)
		switch {
		case m.Type == "ack":
			return "still accepted"
		case m.Code == "unavailable":
			refused = m
			return ""
		case m.Code == "rate_limited":
			time.Sleep(time.Duration(m.RetryAfterMS) * time.Millisecond)
			return "rate limited"
		}
		t.Fatalf("move answered %+v", m)
		return ""
	})
	if refused.RetryAfterMS <= 0 {
		t.Fatalf("unavailable without retry_after_ms: %+v", refused)
	}
	// Held: full, and not trimmed past what the archiver archived, over
	// several more retention passes.
	for range 5 {
		first, last, n := streamFirst(t, js, topo.InStream())
		if first > archivedIn+1 {
			t.Fatalf("IN trimmed to first seq %d, past the archive's %d", first, archivedIn)
		}
		t.Logf("IN while held: first seq %d, last %d, %d messages; archived %d", first, last, n, archivedIn)
		time.Sleep(200 * time.Millisecond)
	}
	// Retention says why: every IN subject is held by the archiver, at
	// what it archived (the workers' consumers and checkpoints pass it).
	testenv.WaitFor(t, 30*time.Second, func() string { return heldByArchiver(ctx, js, topo, archivedIn) })
	if m := w.send(w.step()); m.Code != "unavailable" {
		t.Fatalf("the walker's move on the full, held stream: %+v", m)
	}
	heldFirst, _, _ := streamFirst(t, js, topo.InStream())

	// The archiver runs again: retention trims, the walker's move goes
	// through.
	startArchiver(t, js, topo, dir)
	time.Sleep(time.Duration(refused.RetryAfterMS) * time.Millisecond)
	w.move(w.step(), 40*time.Second)
	testenv.WaitFor(t, 30*time.Second, func() string {
		if first, _, _ := streamFirst(t, js, topo.InStream()); first <= heldFirst {
			return fmt.Sprintf("IN first seq %d, not trimmed since %d", first, heldFirst)
		}
		return ""
	})
	for range 10 {
		w.move(w.step(), 40*time.Second)
	}
	close(stopLoad)
	res := <-lg
	if res.err != nil {
		t.Fatalf("load generator: %v", res.err)
	}
	r := res.r
	t.Logf("load: sent %d acked %d answered %d retries %d rejected %d lost %d duplicated %d unexpected %d errors %v",
		r.Sent, r.Acked, r.Answered, r.Retries, r.Rejected, r.Lost, r.Duplicated, r.Unexpected, r.Errors)
	if r.Acked == 0 || r.Failed() || r.Lost != 0 || r.Duplicated != 0 || r.Unexpected != 0 {
		t.Fatalf("load generator's accounting: %+v", *r)
	}
	if r.Errors["unavailable"] == 0 {
		t.Errorf("the load generator's players were never answered unavailable: %v", r.Errors)
	}

	// The walker's moves in the log (archive + IN): each acked seq once,
	// nothing else.
	testenv.WaitFor(t, 30*time.Second, func() string { return rankerIdle(js, topo) })
	seen := map[uint64]int{}
	var b eventpb.Batch
	for _, m := range readAll(t, js, dir, topo.InStream()) {
		if err := event.Decode(m.Data, &b); err != nil {
			t.Fatalf("IN seq %d: %v", m.Seq, err)
		}
		for _, ev := range b.Events {
			if mv := ev.GetMove(); mv != nil && mv.Player == "hold-walker" {
				seen[mv.Seq]++
			}
		}
	}
	for seq := range w.acked {
		if seen[seq] != 1 {
			t.Errorf("walker move %d acked, %d times in the log", seq, seen[seq])
		}
	}
	for seq, n := range seen {
		if !w.acked[seq] {
			t.Errorf("walker move %d never acked, %d times in the log", seq, n)
		}
	}
	t.Logf("walker: %d moves acked, first refused with retry_after_ms %d", len(w.acked), refused.RetryAfterMS)
}

// heldByArchiver reports "" when what holds retention back on every IN
// subject is the (stopped) archiver: its progress key, or its durable
// consumer.
func heldByArchiver(ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, archived uint64) string {
	rep, err := retention.Inspect(ctx, js, topo)
	if err != nil {
		return err.Error()
	}
	if len(rep.Streams) == 0 || len(rep.Streams[0].Subjects) != topo.Partitions {
		return fmt.Sprintf("retention report: %+v", rep.Streams)
	}
	// The stopped archiver's durable consumer counts too (its ack floor
	// can be a little behind the progress key it wrote before it acked).
	own := "consumer:" + archive.Durable(topo, topo.InStream())
	for _, s := range rep.Streams[0].Subjects {
		if !(s.HeldBy == "archiver" && s.SafeSeq == archived || s.HeldBy == own && s.SafeSeq <= archived) {
			return fmt.Sprintf("%s held by %q at %d, want the archiver at %d", s.Subject, s.HeldBy, s.SafeSeq, archived)
		}
	}
	return ""
}

// subjectFirst returns the sequence of a subject's first message in a
// stream.
func subjectFirst(t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), 1, jetstream.WithGetMsgSubject(subject))
	if err != nil {
		t.Fatalf("%s's first message: %v", subject, err)
	}
	return m.Sequence
}

// counterValue reads a counter without labels from reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
