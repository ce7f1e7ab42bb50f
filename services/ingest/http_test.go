package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"treasure/internal/event"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestPostMoves: single moves and arrays over HTTP, with the reply in the
// request's shape, the status rules of serveMoves, and one state shared
// with the player's socket.
func TestPostMoves(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	tok := token(t, "poster", "")
	w := newWalker(e.g, 77)

	s1, p1 := w.step(4)
	status, body := s.post(t, "/v1/moves", tok, moveLine(s1, p1))
	if status != http.StatusAccepted || strings.TrimSpace(body) != fmt.Sprintf(`{"type":"ack","seq":%d}`, s1) {
		t.Fatalf("single move: %d %s", status, body)
	}
	s2, p2 := w.step(3)
	s3, p3 := w.step(5)
	status, body = s.post(t, "/v1/moves", tok, "["+moveLine(s2, p2)+", {\"type\":1},"+moveLine(s3, p3)+"]")
	var replies []msg
	if err := json.Unmarshal([]byte(body), &replies); err != nil {
		t.Fatalf("array: %d %s: %v", status, body, err)
	}
	got := []string{}
	for _, m := range replies {
		got = append(got, m.String())
	}
	if status != http.StatusAccepted || len(replies) != 3 || replies[0].Type != "ack" || replies[0].Seq != s2 ||
		replies[1].Code != "bad_request" || replies[2].Type != "ack" || replies[2].Seq != s3 {
		t.Fatalf("array: %d %v", status, got)
	}

	// The same player's socket continues from the HTTP moves.
	c := s.dial(t, "poster")
	s4, p4 := w.step(2)
	c.send(moveLine(s4, p4))
	c.expectAck(s4)

	// Errors only: the first error's status; with one ack, 202; the
	// request's shape.
	s5, p5 := w.step(3)
	for _, tc := range []struct {
		name   string
		body   string
		status int
		array  bool
	}{
		{"stale", moveLine(s4, p4[len(p4)-1:]), http.StatusConflict, false},
		{"stale again is a retry of the same move", moveLine(s4, p4), http.StatusAccepted, false},
		{"bad json", `{"type":`, http.StatusBadRequest, false},
		{"unknown node", moveLine(s4+1, []uint64{p4[len(p4)-1], 0}), http.StatusBadRequest, false},
		{"array of errors", "[" + moveLine(s4, p4[:1]) + "," + moveLine(s4+1, []uint64{0}) + "]", http.StatusConflict, true},
		{"empty array", `[]`, http.StatusBadRequest, true},
		{"an error then an ack", "[" + moveLine(s4, p4[:1]) + "," + moveLine(s5, p5) + "]", http.StatusAccepted, true},
	} {
		status, body := s.post(t, "/v1/moves", tok, tc.body)
		if status != tc.status {
			t.Errorf("%s: status %d (%s), want %d", tc.name, status, body, tc.status)
		}
		if tc.array != strings.HasPrefix(body, "[") || !json.Valid([]byte(body)) {
			t.Errorf("%s: body %s, want an array %v", tc.name, body, tc.array)
		}
	}
	// Without a token, or with a bad one: 401 before anything.
	for _, tok := range []string{"", "nope"} {
		status, body := s.post(t, "/v1/moves", tok, moveLine(s4+1, p4[len(p4)-1:]))
		var m msg
		if status != http.StatusUnauthorized || json.Unmarshal([]byte(body), &m) != nil || m.Code != "unauthorized" {
			t.Errorf("token %q: %d %s, want 401 unauthorized", tok, status, body)
		}
	}
	logged, _ := readIn(t, e)
	if len(logged) != 5 {
		t.Fatalf("%d moves in the log, want 5", len(logged))
	}
}

// TestPostMovesRateLimited: 429 with Retry-After and retry_after_ms.
func TestPostMovesRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.RateLimit.Rate, o.RateLimit.Burst = 0.01, 1 })
	tok := token(t, "eager", "")
	w := newWalker(e.g, 8)
	s1, p1 := w.step(2)
	s2, p2 := w.step(2)
	if status, body := s.post(t, "/v1/moves", tok, moveLine(s1, p1)); status != http.StatusAccepted {
		t.Fatalf("first: %d %s", status, body)
	}
	req, _ := http.NewRequest(http.MethodPost, s.srv.URL+"/v1/moves", strings.NewReader(moveLine(s2, p2)))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m msg
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || m.Code != "rate_limited" || m.RetryAfterMs == nil || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second: %d %v %v Retry-After %q", resp.StatusCode, m, m.RetryAfterMs, resp.Header.Get("Retry-After"))
	}
}

// TestAdminDrops: 401 without a valid token, 403 for a player, 400 for a
// bad body or an unknown node, then 202 {"accepted":N} counting the new
// ids only, and the TreasureDropped events on every partition's subject.
func TestAdminDrops(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	admin := token(t, "boss", "admin")
	good := `{"treasures":[{"id":"gold-1","node":5,"points":100},{"id":"gold-2","node":5,"points":7},{"id":"gold-1","node":9,"points":1}]}`
	for _, tc := range []struct {
		name, tok, body string
		status          int
		code            string
	}{
		{"no token", "", good, http.StatusUnauthorized, "unauthorized"},
		{"bad token", "x.y.z", good, http.StatusUnauthorized, "unauthorized"},
		{"player token", token(t, "pleb", ""), good, http.StatusForbidden, "unauthorized"},
		{"bad json", admin, `{"treasures":[`, http.StatusBadRequest, "bad_json"},
		{"bad id", admin, `{"treasures":[{"id":"no spaces","node":5,"points":1}]}`, http.StatusBadRequest, "bad_request"},
		{"zero points", admin, `{"treasures":[{"id":"a","node":5,"points":0}]}`, http.StatusBadRequest, "bad_request"},
		{"unknown node", admin, fmt.Sprintf(`{"treasures":[{"id":"a","node":%d,"points":1}]}`, e.g.NumNodes()+1), http.StatusBadRequest, "unknown_node"},
	} {
		status, body := s.post(t, "/v1/admin/drops", tc.tok, tc.body)
		var m msg
		if status != tc.status || json.Unmarshal([]byte(body), &m) != nil || m.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}
	if _, drops := readIn(t, e); len(drops) != 0 {
		t.Fatalf("refused drops reached the log: %v", drops)
	}

	status, body := s.post(t, "/v1/admin/drops", admin, good)
	if status != http.StatusAccepted || strings.TrimSpace(body) != `{"accepted":2}` {
		t.Fatalf("drop: %d %s, want 202 {\"accepted\":2}", status, body)
	}
	// The 202 came after JetStream stored the drop on every partition.
	stream, err := e.js.Stream(context.Background(), e.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Msgs; n != testK {
		t.Fatalf("IN holds %d messages right after the 202, want %d", n, testK)
	}
	status, body = s.post(t, "/v1/admin/drops", admin, `{"treasures":[{"id":"gold-2","node":6,"points":1},{"id":"gold-3","node":6,"points":3}]}`)
	if status != http.StatusAccepted || strings.TrimSpace(body) != `{"accepted":1}` {
		t.Fatalf("second drop: %d %s, want 202 {\"accepted\":1}", status, body)
	}
	// Another instance knows the ids too.
	s2 := e.start(t, nil)
	status, body = s2.post(t, "/v1/admin/drops", admin, good)
	if status != http.StatusAccepted || strings.TrimSpace(body) != `{"accepted":0}` {
		t.Fatalf("repeated drop: %d %s, want 202 {\"accepted\":0}", status, body)
	}

	_, drops := readIn(t, e)
	for k := range testK {
		var got []string
		for _, d := range drops[e.topo.InSubject(k)] {
			got = append(got, fmt.Sprintf("%s@%d:%d", d.Id, d.Node, d.Points))
			if d.IngestUnixNanos <= 0 {
				t.Errorf("drop %s without ingest time", d.Id)
			}
		}
		if want := []string{"gold-1@5:100", "gold-2@5:7", "gold-3@6:3"}; !slices.Equal(got, want) {
			t.Errorf("partition %d: drops %v, want %v", k, got, want)
		}
	}
}

// TestDropThenMoveOrder: a move accepted after a drop's 202 comes after the
// drop in its partition's log.
func TestDropThenMoveOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	w := newWalker(e.g, 99)
	seq, p := w.step(3)
	last, _ := graph.Index(p[len(p)-1], e.g.NumNodes())
	body := fmt.Sprintf(`{"treasures":[{"id":"here","node":%d,"points":5}]}`, p[len(p)-1])
	if status, b := s.post(t, "/v1/admin/drops", token(t, "boss", "admin"), body); status != http.StatusAccepted {
		t.Fatalf("drop: %d %s", status, b)
	}
	c := s.dial(t, "finder")
	c.send(moveLine(seq, p))
	c.expectAck(seq)
	subject := e.topo.InSubject(int(e.part[last]))
	var dropSeq, moveSeq uint64
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var rd event.Reader
	err := natsjs.Replay(ctx, e.js, natsjs.ReplayOptions{Stream: e.topo.InStream(), Subjects: []string{subject}, MaxWait: 100 * time.Millisecond}, func(_ context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := rd.Reset(m.Data); err != nil {
				return err
			}
			for rd.Next() {
				switch rd.Kind() {
				case event.KindDrop:
					dropSeq = m.Seq
				case event.KindMove:
					moveSeq = m.Seq
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	moves, drops := readIn(t, e)
	if len(moves) != 1 || len(drops[subject]) != 1 || dropSeq == 0 || moveSeq <= dropSeq {
		t.Fatalf("on %s: drop at %d, move at %d (moves %d, drops %d)", subject, dropSeq, moveSeq, len(moves), len(drops[subject]))
	}
}

// TestNoGoroutineLeft: a service that served sockets and requests leaves
// no goroutine behind once Run has returned and its connections are
// closed. Not parallel: goleak sees the whole process.
func TestNoGoroutineLeft(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after every other cleanup
	e := newEnv(t, small)
	nc, err := nats.Connect(testenv.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := e.start(t, func(o *Options) { o.NC = nc })
	c := s.dial(t, "leaky")
	w := newWalker(e.g, 1)
	seq, p := w.step(4)
	c.send(moveLine(seq, p))
	c.expectAck(seq)
	seq, p = w.step(4)
	if status, body := s.post(t, "/v1/moves", token(t, "leaky", ""), moveLine(seq, p)); status != http.StatusAccepted {
		t.Fatalf("post: %d %s", status, body)
	}
	// A socket the client closes ends both its goroutines.
	c2 := s.dial(t, "leaky")
	c2.send(`{`)
	c2.expectError(0, "bad_json")
	c2.ws.Close()
	// Both of its goroutines end: the handler forgets it.
	for deadline := time.Now().Add(waitFor); s.in.sockets() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d sockets served after one of two closed", s.in.sockets())
		}
		time.Sleep(time.Millisecond)
	}
	// A socket still open at shutdown is closed by Run with 1001.
	s.stop()
	if _, _, err := c.ws.ReadMessage(); err == nil || !strings.Contains(err.Error(), "1001") {
		t.Fatalf("socket after shutdown: %v, want close 1001", err)
	}
	c.ws.Close()
}
