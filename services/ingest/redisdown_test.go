package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/testenv"
)

// TestMovesGoOnWhileRedisIsDown: Redis (a private server) is killed with
// SIGKILL and stays down. A connected player keeps moving and every move
// is acked; a player this instance remembers (moved over HTTP before,
// no socket since) keeps moving too; a player it has never seen is
// answered unavailable with retry_after_ms, over WebSocket and HTTP. The
// IN stream holds exactly the acked moves, once each. Ingest stays ready.
// Then Redis comes back empty: the states in memory are written back, and
// a second instance, reading Redis, continues both players without a
// discontinuous.
func TestMovesGoOnWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	pr := testenv.PrivateRedis(t)
	e.rdb = pr.Client()
	mod := func(o *Options) {
		o.RedisCheckInterval = 20 * time.Millisecond
		o.StoreTimeout = time.Second
		o.RetryAfter = 50 * time.Millisecond
	}
	s := e.start(t, mod)
	wa, wb, wc := newWalker(e.g, 1), newWalker(e.g, 2), newWalker(e.g, 3)
	acked := map[string]uint64{} // "player/seq" → count of acks
	ack := func(player string, seq uint64) { acked[fmt.Sprintf("%s/%d", player, seq)]++ }

	a := s.dial(t, "alice")
	for range 3 {
		seq, p := wa.step(3)
		a.send(moveLine(seq, p))
		a.expectAck(seq)
		ack("alice", seq)
	}
	postMove := func(s *testServer, player string, w *walker) (int, string) {
		seq, p := w.step(2)
		status, body := s.post(t, "/v1/moves", token(t, player, ""), moveLine(seq, p))
		if status == http.StatusAccepted {
			ack(player, seq)
		}
		return status, body
	}
	for range 2 {
		if status, body := postMove(s, "bob", wb); status != http.StatusAccepted {
			t.Fatalf("bob before the kill: %d %s", status, body)
		}
	}

	pr.Kill()
	// Alice's moves are all acked, whenever ingest notices.
	for range 20 {
		seq, p := wa.step(3)
		a.send(moveLine(seq, p))
		a.expectAck(seq)
		ack("alice", seq)
	}
	eventually(t, "ingest to see Redis down", func() bool { return s.in.RedisErr() != nil })
	if err := s.in.Ready(); err != nil {
		t.Fatalf("Ready() = %v with Redis down, want nil: moves go on", err)
	}
	for range 3 {
		seq, p := wa.step(3)
		a.send(moveLine(seq, p))
		a.expectAck(seq)
		ack("alice", seq)
	}
	// Bob is remembered: his moves go on, continuously.
	for range 3 {
		if status, body := postMove(s, "bob", wb); status != http.StatusAccepted {
			t.Fatalf("bob while Redis is down: %d %s", status, body)
		}
	}
	// Carol is unknown here: unavailable, and nothing is stored.
	_, resp, err := websocket.DefaultDialer.Dial(s.wsURL()+"?token="+token(t, "carol", ""), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("carol's socket while Redis is down: %v %v, want 503", err, resp)
	}
	status, body := s.post(t, "/v1/moves", token(t, "carol", ""), moveLine(1, wc.path(1)))
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"unavailable"`) || !strings.Contains(body, "retry_after_ms") {
		t.Fatalf("carol's move while Redis is down: %d %s", status, body)
	}

	moves, _ := readIn(t, e)
	inLog := map[string]int{}
	for _, m := range moves {
		inLog[fmt.Sprintf("%s/%d", m.m.Player, m.m.Seq)]++
	}
	for k, n := range acked {
		if n != 1 || inLog[k] != 1 {
			t.Errorf("move %s: acked %d times, in the log %d times; want 1 and 1", k, n, inLog[k])
		}
	}
	for k, n := range inLog {
		if acked[k] == 0 {
			t.Errorf("move %s is in the log %d times but was never acked", k, n)
		}
	}

	// Redis returns, empty: ingest writes back what it holds.
	pr.Start()
	eventually(t, "the states to be written back", func() bool {
		sa, okA := e.playerState(t, "alice")
		sb, okB := e.playerState(t, "bob")
		return okA && okB && sa.Seq == wa.seq && sb.Seq == wb.seq && s.in.RedisErr() == nil
	})
	// Another instance reads them: no discontinuous for either player.
	s2 := e.start(t, mod)
	a2 := s2.dial(t, "alice")
	seq, p := wa.step(4)
	a2.send(moveLine(seq, p))
	a2.expectAck(seq)
	if status, body := postMove(s2, "bob", wb); status != http.StatusAccepted {
		t.Fatalf("bob on a second instance after Redis came back empty: %d %s", status, body)
	}
	a.ws.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if n, err := e.rdb.HLen(ctx, e.rprefix+"players").Result(); err != nil || n != 2 {
		t.Fatalf("players in Redis: %d %v, want 2 (carol never played)", n, err)
	}
}

// TestReadyWithoutRedis: Redis unreachable from the start leaves ingest
// ready (moves of remembered players go on), RedisErr says why, and a
// player it does not know is answered unavailable.
func TestReadyWithoutRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	pr := testenv.PrivateRedis(t)
	e.rdb = pr.Client()
	pr.Kill()
	s := e.start(t, func(o *Options) { o.RedisCheckInterval = 20 * time.Millisecond })
	eventually(t, "ingest to see Redis down", func() bool { return s.in.RedisErr() != nil })
	if err := s.in.Ready(); err != nil {
		t.Fatalf("Ready() = %v, want nil", err)
	}
	w := newWalker(e.g, 9)
	seq, p := w.step(1)
	status, body := s.post(t, "/v1/moves", token(t, "dave", ""), moveLine(seq, p))
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
		t.Fatalf("unknown player with Redis down: %d %s", status, body)
	}
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
