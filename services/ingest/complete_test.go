package ingest

import (
	"context"
	"testing"

	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// crossingMoves returns two consecutive moves (seqs 1 and 2) of one walker
// whose last nodes lie in different partitions.
func crossingMoves(tb testing.TB, e *testEnv) (p1, p2 []uint64, k1, k2 uint32) {
	tb.Helper()
	w := newWalker(e.g, 1234)
	p1 = w.path(2)
	w.accept(1, p1)
	partOf := func(p []uint64) uint32 {
		v, _ := graph.Index(p[len(p)-1], e.g.NumNodes())
		return e.part[v]
	}
	for range 10_000 {
		p2 = w.path(16)
		if partOf(p2) != partOf(p1) {
			return p1, p2, partOf(p1), partOf(p2)
		}
		// Walk on and try again from there.
		w.accept(1, p2)
		p1 = p2
	}
	tb.Fatal("no walk crosses a partition border")
	return
}

// TestALaterMoveWaitsForTheEarlierOnesBatch drives the completer by hand:
// move 1 goes to partition A, move 2 (validated on top of it) to
// partition B. Move 2 is held back, in no batch, while A's batch is not
// settled. When A's batch fails, move 2 fails with it (unavailable, the
// same retry_after) and the player stands where they stood before move 1;
// when A's is stored, move 1 is acked and move 2 joins B's batch, and
// when that one fails the player stands after move 1. Either way the
// client's resend goes on from there.
func TestALaterMoveWaitsForTheEarlierOnesBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	p1, p2, k1, k2 := crossingMoves(t, e)
	fail := &natsjs.UnavailableError{RetryAfter: 1234_000_000, Err: context.DeadlineExceeded}
	for _, tc := range []struct {
		name       string
		failFirst  bool // A's batch fails; else A's is stored and B's fails
		want1      game.Code
		wantSeq    uint64
		wantStored bool
	}{
		{"earlier move fails", true, game.CodeUnavailable, 0, false},
		{"earlier move stored, later one fails", false, "", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := New(Options{Graph: e.g, Part: e.part, Topology: e.topo, NC: e.nc, Redis: e.rdb, RedisPrefix: e.rprefix + tc.name + ":", JWTSecret: testSecret, RateLimit: noLimit})
			if err != nil {
				t.Fatal(err)
			}
			p, err := in.players.attach(context.Background(), "crosser")
			if err != nil {
				t.Fatal(err)
			}
			col := &collector{replies: make([]reply, 2), left: 2, done: make(chan struct{})}
			var sc scratch
			in.submit(p, 1, p1, col, 0, &sc)
			in.submit(p, 2, p2, col, 1, &sc)
			a := in.parts[k1].moves
			if len(a) != 1 || len(in.parts[k2].moves) != 0 {
				t.Fatalf("batches hold %d and %d moves, want 1 and 0 (move 2 held back)", len(a), len(in.parts[k2].moves))
			}
			if n := counterValue(t, in.m.held); n != 1 {
				t.Fatalf("%v moves held, want 1", n)
			}
			if tc.failFirst {
				in.complete([]completion{{moves: a, err: fail}}, nil, nil, nil, nil)
			} else {
				in.complete([]completion{{moves: a}}, nil, nil, nil, nil)
				b := in.parts[k2].moves
				if len(b) != 1 || b[0].seq != 2 {
					t.Fatalf("B's batch holds %d moves once A's was stored, want move 2", len(b))
				}
				in.complete([]completion{{moves: b, err: fail}}, nil, nil, nil, nil)
			}
			<-col.done
			if col.replies[0].code != tc.want1 || col.replies[1].code != game.CodeUnavailable {
				t.Fatalf("replies %+v, want codes %q and unavailable", col.replies, tc.want1)
			}
			for _, r := range col.replies {
				if r.code != "" && r.retry != fail.RetryAfter {
					t.Fatalf("unavailable reply %+v, want retry %v", r, fail.RetryAfter)
				}
			}
			p.mu.Lock()
			head, acked, queued := p.head, p.acked, len(p.queue)
			p.mu.Unlock()
			if head != acked || head.Seq != tc.wantSeq || queued != 0 {
				t.Fatalf("player head %+v acked %+v queue %d, want seq %d", head, acked, queued, tc.wantSeq)
			}
			v, err := e.rdb.HGet(context.Background(), in.stateKey, "crosser").Result()
			if stored := err == nil; stored != tc.wantStored {
				t.Fatalf("state in Redis %q (%v), want stored %v", v, err, tc.wantStored)
			}
			// The player continues from where the state says.
			in.players.release(p)
			p, err = in.players.attach(context.Background(), "crosser")
			if err != nil {
				t.Fatal(err)
			}
			defer in.players.release(p)
			col = &collector{replies: make([]reply, 2), left: 2, done: make(chan struct{})}
			before := in.parts[k1].b.Len() + in.parts[k2].b.Len()
			if tc.wantSeq == 0 {
				in.submit(p, 1, p1, col, 0, &sc)
				in.submit(p, 2, p2, col, 1, &sc)
				// Move 1 batched, move 2 held back behind it again.
				p.mu.Lock()
				heldAgain := len(p.queue) == 2 && p.queue[1].status == held
				p.mu.Unlock()
				if got := in.parts[k1].b.Len() + in.parts[k2].b.Len(); got != before+1 || !heldAgain {
					t.Fatalf("resend not accepted: %d events batched, want %d, move 2 held %v (replies %+v)", got, before+1, heldAgain, col.replies)
				}
			} else {
				in.submit(p, 2, p2, col, 0, &sc)
				if got := in.parts[k1].b.Len() + in.parts[k2].b.Len(); got != before+1 {
					t.Fatalf("resend not accepted: %d events batched, want %d (replies %+v)", got, before+1, col.replies)
				}
			}
			p.mu.Lock()
			head = p.head
			p.mu.Unlock()
			if head.Seq != 2 {
				t.Fatalf("player head at seq %d after the resend, want 2", head.Seq)
			}
		})
	}
}

// TestHeldMoveStalledBehindTheGate: the completer releases a held move
// into a partition whose batch is full and may not be published (an
// earlier batch of the partition awaits its republish: the gate is set).
// The completer does not wait for the gate: the move stays held and its
// player stalled, and once the gate opens the move joins the partition's
// next batch.
func TestHeldMoveStalledBehindTheGate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	p1, p2, k1, k2 := crossingMoves(t, e)
	in, err := New(Options{Graph: e.g, Part: e.part, Topology: e.topo, NC: e.nc, Redis: e.rdb, RedisPrefix: e.rprefix, JWTSecret: testSecret, RateLimit: noLimit})
	if err != nil {
		t.Fatal(err)
	}
	p, err := in.players.attach(context.Background(), "stalled")
	if err != nil {
		t.Fatal(err)
	}
	defer in.players.release(p)
	col := &collector{replies: make([]reply, 3), left: 3, done: make(chan struct{})}
	var sc scratch
	in.submit(p, 1, p1, col, 0, &sc)
	in.submit(p, 2, p2, col, 1, &sc)
	// B's batch full with another player's move, not yet published.
	b := in.parts[k2]
	b.b.MaxEvents = 1
	q, err := in.players.attach(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer in.players.release(q)
	in.submit(q, 1, []uint64{p2[len(p2)-1]}, col, 2, &sc)
	if b.b.Len() != 1 {
		t.Fatalf("B's batch holds %d events, want 1", b.b.Len())
	}
	b.rmu.Lock()
	b.gate = make(chan struct{})
	b.rmu.Unlock()

	status := func() uint8 {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.queue) != 1 {
			t.Fatalf("player's queue holds %d moves, want move 2", len(p.queue))
		}
		return p.queue[0].status
	}
	in.complete([]completion{{moves: in.parts[k1].moves}}, nil, nil, nil, nil)
	col.mu.Lock()
	r1 := col.replies[0]
	col.mu.Unlock()
	if r1.code != "" || r1.seq != 1 {
		t.Fatalf("move 1: %+v, want acked", r1)
	}
	if s := status(); s != held {
		t.Fatalf("move 2 in status %d behind the gate, want held", s)
	}
	b.mu.Lock()
	stalled := len(b.stalled)
	b.mu.Unlock()
	if stalled != 1 {
		t.Fatalf("%d players stalled on B, want 1", stalled)
	}
	// The gate opens (retryLoop with nothing left to republish).
	in.retries.Add(1)
	b.retryLoop()
	in.cmu.Lock()
	round := in.cq
	in.cq = nil
	in.cmu.Unlock()
	in.complete(round, nil, nil, nil, nil)
	if s := status(); s != inFlight {
		t.Fatalf("move 2 in status %d once the gate opened, want in flight", s)
	}
	b.mu.Lock()
	inB := len(b.moves) == 1 && b.moves[0].p == p && b.moves[0].seq == 2
	b.mu.Unlock()
	if !inB {
		t.Fatal("move 2 is not in B's open batch once the gate opened")
	}
}
