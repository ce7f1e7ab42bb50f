package push

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
)

// BenchmarkPacedFanOut delivers updates at a fixed rate spread over many
// sockets, each getting a few per second, as players do (unlike FanOut,
// which runs flat out and so gathers many updates per frame): rate
// updates/s in all, over clients sockets, for b.N updates. It reports
// the process's CPU time (server and clients, both in this process) per
// update: what each update costs when nothing can be gathered.
//
//	go test -run '^$' -bench PacedFanOut -benchtime 10000x ./services/push/
func BenchmarkPacedFanOut(b *testing.B) {
	for _, tc := range []struct{ clients, rate int }{{1000, 2000}, {2000, 10000}} {
		b.Run(fmt.Sprintf("clients=%d/rate=%d", tc.clients, tc.rate), func(b *testing.B) { benchPaced(b, tc.clients, tc.rate) })
	}
}

func benchPaced(b *testing.B, n, rate int) {
	e := newEnv(b)
	v, _ := auth.NewVerifier(secret)
	s, err := New(Options{Topology: e.topo, JS: e.js, Postgres: e.pg.opts.Postgres, Verifier: v, QueueSize: 1 << 20, Log: testLog()})
	if err != nil {
		b.Fatal(err)
	}
	s.ready.Store(true)
	s.hub.direct = true // a caught-up feed
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	defer s.hub.close(websocket.CloseGoingAway, "shutdown")
	var received atomic.Int64
	players := make([]string, n)
	base := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/updates/ws?token="
	done := make(chan struct{}, n)
	for i := range players {
		players[i] = fmt.Sprintf("paced-%05d", i)
		ws, _, err := websocket.DefaultDialer.Dial(base+token(b, players[i]), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				received.Add(int64(1 + strings.Count(string(data), "\n")))
			}
		}()
	}
	for {
		if _, c := s.hub.stats(); c == n {
			break
		}
		time.Sleep(time.Millisecond)
	}
	u := update{kind: recProximity, node: 123456}
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	b.ResetTimer()
	start := time.Now()
	const tick = time.Millisecond
	perTick := max(1, rate/int(time.Second/tick))
	for i := 0; i < b.N; {
		for k := 0; k < perTick && i < b.N; k, i = k+1, i+1 {
			u.seq = uint64(i/n + 1)
			s.hub.deliver(players[i%n], &u)
		}
		if d := time.Until(start.Add(time.Duration(i/perTick) * tick)); d > 0 {
			time.Sleep(d)
		}
	}
	for received.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(syscall.TimevalToNsec(r1.Utime) - syscall.TimevalToNsec(r0.Utime) + syscall.TimevalToNsec(r1.Stime) - syscall.TimevalToNsec(r0.Stime))
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/update")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "updates/s")
	s.hub.close(websocket.CloseGoingAway, "shutdown")
	for range n {
		<-done
	}
}
