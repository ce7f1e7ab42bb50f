package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// A player's move must not take effect while an earlier move of theirs can
// still be refused (docs/pipeline.md, "A player's moves go into the log in
// order"). Before the fix each move was answered by its own batch's outcome:
// move s refused and move s+1, in another batch, stored and acked — the log
// held s+1 without s, against SPEC (an error means the seq is not used).

// queuedMoves is how many moves of the player named id this Ingest holds
// unanswered (accepted, in a batch or held back).
func queuedMoves(in *Ingest, id string) int {
	s := in.players.shardOf(id)
	s.mu.Lock()
	p := s.m[id]
	s.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// boundaryArc returns an arc u→v of g whose ends lie in different
// partitions.
func boundaryArc(tb testing.TB, g *graph.Graph, part []uint32) (u, v uint32) {
	tb.Helper()
	for u := uint32(0); u < uint32(g.NumNodes()); u++ {
		for _, a := range g.Neighbors(u) {
			if part[a.To] != part[u] {
				return u, a.To
			}
		}
	}
	tb.Fatal("no arc between two partitions")
	return 0, 0
}

// stalledIngest starts an Ingest of e that reaches NATS through a
// testenv.StallProxy (JetStream's answers can be held back), with an ack
// timeout long enough that no publish outlives it while the proxy is
// paused.
func stalledIngest(t *testing.T, in natsjs.Limits, mod func(*Options)) (*testEnv, *testenv.StallProxy, *testServer) {
	t.Helper()
	url, _ := testenv.EmbeddedNATS(t)
	e := newEnvAt(t, url, in)
	px := testenv.NewStallProxy(t, url)
	nc := testenv.ConnectNATS(t, px.URL())
	js := jetstreamOf(t, nc)
	s := e.start(t, func(o *Options) {
		o.NC, o.JS = nc, js
		o.AckTimeout = waitFor
		if mod != nil {
			mod(o)
		}
	})
	return e, px, s
}

// updateIn changes the IN stream's configuration.
func (e *testEnv) updateIn(t *testing.T, change func(*jetstream.StreamConfig)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	stream, err := e.js.Stream(ctx, e.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	change(&cfg)
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// waitQueued waits until the Ingest holds n moves of player id: they are
// submitted (and so validated on top of each other).
func waitQueued(t *testing.T, in *Ingest, id string, n int) {
	t.Helper()
	testenv.WaitUntil(t, waitFor, "moves submitted", func() bool { return queuedMoves(in, id) == n })
}

// logSeqs returns, per player, how many times each seq is in the IN
// stream, and the subject of each.
func logSeqs(t *testing.T, e *testEnv) (map[string]map[uint64]int, map[string]map[uint64]string) {
	t.Helper()
	got, _ := readIn(t, e)
	count := map[string]map[uint64]int{}
	subj := map[string]map[uint64]string{}
	for _, m := range got {
		if count[m.m.Player] == nil {
			count[m.m.Player] = map[uint64]int{}
			subj[m.m.Player] = map[uint64]string{}
		}
		count[m.m.Player][m.m.Seq]++
		subj[m.m.Player][m.m.Seq] = m.subject
	}
	return count, subj
}

// TestRefusedMoveFailsTheNextInAnotherPartition: move 2 of a player ends
// in partition A, whose subject is full (one message per subject, discard
// new), and move 3 ends in partition B, whose subject has room; both are
// sent before JetStream's answer to move 2 comes back. Move 3 must not be
// stored and must be answered unavailable (with retry_after_ms) like move
// 2: the client sends both again, and once A has room they are stored in
// order, once each, and the player goes on from move 3.
func TestRefusedMoveFailsTheNextInAnotherPartition(t *testing.T) {
	t.Parallel()
	e, px, s := stalledIngest(t, small, nil)
	u, v := boundaryArc(t, e.g, e.part)
	e.updateIn(t, func(cfg *jetstream.StreamConfig) {
		cfg.MaxMsgsPerSubject = 1
		cfg.DiscardNewPerSubject = true
	})
	const name = "crosser"
	c := s.dial(t, name)
	at := func(vs ...uint32) []uint64 {
		p := make([]uint64, len(vs))
		for i, x := range vs {
			p[i] = uint64(graph.ID(x))
		}
		return p
	}
	c.send(moveLine(1, at(u))) // fills A's subject
	c.expectAck(1)

	px.Pause() // JetStream's answers wait
	c.send(moveLine(2, at(u)), moveLine(3, at(u, v)))
	waitQueued(t, s.in, name, 2)
	px.Resume()
	c.expectError(2, "unavailable")
	c.expectError(3, "unavailable")
	if st, _ := e.playerState(t, name); st.Seq != 1 {
		t.Errorf("state at seq %d after moves 2 and 3 failed, want 1", st.Seq)
	}

	// A has room again: the client sends both again, and goes on.
	e.updateIn(t, func(cfg *jetstream.StreamConfig) {
		cfg.MaxMsgsPerSubject = -1
		cfg.DiscardNewPerSubject = false
	})
	c.send(moveLine(2, at(u)), moveLine(3, at(u, v)))
	c.expectAck(2)
	c.expectAck(3)
	c.send(moveLine(4, at(v)))
	c.expectAck(4)
	s.stop()

	count, subj := logSeqs(t, e)
	for seq := uint64(1); seq <= 4; seq++ {
		if n := count[name][seq]; n != 1 {
			t.Errorf("seq %d stored %d times, want 1", seq, n)
		}
	}
	if len(count[name]) != 4 {
		t.Errorf("log holds seqs %v of %s, want 1 to 4", count[name], name)
	}
	a, b := e.topo.InSubject(int(e.part[u])), e.topo.InSubject(int(e.part[v]))
	if subj[name][2] != a || subj[name][3] != b {
		t.Errorf("seq 2 on %s, seq 3 on %s; want %s and %s", subj[name][2], subj[name][3], a, b)
	}
	if st, _ := e.playerState(t, name); st.Seq != 4 {
		t.Errorf("state at seq %d, want 4", st.Seq)
	}
}

// TestRefusedBatchFailsTheNextBatchOfItsPartition: the same within one
// partition. Batches hold two events (and are never published by the
// flush interval), the stream refuses a message above a size that lies
// between the two batches: the first batch — another player's long move
// and the player's move 1 — is refused, the second — the player's move 2
// and a third player's move — would be stored. Both batches are sent
// before JetStream's answer to the first comes back. Move 2 must not be
// stored and must be answered unavailable like move 1.
func TestRefusedBatchFailsTheNextBatchOfItsPartition(t *testing.T) {
	t.Parallel()
	e, px, s := stalledIngest(t, small, func(o *Options) {
		o.BatchEvents = 2
		o.FlushInterval = time.Hour
	})
	w := newWalker(e.g, 5)
	longPath := w.path(16)
	k := e.part[mustIndex(t, e.g, longPath[0])]
	// Every other move stands still on longPath's first node, in the
	// same partition, so that all share k's batches; the long move must
	// end there too.
	for tries := 0; e.part[mustIndex(t, e.g, longPath[len(longPath)-1])] != k; tries++ {
		if tries == 1000 {
			t.Fatal("no 16-node path ending in its first node's partition")
		}
		longPath = w.path(16)
	}
	spot := []uint64{longPath[0]}
	const (
		big   = "q-a-long-player-name-that-makes-its-move-the-largest-event-in-it"
		name  = "p"
		third = "r"
		last  = "t"
	)
	size := func(evs ...*eventpb.MoveAccepted) int {
		var b event.Builder
		for _, ev := range evs {
			if err := b.AddMove(ev); err != nil {
				t.Fatal(err)
			}
		}
		return len(b.Bytes())
	}
	ev := func(player string, seq, prev uint64, path []uint64) *eventpb.MoveAccepted {
		p := make([]uint32, len(path))
		for i, id := range path {
			p[i] = uint32(id)
		}
		return &eventpb.MoveAccepted{Player: player, Seq: seq, Path: p, IngestUnixNanos: time.Now().UnixNano(), Partition: k, PrevSeq: prev}
	}
	refused := size(ev(big, 1, 0, longPath), ev(name, 1, 0, spot))
	stored := size(ev(name, 2, 1, spot), ev(third, 1, 0, spot))
	if refused-stored < 80 {
		t.Fatalf("batches of %d and %d bytes: too close to tell apart", refused, stored)
	}
	// The message's headers count too: its Nats-Msg-Id.
	hdr := len("NATS/1.0\r\nNats-Msg-Id: \r\n\r\n") + len(s.in.Instance()) + len("-9-9")
	e.updateIn(t, func(cfg *jetstream.StreamConfig) { cfg.MaxMsgSize = int32(hdr + (refused+stored)/2) })

	px.Pause() // JetStream's answers wait
	q := s.dial(t, big)
	q.send(moveLine(1, longPath))
	waitQueued(t, s.in, big, 1)
	c := s.dial(t, name)
	c.send(moveLine(1, spot), moveLine(2, spot)) // move 1 completes the first batch
	waitQueued(t, s.in, name, 2)
	r := s.dial(t, third)
	r.send(moveLine(1, spot)) // would complete a second batch, with move 2
	waitQueued(t, s.in, third, 1)
	px.Resume()
	q.expectError(1, "unavailable")
	c.expectError(1, "unavailable")
	c.expectError(2, "unavailable")

	// The client sends both again: move 1 completes the batch that holds
	// r's move, move 2 a batch with another player's move.
	c.send(moveLine(1, spot), moveLine(2, spot))
	c.expectAck(1)
	r.expectAck(1)
	tl := s.dial(t, last)
	tl.send(moveLine(1, spot))
	c.expectAck(2)
	tl.expectAck(1)
	s.stop()

	count, _ := logSeqs(t, e)
	if len(count[big]) != 0 {
		t.Errorf("the refused long move is in the log: %v", count[big])
	}
	for _, who := range []string{name, third, last} {
		want := 1
		if who == name {
			want = 2
		}
		if len(count[who]) != want {
			t.Errorf("log holds seqs %v of %s, want 1 to %d", count[who], who, want)
		}
		for seq, n := range count[who] {
			if n != 1 {
				t.Errorf("%s's seq %d stored %d times, want 1", who, seq, n)
			}
		}
	}
	if st, _ := e.playerState(t, name); st.Seq != 2 {
		t.Errorf("state at seq %d, want 2", st.Seq)
	}
}

func mustIndex(t *testing.T, g *graph.Graph, id uint64) uint32 {
	t.Helper()
	v, ok := graph.Index(id, g.NumNodes())
	if !ok {
		t.Fatalf("node %d not in the graph", id)
	}
	return v
}
