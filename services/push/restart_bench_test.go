package push

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/testenv"
)

// BenchmarkPushRestart measures issue 7's push restart figures
// (BENCHMARKS.md "Issue 7: checkpoints and restart";
// scripts/bench-restart.sh runs it): OUT holds TREASURE_BENCH_MOVES
// proximity results (default 100,000; 25 per message, as the proximity
// worker batches them) of TREASURE_BENCH_PLAYERS players (35,000) on a
// private embedded JetStream server. A first instance reads it all and
// writes its checkpoint at its clean stop; then each iteration starts an
// instance with that checkpoint ("checkpoint") or without (the feed from
// OUT's first message, "no-checkpoint") and times New + Run until Ready
// (the feed caught up with the stream's end as it was at start). Set
// TREASURE_BENCH_RESTART=1 to run it.
func BenchmarkPushRestart(b *testing.B) {
	if os.Getenv("TREASURE_BENCH_RESTART") == "" {
		b.Skip("TREASURE_BENCH_RESTART not set; see scripts/bench-restart.sh")
	}
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	moves, players := env("TREASURE_BENCH_MOVES", 100_000), env("TREASURE_BENCH_PLAYERS", 35_000)
	url, _ := testenv.EmbeddedNATS(b)
	nc := testenv.ConnectNATS(b, url)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	big := natsjs.Limits{MaxBytes: 8 << 30, MaxMsgs: 50_000_000}
	topo := natsjs.Topology{Prefix: "bench", Partitions: 1, In: big, Out: big, Upd: big, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		b.Fatal(err)
	}
	pool, _ := testenv.Postgres(b)
	if err := pgstore.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	v, err := auth.NewVerifier(secret)
	if err != nil {
		b.Fatal(err)
	}

	t0 := time.Now()
	pub, err := natsjs.NewPublisher(nc, natsjs.PublisherOptions{MaxInFlight: 4096, AckTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	var futs []*natsjs.Future
	wait := func() {
		for _, f := range futs {
			if _, err := f.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		futs = futs[:0]
	}
	evs := make([]*eventpb.Event, 0, 25)
	for i := 0; i < moves; i++ {
		p := i % players
		var near *eventpb.NearestTreasure
		if i%3 == 0 {
			near = &eventpb.NearestTreasure{Id: fmt.Sprintf("T%05d", i%20_000), Node: uint32(i % 2_300_000), Distance: uint64(i % 2000)}
		}
		evs = append(evs, &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{
			Player: fmt.Sprintf("p%05d", p), Seq: uint64(1 + i/players), Node: uint32(i % 2_300_000), Treasure: near}}})
		if len(evs) == 25 || i == moves-1 {
			data, err := event.AppendBatch(nil, evs)
			if err != nil {
				b.Fatal(err)
			}
			f, err := pub.Publish(ctx, topo.OutSubject(0), data, "")
			if err != nil {
				b.Fatal(err)
			}
			if futs = append(futs, f); len(futs) == 4096 {
				wait()
			}
			evs = evs[:0]
		}
	}
	wait()
	pub.Close()
	fmt.Fprintf(os.Stderr, "push fill: %d results of %d players published in %v\n", moves, players, time.Since(t0).Round(time.Millisecond))

	start := func(every time.Duration) (*Server, func()) {
		s, err := New(Options{Topology: topo, JS: js, Postgres: pool, Verifier: v, CheckpointEvery: every, CheckpointKeep: 3,
			Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		return s, func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("push: %v", err)
			}
		}
	}
	ready := func(s *Server) {
		deadline := time.Now().Add(time.Hour)
		for s.Ready() != nil {
			if time.Now().After(deadline) {
				b.Fatal("push not ready after an hour")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t1 := time.Now()
	s, stop := start(time.Hour)
	ready(s)
	fmt.Fprintf(os.Stderr, "push fill: first instance caught up in %v\n", time.Since(t1).Round(time.Millisecond))
	t2 := time.Now()
	stop() // the checkpoint of a clean stop
	fmt.Fprintf(os.Stderr, "push checkpoint: written at the stop in %v (stop included)\n", time.Since(t2).Round(time.Millisecond))
	if c, err := natsjs.BindCheckpoints(ctx, js, topo); err == nil {
		if l, err := c.PushList(ctx); err == nil && len(l) > 0 {
			fmt.Fprintf(os.Stderr, "push checkpoint: %d bytes at OUT seq %d\n", l[0].Size, l[0].Seq)
		}
	}

	for _, mode := range []struct {
		name  string
		every time.Duration
	}{{"checkpoint", time.Hour}, {"no-checkpoint", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			for b.Loop() {
				t0 := time.Now()
				s, stop := start(mode.every)
				ready(s)
				d := time.Since(t0)
				stop()
				fmt.Fprintf(os.Stderr, "push %s: results in OUT %d, restart %v\n", mode.name, moves, d.Round(time.Millisecond))
			}
		})
	}
}
