package ingest

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/game"
	"treasure/internal/natsjs"
)

// BenchmarkIngestWS measures moves per second through one Ingest: clients
// on loopback send frames of 8 moves (6–12 nodes each, SPEC's story) over
// their sockets, keeping up to 4 frames unanswered each, and count the
// acks; every ack means the move is durable in JetStream (the shared
// server) and the player's state is in Redis. Clients and server share the
// machine's cores.
//
//	go test -run '^$' -bench BenchmarkIngestWS -benchtime 200000x ./services/ingest/
func BenchmarkIngestWS(b *testing.B) {
	for _, players := range []int{64, 512} {
		b.Run(fmt.Sprintf("players=%d", players), func(b *testing.B) { benchIngest(b, players, 8, 4) })
	}
}

// BenchmarkIngestWSOneByOne is BenchmarkIngestWS as the load generator's
// players move: one move per frame and one frame unanswered per player,
// so that every ack is a frame of its own and the cost per move is the
// socket edge's (a read, a write, and the hand-offs between them).
func BenchmarkIngestWSOneByOne(b *testing.B) {
	for _, players := range []int{512, 2048} {
		b.Run(fmt.Sprintf("players=%d", players), func(b *testing.B) { benchIngest(b, players, 1, 1) })
	}
}

// cpuTime is the CPU time (user + system) the process has used, and its
// threads' context switches (sleeps and wake-ups, voluntary or not).
func cpuTime(tb testing.TB) (time.Duration, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw
}

func benchIngest(b *testing.B, players, perFrame, window int) {
	e := newEnv(b, natsjs.Limits{MaxBytes: 512 << 20, MaxMsgs: 4_000_000})
	s := e.start(b, nil)
	// Round b.N up to whole frames for every player.
	perPlayer := (b.N + players - 1) / players
	perPlayer = (perPlayer + perFrame - 1) / perFrame * perFrame
	w := game.NewWorkload(e.g, players, perPlayer*players, 1)
	// Each player's frames, encoded up front.
	frames := make([][][]byte, players)
	var line []byte
	for i := 0; i < w.Moves(); i++ {
		p := int(w.Player[i])
		line = line[:0]
		line = append(line, `{"type":"move","seq":`...)
		line = strconv.AppendUint(line, w.Seq[i], 10)
		line = append(line, `,"path":[`...)
		for j, id := range w.Path(i) {
			if j > 0 {
				line = append(line, ',')
			}
			line = strconv.AppendUint(line, id, 10)
		}
		line = append(line, "]}"...)
		fs := frames[p]
		if len(fs) == 0 || bytes.Count(fs[len(fs)-1], []byte("\n")) == perFrame-1 {
			frames[p] = append(fs, append([]byte(nil), line...))
			continue
		}
		fs[len(fs)-1] = append(append(fs[len(fs)-1], '\n'), line...)
	}
	conns := make([]*websocket.Conn, players)
	for p := range conns {
		conns[p] = s.dial(b, fmt.Sprintf("bench-%d", p)).ws
	}
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	cpu0, csw0 := cpuTime(b)
	var wg sync.WaitGroup
	for p, ws := range conns {
		credit := make(chan struct{}, window)
		for range window {
			credit <- struct{}{}
		}
		wg.Go(func() {
			for _, f := range frames[p] {
				<-credit
				if err := ws.WriteMessage(websocket.TextMessage, f); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
		wg.Go(func() {
			want := len(frames[p]) * perFrame
			got := 0
			for got < want {
				_ = ws.SetReadDeadline(time.Now().Add(waitFor))
				_, data, err := ws.ReadMessage()
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				for l := range bytes.SplitSeq(data, []byte("\n")) {
					got++
					if bytes.HasPrefix(l, []byte(`{"type":"ack"`)) {
						acked.Add(1)
					} else {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Errorf("reply %s", l))
					}
					if got%perFrame == 0 {
						select {
						case credit <- struct{}{}:
						default:
						}
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cpu, csw := cpuTime(b)
	cpu, csw = cpu-cpu0, csw-csw0
	b.StopTimer()
	if err := firstErr.Load(); err != nil {
		b.Fatalf("%v (%d acked, %d failed)", err, acked.Load(), failed.Load())
	}
	b.ReportMetric(float64(acked.Load())/elapsed.Seconds(), "moves/s")
	// The process's CPU (clients and server together: compare runs of the
	// same clients) per move; steadier than ns/op on a shared machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(acked.Load()), "cpu-µs/move")
	b.ReportMetric(float64(csw)/float64(acked.Load()), "ctxsw/move")
	stream, err := e.js.Stream(context.Background(), e.topo.InStream())
	if err != nil {
		b.Fatal(err)
	}
	if n := stream.CachedInfo().State.Msgs; n > 0 {
		b.ReportMetric(float64(acked.Load())/float64(n), "moves/msg")
	}
}
