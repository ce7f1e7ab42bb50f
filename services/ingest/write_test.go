package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"treasure/internal/graph"
	"treasure/internal/testenv"
)

// TestAcksOfOneBatchComeInOneFrame: eight moves of one frame, all ending
// in one partition, are published as one batch (BatchEvents 8, no timed
// flush); their acks come back in order in a single frame, written by the
// completer once the batch is stored.
func TestAcksOfOneBatchComeInOneFrame(t *testing.T) {
	t.Parallel()
	const n = 8
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) {
		o.BatchEvents = n
		o.FlushInterval = time.Hour
	})
	c := s.dial(t, "oneframe")
	w := newWalker(e.g, 5)
	partOf := func(p []uint64) uint32 {
		v, _ := graph.Index(p[len(p)-1], e.g.NumNodes())
		return e.part[v]
	}
	var lines []string
	var seqs []uint64
	var k uint32
	for i := range n {
		p := w.path(1 + i%5)
		if i == 0 {
			k = partOf(p)
		}
		for tries := 0; partOf(p) != k; tries++ {
			if tries == 100 {
				p = p[:1] // staying put stays in the partition
				break
			}
			p = w.path(2 + tries%5)
		}
		seq := w.seq + 1
		w.accept(seq, p)
		lines = append(lines, moveLine(seq, p))
		seqs = append(seqs, seq)
	}
	c.send(lines...)
	for _, seq := range seqs {
		c.expectAck(seq)
	}
	if c.frames != 1 {
		t.Fatalf("the %d acks of one batch came in %d frames, want 1", n, c.frames)
	}
}

// flood starts a client that never reads its replies: it sends frames
// that each hold one valid move followed by many bad lines (each answered
// with a bad_json of about 100 bytes) until the returned stop is called,
// which closes the socket and waits for the sender.
func flood(tb testing.TB, s *testServer, e *testEnv, player string) (stop func()) {
	tb.Helper()
	ws := s.dial(tb, player).ws
	w := newWalker(e.g, 77)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			seq, p := w.step(2)
			frame := moveLine(seq, p) + strings.Repeat("\n{", (MaxFrame-200)/2)
			if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
				return // closed by stop, or by the server
			}
		}
	})
	return func() {
		ws.Close()
		wg.Wait()
	}
}

// serverConn returns the server's socket of player, or nil.
func serverConn(in *Ingest, player string) *wsConn {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	for c := range in.conns {
		if c.p.id == player {
			return c
		}
	}
	return nil
}

// TestClientThatDoesNotReadDelaysNoOne: one client floods its socket and
// never reads, until the kernel's buffers are full and the server keeps
// its replies (acks written by the completer among them) for a drain;
// meanwhile another player's moves are all acked, one by one, while the
// flooding socket stays stalled and open (WriteTimeout is long).
func TestClientThatDoesNotReadDelaysNoOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.WriteTimeout = time.Hour })
	defer flood(t, s, e, "sleeper")()
	var sc *sendConn
	testenv.WaitUntil(t, waitFor, "stalled", func() bool {
		if c := serverConn(s.in, "sleeper"); c != nil && c.sc.stalled() {
			sc = c.sc
			return true
		}
		return false
	})
	c := s.dial(t, "reader")
	w := newWalker(e.g, 3)
	for range 20 {
		seq, p := w.step(3)
		c.send(moveLine(seq, p))
		c.expectAck(seq)
	}
	if !sc.stalled() || serverConn(s.in, "sleeper") == nil {
		t.Fatal("the flooding socket recovered or closed: the test proved nothing")
	}
	if n := counterValue(t, s.in.m.slow); n != 0 {
		t.Fatalf("%v slow disconnects, want 0", n)
	}
}

// TestClientThatDoesNotReadIsClosed: a flooding client that never reads
// is disconnected once its replies wait longer than WriteTimeout, and the
// close is counted as slow; a reading client on the same instance goes on.
func TestClientThatDoesNotReadIsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.WriteTimeout = 50 * time.Millisecond })
	defer flood(t, s, e, "sleeper")()
	testenv.WaitUntil(t, waitFor, "counted as slow", func() bool { return counterValue(t, s.in.m.slow) == 1 })
	testenv.WaitUntil(t, waitFor, "closed", func() bool { return serverConn(s.in, "sleeper") == nil })
	c := s.dial(t, "reader")
	w := newWalker(e.g, 3)
	seq, p := w.step(3)
	c.send(moveLine(seq, p))
	c.expectAck(seq)
}

func counterValue(tb testing.TB, c prometheus.Counter) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (server, client net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestSendConnNeverWaitsAndKeepsOrder: while the peer does not read,
// every Write returns at once with all its bytes taken (a drain starts
// once the kernel is full); when the peer reads, it gets every byte in
// order, the drain ends, and resume was called.
func TestSendConnNeverWaitsAndKeepsOrder(t *testing.T) {
	t.Parallel()
	server, client := tcpPair(t)
	var resumed atomic.Int32
	s := newSendConn(server, time.Hour, 64<<20, func() { resumed.Add(1) }, func() { t.Error("counted as slow") })
	const chunk, chunks = 1000, 20_000 // 20 MB: more than loopback buffers hold
	buf := make([]byte, chunk)
	for i := range chunks {
		binary.LittleEndian.PutUint64(buf, uint64(i))
		if n, err := s.Write(buf); n != chunk || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if !s.stalled() {
		t.Fatal("20 MB written to a peer that does not read and no drain started")
	}
	got := make([]byte, chunk)
	for i := range chunks {
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if v := binary.LittleEndian.Uint64(got); v != uint64(i) {
			t.Fatalf("chunk %d arrived as chunk %d", v, i)
		}
	}
	testenv.WaitUntil(t, waitFor, "drained", func() bool { return !s.stalled() })
	s.wait()
	if resumed.Load() == 0 {
		t.Fatal("drained without resume")
	}
	// Direct writes again.
	if _, err := s.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, got[:5]); err != nil || !bytes.Equal(got[:5], []byte("after")) {
		t.Fatalf("read %q, %v", got[:5], err)
	}
}

// TestSendConnOverflowCloses: past maxPending bytes waiting for a peer
// that does not read, Write fails with errSlow, the close is counted once
// and the connection is closed (the peer reads EOF after the bytes that
// made it).
func TestSendConnOverflowCloses(t *testing.T) {
	t.Parallel()
	server, client := tcpPair(t)
	var slow atomic.Int32
	s := newSendConn(server, time.Hour, 1<<20, func() {}, func() { slow.Add(1) })
	buf := make([]byte, 4096)
	var err error
	for i := 0; i < 100_000 && err == nil; i++ {
		_, err = s.Write(buf)
	}
	if !errors.Is(err, errSlow) {
		t.Fatalf("write error %v, want errSlow", err)
	}
	if _, err := s.Write(buf); err == nil {
		t.Fatal("write after the overflow succeeded")
	}
	if n, err := io.Copy(io.Discard, client); err != nil {
		t.Fatalf("peer read %d bytes, then %v", n, err)
	}
	s.wait()
	if slow.Load() != 1 {
		t.Fatalf("slow counted %d times, want 1", slow.Load())
	}
}

// TestStateArgsAllocateNothing: a player's share of a round's HSET (its
// boxed id and state value) allocates nothing, and the value is the
// stored form of the state.
func TestStateArgsAllocateNothing(t *testing.T) {
	p := &player{id: "p", idArg: "p"}
	st := state{Hash: 0xfedcba9876543210}
	st.Seq, st.Node = 1<<63, 12
	args := make([]any, 0, 2)
	if n := testing.AllocsPerRun(100, func() {
		st.Seq++
		args = append(args[:0], p.idArg, p.stateArg(st))
	}); n != 0 {
		t.Fatalf("%v allocations per player", n)
	}
	b, _ := args[1].(*stateValue).MarshalBinary()
	if want := appendState(nil, st); !bytes.Equal(b, want) {
		t.Fatalf("value %q, want %q", b, want)
	}
}

// TestPingsReachAReadingClientAndASilentSocketIsClosed: with a short
// PingInterval, a socket whose client neither sends nor reads (so never
// answers a ping) is closed, and a reading client gets ping after ping
// (the timer re-arms). Whether its pongs keep its socket open depends on
// how fast the machine answers, so a client closed before its second
// ping is replaced by a new one rather than failing the test.
func TestPingsReachAReadingClientAndASilentSocketIsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.PingInterval = 50 * time.Millisecond })
	s.dial(t, "silent")
	testenv.WaitUntil(t, waitFor, "silent socket closed", func() bool { return serverConn(s.in, "silent") == nil })
	for attempt, deadline := 0, time.Now().Add(waitFor); ; attempt++ {
		if time.Now().After(deadline) {
			t.Fatalf("no client got two pings in %d attempts", attempt)
		}
		c := s.dial(t, fmt.Sprintf("live-%d", attempt))
		var pings atomic.Int32
		c.ws.SetPingHandler(func(data string) error {
			if pings.Add(1) == 2 {
				return errors.New("enough")
			}
			return c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		_ = c.ws.SetReadDeadline(time.Now().Add(waitFor))
		_, _, err := c.ws.ReadMessage()
		c.ws.Close()
		if pings.Load() >= 2 {
			return
		}
		t.Logf("attempt %d: %d pings, then %v", attempt, pings.Load(), err)
	}
}
