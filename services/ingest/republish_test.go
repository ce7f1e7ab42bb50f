package ingest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/game"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// stalledEnv is a testEnv on a private embedded server, whose Ingest
// (through Options.NC and JS) talks to it through a testenv.StallProxy,
// while the test reads the streams directly.
func stalledEnv(t *testing.T) (*testEnv, *testenv.StallProxy, func(*Options)) {
	t.Helper()
	url, _ := testenv.EmbeddedNATS(t)
	e := newEnvAt(t, url, small)
	px := testenv.NewStallProxy(t, url)
	nc := testenv.ConnectNATS(t, px.URL())
	js := jetstreamOf(t, nc)
	return e, px, func(o *Options) {
		o.NC, o.JS = nc, js
		o.AckTimeout = 300 * time.Millisecond
	}
}

// waitCounter waits until c's metric reaches n.
func waitCounter(t *testing.T, what string, get func() float64, n float64) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for get() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want at least %v", what, get(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAckTimeoutIsNotAnError: JetStream stores a batch but its ack does not
// come within AckTimeout (the proxy holds the server's replies back).
// Ingest answers nothing meanwhile, publishes the same batch again with the
// same Nats-Msg-Id, and once the server's answers come through every move
// is acked exactly once and stored exactly once; a client's resend of an
// acked move is acked again and not stored again.
func TestAckTimeoutIsNotAnError(t *testing.T) {
	t.Parallel()
	e, px, mod := stalledEnv(t)
	s := e.start(t, mod)
	const players, moves = 3, 4
	type sent struct {
		seq  uint64
		path []uint64
	}
	cs := make([]*client, players)
	all := make([][]sent, players)
	px.Pause()
	for i := range cs {
		name := string(rune('a'+i)) + "-stalled"
		cs[i] = s.dial(t, name)
		w := newWalker(e.g, uint64(40+i))
		for range moves {
			seq, p := w.step(3)
			all[i] = append(all[i], sent{seq, p})
			cs[i].send(moveLine(seq, p))
		}
	}
	// At least one batch timed out and was republished, and one republish
	// timed out too.
	waitCounter(t, "republishes", func() float64 { return counterValue(t, s.in.m.republished) }, 2)
	// A resend of a move in flight shares its outcome.
	cs[0].send(moveLine(all[0][moves-1].seq, all[0][moves-1].path))
	px.Resume()
	for i, c := range cs {
		for _, m := range all[i] {
			c.expectAck(m.seq)
		}
		if i == 0 {
			c.expectAck(all[0][moves-1].seq) // the resend
		}
	}
	// Resend after the ack: acked again, not published.
	last := all[1][moves-1]
	cs[1].send(moveLine(last.seq, last.path))
	cs[1].expectAck(last.seq)
	if n := counterValue(t, s.in.m.unknown); n != 0 {
		t.Errorf("%v moves answered as unknown", n)
	}
	s.stop()
	got, _ := readIn(t, e)
	count := map[string]map[uint64]int{}
	for _, m := range got {
		if count[m.m.Player] == nil {
			count[m.m.Player] = map[uint64]int{}
		}
		count[m.m.Player][m.m.Seq]++
	}
	for i := range cs {
		name := string(rune('a'+i)) + "-stalled"
		for _, m := range all[i] {
			if n := count[name][m.seq]; n != 1 {
				t.Errorf("player %s seq %d stored %d times, want 1", name, m.seq, n)
			}
		}
		if st, _ := e.playerState(t, name); st.Seq != all[i][moves-1].seq {
			t.Errorf("player %s state at seq %d, want %d", name, st.Seq, all[i][moves-1].seq)
		}
	}
	if len(got) != players*moves {
		t.Errorf("%d moves in the stream, want %d", len(got), players*moves)
	}
}

// TestRefusedBatchStoresNothing: a definitive refusal (the IN stream is
// full, discard new) answers unavailable at once, without republishing,
// and nothing of the refused batch is stored.
func TestRefusedBatchStoresNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: 1})
	s := e.start(t, nil)
	c := s.dial(t, "refused")
	w := newWalker(e.g, 77)
	s1, p1 := w.step(3)
	c.send(moveLine(s1, p1))
	c.expectAck(s1)
	s2, p2 := w.step(3)
	s3, p3 := w.step(3)
	c.send(moveLine(s2, p2), moveLine(s3, p3))
	c.expectError(s2, "unavailable")
	c.expectError(s3, "unavailable")
	if n := counterValue(t, s.in.m.republished); n != 0 {
		t.Errorf("%v republishes of a refused batch", n)
	}
	s.stop()
	got, _ := readIn(t, e)
	if len(got) != 1 || got[0].m.Seq != s1 {
		t.Fatalf("stream holds %d moves, want only seq %d", len(got), s1)
	}
	if st, _ := e.playerState(t, "refused"); st.Seq != s1 {
		t.Fatalf("state at seq %d, want %d", st.Seq, s1)
	}
}

// newEnvAt is newEnv on the NATS server at url.
func newEnvAt(tb testing.TB, url string, in natsjs.Limits) *testEnv {
	tb.Helper()
	g, part := amsterdam(tb)
	nc := testenv.ConnectNATS(tb, url)
	js := jetstreamOf(tb, nc)
	topo := natsjs.Topology{Prefix: testenv.Prefix(tb), Partitions: testK, In: in, Out: small, Upd: small, DLQ: small}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := topo.Ensure(ctx, js); err != nil {
		tb.Fatal(err)
	}
	rdb, rprefix := testenv.Redis(tb)
	return &testEnv{g: g, part: part, nc: nc, js: js, topo: topo, rdb: rdb, rprefix: rprefix}
}

func jetstreamOf(tb testing.TB, nc *nats.Conn) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// TestNoAnswerUntilTheOutcomeIsKnown: JetStream's answers are held back
// for longer than the IN stream's duplicate window (2 s here), so the
// batch's outcome cannot be learned by republishing. The moves are not
// answered with an error meanwhile (a move that may be in the log never
// is): once the server answers again, ingest searches the log for the
// batch's Nats-Msg-Id, finds it, and acks them, each stored once; the
// next move continues from them.
func TestNoAnswerUntilTheOutcomeIsKnown(t *testing.T) {
	t.Parallel()
	url, _ := testenv.EmbeddedNATS(t)
	in := small
	in.Duplicates = 2 * time.Second
	e := newEnvAt(t, url, in)
	px := testenv.NewStallProxy(t, url)
	nc := testenv.ConnectNATS(t, px.URL())
	js := jetstreamOf(t, nc)
	const ackTimeout = 300 * time.Millisecond
	s := e.start(t, func(o *Options) {
		o.NC, o.JS = nc, js
		o.AckTimeout = ackTimeout
		o.RetryAfter = 100 * time.Millisecond
	})
	c := s.dial(t, "limbo")
	w := newWalker(e.g, 91)
	s1, p1 := w.step(3)
	s2, p2 := w.step(3)
	px.Pause()
	t0 := time.Now()
	c.send(moveLine(s1, p1), moveLine(s2, p2))
	// Past 7/8 of the window no republish is tried; one started before
	// has timed out AckTimeout later.
	for time.Since(t0) < in.Duplicates+2*ackTimeout {
		time.Sleep(50 * time.Millisecond)
	}
	px.Resume()
	c.expectAck(s1)
	c.expectAck(s2)
	if n := counterValue(t, s.in.m.searched); n < 1 {
		t.Errorf("%v outcomes learned by searching the log, want at least 1", n)
	}
	if n := counterValue(t, s.in.m.rejected[game.CodeUnavailable]); n != 0 {
		t.Errorf("%v moves answered unavailable", n)
	}
	s3, p3 := w.step(3)
	c.send(moveLine(s3, p3))
	c.expectAck(s3)
	s.stop()
	got, _ := readIn(t, e)
	count := map[uint64]int{}
	for _, m := range got {
		count[m.m.Seq]++
	}
	for _, seq := range []uint64{s1, s2, s3} {
		if count[seq] != 1 {
			t.Errorf("seq %d stored %d times, want 1", seq, count[seq])
		}
	}
	if st, _ := e.playerState(t, "limbo"); st.Seq != s3 {
		t.Errorf("state at seq %d, want %d", st.Seq, s3)
	}
}

// TestNoStreamListeningIsNoVerdict: a batch is stored but its ack is held
// back, so ingest publishes it again; meanwhile no stream listens on the
// log's subjects any more (as while a replicated stream elects a new
// leader after a crash, or has lost its quorum): the republishes get "no
// responders". That says nothing of the first publish, which is stored:
// the moves are not answered unavailable (a client would send them again
// and they would be stored twice), and once the stream listens again the
// republish is answered as a duplicate and the moves are acked, stored
// once. Found by the e2e quorum test on a three-node cluster.
func TestNoStreamListeningIsNoVerdict(t *testing.T) {
	t.Parallel()
	e, px, mod := stalledEnv(t)
	s := e.start(t, func(o *Options) {
		mod(o)
		// Time to take the stream's subjects away before the first
		// republish.
		o.AckTimeout = 2 * time.Second
		o.RetryAfter = 100 * time.Millisecond
	})
	c := s.dial(t, "unheard")
	w := newWalker(e.g, 58)
	s1, p1 := w.step(3)
	s2, p2 := w.step(3)
	px.Pause()
	c.send(moveLine(s1, p1), moveLine(s2, p2))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	stream, err := e.js.Stream(ctx, e.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, waitFor, "both moves stored", func() bool {
		got, _ := readIn(t, e)
		return len(got) == 2
	})
	// Nothing listens on the log's subjects any more; the stored
	// messages stay.
	cfg := stream.CachedInfo().Config
	subjects := cfg.Subjects
	cfg.Subjects = []string{e.topo.Prefix + ".elsewhere"}
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, s.in.m.republished); n != 0 {
		t.Fatalf("%v republishes before the stream stopped listening: the test is too slow for its ack timeout", n)
	}
	// The first publish times out (its ack is held back): published
	// again, to no stream.
	waitCounter(t, "republishes", func() float64 { return counterValue(t, s.in.m.republished) }, 1)
	px.Resume()
	before := counterValue(t, s.in.m.republished)
	testenv.WaitFor(t, waitFor, func() string {
		if n := counterValue(t, s.in.m.rejected[game.CodeUnavailable]); n != 0 {
			t.Fatalf("%v moves answered unavailable while their batch is stored", n)
		}
		if n := counterValue(t, s.in.m.republished); n < before+3 {
			return fmt.Sprintf("%v republishes without a stream listening, want at least 3", n-before)
		}
		return ""
	})
	cfg.Subjects = subjects
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	c.expectAck(s1)
	c.expectAck(s2)
	s.stop()
	got, _ := readIn(t, e)
	count := map[uint64]int{}
	for _, m := range got {
		count[m.m.Seq]++
	}
	if len(got) != 2 || count[s1] != 1 || count[s2] != 1 {
		t.Errorf("stream holds %d moves (%v by seq), want seqs %d and %d once each", len(got), count, s1, s2)
	}
}
