package edgeref

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"treasure/internal/auth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const secret = "edgeref-test-secret"

// edge is a Server behind two test HTTP servers, closed at cleanup.
type edge struct {
	s            *Server
	ingest, push *httptest.Server
}

func start(tb testing.TB) *edge {
	tb.Helper()
	v, err := auth.NewVerifier(secret)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Options{Verifier: v})
	if err != nil {
		tb.Fatal(err)
	}
	e := &edge{s: s, ingest: httptest.NewServer(s.IngestHandler()), push: httptest.NewServer(s.PushHandler())}
	tb.Cleanup(func() {
		s.Close()
		e.ingest.Close()
		e.push.Close()
	})
	return e
}

func token(tb testing.TB, sub, role string) string {
	tb.Helper()
	t, err := auth.Sign(secret, sub, role, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func wsURL(base, path, tok string) string {
	return "ws" + strings.TrimPrefix(base, "http") + path + "?token=" + url.QueryEscape(tok)
}

func dial(tb testing.TB, u string) *websocket.Conn {
	tb.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial: %v (status %d)", err, status)
	}
	tb.Cleanup(func() { ws.Close() })
	return ws
}

// frame reads one frame and returns its messages, decoded. The deadline
// only stops a wedged test.
func frame(tb testing.TB, ws *websocket.Conn) []map[string]any {
	tb.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, data, err := ws.ReadMessage()
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		tb.Fatalf("frame of type %d", typ)
	}
	var out []map[string]any
	for _, l := range strings.Split(string(data), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			tb.Fatalf("message %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func send(tb testing.TB, ws *websocket.Conn, msgs ...string) {
	tb.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(strings.Join(msgs, "\n"))); err != nil {
		tb.Fatal(err)
	}
}

func want(tb testing.TB, got []map[string]any, w ...string) {
	tb.Helper()
	var exp []map[string]any
	for _, s := range w {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			tb.Fatal(err)
		}
		exp = append(exp, m)
	}
	if !reflect.DeepEqual(got, exp) {
		g, _ := json.Marshal(got)
		tb.Fatalf("got frame %s\nwant %s", g, strings.Join(w, "\n"))
	}
}

func move(seq int, path ...int) string {
	p, _ := json.Marshal(path)
	return fmt.Sprintf(`{"type":"move","seq":%d,"path":%s}`, seq, p)
}

// TestEveryMoveGetsAnAckAndAnUpdate: one move per frame and several per
// frame each get one ack on the move socket and one proximity update,
// ids 1, 2, 3…, on every push socket of the player, a frame of answers
// per frame of moves on each side; another player's ids are its own.
func TestEveryMoveGetsAnAckAndAnUpdate(t *testing.T) {
	t.Parallel()
	e := start(t)
	tok := token(t, "alice", "")
	push1 := dial(t, wsURL(e.push.URL, "/v1/updates/ws", tok))
	push2 := dial(t, wsURL(e.push.URL, "/v1/updates/ws", tok)+"&after=0")
	moves := dial(t, wsURL(e.ingest.URL, "/v1/moves/ws", tok))
	waitPush(t, e, "alice", 2)

	send(t, moves, move(1, 15))
	want(t, frame(t, moves), `{"type":"ack","seq":1}`)
	for _, p := range []*websocket.Conn{push1, push2} {
		want(t, frame(t, p), `{"type":"proximity","id":1,"seq":1,"node":15,"treasure":null}`)
	}
	send(t, moves, move(2, 15, 16), move(3, 16, 25830), move(4, 25830))
	want(t, frame(t, moves), `{"type":"ack","seq":2}`, `{"type":"ack","seq":3}`, `{"type":"ack","seq":4}`)
	for _, p := range []*websocket.Conn{push1, push2} {
		want(t, frame(t, p),
			`{"type":"proximity","id":2,"seq":2,"node":16,"treasure":null}`,
			`{"type":"proximity","id":3,"seq":3,"node":25830,"treasure":null}`,
			`{"type":"proximity","id":4,"seq":4,"node":25830,"treasure":null}`)
	}

	btok := token(t, "bob", "")
	bpush := dial(t, wsURL(e.push.URL, "/v1/updates/ws", btok))
	bmoves := dial(t, wsURL(e.ingest.URL, "/v1/moves/ws", btok))
	waitPush(t, e, "bob", 1)
	send(t, bmoves, move(7, 1, 2, 3))
	want(t, frame(t, bmoves), `{"type":"ack","seq":7}`)
	want(t, frame(t, bpush), `{"type":"proximity","id":1,"seq":7,"node":3,"treasure":null}`)
}

// waitPush polls until player has n push sockets registered.
func waitPush(tb testing.TB, e *edge, player string, n int) {
	tb.Helper()
	p := e.s.player(player)
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		got := len(p.conns)
		p.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %d push sockets, want %d", player, got, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestBadFrameGetsAnErrorAndTheSocketStays: a frame that is not JSON
// gets bad_json, a bad move among good ones gets its error in the same
// frame of answers and no update, and the socket keeps working; a frame
// over 4 KiB closes it.
func TestBadFrameGetsAnErrorAndTheSocketStays(t *testing.T) {
	t.Parallel()
	e := start(t)
	tok := token(t, "carol", "")
	push := dial(t, wsURL(e.push.URL, "/v1/updates/ws", tok))
	moves := dial(t, wsURL(e.ingest.URL, "/v1/moves/ws", tok))
	waitPush(t, e, "carol", 1)

	send(t, moves, "this is not json")
	got := frame(t, moves)
	if len(got) != 1 || got[0]["type"] != "error" || got[0]["code"] != "bad_json" || got[0]["seq"] != 0.0 {
		t.Fatalf("answer to a bad frame: %v, want one bad_json error with seq 0", got)
	}
	send(t, moves, move(1, 5), `{"type":"move","seq":2,"path":[]}`, move(3, 5, 6))
	got = frame(t, moves)
	if len(got) != 3 || got[1]["type"] != "error" || got[1]["code"] != "bad_request" {
		t.Fatalf("answers %v, want ack, bad_request, ack", got)
	}
	want(t, got[:1], `{"type":"ack","seq":1}`)
	want(t, got[2:], `{"type":"ack","seq":3}`)
	want(t, frame(t, push),
		`{"type":"proximity","id":1,"seq":1,"node":5,"treasure":null}`,
		`{"type":"proximity","id":2,"seq":3,"node":6,"treasure":null}`)

	send(t, moves, move(4, 6)+strings.Repeat(" ", MaxFrame))
	_ = moves.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := moves.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("after a frame over 4 KiB: %v, want close 1009", err)
	}
}

// TestRefusalsAndTheOtherEndpoints: sockets without a valid token are
// refused with 401 before the upgrade; drops need an admin token and
// answer 202 {"accepted":N}; the leaderboard is empty.
func TestRefusalsAndTheOtherEndpoints(t *testing.T) {
	t.Parallel()
	e := start(t)
	bad, _ := auth.Sign("another-secret", "eve", "", time.Hour)
	for _, u := range []string{
		wsURL(e.ingest.URL, "/v1/moves/ws", bad),
		wsURL(e.push.URL, "/v1/updates/ws", bad),
		wsURL(e.ingest.URL, "/v1/moves/ws", "garbage"),
		"ws" + strings.TrimPrefix(e.push.URL, "http") + "/v1/updates/ws",
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
		if err == nil {
			ws.Close()
			t.Fatalf("%s: upgraded", u)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: %v, want 401", u, resp)
		}
	}

	drop := `{"treasures":[{"id":"gold-1","node":42,"points":100},{"id":"gold-2","node":43,"points":5}]}`
	for _, tc := range []struct {
		name, tok, body string
		status          int
		want            string
	}{
		{"admin", token(t, "ops", "admin"), drop, http.StatusAccepted, `{"accepted":2}`},
		{"player", token(t, "pleb", ""), drop, http.StatusForbidden, ""},
		{"no token", "", drop, http.StatusUnauthorized, ""},
		{"bad body", token(t, "ops", "admin"), `{"treasures":3}`, http.StatusBadRequest, ""},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.ingest.URL+"/v1/admin/drops", strings.NewReader(tc.body))
		if tc.tok != "" {
			req.Header.Set("Authorization", "Bearer "+tc.tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.want != "" && strings.TrimSpace(string(body)) != tc.want) {
			t.Fatalf("drop, %s: %d %s, want %d %s", tc.name, resp.StatusCode, body, tc.status, tc.want)
		}
	}

	resp, err := http.Get(e.push.URL + "/v1/leaderboard?limit=10")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"top":[],"players":0}` {
		t.Fatalf("leaderboard: %d %s", resp.StatusCode, body)
	}
}
