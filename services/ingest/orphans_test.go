package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"treasure/internal/graph"
	"treasure/internal/testenv"
)

// TestDeadInstanceStoredMovesRecovered: ingest A publishes through a
// testenv.StallProxy holding JetStream's answers back; moves of two
// players are stored but never acked, and A goes away with their outcome
// unknown (its answers still held back at its shutdown deadline), so it
// leaves its registration behind and its liveness subscription gone.
// Ingest B, started afterwards on the same streams and Redis, finds A dead
// before it serves and moves both players on from the log: the resend of
// the last stored move is acked without a second copy, the resend of an
// earlier one is stale_seq (its seq is used), and the other player's next
// move, from where its stored move ended, is acked as continuous. Every
// move is in the log once, and A's registration is gone.
func TestDeadInstanceStoredMovesRecovered(t *testing.T) {
	t.Parallel()
	ia := startInstanceA(t, 100*time.Millisecond)
	e, px, nc, a, as, stopA, aDone := ia.e, ia.px, ia.nc, ia.in, ia.srv, ia.stop, ia.done

	p1, p2 := as.dial(t, "resender"), as.dial(t, "continuer")
	w1, w2 := newWalker(e.g, 5), newWalker(e.g, 6)
	for range 2 {
		s, p := w1.step(2)
		p1.send(moveLine(s, p))
		p1.expectAck(s)
		s, p = w2.step(2)
		p2.send(moveLine(s, p))
		p2.expectAck(s)
	}
	if n, _ := e.rdb.HExists(context.Background(), e.rprefix+"ingests", a.Instance()).Result(); !n {
		t.Fatalf("ingest A (%s) is not registered in %singests", a.Instance(), e.rprefix)
	}

	px.Pause()
	s3, path3 := w1.step(2)
	s4, path4 := w1.step(2)
	p1.send(moveLine(s3, path3), moveLine(s4, path4))
	t2, pathT2 := w2.step(2)
	p2.send(moveLine(t2, pathT2))
	testenv.WaitUntil(t, waitFor, "the moves in flight stored", func() bool {
		got, _ := readIn(t, e)
		n := 0
		for _, m := range got {
			if m.m.Player == "resender" && (m.m.Seq == s3 || m.m.Seq == s4) || m.m.Player == "continuer" && m.m.Seq == t2 {
				n++
			}
		}
		return n == 3
	})
	stopA()
	select {
	case <-aDone:
	case <-time.After(2 * DefaultShutdownTimeout):
		t.Fatal("ingest A did not stop")
	}
	// A's connection goes, as a killed process's does; the server then
	// has no responder for A's liveness subject.
	nc.Close()
	testenv.WaitUntil(t, waitFor, "no responder for A's liveness subject", func() bool {
		_, err := e.nc.Request(a.liveSubject(a.Instance()), nil, time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
	if n, _ := e.rdb.HExists(context.Background(), e.rprefix+"ingests", a.Instance()).Result(); !n {
		t.Fatalf("ingest A left no registration although batches of it stayed unresolved")
	}
	if st, _ := e.playerState(t, "resender"); st.Seq != s3-1 {
		t.Fatalf("resender's state in Redis at seq %d before the recovery, want %d: the test does not force the case", st.Seq, s3-1)
	}

	b := e.start(t, nil) // straight to NATS
	if n := counterValue(t, b.in.m.recovered); n != 2 {
		t.Errorf("B moved %v player states on, want 2", n)
	}
	if n, _ := e.rdb.HExists(context.Background(), e.rprefix+"ingests", a.Instance()).Result(); n {
		t.Errorf("dead ingest A is still registered after B's recovery")
	}
	c1 := b.dial(t, "resender")
	c1.send(moveLine(s3, path3), moveLine(s4, path4))
	c1.expectError(s3, "stale_seq")
	c1.expectAck(s4)
	c2 := b.dial(t, "continuer")
	t3, pathT3 := w2.step(2)
	if pathT3[0] == pathT2[0] {
		t.Fatalf("continuer's moves %d and %d start on the same node %d: continuity is not exercised", t2, t3, pathT3[0])
	}
	c2.send(moveLine(t3, pathT3))
	c2.expectAck(t3)
	b.stop()

	got, _ := readIn(t, e)
	count := map[string]int{}
	for _, m := range got {
		count[fmt.Sprintf("%s/%d", m.m.Player, m.m.Seq)]++
	}
	for _, k := range []string{"resender/1", "resender/2", "resender/3", "resender/4", "continuer/1", "continuer/2", "continuer/3"} {
		if count[k] != 1 {
			t.Errorf("%s stored %d times, want 1", k, count[k])
		}
	}
	if st, _ := e.playerState(t, "continuer"); st.Seq != t3 || graph.ID(st.Node) != uint32(pathT3[len(pathT3)-1]) {
		t.Errorf("continuer's state: seq %d at %d, want %d at %d", st.Seq, graph.ID(st.Node), t3, pathT3[len(pathT3)-1])
	}
}

// TestBatchSuffix: after "<instance>-", only "<partition>-<batch number>"
// names a batch of that instance; the id of an instance whose name merely
// starts with the same text does not.
func TestBatchSuffix(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"0-1": true, "3-12345": true, "12-0": true,
		"": false, "0": false, "0-": false, "-1": false, "x-1": false, "0-1-2": false, "b-0-1": false, "0-1a": false,
	} {
		if got := batchSuffix(s); got != want {
			t.Errorf("batchSuffix(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestRunningInstanceRecoversBeforeDiscontinuous: ingest B already runs
// (its periodic look for dead instances set to an hour, so only a move
// can make it look) when ingest A goes away with a player's move stored
// and unacked, as in TestDeadInstanceStoredMovesRecovered. The player
// reconnects to B at once and sends its next move, from where the stored
// move ended: B, finding it discontinuous with what Redis says, first
// looks for dead instances, recovers A's moves, and acks the move.
func TestRunningInstanceRecoversBeforeDiscontinuous(t *testing.T) {
	t.Parallel()
	ia := startInstanceA(t, 0)
	e, px, nc, a, as, stopA, aDone := ia.e, ia.px, ia.nc, ia.in, ia.srv, ia.stop, ia.done
	b := e.start(t, func(o *Options) { o.RedisCheckInterval = time.Hour })

	p := as.dial(t, "mover")
	w := newWalker(e.g, 8)
	for range 2 {
		s, path := w.step(2)
		p.send(moveLine(s, path))
		p.expectAck(s)
	}
	px.Pause()
	s3, path3 := w.step(2)
	p.send(moveLine(s3, path3))
	testenv.WaitUntil(t, waitFor, "the move in flight stored", func() bool {
		got, _ := readIn(t, e)
		for _, m := range got {
			if m.m.Player == "mover" && m.m.Seq == s3 {
				return true
			}
		}
		return false
	})
	stopA()
	<-aDone
	nc.Close()
	testenv.WaitUntil(t, waitFor, "no responder for A's liveness subject", func() bool {
		_, err := e.nc.Request(a.liveSubject(a.Instance()), nil, time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
	if n := counterValue(t, b.in.m.recovered); n != 0 {
		t.Fatalf("B recovered %v states before any move asked it to", n)
	}

	c := b.dial(t, "mover")
	s4, path4 := w.step(2)
	c.send(moveLine(s4, path4))
	c.expectAck(s4)
	if n := counterValue(t, b.in.m.recovered); n != 1 {
		t.Errorf("B moved %v player states on, want 1", n)
	}
	// A move really discontinuous is still answered so.
	c.send(moveLine(s4+1, []uint64{uint64(graph.ID(nonNeighbour(e.g, w.at))), uint64(graph.ID(w.at))}))
	c.expectError(s4+1, "discontinuous")
	b.stop()
	got, _ := readIn(t, e)
	count := map[uint64]int{}
	for _, m := range got {
		if m.m.Player == "mover" {
			count[m.m.Seq]++
		}
	}
	for _, seq := range []uint64{1, 2, s3, s4} {
		if count[seq] != 1 {
			t.Errorf("seq %d stored %d times, want 1", seq, count[seq])
		}
	}
}

// startInstanceA runs ingest A of the dead-instance tests by hand (its
// shutdown with answers held back fails, which testEnv.start would count
// as a test failure), on fresh streams of an embedded server that it
// reaches through a stall proxy, checking Redis every redisCheck (0: the
// default).
func startInstanceA(t *testing.T, redisCheck time.Duration) instanceA {
	t.Helper()
	url, _ := testenv.EmbeddedNATS(t)
	e := newEnvAt(t, url, small)
	px := testenv.NewStallProxy(t, url)
	nc := testenv.ConnectNATS(t, px.URL())
	js := jetstreamOf(t, nc)
	a, err := New(Options{
		Graph: e.g, Part: e.part, Topology: e.topo, NC: nc, JS: js,
		Redis: e.rdb, RedisPrefix: e.rprefix, JWTSecret: testSecret, RateLimit: noLimit,
		AckTimeout: 300 * time.Millisecond, ShutdownTimeout: time.Second, RedisCheckInterval: redisCheck,
	})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopA := context.WithCancel(context.Background())
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		_ = a.Run(actx) // an error: the outcomes stayed unknown at its shutdown
	}()
	t.Cleanup(func() { stopA(); <-aDone })
	testenv.WaitUntil(t, waitFor, "ingest A ready", func() bool { return a.Ready() == nil })
	asrv := httptest.NewServer(a.Handler())
	t.Cleanup(asrv.Close)
	return instanceA{e: e, px: px, nc: nc, in: a, srv: &testServer{in: a, srv: asrv}, stop: stopA, done: aDone}
}

// instanceA is what startInstanceA started.
type instanceA struct {
	e    *testEnv
	px   *testenv.StallProxy
	nc   *nats.Conn // A's connection, through px
	in   *Ingest
	srv  *testServer
	stop context.CancelFunc // ends A's Run
	done chan struct{}      // closed once it has returned
}
