package proximity

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// BenchmarkWorkerRestart measures issue 7's restart figures
// (BENCHMARKS.md "Issue 7: checkpoints and restart"; scripts/bench-restart.sh
// runs it): a log of TREASURE_BENCH_MOVES synthetic moves (default
// 100,000; 25 per message, as ingest batches them) of
// TREASURE_BENCH_PLAYERS players (35,000) over the graph snapshot
// TREASURE_BENCH_GRAPH (required: the 2.3 M-node synthetic city), after
// TREASURE_BENCH_TREASURES drops (20,000), in one partition, on a private
// embedded JetStream server. A worker consumes the whole log writing
// checkpoints (every 10 s, and at its clean stop); then each iteration
// restarts a worker — New (the partition's subgraph) plus Run until the
// partition is ready to serve — with its checkpoint ("checkpoint") or
// without (rebuild from the whole log, "no-checkpoint"). ns/op is the
// restart time. The fill reports the checkpoint's size and write time.
func BenchmarkWorkerRestart(b *testing.B) {
	path := os.Getenv("TREASURE_BENCH_GRAPH")
	if path == "" {
		b.Skip("TREASURE_BENCH_GRAPH (a graph snapshot) not set; see scripts/bench-restart.sh")
	}
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	moves, players, treasures := env("TREASURE_BENCH_MOVES", 100_000), env("TREASURE_BENCH_PLAYERS", 35_000), env("TREASURE_BENCH_TREASURES", 20_000)
	rl := &restartLog{}
	rl.once.Do(func() { rl.fill(b, path, moves, players, treasures) })
	if rl.err != nil {
		b.Fatal(rl.err)
	}
	for _, mode := range []struct {
		name  string
		every time.Duration
	}{{"checkpoint", time.Hour}, {"no-checkpoint", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			var replayed float64
			for b.Loop() {
				t0 := time.Now()
				cw := rl.start(b, mode.every)
				waitReady(b, cw, 1)
				d := time.Since(t0)
				cw.stop()
				replayed = cw.counter(b, "treasure_proximity_replayed_messages_total")
				fmt.Fprintf(os.Stderr, "proximity %s: moves in log %d, restart %v, replayed %v messages\n", mode.name, moves, d.Round(time.Millisecond), replayed)
			}
			b.ReportMetric(replayed, "replayed-msgs")
		})
	}
}

// restartLog is the filled log BenchmarkWorkerRestart restarts against.
type restartLog struct {
	once sync.Once
	err  error
	f    fixture
	topo natsjs.Topology
	url  string
}

func (rl *restartLog) fill(b *testing.B, path string, moves, players, treasures int) {
	t0 := time.Now()
	g, err := graph.LoadSnapshot(path)
	if err != nil {
		rl.err = err
		return
	}
	rl.f = fixture{g: g, part: make([]uint32, g.NumNodes()), k: 1, radius: 2000}
	url, _ := testenv.EmbeddedNATS(b)
	rl.url = url
	nc := testenv.ConnectNATS(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		rl.err = err
		return
	}
	big := natsjs.Limits{MaxBytes: 8 << 30, MaxMsgs: 50_000_000}
	rl.topo = natsjs.Topology{Prefix: "bench", Partitions: 1, In: big, Out: big, Upd: big, DLQ: small}
	ctx := context.Background()
	if err := rl.topo.Ensure(ctx, js); err != nil {
		rl.err = err
		return
	}
	pub, err := natsjs.NewPublisher(nc, natsjs.PublisherOptions{MaxInFlight: 4096, AckTimeout: time.Minute})
	if err != nil {
		rl.err = err
		return
	}
	defer pub.Close()
	var futs []*natsjs.Future
	send := func(evs []*eventpb.Event) {
		data, err := event.AppendBatch(nil, evs)
		if err != nil {
			b.Fatal(err)
		}
		f, err := pub.Publish(ctx, rl.topo.InSubject(0), data, "")
		if err != nil {
			b.Fatal(err)
		}
		futs = append(futs, f)
		if len(futs) == 4096 {
			for _, f := range futs {
				if _, err := f.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			futs = futs[:0]
		}
	}
	var evs []*eventpb.Event
	for i := 0; i < treasures; i++ {
		node := uint32(1 + (uint64(i)*2654435761)%uint64(g.NumNodes()))
		evs = append(evs, &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: fmt.Sprintf("T%05d", i), Node: node, Points: uint64(1 + i%5)}}})
		if len(evs) == 500 {
			send(evs)
			evs = evs[:0]
		}
	}
	// The moves, generated a million at a time (the workload keeps every
	// path), players continuing where they stopped is not needed: each
	// chunk is a fresh walk with seqs above the previous chunk's.
	const chunk = 1_000_000
	for done, c := 0, 0; done < moves; c++ {
		n := min(chunk, moves-done)
		w := game.NewWorkload(g, players, n, uint64(c+1))
		for i := 0; i < w.Moves(); i++ {
			p := w.Path(i)
			path := make([]uint32, len(p))
			for j, id := range p {
				path[j] = uint32(id)
			}
			evs = append(evs, &eventpb.Event{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{
				Player: fmt.Sprintf("p%05d", w.Player[i]), Seq: uint64(c)<<32 + w.Seq[i], Path: path, IngestUnixNanos: int64(done + i)}}})
			if len(evs) == 25 {
				send(evs)
				evs = evs[:0]
			}
		}
		done += n
	}
	if len(evs) > 0 {
		send(evs)
	}
	for _, f := range futs {
		if _, err := f.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	fmt.Fprintf(os.Stderr, "proximity fill: %d treasures, %d moves of %d players published in %v\n", treasures, moves, players, time.Since(t0).Round(time.Millisecond))

	// One worker consumes it all, checkpointing every 10 s and at its stop.
	t1 := time.Now()
	cw := rl.start(b, 10*time.Second)
	waitIdleFor(b, ctx, js, rl.topo, time.Hour)
	fmt.Fprintf(os.Stderr, "proximity fill: consumed in %v\n", time.Since(t1).Round(time.Millisecond))
	cw.stop()
	mfs, err := cw.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "treasure_proximity_checkpoint_bytes":
			fmt.Fprintf(os.Stderr, "proximity checkpoint: %.0f bytes\n", mf.GetMetric()[0].GetGauge().GetValue())
		case "treasure_proximity_checkpoint_write_seconds", "treasure_proximity_checkpoint_pause_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() > 0 {
				fmt.Fprintf(os.Stderr, "proximity %s: %d, mean %.3f s\n", mf.GetName(), h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()))
			}
		}
	}
}

// start starts a worker over the log's partition with checkpoints every
// `every` (negative: none), batches of 256 messages.
func (rl *restartLog) start(b *testing.B, every time.Duration) *ckptWorker {
	nc := testenv.ConnectNATS(b, rl.url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	cw := runCkptWorker(b, context.Background(), Options{Graph: rl.f.g, Part: rl.f.part, Radius: rl.f.radius, Topology: rl.topo, NC: nc, JS: js, Batch: 256,
		CheckpointEvery: every, CheckpointKeep: 3}, slog.DiscardHandler, false)
	stop := cw.stop
	cw.stop = func() {
		stop()
		nc.Close()
	}
	return cw
}

// waitIdleFor is waitIdle with a longer deadline.
func waitIdleFor(tb testing.TB, ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := js.Consumer(ctx, topo.InStream(), Durable(topo, 0))
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("log not consumed after %v", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
