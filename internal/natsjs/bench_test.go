package natsjs

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// The benchmarks run against the shared server (TREASURE_NATS_URL; Debian's
// nats-server 2.9.10 on the development machines), client and server on
// the same box. Their streams have no byte or count limit (nothing
// reserved) and are deleted at the end. Run them with
//
//	go test -run '^$' -bench . -benchtime 5s ./internal/natsjs/
//
// and see BENCHMARKS.md for the figures.

// benchEvents is the number of events per batch message.
const benchEvents = 256

// moveBatch encodes benchEvents typical moves (a 13-character player id,
// an 8-node path; about 58 bytes each, 15 KB in all) into one batch, as ingest
// publishes them.
func moveBatch(tb testing.TB) []byte {
	tb.Helper()
	b := event.Builder{MaxBytes: 1 << 20, MaxEvents: benchEvents}
	m := &eventpb.MoveAccepted{Player: "player-012345", Partition: 3, IngestUnixNanos: time.Now().UnixNano()}
	for i := range benchEvents {
		m.Seq = uint64(i + 1)
		m.Path = m.Path[:0]
		for k := range 8 {
			m.Path = append(m.Path, uint32(1_000_000+i*8+k))
		}
		if err := b.AddMove(m); err != nil {
			tb.Fatal(err)
		}
	}
	return append([]byte(nil), b.Bytes()...)
}

// benchEnv is sharedEnv with unlimited streams.
func benchEnv(b *testing.B) env {
	b.Helper()
	e := sharedEnv(b)
	unlimited := Limits{MaxBytes: -1, MaxMsgs: -1}
	e.topo.In, e.topo.Out = unlimited, unlimited
	e.ensure(b)
	return e
}

func reportRates(b *testing.B, msgs, eventsPerMsg int) {
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(msgs)/s, "msgs/s")
	if eventsPerMsg > 1 {
		b.ReportMetric(float64(msgs*eventsPerMsg)/s, "events/s")
	}
}

// BenchmarkPublish publishes through one Publisher, asynchronously, with up
// to MaxInFlight acks outstanding, and waits for every ack: a 200-byte
// message (one event per message, as LIMITS.md measured), a 16 KiB one and
// a batch of 256 encoded moves (15 KB). Each message has a
// Nats-Msg-Id, as the pipeline's publishers set.
func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		name   string
		data   func(testing.TB) []byte
		events int
	}{
		{"200B", func(testing.TB) []byte { return make([]byte, 200) }, 1},
		{"16KiB", func(testing.TB) []byte { return make([]byte, 16<<10) }, 1},
		{"moves256", moveBatch, benchEvents},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := benchEnv(b)
			data := c.data(b)
			p, err := NewPublisher(e.nc, PublisherOptions{MaxInFlight: 1024})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx := context.Background()
			var failed atomic.Int64
			done := func(_ Ack, err error) {
				if err != nil {
					failed.Add(1)
				}
			}
			subj := e.topo.InSubject(0)
			id := make([]byte, 0, 32)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				id = fmt.Appendf(id[:0], "bench-%d", i)
				if err := p.PublishAsync(ctx, subj, data, string(id), done); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d publishes failed", n)
			}
			reportRates(b, b.N, c.events)
		})
	}
}

// fill stores n copies of data on subject, untimed.
func fill(b *testing.B, e env, subject string, data []byte, n int) {
	b.Helper()
	p, err := NewPublisher(e.nc, PublisherOptions{MaxInFlight: 1024})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	var failed atomic.Int64
	for range n {
		if err := p.PublishAsync(ctx, subject, data, "", func(_ Ack, err error) {
			if err != nil {
				failed.Add(1)
			}
		}); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil || failed.Load() > 0 {
		b.Fatalf("fill: %v, %d failed", err, failed.Load())
	}
}

// BenchmarkConsume reads b.N stored messages through a durable Consumer
// (fetch, hand over, ack each message): 200-byte messages (one event per
// message, as LIMITS.md measured) and batches of 256 moves, "ack" only
// counting them, "decode" also walking every event with event.Reader as a
// worker would.
func BenchmarkConsume(b *testing.B) {
	for _, c := range []struct {
		name   string
		data   func(testing.TB) []byte
		events int
		decode bool
	}{
		{"200B/ack", func(testing.TB) []byte { return make([]byte, 200) }, 1, false},
		{"moves256/ack", moveBatch, benchEvents, false},
		{"moves256/decode", moveBatch, benchEvents, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := benchEnv(b)
			data := c.data(b)
			subj := e.topo.InSubject(0)
			fill(b, e, subj, data, b.N)
			cons, err := NewConsumer(context.Background(), e.js, ConsumerOptions{
				Stream: e.topo.InStream(), Durable: "bench", Subjects: []string{subj}, DeadLetter: e.topo.DLQSubject(),
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var (
				seen, events int
				r            event.Reader
				mv           event.Move
				done         = make(chan struct{})
			)
			h := func(_ context.Context, msgs []Msg) error {
				if c.decode {
					for _, m := range msgs {
						if err := r.Reset(m.Data); err != nil {
							return err
						}
						for r.Next() {
							if err := r.Move(&mv); err != nil {
								return err
							}
							events++
						}
					}
				}
				seen += len(msgs)
				if seen == b.N {
					close(done)
				}
				return nil
			}
			runErr := make(chan error, 1)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			go func() { runErr <- cons.Run(ctx, h) }()
			<-done
			b.StopTimer()
			cancel()
			if err := <-runErr; err != nil {
				b.Fatal(err)
			}
			if c.decode && events != b.N*benchEvents {
				b.Fatalf("decoded %d events, want %d", events, b.N*benchEvents)
			}
			reportRates(b, b.N, c.events)
		})
	}
}

// BenchmarkRoundTrip publishes one message at a time and waits until a
// running Consumer's handler has it: ns/op is the latency of one message
// through JetStream (publish, store, deliver) on an otherwise idle box, for
// a 200-byte message and a batch of 256 moves.
func BenchmarkRoundTrip(b *testing.B) {
	for _, c := range []struct {
		name string
		data func(testing.TB) []byte
	}{
		{"200B", func(testing.TB) []byte { return make([]byte, 200) }},
		{"moves256", moveBatch},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := benchEnv(b)
			data := c.data(b)
			subj := e.topo.InSubject(0)
			cons, err := NewConsumer(context.Background(), e.js, ConsumerOptions{
				Stream: e.topo.InStream(), Durable: "rt", Subjects: []string{subj}, DeadLetter: e.topo.DLQSubject(),
			})
			if err != nil {
				b.Fatal(err)
			}
			p, err := NewPublisher(e.nc, PublisherOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan struct{}, 1)
			runErr := make(chan error, 1)
			go func() {
				runErr <- cons.Run(ctx, func(_ context.Context, msgs []Msg) error {
					for range msgs {
						got <- struct{}{}
					}
					return nil
				})
			}()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := p.PublishAsync(ctx, subj, data, "", nil); err != nil {
					b.Fatal(err)
				}
				<-got
			}
			b.StopTimer()
			cancel()
			if err := <-runErr; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkReplay reads b.N stored batches of 256 moves with Replay (an
// ordered consumer, no acks).
func BenchmarkReplay(b *testing.B) {
	e := benchEnv(b)
	data := moveBatch(b)
	fill(b, e, e.topo.InSubject(0), data, b.N)
	seen := 0
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	err := Replay(context.Background(), e.js, ReplayOptions{Stream: e.topo.InStream()}, func(_ context.Context, msgs []Msg) error {
		seen += len(msgs)
		return nil
	})
	b.StopTimer()
	if err != nil || seen != b.N {
		b.Fatalf("replay: %v after %d of %d", err, seen, b.N)
	}
	reportRates(b, b.N, benchEvents)
}
