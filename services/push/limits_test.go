package push

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"treasure/internal/testenv"
)

// getResp is r.get with the response's headers.
func (r *running) getResp(tb testing.TB, path string) (*http.Response, map[string]any) {
	tb.Helper()
	resp, err := r.http.Client().Get(r.http.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

// TestPlayerReadsOnlyOwnUpdates: the socket's player is the token's
// subject; query parameters naming another player change nothing, and no
// update of alice's reaches bob's socket.
func TestPlayerReadsOnlyOwnUpdates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	alice := r.dial(t, "alice", "after=0")
	bob := r.dial(t, "bob", "after=0&player=alice&sub=alice&id=alice")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 2 {
			return "sockets not registered yet"
		}
		return ""
	})
	e.publish(t, e.topo.OutSubject(0),
		prox("alice", 1, 17, "", 0, 0),
		claim("alice", 2, "T-1", 5),
		prox("alice", 2, 18, "", 0, 0),
		prox("bob", 1, 42, "", 0, 0))
	e.publish(t, e.topo.OutSubject(1), prox("alice", 3, 19, "", 0, 0), prox("bob", 2, 43, "", 0, 0))
	want(t, bob.nextUpdate(), `{"type":"proximity","id":1,"seq":1,"node":42,"treasure":null}`)
	want(t, bob.nextUpdate(), `{"type":"proximity","id":2,"seq":2,"node":43,"treasure":null}`)
	for range 4 {
		if m := alice.nextUpdate(); m["type"] == "proximity" && fmt.Sprint(m["node"]) >= "42" {
			t.Fatalf("alice got bob's update %v", m)
		}
	}
}

// TestUpdatesSocketRefusesBadTokens: an expired, a not-yet-valid, an
// exp-less, an alg-none and an RS256-labelled token (HMAC-signed with the
// secret) are refused 401 before any upgrade.
func TestUpdatesSocketRefusesBadTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	base := "ws" + strings.TrimPrefix(r.http.URL, "http") + "/v1/updates/ws?token="
	now := time.Now().Unix()
	hs := `{"alg":"HS256","typ":"JWT"}`
	for name, tok := range map[string]string{
		"expired":       forgeToken(hs, fmt.Sprintf(`{"sub":"eve","exp":%d}`, now-60), secret),
		"not yet valid": forgeToken(hs, fmt.Sprintf(`{"sub":"eve","exp":%d,"nbf":%d}`, now+7200, now+3600), secret),
		"no exp":        forgeToken(hs, `{"sub":"eve"}`, secret),
		"alg none":      forgeToken(`{"alg":"none"}`, fmt.Sprintf(`{"sub":"eve","exp":%d}`, now+60), ""),
		"RS256":         forgeToken(`{"alg":"RS256"}`, fmt.Sprintf(`{"sub":"eve","exp":%d}`, now+60), secret),
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(base+tok, nil)
		if err == nil {
			ws.Close()
			t.Fatalf("%s: upgraded", name)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: %v, want 401", name, resp)
		}
	}
	if n := counter(t, r.s.lm.badToken); n != 5 {
		t.Fatalf("invalid tokens counted %v, want 5", n)
	}
}

// forgeToken signs header.payload with HMAC-SHA256 under key (none when
// key is empty), whatever the header says.
func forgeToken(header, payload, key string) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	if key == "" {
		return in + "."
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestLeaderboardRateLimited: an address over LeaderboardRate is answered
// 429 rate_limited with retry_after_ms and Retry-After, on both public
// endpoints (one bucket), and counted.
func TestLeaderboardRateLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// 0.01/s: a burst of one, then one every 100 s.
	r := e.start(t, Options{LeaderboardRate: 0.01})
	if resp, body := r.getResp(t, "/v1/leaderboard"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d %v", resp.StatusCode, body)
	}
	for _, path := range []string{"/v1/leaderboard?limit=5", "/v1/players/alice"} {
		resp, body := r.getResp(t, path)
		if resp.StatusCode != http.StatusTooManyRequests || body["code"] != "rate_limited" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d %v %v", path, resp.StatusCode, resp.Header, body)
		}
		if ms, _ := body["retry_after_ms"].(float64); ms < 1000 {
			t.Fatalf("%s: retry_after_ms %v", path, body["retry_after_ms"])
		}
	}
	if n := counter(t, r.s.lm.rate); n != 2 {
		t.Fatalf("counted %v refusals, want 2", n)
	}
	// Off: no limit.
	off := e.start(t, Options{LeaderboardRate: -1})
	for range 50 {
		if resp, _ := off.getResp(t, "/v1/leaderboard"); resp.StatusCode != http.StatusOK {
			t.Fatalf("limit off: %d", resp.StatusCode)
		}
	}
}

// TestFallbackReadsCapped: with Redis down and every PostgreSQL fallback
// slot taken, the public endpoints answer 503 unavailable at once
// (counted) instead of queueing on the database; a freed slot answers.
func TestFallbackReadsCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{FallbackReads: 1, LeaderboardRate: -1}) // no Redis: PostgreSQL answers
	if resp, body := r.getResp(t, "/v1/leaderboard"); resp.StatusCode != http.StatusOK {
		t.Fatalf("fallback: %d %v", resp.StatusCode, body)
	}
	r.s.fallback <- struct{}{} // a read in progress
	for _, path := range []string{"/v1/leaderboard", "/v1/players/alice"} {
		resp, body := r.getResp(t, path)
		if resp.StatusCode != http.StatusServiceUnavailable || body["code"] != "unavailable" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s with the slot taken: %d %v", path, resp.StatusCode, body)
		}
	}
	if n := counter(t, r.s.lm.fallback); n != 2 {
		t.Fatalf("counted %v, want 2", n)
	}
	<-r.s.fallback
	if resp, body := r.getResp(t, "/v1/leaderboard"); resp.StatusCode != http.StatusOK {
		t.Fatalf("slot freed: %d %v", resp.StatusCode, body)
	}
}

// TestUpdatesConnsPerAddrCapped: with a cap of one per address, a second
// socket or request is refused 429 (counted) while the first is open.
func TestUpdatesConnsPerAddrCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{MaxConnsPerAddr: 1})
	c := r.dial(t, "alice", "")
	ws, resp, err := websocket.DefaultDialer.Dial(r.wsURL(t, "bob", ""), nil)
	if err == nil {
		ws.Close()
		t.Fatal("second socket upgraded")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second socket: %v", resp)
	}
	if resp, body := r.getResp(t, "/v1/leaderboard"); resp.StatusCode != http.StatusTooManyRequests || body["code"] != "rate_limited" {
		t.Fatalf("request over the cap: %d %v", resp.StatusCode, body)
	}
	if n := counter(t, r.s.lm.perAddr); n != 2 {
		t.Fatalf("counted %v, want 2", n)
	}
	c.ws.Close()
	testenv.WaitFor(t, 20*time.Second, func() string {
		resp, _ := r.getResp(t, "/v1/leaderboard")
		if resp.StatusCode != http.StatusOK {
			return "still refused after the socket closed"
		}
		return ""
	})
}

// TestSocketsReplacedAreCounted: a player's socket beyond
// MaxSocketsPerPlayer closes the oldest, counted.
func TestSocketsReplacedAreCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{MaxSocketsPerPlayer: 1})
	old := r.dial(t, "alice", "")
	// The dial returns at the upgrade; the server registers the socket
	// after it. Two dials in a row could register in either order (the
	// newer one replaced), so the second waits for the first's.
	testenv.WaitUntil(t, 20*time.Second, "the first socket registered", func() bool {
		var m dto.Metric
		if err := r.s.m.conns.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue() == 1
	})
	r.dial(t, "alice", "")
	_ = old.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, _, err := old.ws.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Text != "replaced" {
				t.Fatalf("old socket: %v", err)
			}
			break
		}
	}
	if n := counter(t, r.s.lm.replaced); n != 1 {
		t.Fatalf("counted %v", n)
	}
}
