package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
)

// BenchmarkApply measures the feed's work per OUT event: decode a
// proximity result, number it, keep it in the player's ring, encode its
// JSON (no socket listening). One op is one event.
func BenchmarkApply(b *testing.B) {
	const players = 1000
	evs := make([]*eventpb.Event, 256)
	for i := range evs {
		evs[i] = prox(fmt.Sprintf("player-%04d", i*7%players), uint64(i+1), uint32(100000+i), "T0042", 2000000, 1500)
	}
	data, err := event.AppendBatch(nil, evs)
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{o: Options{Log: testLog()}, m: newMetrics(nil, nil)}
	s.hub = newHub(DefaultRingSize, DefaultMaxSockets)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(evs) {
		s.apply(data)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFanOut measures updates delivered to N WebSocket clients on
// loopback, client and server in this process: the feed's part (deliver:
// number, retain, encode, queue) runs flat out in one goroutine, as the
// feed would in a burst, and every socket's writer sends what has queued
// as one frame. One op is one update delivered to its player's socket;
// msgs/frame shows the batching. The queues are made large enough that
// no socket is closed as slow (the benchmark fails if one is).
//
//	go test -run '^$' -bench FanOut -benchtime 400000x ./services/push/
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		for _, d := range []time.Duration{0, time.Millisecond} {
			b.Run(fmt.Sprintf("clients=%d/delay=%v", n, d), func(b *testing.B) { benchFanOut(b, n, d) })
		}
	}
}

func benchFanOut(b *testing.B, n int, delay time.Duration) {
	e := newEnv(b)
	v, _ := auth.NewVerifier(secret)
	s, err := New(Options{Topology: e.topo, JS: e.js, Postgres: e.pg.opts.Postgres, Verifier: v, QueueSize: 1 << 20, WriteDelay: delay, Log: testLog()})
	if err != nil {
		b.Fatal(err)
	}
	s.ready.Store(true) // the benchmark plays the feed
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	defer s.hub.close(websocket.CloseGoingAway, "shutdown")

	var received atomic.Int64
	players := make([]string, n)
	var wg sync.WaitGroup
	base := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/updates/ws?token="
	for i := range players {
		players[i] = fmt.Sprintf("bench-%05d", i)
		ws, _, err := websocket.DefaultDialer.Dial(base+token(b, players[i]), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				_, r, err := ws.NextReader()
				if err != nil {
					return
				}
				msgs := int64(1)
				for {
					k, err := r.Read(buf)
					for _, c := range buf[:k] {
						if c == '\n' {
							msgs++
						}
					}
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return
					}
				}
				received.Add(msgs)
			}
		}()
	}
	for {
		if _, c := s.hub.stats(); c == n {
			break
		}
		time.Sleep(time.Millisecond)
	}
	frames0 := counter(b, s.m.frames)
	u := update{kind: recProximityFound, node: 123456, tnode: 123999, dist: 1500, treasure: "T0042"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u.seq = uint64(i/n + 1)
		s.hub.deliver(players[i%n], &u)
	}
	sent := b.Elapsed()
	for received.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(sent.Seconds()/b.Elapsed().Seconds(), "queued-share")
	if slow := counter(b, s.m.slow); slow > 0 {
		b.Fatalf("%v sockets closed as slow", slow)
	}
	frames := counter(b, s.m.frames) - frames0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/frames, "msgs/frame")
	s.hub.close(websocket.CloseGoingAway, "shutdown")
	wg.Wait()
}

// BenchmarkFeedToSockets is the whole path: OUT batches of 256 proximity
// results stored in JetStream beforehand, read by the feed (ordered
// consumer, decode, number, retain, encode) and delivered to N sockets.
// One op is one update received by a client.
//
//	go test -run '^$' -bench FeedToSockets -benchtime 200000x ./services/push/
func BenchmarkFeedToSockets(b *testing.B) {
	const n = 1000
	e := newEnv(b)
	players := make([]string, n)
	for i := range players {
		players[i] = fmt.Sprintf("bench-%05d", i)
	}
	v, _ := auth.NewVerifier(secret)
	s, err := New(Options{Topology: e.topo, JS: e.js, Postgres: e.pg.opts.Postgres, Verifier: v, QueueSize: 1 << 20, Log: testLog()})
	if err != nil {
		b.Fatal(err)
	}
	s.ready.Store(true) // sockets first; the feed starts on an empty stream
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	var received atomic.Int64
	var wg sync.WaitGroup
	base := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/updates/ws?token="
	for _, p := range players {
		ws, _, err := websocket.DefaultDialer.Dial(base+token(b, p), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				received.Add(int64(1 + strings.Count(string(data), "\n")))
			}
		}()
	}
	// Publish everything first: the measured part is push's.
	pub, err := natsjs.NewPublisher(e.nc, natsjs.PublisherOptions{})
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]*eventpb.Event, 0, 256)
	var futures []*natsjs.Future
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		evs = append(evs, prox(players[i%n], uint64(i/n+1), uint32(100000+i%5000), "T0042", 2000000, 1500))
		if len(evs) == cap(evs) || i == b.N-1 {
			data, err := event.AppendBatch(nil, evs)
			if err != nil {
				b.Fatal(err)
			}
			f, err := pub.Publish(ctx, e.topo.OutSubject(i%2), data, "")
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
			evs = evs[:0]
		}
	}
	for _, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	pub.Close()
	b.ResetTimer()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx) }()
	for received.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(counter(b, s.m.direct)/float64(b.N), "direct/msg")
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	wg.Wait()
}
