package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/ratelimit"
)

// TestWalkAcksEachMoveAndLogsItInItsPartition: three players walk over
// their sockets, some frames holding several moves; each move gets exactly
// one ack, in order, and the IN stream holds each move once, on the
// subject of the partition owning its last node, in each player's order,
// with the player's state in Redis at their last move.
func TestWalkAcksEachMoveAndLogsItInItsPartition(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	type sent struct {
		seq  uint64
		path []uint64
	}
	const players, moves = 3, 40
	all := make([][]sent, players)
	var wg sync.WaitGroup
	for pi := range players {
		c := s.dial(t, fmt.Sprintf("walker-%d", pi))
		w := newWalker(e.g, uint64(pi+1))
		wg.Go(func() {
			for i := 0; i < moves; {
				var lines []string
				var seqs []uint64
				for n := 1 + i%3; n > 0 && i < moves; n-- {
					seq, p := w.step(1 + (i*5)%16)
					all[pi] = append(all[pi], sent{seq, p})
					lines = append(lines, moveLine(seq, p))
					seqs = append(seqs, seq)
					i++
				}
				c.send(lines...)
				for _, seq := range seqs {
					if m := c.next(); m.Type != "ack" || m.Seq != seq {
						t.Errorf("player %d: got %v, want ack %d", pi, m, seq)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	logged, _ := readIn(t, e)
	byPlayer := map[string][]inMove{}
	for _, lm := range logged {
		byPlayer[lm.m.Player] = append(byPlayer[lm.m.Player], lm)
	}
	for pi := range players {
		name := fmt.Sprintf("walker-%d", pi)
		got := byPlayer[name]
		if len(got) != len(all[pi]) {
			t.Fatalf("%s: %d moves in the log, %d sent", name, len(got), len(all[pi]))
		}
		// Per subject, the log order is the player's order.
		lastLogSeq := map[string]uint64{}
		for i, lm := range got {
			want := all[pi][i]
			path := make([]uint64, len(lm.m.Path))
			for j, v := range lm.m.Path {
				path[j] = uint64(v)
			}
			if lm.m.Seq != want.seq || !slices.Equal(path, want.path) {
				t.Fatalf("%s: log move %d is seq %d path %v, sent seq %d path %v", name, i, lm.m.Seq, path, want.seq, want.path)
			}
			last, _ := graph.Index(want.path[len(want.path)-1], e.g.NumNodes())
			k := e.part[last]
			if lm.subject != e.topo.InSubject(int(k)) || lm.m.Partition != k {
				t.Fatalf("%s seq %d: on %s partition %d, want %s", name, want.seq, lm.subject, lm.m.Partition, e.topo.InSubject(int(k)))
			}
			if lm.m.IngestUnixNanos <= 0 {
				t.Fatalf("%s seq %d: no ingest time", name, want.seq)
			}
			wantPrev := uint64(0) // the player's first move
			if i > 0 {
				wantPrev = all[pi][i-1].seq
			}
			if lm.m.PrevSeq != wantPrev {
				t.Fatalf("%s seq %d: prev_seq %d, want %d", name, want.seq, lm.m.PrevSeq, wantPrev)
			}
			if lm.seqInLog < lastLogSeq[lm.subject] {
				t.Fatalf("%s seq %d: out of order on %s", name, want.seq, lm.subject)
			}
			lastLogSeq[lm.subject] = lm.seqInLog
		}
		st, ok := e.playerState(t, name)
		lastMove := all[pi][moves-1]
		lastNode, _ := graph.Index(lastMove.path[len(lastMove.path)-1], e.g.NumNodes())
		if !ok || st.Seq != lastMove.seq || st.Node != lastNode || st.Hash != hashPath(lastMove.path) {
			t.Fatalf("%s: state in Redis %+v (found %v), want seq %d node %d", name, st, ok, lastMove.seq, lastNode)
		}
	}
}

// TestEveryErrorCodeLeavesTheSocketUsable: each code a move line can get
// on a socket is produced, each followed by a move that is acked.
// (rate_limited, unauthorized and unavailable have their own tests.)
func TestEveryErrorCodeLeavesTheSocketUsable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	c := s.dial(t, "erring")
	w := newWalker(e.g, 42)
	seq, p := w.step(3)
	c.send(moveLine(seq, p))
	c.expectAck(seq)
	n := uint64(e.g.NumNodes())
	// Each case makes its line from the last accepted seq, the node the
	// player stands on and a node not adjacent to it.
	cases := []struct {
		code string
		line func(seq, at, far uint64) (string, uint64)
	}{
		{"bad_json", func(uint64, uint64, uint64) (string, uint64) { return `{"type":"move","seq":7,"path":[1,2`, 0 }},
		{"bad_request", func(uint64, uint64, uint64) (string, uint64) { return `{"type":"jump","seq":7,"path":[1]}`, 7 }},
		{"bad_request", func(uint64, uint64, uint64) (string, uint64) { return `{"type":"move","seq":-1,"path":[1]}`, 0 }},
		{"bad_request", func(uint64, uint64, uint64) (string, uint64) { return `{"type":"move","seq":7,"path":[]}`, 7 }},
		{"bad_request", func(uint64, uint64, uint64) (string, uint64) { return `[1,2]`, 0 }},
		{"path_too_long", func(seq, _, _ uint64) (string, uint64) { return moveLine(seq+1, w.path(17)), seq + 1 }},
		{"unknown_node", func(seq, at, _ uint64) (string, uint64) { return moveLine(seq+1, []uint64{at, 0}), seq + 1 }},
		{"unknown_node", func(seq, at, _ uint64) (string, uint64) { return moveLine(seq+1, []uint64{at, n + 1}), seq + 1 }},
		{"stale_seq", func(seq, at, _ uint64) (string, uint64) { return moveLine(seq, []uint64{at}), seq }},
		{"stale_seq", func(seq, at, _ uint64) (string, uint64) { return moveLine(seq-1, []uint64{at}), seq - 1 }},
		{"discontinuous", func(seq, _, far uint64) (string, uint64) { return moveLine(seq+1, []uint64{far}), seq + 1 }},
		{"not_adjacent", func(seq, at, far uint64) (string, uint64) { return moveLine(seq+1, []uint64{at, far}), seq + 1 }},
	}
	for _, tc := range cases {
		at, _ := graph.Index(p[len(p)-1], e.g.NumNodes())
		line, wantSeq := tc.line(seq, p[len(p)-1], uint64(graph.ID(nonNeighbour(e.g, at))))
		c.send(line)
		c.expectError(wantSeq, tc.code)
		seq, p = w.step(2)
		c.send(moveLine(seq, p))
		c.expectAck(seq)
	}
	// A binary frame is a bad request, not a reason to close.
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte(moveLine(seq+1, p[len(p)-1:]))); err != nil {
		t.Fatal(err)
	}
	c.expectError(0, "bad_request")
	seq, p = w.step(4)
	c.send(moveLine(seq, p))
	c.expectAck(seq)
}

// TestCodePrecedence: where several codes apply, the first in SPEC's order
// wins: bad_json, bad_request, path_too_long, unknown_node, stale_seq,
// discontinuous, not_adjacent.
func TestCodePrecedence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	c := s.dial(t, "precise")
	w := newWalker(e.g, 7)
	seq, p := w.step(2)
	c.send(moveLine(seq, p))
	c.expectAck(seq)
	at, _ := graph.Index(p[len(p)-1], e.g.NumNodes())
	farIdx := nonNeighbour(e.g, at)
	far := uint64(graph.ID(farIdx))
	farFar := uint64(graph.ID(nonNeighbour(e.g, farIdx)))
	unknown17 := make([]uint64, 17)
	cases := []struct {
		name string
		line string
		seq  uint64
		code string
	}{
		{"bad_json over everything", `{"type":"move","seq":0,"path":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],}`, 0, "bad_json"},
		{"bad_request over path_too_long", moveLine(0, unknown17), 0, "bad_request"},
		{"bad_request (type) over path_too_long", `{"type":"walk","seq":1,"path":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}`, 1, "bad_request"},
		{"path_too_long over unknown_node and stale_seq", moveLine(seq, unknown17), seq, "path_too_long"},
		{"unknown_node over stale_seq and discontinuous", moveLine(seq, []uint64{far, 0}), seq, "unknown_node"},
		{"stale_seq over discontinuous and not_adjacent", moveLine(seq, []uint64{far, farFar}), seq, "stale_seq"},
		{"discontinuous over not_adjacent", moveLine(seq+1, []uint64{far, farFar}), seq + 1, "discontinuous"},
		{"not_adjacent", moveLine(seq+1, []uint64{p[len(p)-1], far}), seq + 1, "not_adjacent"},
	}
	for _, tc := range cases {
		c.send(tc.line)
		m := c.next()
		if m.Type != "error" || m.Code != tc.code || m.Seq != tc.seq {
			t.Errorf("%s: got %v, want error %d %s", tc.name, m, tc.seq, tc.code)
		}
	}
}

// TestFrameOver4KiBClosesTheSocket: a frame of exactly 4 KiB is read; one
// byte more closes the socket with code 1009.
func TestFrameOver4KiBClosesTheSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	c := s.dial(t, "big")
	w := newWalker(e.g, 3)
	seq, p := w.step(3)
	line := moveLine(seq, p)
	exact := line + strings.Repeat(" ", MaxFrame-len(line))
	c.send(exact)
	c.expectAck(seq)
	c.send(exact + " ")
	_, _, err := c.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("after a 4097-byte frame: %v, want close 1009", err)
	}
}

// TestSeveralMovesInOneFrameAreAnsweredInOrder: acks and errors of one
// frame come back in the order of its moves, and the accepted moves build
// on each other.
func TestSeveralMovesInOneFrameAreAnsweredInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	c := s.dial(t, "batcher")
	w := newWalker(e.g, 11)
	s1, p1 := w.step(4)
	s2, p2 := w.step(16)
	s3, p3 := w.step(1)
	s4, p4 := w.step(9)
	at, _ := graph.Index(p4[len(p4)-1], e.g.NumNodes())
	far := uint64(graph.ID(nonNeighbour(e.g, at)))
	c.send(
		moveLine(s1, p1),
		`{"type":"move"`,
		moveLine(s2, p2),
		moveLine(s2, p2[:1]), // stale (same seq, another path)
		moveLine(s3, p3),
		"",
		moveLine(s4+5, []uint64{far}), // discontinuous
		moveLine(s4, p4),
		moveLine(s4, p4), // the same move again: acked again
	)
	want := []string{fmt.Sprintf("ack %d", s1), "error 0 bad_json", fmt.Sprintf("ack %d", s2), fmt.Sprintf("error %d stale_seq", s2),
		fmt.Sprintf("ack %d", s3), fmt.Sprintf("error %d discontinuous", s4+5), fmt.Sprintf("ack %d", s4), fmt.Sprintf("ack %d", s4)}
	for i, wnt := range want {
		m := c.next()
		got := fmt.Sprintf("ack %d", m.Seq)
		if m.Type == "error" {
			got = fmt.Sprintf("error %d %s", m.Seq, m.Code)
		}
		if got != wnt {
			t.Fatalf("reply %d: %s, want %s", i, got, wnt)
		}
	}
	logged, _ := readIn(t, e)
	if len(logged) != 4 {
		t.Fatalf("%d moves in the log, want 4 (the repeated move stored once)", len(logged))
	}
}

// TestDuplicateAfterReconnectIsAckedAndStoredOnce: a player who lost an
// ack sends the same move again, on a new socket and a new instance, and
// gets an ack without a second copy in the log; the same seq with another
// path is stale.
func TestDuplicateAfterReconnectIsAckedAndStoredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	a := e.start(t, nil)
	c := a.dial(t, "forgetful")
	w := newWalker(e.g, 5)
	s1, p1 := w.step(5)
	s2, p2 := w.step(5)
	c.send(moveLine(s1, p1), moveLine(s2, p2))
	c.expectAck(s1)
	c.expectAck(s2)
	c.ws.Close()

	// The same instance, a new socket.
	c = a.dial(t, "forgetful")
	c.send(moveLine(s2, p2))
	c.expectAck(s2)
	c.send(moveLine(s2, p2[:2]))
	c.expectError(s2, "stale_seq")
	c.send(moveLine(s1, p1))
	c.expectError(s1, "stale_seq")

	// Another instance.
	b := e.start(t, nil)
	d := b.dial(t, "forgetful")
	d.send(moveLine(s2, p2))
	d.expectAck(s2)
	s3, p3 := w.step(2)
	d.send(moveLine(s3, p3))
	d.expectAck(s3)
	logged, _ := readIn(t, e)
	var seqs []uint64
	for _, lm := range logged {
		seqs = append(seqs, lm.m.Seq)
	}
	if !slices.Equal(sorted(seqs), []uint64{s1, s2, s3}) {
		t.Fatalf("log holds seqs %v, want %v once each", seqs, []uint64{s1, s2, s3})
	}
}

func sorted(s []uint64) []uint64 {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestStateSurvivesRestart: after an instance stops, a new one (same
// Redis, same streams) knows where each player stands.
func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	a := e.start(t, nil)
	c := a.dial(t, "survivor")
	w := newWalker(e.g, 9)
	var seq uint64
	for range 5 {
		s, p := w.step(6)
		c.send(moveLine(s, p))
		c.expectAck(s)
		seq = s
	}
	a.stop()

	b := e.start(t, nil)
	d := b.dial(t, "survivor")
	at := w.path(1)[0]
	atIdx, _ := graph.Index(at, e.g.NumNodes())
	far := uint64(graph.ID(nonNeighbour(e.g, atIdx)))
	d.send(moveLine(seq+1, []uint64{far}))
	d.expectError(seq+1, "discontinuous")
	d.send(moveLine(seq, []uint64{at}))
	d.expectError(seq, "stale_seq")
	s, p := w.step(3)
	d.send(moveLine(s, p))
	d.expectAck(s)
}

// TestSocketsOfOnePlayerShareState: two sockets of one player on one
// instance see one sequence of seqs and one position.
func TestSocketsOfOnePlayerShareState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	c1 := s.dial(t, "twin")
	c2 := s.dial(t, "twin")
	w := newWalker(e.g, 13)
	for i := range 6 {
		c, other := c1, c2
		if i%2 == 1 {
			c, other = c2, c1
		}
		seq, p := w.step(4)
		c.send(moveLine(seq, p))
		c.expectAck(seq)
		// The other socket cannot reuse the seq.
		other.send(moveLine(seq, []uint64{p[len(p)-1]}))
		other.expectError(seq, "stale_seq")
	}
}

// TestRateLimited: past the burst, moves are refused with rate_limited
// and a retry_after_ms, and the refused seq can be used later.
func TestRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.RateLimit = ratelimit.Limit{Rate: 0.001, Burst: 3} })
	c := s.dial(t, "hasty")
	w := newWalker(e.g, 21)
	var lines []string
	var seqs []uint64
	for range 5 {
		seq, p := w.step(2)
		lines = append(lines, moveLine(seq, p))
		seqs = append(seqs, seq)
	}
	c.send(lines...)
	for _, seq := range seqs[:3] {
		c.expectAck(seq)
	}
	m := c.expectError(seqs[3], "rate_limited")
	if *m.RetryAfterMs < 100_000 {
		t.Fatalf("retry_after_ms %d, want about 1000 s at 0.001/s", *m.RetryAfterMs)
	}
	c.expectError(seqs[4], "rate_limited")
	// The socket still answers, and a bad line is not rate limited.
	c.send(`nonsense`)
	c.expectError(0, "bad_json")
}

// TestUnauthorizedBeforeUpgrade: no token or a bad one is refused with 401
// before any upgrade.
func TestUnauthorizedBeforeUpgrade(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	bad, err := auth.Sign("another-secret", "mallory", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, url := range map[string]string{
		"no token":    s.wsURL(),
		"bad token":   s.wsURL() + "?token=" + bad,
		"not a token": s.wsURL() + "?token=abc",
	} {
		_, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: err %v, response %v, want 401", name, err, resp)
		}
	}
	// A good token in the header works.
	h := http.Header{"Authorization": {"Bearer " + token(t, "legit", "")}}
	ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(), h)
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
}

// TestUnavailableWhenTheStreamIsFull: a full IN stream answers the moves of
// the refused batch — and the moves that depended on them — with
// unavailable; the state rolls back, the socket stays usable, and once
// there is room the same moves are acked.
func TestUnavailableWhenTheStreamIsFull(t *testing.T) {
	t.Parallel()
	e := newEnv(t, natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: 2})
	s := e.start(t, nil)
	c := s.dial(t, "unlucky")
	w := newWalker(e.g, 31)
	for range 2 {
		seq, p := w.step(3)
		c.send(moveLine(seq, p))
		c.expectAck(seq)
	}
	s3, p3 := w.step(3)
	s4, p4 := w.step(3)
	// s3 twice: the retry of a move in flight shares its fate.
	c.send(moveLine(s3, p3), moveLine(s3, p3), moveLine(s4, p4))
	c.expectError(s3, "unavailable")
	c.expectError(s3, "unavailable")
	c.expectError(s4, "unavailable")
	c.send(`{`)
	c.expectError(0, "bad_json")
	// The state rolled back: s4 on its own does not continue from s3.
	c.send(moveLine(s4, p4))
	if m := c.next(); m.Type != "error" || m.Code != "discontinuous" {
		t.Fatalf("s4 alone after the rollback: %v", m)
	}
	stream, err := e.js.Stream(context.Background(), e.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.send(moveLine(s3, p3), moveLine(s4, p4))
	c.expectAck(s3)
	c.expectAck(s4)
	st, _ := e.playerState(t, "unlucky")
	if st.Seq != s4 {
		t.Fatalf("state in Redis at seq %d, want %d", st.Seq, s4)
	}
}
