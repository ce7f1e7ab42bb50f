package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/ratelimit"
	"treasure/internal/stack/stacktest"

	"treasure/internal/testenv"
)

// TestSlowReadersUnderLoad: players walk the city (the "others", a
// closed-loop load) while two heavy movers send 200 moves/s each, every
// move bringing them a proximity update on their push sockets. In phase A
// the heavy movers read their push sockets normally; in phase B one reads
// at 4 KiB/s through a 4 KiB receive buffer ("slow", reconnecting after
// every close) and one never reads ("stuck"). Both are closed by push
// with code 1008 and reason "slow" (SPEC), and
// treasure_push_slow_disconnects_total counts exactly their closes
// (nobody else was closed as slow); the others' move→update latency is
// measured in both phases (logged: p50, p99 — not asserted, the box is
// shared) and in phase B every one of their accepted moves still gets its
// update, without an id gap; and OUT, PostgreSQL and Redis equal a
// replay of the log. TREASURE_FAULTS_SLOW_PHASE sets the phases' length
// (default 5s).
func TestSlowReadersUnderLoad(t *testing.T) {
	t.Parallel()
	phase := envDuration(t, "TREASURE_FAULTS_SLOW_PHASE", 5*time.Second)
	g := amsterdam(t)
	// Push's sockets get a 16 KiB send buffer (PushSendBuffer): with the
	// kernel's autotuning a socket to a reader that stops holds megabytes
	// (on loopback at once), a minute of this test's updates, before
	// push's queue counts at all.
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: secret, PushSendBuffer: 16 << 10,
		RateLimit: ratelimit.Limit{Rate: 1e6, Burst: 1_000_000}})
	dropTreasures(t, sp, g, 50)

	others := func(prefix string, seed uint64) *load {
		return startLoad(t, loadgen.Options{IngestURL: sp.IngestURL, PushURL: sp.PushURL, Graph: g,
			Players: 20, MovesPerSecond: 5, PlayerPrefix: prefix, Seed: seed})
	}
	const heavyRate = 200

	// Phase A: the heavy movers read.
	ctxA, stopA := context.WithCancel(context.Background())
	var wgA sync.WaitGroup
	t.Cleanup(func() { stopA(); wgA.Wait() })
	for i := range 2 {
		id := fmt.Sprintf("heavy-a%d", i)
		wgA.Add(2)
		go func() { defer wgA.Done(); mover(ctxA, t, sp, g, id, heavyRate, i) }()
		go func() { defer wgA.Done(); reader(ctxA, t, sp, id, readFast, nil) }()
	}
	la := others("calm-", 1)
	time.Sleep(phase)
	fa := la.finish(t)
	stopA()
	wgA.Wait()

	// Phase B: one heavy mover reads slowly (reconnecting after every
	// close), one never reads.
	slowBefore := counterValue(t, sp.Stack.Registry, "treasure_push_slow_disconnects_total")
	ctxSlow, stopSlowMover := context.WithCancel(context.Background())
	ctxReader, stopReader := context.WithCancel(context.Background())
	quiet := make(chan struct{}) // the slow reader's mover has stopped
	var quietOnce sync.Once
	var slowKicks atomic.Int64
	slowDone := make(chan struct{})
	var wgB sync.WaitGroup
	ctxStuck, stopStuckMover := context.WithCancel(context.Background())
	// On the way out, early or not: every goroutine of phase B stopped.
	t.Cleanup(func() {
		stopSlowMover()
		stopStuckMover()
		quietOnce.Do(func() { close(quiet) })
		stopReader()
		<-slowDone
		wgB.Wait()
	})
	wgB.Add(1)
	go func() { defer wgB.Done(); mover(ctxSlow, t, sp, g, "heavy-slow", heavyRate, 0) }()
	go func() {
		defer close(slowDone)
		for ctxReader.Err() == nil {
			err := reader(ctxReader, t, sp, "heavy-slow", readSlow, quiet)
			var ce *websocket.CloseError
			switch {
			case err == nil: // quiet, and nothing more came
				return
			case errors.As(err, &ce) && ce.Code == websocket.ClosePolicyViolation && ce.Text == "slow":
				slowKicks.Add(1)
			default:
				t.Errorf("the slow reader's push socket ended with %v, want close 1008 slow", err)
				return
			}
		}
	}()
	stuck := dialPush(t, sp, "heavy-stuck", true)
	defer stuck.Close()
	wgB.Add(1)
	go func() { defer wgB.Done(); mover(ctxStuck, t, sp, g, "heavy-stuck", heavyRate, 1) }()

	lb := others("busy-", 2)
	time.Sleep(phase)
	// Keep the load up until the slow reader was closed as slow once.
	testenv.WaitUntil(t, guard, "the slow reader closed as slow", func() bool {
		return slowKicks.Load() > 0
	})
	fb := lb.finish(t)
	// The slow reader's mover stops; it reads what is left, to its
	// close if it had one.
	stopSlowMover()
	quietOnce.Do(func() { close(quiet) })
	<-slowDone
	// The stuck reader's mover goes on until push has closed it too.
	testenv.WaitUntil(t, guard, "the stuck reader closed as slow", func() bool {
		return counterValue(t, sp.Stack.Registry, "treasure_push_slow_disconnects_total")-slowBefore >= float64(slowKicks.Load()+1)
	})
	stopStuckMover()
	wgB.Wait()
	// Reading at last, it finds its data, then the end of the socket: a
	// close 1008 "slow" when push could write it, else the connection's
	// end (a close frame that found the path full).
	_ = stuck.SetReadDeadline(time.Now().Add(guard))
	var stuckEnd error
	for stuckEnd == nil {
		_, _, stuckEnd = stuck.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(stuckEnd, &ce) || !(ce.Code == websocket.ClosePolicyViolation && ce.Text == "slow" || ce.Code == websocket.CloseAbnormalClosure) {
		t.Errorf("the stuck reader's socket ended with %v, want close 1008 slow or the connection's end", stuckEnd)
	}
	slow := counterValue(t, sp.Stack.Registry, "treasure_push_slow_disconnects_total") - slowBefore

	t.Logf("others without bad readers: %d moves, p50 %v p99 %v p99.9 %v max %v",
		fa.TotalMoves, fa.TotalLatency.P50, fa.TotalLatency.P99, fa.TotalLatency.P999, fa.TotalLatency.Max)
	t.Logf("others with a slow and a stuck reader: %d moves, p50 %v p99 %v p99.9 %v max %v; the slow reader closed as slow %d times, the stuck one once (%v); treasure_push_slow_disconnects_total +%v",
		fb.TotalMoves, fb.TotalLatency.P50, fb.TotalLatency.P99, fb.TotalLatency.P999, fb.TotalLatency.Max, slowKicks.Load(), stuckEnd, slow)
	// Every slow close was one of the two bad readers': nobody else's.
	if slow != float64(slowKicks.Load()+1) {
		t.Errorf("treasure_push_slow_disconnects_total rose by %v; the bad readers account for %d", slow, slowKicks.Load()+1)
	}
	if fb.TotalMoves == 0 {
		t.Fatal("the others moved not at all with the bad readers")
	}
	rep := LogAgrees(t, live(sp, g), guard)
	t.Logf("a replay of the log agrees with OUT, PostgreSQL and Redis: %d claims, %d players", rep.Claims, rep.Players)
}

type readMode string

const (
	readFast readMode = "reads"
	readSlow readMode = "reads 4 KiB/s"
)

// mover sends rate moves a second for player id, pipelined (several in
// flight), back and forth on one edge from a node picked by i, until ctx
// ends; its acks are read and checked.
func mover(ctx context.Context, t *testing.T, sp stacktest.Pipeline, g *graph.Graph, id string, rate, i int) {
	tok, _ := auth.Sign(secret, id, "", time.Hour)
	ws, _, err := websocket.DefaultDialer.Dial(sp.IngestURL+"/v1/moves/ws?token="+tok, nil)
	if err != nil {
		t.Errorf("%s: %v", id, err)
		return
	}
	defer ws.Close()
	a := uint32(1000 + 7919*i)
	for g.Degree(a) == 0 {
		a++
	}
	b := g.Neighbors(a)[0].To
	var acked atomic.Uint64
	var sent atomic.Uint64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				if ctx.Err() == nil {
					t.Logf("%s: ingest socket: %v (sent %d, acked %d)", id, err, sent.Load(), acked.Load())
				}
				return
			}
			for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
				var rep struct {
					Type, Code string
					Seq        uint64
				}
				if json.Unmarshal(line, &rep) != nil || rep.Type != "ack" {
					t.Errorf("%s: %s", id, line)
					return
				}
				acked.Store(rep.Seq)
			}
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Let the acks of what was sent arrive, then close.
			deadline := time.Now().Add(guard)
			for acked.Load() < sent.Load() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			ws.Close()
			<-readDone
			if acked.Load() < sent.Load() {
				t.Errorf("%s: %d moves sent, acks up to %d", id, sent.Load(), acked.Load())
			}
			return
		case <-tick.C:
		}
		if sent.Load() > acked.Load()+256 {
			continue // never more than 256 in flight
		}
		seq := sent.Add(1)
		from, to := a, b
		if seq == 1 {
			to = a // the spawn: a one-node path
		} else if seq%2 == 1 {
			from, to = b, a
		}
		path := []uint64{uint64(graph.ID(from))}
		if seq > 1 {
			path = append(path, uint64(graph.ID(to)))
		}
		line, _ := json.Marshal(map[string]any{"type": "move", "seq": seq, "path": path})
		if err := ws.WriteMessage(websocket.TextMessage, line); err != nil {
			t.Errorf("%s: send: %v", id, err)
			return
		}
	}
}

// reader opens player id's push socket and reads it as mode says until
// ctx ends (nil) or the socket ends (its error).
func reader(ctx context.Context, t *testing.T, sp stacktest.Pipeline, id string, mode readMode, quiet <-chan struct{}) error {
	ws := dialPush(t, sp, id, mode != readFast)
	if ws == nil {
		return nil
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	if mode == readFast {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
	// readSlow: 256 bytes every 62.5 ms (4 KiB/s: slower than a heavy
	// mover's updates even under the race detector, fast enough to take
	// a frame of a full queue within push's write timeout); once quiet,
	// until nothing came for 3 s (then nil).
	buf := make([]byte, 256)
	tick := time.NewTicker(time.Second / 16)
	defer tick.Stop()
	var r io.Reader
	budget := 0
	for {
		if budget == 0 {
			<-tick.C
			budget = len(buf)
			select {
			case <-quiet:
				_ = ws.SetReadDeadline(time.Now().Add(3 * time.Second))
			default:
			}
		}
		var err error
		if r == nil {
			_, r, err = ws.NextReader()
		}
		if err == nil {
			var n int
			n, err = r.Read(buf[:budget])
			budget -= n
			if errors.Is(err, io.EOF) {
				r, err = nil, nil
			}
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() || ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// dialPush opens player id's push socket; small: with a 4 KiB receive
// buffer and 1460-byte segments, so that the path to a client that does
// not read fills in seconds.
func dialPush(t *testing.T, sp stacktest.Pipeline, id string, small bool) *websocket.Conn {
	tok, _ := auth.Sign(secret, id, "", time.Hour)
	d := &websocket.Dialer{ReadBufferSize: 512, HandshakeTimeout: 10 * time.Second}
	if small {
		// A small receive buffer: the path to the client fills fast.
		// And an internet path's segment size: on loopback (MTU 64 KiB)
		// the server's kernel would start the socket with a send buffer
		// of megabytes (ten segments' worth, twice), which a reader that
		// stops would take minutes to fill; announced in the SYN, 1460
		// bytes make it tens of KiB, as across a network.
		d.NetDialContext = (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096),
					syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1460))
			})
			return errors.Join(err, serr)
		}}).DialContext
	}
	ws, _, err := d.Dial(sp.PushURL+"/v1/updates/ws?token="+tok, nil)
	if err != nil {
		t.Errorf("%s: push: %v", id, err)
		return nil
	}
	return ws
}

// counterValue sums a counter family of the stack's registry.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	fams, err := reg.Gather()
	if err != nil {
		t.Error(err)
		return 0
	}
	var v float64
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
