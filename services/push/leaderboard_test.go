package push

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/testenv"
)

// readFrame reads one frame of c and returns its messages. The read
// deadline only stops a wedged test.
func readFrame(tb testing.TB, c *client) []string {
	tb.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	return strings.Split(string(data), "\n")
}

func isBoard(tb testing.TB, msg string) bool {
	tb.Helper()
	return decode(tb, msg)["type"] == "leaderboard"
}

// waitRegistered waits until the hub holds n sockets.
func waitRegistered(tb testing.TB, r *running, n int) {
	tb.Helper()
	testenv.WaitFor(tb, 10*time.Second, func() string {
		if _, got := r.s.hub.stats(); got != n {
			return fmt.Sprintf("%d sockets registered, want %d", got, n)
		}
		return ""
	})
}

// waitDue waits until player's (first) socket may receive a leaderboard
// again: its last one went out at least a second ago.
func waitDue(tb testing.TB, r *running, player string) {
	tb.Helper()
	testenv.WaitFor(tb, 10*time.Second, func() string {
		sh := r.s.hub.shard(player)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		p := sh.players[player]
		if p == nil || len(p.conns) == 0 {
			return player + " has no socket"
		}
		c := p.conns[0]
		c.mu.Lock()
		defer c.mu.Unlock()
		if r.s.hub.now() < c.lbNext {
			return player + "'s socket not yet due a leaderboard"
		}
		return ""
	})
}

// TestLeaderboardAtMostOncePerSecondPerSocket floods the feed with
// snapshots whose top changes every time, and updates for one of two
// players, for at least three seconds: each socket receives at most one
// leaderboard per frame and at most one per second (counted: at most
// elapsed seconds + 1, the first at connect), each different from the
// one before, and still receives every update.
func TestLeaderboardAtMostOncePerSecondPerSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	e.publish(t, e.topo.RankSubject(), board(1, row("p0", 1, 1)))
	testenv.WaitFor(t, 10*time.Second, func() string {
		if r.s.hub.latest.Load() == nil {
			return "first snapshot not applied"
		}
		return ""
	})

	start := time.Now()
	busy, idle := r.dial(t, "busy", ""), r.dial(t, "idle", "")
	waitRegistered(t, r, 2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := uint64(2); ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			e.publish(t, e.topo.RankSubject(), board(v, row(fmt.Sprintf("p%d", v), v, 1)))
			e.publish(t, e.topo.OutSubject(int(v%2)), prox("busy", v, 1, "", 0, 0))
			time.Sleep(5 * time.Millisecond)
		}
	}()

	type counts struct{ boards, updates int }
	var got [2]counts
	var lastBoard [2]string
	var mu sync.Mutex
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[0].boards >= 3 && got[1].boards >= 3 && time.Since(start) >= 3*time.Second
	}
	var readers sync.WaitGroup
	for i, c := range []*client{busy, idle} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for !done() {
				_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, data, err := c.ws.ReadMessage()
				if err != nil {
					t.Errorf("socket %d: read: %v", i, err)
					return
				}
				frame := strings.Split(string(data), "\n")
				boards := 0
				mu.Lock()
				for _, m := range frame {
					if !strings.HasPrefix(m, `{"type":"leaderboard"`) {
						got[i].updates++
						continue
					}
					boards++
					got[i].boards++
					if m == lastBoard[i] {
						t.Errorf("socket %d: the same leaderboard twice in a row: %s", i, m)
					}
					lastBoard[i] = m
				}
				mu.Unlock()
				if boards > 1 {
					t.Errorf("socket %d: %d leaderboards in one frame", i, boards)
				}
			}
		}()
	}
	readers.Wait()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	limit := int(elapsed/time.Second) + 1
	for i, g := range got {
		t.Logf("socket %d: %d leaderboards, %d updates in %v", i, g.boards, g.updates, elapsed)
		if g.boards > limit {
			t.Errorf("socket %d: %d leaderboards in %v, want at most %d", i, g.boards, elapsed, limit)
		}
	}
	if got[0].updates == 0 {
		t.Error("the busy socket received no update")
	}
}

// TestLeaderboardOnlyWhenTopChanged: snapshots with a new version but
// the same top send nothing, even to a socket that is due one and has
// updates to carry it; a changed top is sent.
func TestLeaderboardOnlyWhenTopChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	c := r.dial(t, "same", "")
	waitRegistered(t, r, 1)
	x := `{"type":"leaderboard","top":[{"player":"a","score":5,"rank":1}]}`
	e.publish(t, e.topo.RankSubject(), board(1, row("a", 5, 1)))
	want(t, decode(t, c.next()), x)

	e.publish(t, e.topo.RankSubject(), board(2, row("a", 5, 1)), board(3, row("a", 5, 1)))
	e.publish(t, e.topo.OutSubject(0), prox("same", 1, 1, "", 0, 0))
	want(t, decode(t, c.next()), `{"type":"proximity","id":1,"seq":1,"node":1,"treasure":null}`)
	waitDue(t, r, "same")
	e.publish(t, e.topo.OutSubject(1), prox("same", 2, 2, "", 0, 0))
	want(t, decode(t, c.next()), `{"type":"proximity","id":2,"seq":2,"node":2,"treasure":null}`)

	e.publish(t, e.topo.RankSubject(), board(4, row("b", 7, 1), row("a", 5, 2)))
	want(t, decode(t, c.next()), `{"type":"leaderboard","top":[{"player":"b","score":7,"rank":1},{"player":"a","score":5,"rank":2}]}`)
}

// TestLeaderboardOffGetsNone: a socket opened with ?leaderboard=off gets
// no leaderboard, neither at connect nor with its updates nor alone,
// while another socket gets them; any other value is refused.
func TestLeaderboardOffGetsNone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	e.publish(t, e.topo.RankSubject(), board(1, row("a", 5, 1)))
	testenv.WaitFor(t, 10*time.Second, func() string {
		if r.s.hub.latest.Load() == nil {
			return "first snapshot not applied"
		}
		return ""
	})
	off, on := r.dial(t, "off", "leaderboard=off"), r.dial(t, "on", "leaderboard=on")
	want(t, decode(t, on.next()), `{"type":"leaderboard","top":[{"player":"a","score":5,"rank":1}]}`)
	e.publish(t, e.topo.OutSubject(0), prox("off", 1, 1, "", 0, 0), board(2, row("b", 9, 1)), prox("off", 2, 2, "", 0, 0))
	want(t, decode(t, on.next()), `{"type":"leaderboard","top":[{"player":"b","score":9,"rank":1}]}`)
	e.publish(t, e.topo.OutSubject(1), prox("off", 3, 3, "", 0, 0))
	for i := 1; i <= 3; i++ {
		m := decode(t, off.next())
		if m["type"] == "leaderboard" {
			t.Fatalf("socket with leaderboard=off got %v", m)
		}
		if id(t, m) != uint64(i) {
			t.Fatalf("update %v, want id %d", m, i)
		}
	}

	_, resp, err := websocket.DefaultDialer.Dial(r.wsURL(t, "off", "leaderboard=no"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("leaderboard=no: %v %v, want 400", err, resp)
	}
}

// TestLeaderboardRidesWithPendingUpdates: with updates pending on a
// socket (WriteDelay holds them), the due leaderboard goes in the same
// frame, at its place in the log among them.
func TestLeaderboardRidesWithPendingUpdates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{WriteDelay: 200 * time.Millisecond})
	c := r.dial(t, "rider", "")
	waitRegistered(t, r, 1)
	x := `{"type":"leaderboard","top":[{"player":"a","score":5,"rank":1}]}`
	e.publish(t, e.topo.OutSubject(0), prox("rider", 1, 1, "", 0, 0), board(1, row("a", 5, 1)), prox("rider", 2, 2, "", 0, 0))
	frame := readFrame(t, c)
	if len(frame) != 3 {
		t.Fatalf("frame %q, want update 1, leaderboard, update 2", frame)
	}
	want(t, decode(t, frame[0]), `{"type":"proximity","id":1,"seq":1,"node":1,"treasure":null}`)
	want(t, decode(t, frame[1]), x)
	want(t, decode(t, frame[2]), `{"type":"proximity","id":2,"seq":2,"node":2,"treasure":null}`)

	waitDue(t, r, "rider")
	e.publish(t, e.topo.OutSubject(1), board(2, row("b", 9, 1)), prox("rider", 3, 3, "", 0, 0))
	frame = readFrame(t, c)
	if len(frame) != 2 {
		t.Fatalf("frame %q, want leaderboard, update 3", frame)
	}
	want(t, decode(t, frame[0]), `{"type":"leaderboard","top":[{"player":"b","score":9,"rank":1}]}`)
	want(t, decode(t, frame[1]), `{"type":"proximity","id":3,"seq":3,"node":3,"treasure":null}`)
}

// TestTakeChoosesTheDueChangedBoard drives one socket's queue without a
// network: a leaderboard goes out only when due, newer, and different
// from the last one sent (A, B, A within a second sends nothing more),
// at its place among the queued updates; the ticker wakes only a socket
// that is due and behind.
func TestTakeChoosesTheDueChangedBoard(t *testing.T) {
	s := &Server{o: Options{QueueSize: 16}, m: newMetrics(nil, nil)}
	s.hub = newHub(DefaultRingSize, DefaultMaxSockets)
	h := s.hub
	c := newConn(s, nil, "p")
	a, b := []byte(`{"lb":"A"}`), []byte(`{"lb":"B"}`)
	take := func() (string, string) {
		t.Helper()
		buf, _, lb, off, _ := c.take()
		if lb == nil {
			return string(buf), ""
		}
		return string(buf[:off]) + "|" + string(buf[off:]), string(lb)
	}

	h.broadcast(a)
	h.broadcast(bytes.Clone(a)) // same top: no new version
	if v := h.latest.Load().ver; v != 1 {
		t.Fatalf("version %d after the same top twice, want 1", v)
	}
	c.offerBoard(1, h.now())
	if frame, lb := take(); lb != string(a) || frame != "|" {
		t.Fatalf("first take: %q %q, want A alone", frame, lb)
	}
	h.broadcast(b)
	c.enqueue([]byte("u1"), h.boardVer)
	if frame, lb := take(); lb != "" || frame != "u1\n" {
		t.Fatalf("take before due: %q %q, want u1 alone", frame, lb)
	}
	c.offerBoard(h.boardVer, h.now())
	if c.lbWake {
		t.Fatal("ticker woke a socket that is not due")
	}
	h.broadcast(a) // A, B, A: back to what the socket last received
	c.mu.Lock()
	c.lbNext = 0 // a second has passed
	c.mu.Unlock()
	c.enqueue([]byte("u2"), h.boardVer)
	if frame, lb := take(); lb != "" || frame != "u2\n" {
		t.Fatalf("take with the top last sent: %q %q, want u2 alone", frame, lb)
	}
	c.offerBoard(h.boardVer, h.now())
	if c.lbWake {
		t.Fatal("ticker woke a socket that is not behind")
	}

	c.enqueue([]byte("u3"), h.boardVer)
	h.broadcast(b)
	c.enqueue([]byte("u4"), h.boardVer)
	c.enqueue([]byte("u5"), h.boardVer)
	if frame, lb := take(); lb != string(b) || frame != "u3\n|u4\nu5\n" {
		t.Fatalf("take with B due: %q %q, want B after u3", frame, lb)
	}

	c.noBoard = true
	h.broadcast(a)
	c.lbNext = 0
	c.offerBoard(h.boardVer, h.now())
	c.enqueue([]byte("u6"), h.boardVer)
	if frame, lb := take(); lb != "" || frame != "u6\n" || c.lbWake {
		t.Fatalf("take with leaderboard=off: %q %q", frame, lb)
	}
}
