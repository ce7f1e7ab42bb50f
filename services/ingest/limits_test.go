package ingest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// forgeToken signs any payload as HS256 with key (alg from the header).
func forgeToken(header, payload map[string]any, key string) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(payload)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	if key == "" {
		return in + "."
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTokensRefusedAndNeverLogged: an expired, a not-yet-valid, an
// exp-less, an alg-none and a wrong-algorithm token are each refused with
// 401 unauthorized on the socket and on POST /v1/moves, and no token, good
// or bad, appears in the service's log (debug level).
func TestTokensRefusedAndNeverLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	var logs lockedBuffer
	s := e.start(t, func(o *Options) {
		o.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	now := time.Now().Unix()
	hs := map[string]any{"alg": "HS256", "typ": "JWT"}
	bad := map[string]string{
		"expired":        forgeToken(hs, map[string]any{"sub": "mallory", "exp": now - 10}, testSecret),
		"not yet valid":  forgeToken(hs, map[string]any{"sub": "mallory", "exp": now + 7200, "nbf": now + 3600}, testSecret),
		"no exp":         forgeToken(hs, map[string]any{"sub": "mallory"}, testSecret),
		"alg none":       forgeToken(map[string]any{"alg": "none"}, map[string]any{"sub": "mallory", "exp": now + 60}, ""),
		"RS256 via HMAC": forgeToken(map[string]any{"alg": "RS256"}, map[string]any{"sub": "mallory", "exp": now + 60}, testSecret),
		"other secret":   forgeToken(hs, map[string]any{"sub": "mallory", "exp": now + 60}, "not-the-secret"),
	}
	for name, tok := range bad {
		ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL()+"?token="+tok, nil)
		if err == nil {
			ws.Close()
			t.Fatalf("%s: socket upgraded", name)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: socket answer %v, want 401", name, resp)
		}
		status, body := s.post(t, "/v1/moves", tok, moveLine(1, []uint64{1}))
		if status != http.StatusUnauthorized || !strings.Contains(body, `"code":"unauthorized"`) {
			t.Fatalf("%s: POST %d %s", name, status, body)
		}
		status, _ = s.post(t, "/v1/admin/drops", tok, `{"treasures":[]}`)
		if status != http.StatusUnauthorized {
			t.Fatalf("%s: drop %d", name, status)
		}
	}
	// Each bad token was refused three times: socket, moves, drop.
	if n := counterValue(t, s.in.lm.badToken); n != float64(3*len(bad)) {
		t.Fatalf("invalid tokens counted %v, want %d", n, 3*len(bad))
	}
	good := token(t, "alice", "")
	c := s.dial(t, "alice")
	c.send(moveLine(1, []uint64{1}))
	c.expectAck(1)
	s.post(t, "/v1/moves", good, moveLine(2, []uint64{1}))
	s.post(t, "/v1/admin/drops", good, `{"treasures":[]}`) // 403
	s.post(t, "/v1/moves", "", moveLine(3, []uint64{1}))   // 401, no token
	if a, n := counterValue(t, s.in.lm.notAdmin), counterValue(t, s.in.lm.noToken); a != 1 || n != 1 {
		t.Fatalf("not admin counted %v, no token %v; want 1 and 1", a, n)
	}
	s.stop()
	out := logs.String()
	if !strings.Contains(out, "ingest running") {
		t.Fatalf("the log captured nothing: %q", out)
	}
	for name, tok := range bad {
		if strings.Contains(out, tok) || strings.Contains(out, strings.Split(tok, ".")[1]) {
			t.Fatalf("the %s token is in the log:\n%s", name, out)
		}
	}
	if strings.Contains(out, good) || strings.Contains(out, strings.Split(good, ".")[2]) {
		t.Fatalf("a good token is in the log:\n%s", out)
	}
}

// TestPlayerCannotMoveAsAnother: the player is the token's subject, and
// nothing in a move names another: a move that claims to be bob's is
// alice's, and bob's own first seq is still his to use.
func TestPlayerCannotMoveAsAnother(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, nil)
	status, body := s.post(t, "/v1/moves?player=bob", token(t, "alice", ""),
		`{"type":"move","seq":5,"path":[1],"player":"bob","sub":"bob"}`)
	if status != http.StatusAccepted {
		t.Fatalf("alice's move: %d %s", status, body)
	}
	if st, ok := e.playerState(t, "alice"); !ok || st.Seq != 5 {
		t.Fatalf("alice's state %+v, %v", st, ok)
	}
	if st, ok := e.playerState(t, "bob"); ok {
		t.Fatalf("bob has a state %+v from alice's move", st)
	}
	// Bob's seq 1 is fresh: not stale, as it would be had the move above
	// been his.
	status, body = s.post(t, "/v1/moves", token(t, "bob", ""), moveLine(1, []uint64{7}))
	if status != http.StatusAccepted {
		t.Fatalf("bob's own first move: %d %s", status, body)
	}
}

// TestSocketsPerPlayerCapped: a player's third socket, with a cap of two,
// closes the oldest with 1008 "replaced" (counted); the two newest go on
// working, and other players are not affected.
func TestSocketsPerPlayerCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.MaxSocketsPerPlayer = 2 })
	first := s.dial(t, "alice")
	carol := s.dial(t, "carol")
	second := s.dial(t, "alice")
	third := s.dial(t, "alice")
	_ = first.ws.SetReadDeadline(time.Now().Add(waitFor))
	_, _, err := first.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "replaced" {
		t.Fatalf("the oldest socket: %v, want close 1008 replaced", err)
	}
	if n := counterValue(t, s.in.lm.replaced); n != 1 {
		t.Fatalf("replaced counted %v times", n)
	}
	w := newWalker(e.g, 11)
	seq, p := w.step(1)
	second.send(moveLine(seq, p))
	second.expectAck(seq)
	seq, p = w.step(3)
	third.send(moveLine(seq, p))
	third.expectAck(seq)
	carol.send(moveLine(1, []uint64{3}))
	carol.expectAck(1)
}

// TestConnsPerAddrCapped: with a cap of two per address, a third socket
// or request from the same address is refused 429 rate_limited with
// retry_after_ms (counted), and a place frees when a socket closes.
func TestConnsPerAddrCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.MaxConnsPerAddr = 2 })
	a := s.dial(t, "alice")
	s.dial(t, "bob")
	ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL()+"?token="+token(t, "carol", ""), nil)
	if err == nil {
		ws.Close()
		t.Fatal("third socket upgraded")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third socket: %v, want 429 with Retry-After", resp)
	}
	status, body := s.post(t, "/v1/moves", token(t, "carol", ""), moveLine(1, []uint64{1}))
	var m msg
	if err := json.Unmarshal([]byte(body), &m); err != nil || status != http.StatusTooManyRequests || m.Code != "rate_limited" || m.RetryAfterMs == nil || *m.RetryAfterMs < 1 {
		t.Fatalf("request over the cap: %d %s", status, body)
	}
	if n := counterValue(t, s.in.lm.perAddr); n != 2 {
		t.Fatalf("refusals counted %v, want 2", n)
	}
	a.ws.Close()
	deadline := time.Now().Add(waitFor)
	for {
		ws, _, err := websocket.DefaultDialer.Dial(s.wsURL()+"?token="+token(t, "carol", ""), nil)
		if err == nil {
			ws.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place freed after a socket closed: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnsPerAddrDefault: the default cap leaves room for the load
// generator's 9,000 sockets per source address.
func TestConnsPerAddrDefault(t *testing.T) {
	e := newEnv(t, small)
	s := e.start(t, nil)
	if got := s.in.perAddr.Max(); got < 9_000 {
		t.Fatalf("default cap %d is below the load generator's 9,000 per address", got)
	}
}
