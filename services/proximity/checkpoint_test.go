package proximity

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// ckptWorker is a worker started by a checkpoint test, with its own
// metrics and the "partition ready" lines it logged.
type ckptWorker struct {
	reg   *prometheus.Registry
	ready *readyLog
	stop  func()
}

// startCkptWorker starts a worker over every partition with checkpoints
// every `every` (negative: off) in the topology's bucket, keeping keep. A
// kill-mode worker writes no checkpoint when stopped, as a killed process.
func startCkptWorker(tb testing.TB, ctx context.Context, f fixture, topo natsjs.Topology, url string, every time.Duration, keep int, kill bool) *ckptWorker {
	tb.Helper()
	nc := testenv.ConnectNATS(tb, url)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return runCkptWorker(tb, ctx, Options{Graph: f.g, Part: f.part, Radius: f.radius, Topology: topo, NC: nc, JS: js, Batch: 8, AckWait: 2 * time.Second,
		CheckpointEvery: every, CheckpointKeep: keep}, testLog().Handler(), kill)
}

// runCkptWorker runs a worker of options o until its stop (or the test's
// cleanup), with the worker's own registry and its log going to next
// through the record of its "partition ready" lines.
func runCkptWorker(tb testing.TB, ctx context.Context, o Options, next slog.Handler, kill bool) *ckptWorker {
	tb.Helper()
	return runHookedWorker(tb, ctx, o, next, kill, nil)
}

// runHookedWorker is runCkptWorker with the test hook hook (nil: none).
func runHookedWorker(tb testing.TB, ctx context.Context, o Options, next slog.Handler, kill bool, hook func(k int, at hookPoint)) *ckptWorker {
	tb.Helper()
	cw := &ckptWorker{reg: prometheus.NewRegistry(), ready: &readyLog{}}
	o.Log, o.Registerer = slog.New(teeHandler{cw.ready, next}), cw.reg
	w, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	w.noFinalCheckpoint, w.hook = kill, hook
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	cw.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("worker: %v", err)
		}
	}
	tb.Cleanup(cw.stop)
	return cw
}

// counter returns the value of a counter of the worker's registry.
func (cw *ckptWorker) counter(tb testing.TB, name string) float64 {
	tb.Helper()
	return counterValue(tb, cw.reg, name)
}

// readyInfo is what a "partition ready" line says.
type readyInfo struct{ checkpoint, floor, replayed uint64 }

// readyLog records the "partition ready" lines by partition.
type readyLog struct {
	mu    sync.Mutex
	parts map[int]readyInfo
}

func (r *readyLog) get() map[int]readyInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.parts)
}

type teeHandler struct {
	r    *readyLog
	next slog.Handler
}

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return attrHandler{h, as}
}
func (h teeHandler) WithGroup(string) slog.Handler { return h }
func (h teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	return h.handle(ctx, rec, nil)
}

func (h teeHandler) handle(ctx context.Context, rec slog.Record, pre []slog.Attr) error {
	if rec.Message == "partition ready" {
		part := -1
		var info readyInfo
		each := func(a slog.Attr) bool {
			switch a.Key {
			case "partition":
				part = int(a.Value.Int64())
			case "checkpoint_seq":
				info.checkpoint = a.Value.Uint64()
			case "replayed_to_seq":
				info.floor = a.Value.Uint64()
			case "replayed_messages":
				info.replayed = a.Value.Uint64()
			}
			return true
		}
		for _, a := range pre {
			each(a)
		}
		rec.Attrs(each)
		h.r.mu.Lock()
		if h.r.parts == nil {
			h.r.parts = map[int]readyInfo{}
		}
		h.r.parts[part] = info
		h.r.mu.Unlock()
	}
	if h.next.Enabled(ctx, rec.Level) {
		rec2 := rec.Clone()
		rec2.AddAttrs(pre...)
		return h.next.Handle(ctx, rec2)
	}
	return nil
}

type attrHandler struct {
	t  teeHandler
	as []slog.Attr
}

func (h attrHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return attrHandler{h.t, append(slices.Clone(h.as), as...)}
}
func (h attrHandler) WithGroup(string) slog.Handler { return h }
func (h attrHandler) Handle(ctx context.Context, rec slog.Record) error {
	return h.t.handle(ctx, rec, h.as)
}

// waitIdle polls until every partition's consumer has nothing waiting and
// nothing unacked (claim notices included), so that a stop lands between
// batches and writes its checkpoint.
func waitIdle(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology) {
	tb.Helper()
	testenv.WaitFor(tb, 30*time.Second, func() string {
		busy := 0
		for k := 0; k < topo.Partitions; k++ {
			c, err := js.Consumer(ctx, topo.InStream(), Durable(topo, k))
			if err != nil {
				tb.Fatal(err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				tb.Fatal(err)
			}
			busy += int(info.NumPending) + info.NumAckPending
		}
		if busy == 0 {
			return ""
		}
		return fmt.Sprintf("%d inputs still waiting or unacked", busy)
	})
}

// countIn counts partition k's input messages with sequences in (from, to].
func countIn(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, k int, from, to uint64) uint64 {
	tb.Helper()
	var n uint64
	err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.InStream(), Subjects: []string{topo.InSubject(k)}, StartSeq: from + 1, MaxWait: 200 * time.Millisecond},
		func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if m.Seq <= to {
					n++
				}
			}
			return nil
		})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// outIDs returns the Nats-Msg-Id of every message in the OUT stream.
func outIDs(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology) []string {
	tb.Helper()
	var ids []string
	err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.OutStream(), MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// TestWorkerRestartsFromCheckpointReplayingOnlyTheTail: a worker stopped
// cleanly writes a checkpoint per partition; its successor loads it and
// replays nothing; that one is killed (no checkpoint written) after more
// moves, and the next start loads the first checkpoint and replays exactly
// the inputs between it and the ack floor, not the log from its start.
// The outputs equal an uninterrupted run's.
func TestWorkerRestartsFromCheckpointReplayingOnlyTheTail(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"b", f.k)
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	third := len(f.moves) / 3

	publishDrops(t, ctx, js, topo, f)
	w1, first := cleanRun(t, ctx, js, url, f, topo, store, f.moves[:third], third, 1)
	if n := w1.counter(t, "treasure_proximity_checkpoints_total"); n != float64(f.k) {
		t.Fatalf("%v checkpoints written at a clean stop, want one per partition (%d)", n, f.k)
	}

	w2 := startCkptWorker(t, ctx, f, topo, url, time.Hour, 3, true)
	publishMoves(t, ctx, js, topo, f, f.moves[third:2*third])
	waitOutputs(t, ctx, js, topo, 2*third)
	w2.stop()
	if n := w2.counter(t, "treasure_proximity_replayed_messages_total"); n != 0 {
		t.Fatalf("a start from a checkpoint written at a clean stop replayed %v messages", n)
	}
	if n := w2.counter(t, "treasure_proximity_checkpoint_loads_total"); n != float64(f.k) {
		t.Fatalf("%v checkpoint loads, want %d", n, f.k)
	}

	publishMoves(t, ctx, js, topo, f, f.moves[2*third:])
	w3, b := finalRun(t, ctx, js, url, f, topo, 3)
	var want, whole uint64
	ready := w3.ready.get()
	for k := 0; k < f.k; k++ {
		r, ok := ready[k]
		if !ok {
			t.Fatalf("partition %d logged no ready line: %v", k, ready)
		}
		if r.checkpoint != first[k] {
			t.Fatalf("partition %d started from the checkpoint at %d, want %d", k, r.checkpoint, first[k])
		}
		n := countIn(t, ctx, js, topo, k, r.checkpoint, r.floor)
		if n != r.replayed {
			t.Fatalf("partition %d replayed %d messages, %d lie between its checkpoint %d and ack floor %d", k, r.replayed, n, r.checkpoint, r.floor)
		}
		want += n
		whole += countIn(t, ctx, js, topo, k, 0, r.floor)
	}
	if got := w3.counter(t, "treasure_proximity_replayed_messages_total"); got != float64(want) || want == 0 || want >= whole {
		t.Fatalf("replayed %v messages; the tails hold %d, the logs up to the ack floors %d", got, want, whole)
	}
	if n := w3.counter(t, "treasure_proximity_checkpoint_invalid_total"); n != 0 {
		t.Fatalf("%v checkpoints refused", n)
	}
	checkLikeUninterrupted(t, ctx, js, url, f, topo, b)
}

// TestWorkerSkipsDamagedCheckpoints: the newest checkpoint of partition 0
// has a flipped byte, partition 1's is cut short (a partial object), and
// partition 2's newest write was aborted before it completed (no object)
// and it has a sound checkpoint beyond the log's end: partitions 0 and 1
// fall back to the checkpoint before, partition 2 to its newest complete
// one within the log, the three refusals counted in
// treasure_proximity_checkpoint_invalid_total and the refused checkpoints
// deleted. Outputs equal an uninterrupted run's; old checkpoints are
// pruned to CheckpointKeep.
func TestWorkerSkipsDamagedCheckpoints(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"d", f.k)
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	third := len(f.moves) / 3
	publishDrops(t, ctx, js, topo, f)
	var seqs [][]uint64 // per run, per partition: the newest checkpoint
	for run := range 2 {
		_, newest := cleanRun(t, ctx, js, url, f, topo, store, f.moves[run*third:(run+1)*third], (run+1)*third, run+1)
		seqs = append(seqs, newest)
	}
	// Partition 0: a flipped byte in the treasures section.
	data, err := store.Get(ctx, 0, seqs[1][0])
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 1
	if err := store.Put(ctx, 0, seqs[1][0], data); err != nil {
		t.Fatal(err)
	}
	// Partition 1: a partial checkpoint, as a writer without the object
	// store's atomic put would leave it.
	data, err = store.Get(ctx, 1, seqs[1][1])
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, 1, seqs[1][1], data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	// Partition 2: a write of a newer checkpoint killed half way.
	_, err = store.Store().Put(ctx, jetstream.ObjectMeta{Name: natsjs.CheckpointName(2, seqs[1][2]+1000)}, &abortingReader{data: data})
	if err == nil {
		t.Fatal("the aborted put succeeded")
	}

	// Partition 2: besides, a sound checkpoint beyond the log's end, as
	// one of an older log of the same name would be.
	sub2, err := graph.Subgraph(f.g, f.part, 2, f.radius)
	if err != nil {
		t.Fatal(err)
	}
	data, err = store.Get(ctx, 2, seqs[1][2])
	if err != nil {
		t.Fatal(err)
	}
	e2, meta2, err := game.ReadCheckpoint(data, sub2, f.radius, game.Fingerprint(sub2))
	if err != nil {
		t.Fatal(err)
	}
	meta2.Seq = 1 << 40
	if err := store.Put(ctx, 2, meta2.Seq, e2.AppendCheckpoint(nil, meta2, game.Fingerprint(sub2))); err != nil {
		t.Fatal(err)
	}

	publishMoves(t, ctx, js, topo, f, f.moves[2*third:])
	w, b := finalRun(t, ctx, js, url, f, topo, 2)
	if n := w.counter(t, "treasure_proximity_checkpoint_invalid_total"); n != 3 {
		t.Fatalf("%v checkpoints refused, want 3", n)
	}
	ready := w.ready.get()
	loaded := []uint64{seqs[0][0], seqs[0][1], seqs[1][2]}
	for k, want := range loaded {
		if ready[k].checkpoint != want {
			t.Fatalf("partition %d started from the checkpoint at %d, want %d (ready lines %v)", k, ready[k].checkpoint, want, ready)
		}
	}
	for k := 0; k < f.k; k++ {
		s, err := store.Seqs(ctx, k)
		if err != nil || len(s) != 2 || s[0] <= seqs[1][k] || s[0] >= 1<<40 || s[1] != loaded[k] {
			t.Fatalf("partition %d after the last clean stop: checkpoints %v (%v), want the 2 newest, a new one first, the refused ones deleted", k, s, err)
		}
	}
	checkLikeUninterrupted(t, ctx, js, url, f, topo, b)
}

// TestWorkerKeepsCheckpointsOfAnotherVersion: a newer checkpoint of a
// format version this build does not read (a newer build's, before a
// rollback) is skipped for the one before, counted as refused, and kept.
func TestWorkerKeepsCheckpointsOfAnotherVersion(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"v", f.k)
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	half := len(f.moves) / 2
	publishDrops(t, ctx, js, topo, f)
	_, first := cleanRun(t, ctx, js, url, f, topo, store, f.moves[:half], half, 1)
	publishMoves(t, ctx, js, topo, f, f.moves[half:])
	data, err := store.Get(ctx, 0, first[0])
	if err != nil {
		t.Fatal(err)
	}
	data[8] = 99 // format version 99
	future := first[0] + 1
	if err := store.Put(ctx, 0, future, data); err != nil {
		t.Fatal(err)
	}
	w, b := finalRun(t, ctx, js, url, f, topo, 3)
	if n := w.counter(t, "treasure_proximity_checkpoint_invalid_total"); n != 1 {
		t.Fatalf("%v checkpoints refused, want 1", n)
	}
	if got := w.ready.get()[0].checkpoint; got != first[0] {
		t.Fatalf("partition 0 started from the checkpoint at %d, want %d", got, first[0])
	}
	s, err := store.Seqs(ctx, 0)
	if err != nil || len(s) != 3 || s[1] != future || s[2] != first[0] {
		t.Fatalf("partition 0's checkpoints after the stop: %v (%v), want a new one, the version 99 one at %d and the one at %d", s, err, future, first[0])
	}
	checkLikeUninterrupted(t, ctx, js, url, f, topo, b)
}

// abortingReader hands out half its data, then fails: a writer killed
// during the upload.
type abortingReader struct {
	data []byte
	off  int
}

func (r *abortingReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data)/2 {
		return 0, fmt.Errorf("killed after %d bytes", r.off)
	}
	n := copy(p, r.data[r.off:len(r.data)/2])
	r.off += n
	return n, nil
}
