package ranker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// BenchmarkRankerClaims measures claims per second through the ranker: a
// backlog of b.N claims in P_OUT (mixed with proximity results, as the
// workers write them) is applied from the moment a ranker starts until its
// consumer has acked the last input — PostgreSQL, Redis and the publish of
// every ScoreChanged included. Run it with a fixed count, for example
//
//	go test -run '^$' -bench RankerClaims -benchtime 50000x ./services/ranker/
func BenchmarkRankerClaims(b *testing.B) {
	for _, c := range []struct {
		name          string
		claims, moves int // per input message
		batch         int
	}{
		{"mixed-32claims+224moves/batch256", 32, 224, 256},
		{"claims-only-256/batch256", 256, 0, 256},
		{"claims-only-256/batch16", 256, 0, 16},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newEnv(b)
			o := e.options()
			o.Batch = c.batch
			o.Logger = nil
			// Create the durable consumer, then stop: the backlog waits.
			r, stop := start(b, o, nil)
			testenv.WaitFor(b, wait, func() string {
				if err := r.Ready(); err != nil {
					return err.Error()
				}
				return ""
			})
			stop()
			last := publishBacklog(b, e, b.N, c.claims, c.moves, 10_000)

			b.ResetTimer()
			t0 := time.Now()
			_, stop = start(b, o, nil)
			cons, err := e.js.Consumer(context.Background(), e.topo.OutStream(), e.topo.Prefix+"-ranker")
			if err != nil {
				b.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Minute)
			for {
				info, err := cons.Info(context.Background())
				if err == nil && info.AckFloor.Stream >= last {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("backlog not applied after 10 minutes")
				}
				time.Sleep(2 * time.Millisecond)
			}
			elapsed := time.Since(t0)
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "claims/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// publishBacklog writes n claims (distinct treasures, over the given
// number of players) in messages of perMsg claims and moves proximity
// results, and returns the stream sequence of the last message.
func publishBacklog(tb testing.TB, e env, n, perMsg, moves, players int) uint64 {
	tb.Helper()
	var futures []jetstream.PubAckFuture
	var evs []*eventpb.Event
	flush := func(part int) {
		data, err := event.AppendBatch(nil, evs)
		if err != nil {
			tb.Fatal(err)
		}
		f, err := e.js.PublishAsync(e.topo.OutSubject(part), data)
		if err != nil {
			tb.Fatal(err)
		}
		futures = append(futures, f)
		evs = evs[:0]
	}
	for i := 0; i < n; i++ {
		p := fmt.Sprintf("player-%05d", (i*7919)%players)
		evs = append(evs, claimEv(p, fmt.Sprintf("T%08d", i), uint64(1+i%5)))
		if len(evs) == perMsg {
			for k := 0; k < moves; k++ {
				evs = append(evs, proxEv(fmt.Sprintf("player-%05d", (i*31+k*17)%players), uint64(i)))
			}
			flush(i % 2)
		}
	}
	if len(evs) > 0 {
		flush(0)
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		tb.Fatal("publish acks did not come within a minute")
	}
	var last uint64
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			tb.Fatal(err)
		}
	}
	return last
}

// BenchmarkDecodeProximity measures the ranker's per-move work: reading
// the player of each proximity result of a 256-event batch and finding it
// among the players already seen. It allocates nothing.
//
//	go test -run '^$' -bench DecodeProximity -benchmem ./services/ranker/
func BenchmarkDecodeProximity(b *testing.B) {
	r := &Ranker{seen: map[string]struct{}{}, rankSubject: "x.out.rank"}
	var evs []*eventpb.Event
	for i := range 256 {
		p := fmt.Sprintf("player-%05d", i*37)
		r.seen[p] = struct{}{}
		evs = append(evs, &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{
			Player: p, Seq: uint64(i + 1), Node: 12345, IngestUnixNanos: 1 << 60,
			Treasure: &eventpb.NearestTreasure{Id: "T0042", Node: 999, Distance: 1500},
			Move:     &eventpb.LogPosition{StreamSeq: 77, Index: uint32(i)},
		}}})
	}
	data, err := event.AppendBatch(nil, evs)
	if err != nil {
		b.Fatal(err)
	}
	m := natsjs.Msg{Subject: "x.out.0", Seq: 1, Data: data}
	var bt batch
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bt = batch{}
		if err := r.decode(context.Background(), m, &bt); err != nil {
			b.Fatal(err)
		}
	}
	if len(bt.players) != 0 {
		b.Fatalf("%d new players", len(bt.players))
	}
	b.ReportMetric(float64(b.N)*256/b.Elapsed().Seconds(), "events/s")
}
