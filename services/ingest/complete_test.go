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

// TestEachMoveIsAnsweredByItsOwnBatch drives the completer by hand: move 1
// goes to partition A, move 2 (validated on top of it) to partition B.
// When B's batch is stored first and A's then fails, move 1 is unavailable
// but move 2, which is in the log and will be applied, is acked (never an
// error for a stored move) and the player stands after it; when A is
// stored and B fails, move 1 is acked and the player stands after it.
func TestEachMoveIsAnsweredByItsOwnBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	p1, p2, k1, k2 := crossingMoves(t, e)
	fail := &natsjs.UnavailableError{RetryAfter: 1234_000_000, Err: context.DeadlineExceeded}
	for _, tc := range []struct {
		name       string
		failFirst  bool // A's batch fails (after B's was stored); else B's fails
		want1      game.Code
		want2      game.Code
		wantSeq    uint64
		wantStored bool
	}{
		{"earlier move fails after the later one was stored", true, game.CodeUnavailable, "", 2, true},
		{"later move fails after the earlier one was stored", false, "", game.CodeUnavailable, 1, true},
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
			a, b := in.parts[k1].moves, in.parts[k2].moves
			if len(a) != 1 || len(b) != 1 {
				t.Fatalf("batches hold %d and %d moves, want 1 and 1", len(a), len(b))
			}
			if tc.failFirst {
				in.complete([]completion{{moves: b}}, nil, nil, nil, nil)
				in.complete([]completion{{moves: a, err: fail}}, nil, nil, nil, nil)
			} else {
				in.complete([]completion{{moves: a}}, nil, nil, nil, nil)
				in.complete([]completion{{moves: b, err: fail}}, nil, nil, nil, nil)
			}
			<-col.done
			if col.replies[0].code != tc.want1 || col.replies[1].code != tc.want2 {
				t.Fatalf("replies %+v, want codes %q and %q", col.replies, tc.want1, tc.want2)
			}
			failed := col.replies[1]
			if tc.failFirst {
				failed = col.replies[0]
			}
			if failed.retry != fail.RetryAfter || failed.code != game.CodeUnavailable {
				t.Fatalf("unavailable reply %+v, want retry %v", failed, fail.RetryAfter)
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
			col = &collector{replies: make([]reply, 1), left: 1, done: make(chan struct{})}
			if tc.wantSeq == 2 {
				// From move 2's end.
				in.submit(p, 3, []uint64{p2[len(p2)-1]}, col, 0, &sc)
			} else {
				in.submit(p, 2, p2, col, 0, &sc)
			}
			if got := in.parts[k1].b.Len() + in.parts[k2].b.Len(); got != 3 {
				t.Fatalf("retry not accepted: %d events batched, want 3 (replies %+v)", got, col.replies)
			}
		})
	}
}
