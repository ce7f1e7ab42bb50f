package push

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
	"treasure/internal/testenv"
)

// get fetches path from r and returns the status and the body.
func (r *running) get(tb testing.TB, path string) (int, string) {
	tb.Helper()
	resp, err := http.Get(r.http.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if !json.Valid(b) {
		tb.Fatalf("GET %s: invalid JSON %q", path, b)
	}
	return resp.StatusCode, string(b)
}

// boardCase is one request and the answer both stores must give.
type boardCase struct {
	path   string
	status int
	body   string // exact JSON object; "" checks the status only
}

func checkBoard(tb testing.TB, r *running, cases []boardCase) {
	tb.Helper()
	for _, c := range cases {
		status, body := r.get(tb, c.path)
		if status != c.status {
			tb.Fatalf("GET %s: status %d (%s), want %d", c.path, status, body, c.status)
		}
		if c.body != "" {
			want(tb, decode(tb, body), c.body)
		}
	}
}

// TestLeaderboardEndpointsFallBackToPostgres answers the same requests
// from Redis, then with Redis's keys deleted (not built), then with Redis
// at a dead address: the answers never change, and the reads are counted
// against the store that gave them.
func TestLeaderboardEndpointsFallBackToPostgres(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxFor(t, time.Minute)
	pg := e.pg.store
	// ann 10 (reached first), bob 10, cy 4, dee seen without claims.
	claims := []pgstore.Claim{
		{Treasure: "a", Player: "ann", Points: 10, Node: 1, Seq: 1, Pos: 1},
		{Treasure: "b", Player: "cy", Points: 4, Node: 2, Seq: 1, Pos: 2},
		{Treasure: "c", Player: "bob", Points: 6, Node: 3, Seq: 1, Pos: 3},
		{Treasure: "d", Player: "bob", Points: 4, Node: 4, Seq: 2, Pos: 4},
	}
	if err := pg.SeePlayers(ctx, []string{"ann", "bob", "cy", "dee"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.ApplyClaims(ctx, claims); err != nil {
		t.Fatal(err)
	}
	rdb, prefix := testenv.Redis(t)
	rs := redisstore.New(rdb, prefix)
	err := rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
		return pg.AllScores(ctx, func(c pgstore.ScoreChange) error { return yield(redisstore.ScoreChange(c)) })
	})
	if err != nil {
		t.Fatal(err)
	}

	top3 := `{"top":[{"player":"ann","score":10,"rank":1},{"player":"bob","score":10,"rank":1},{"player":"cy","score":4,"rank":3}],"players":3}`
	cases := []boardCase{
		{"/v1/leaderboard", 200, top3},
		{"/v1/leaderboard?limit=2", 200, `{"top":[{"player":"ann","score":10,"rank":1},{"player":"bob","score":10,"rank":1}],"players":3}`},
		{"/v1/leaderboard?limit=0", 200, `{"top":[],"players":3}`},
		{"/v1/leaderboard?limit=5000", 200, top3}, // cut to 1000
		{"/v1/leaderboard?limit=abc", 400, ""},
		{"/v1/leaderboard?limit=-1", 400, ""},
		{"/v1/leaderboard?limit=", 400, ""},
		{"/v1/players/bob", 200, `{"player":"bob","score":10,"rank":1}`},
		{"/v1/players/cy", 200, `{"player":"cy","score":4,"rank":3}`},
		{"/v1/players/dee", 200, `{"player":"dee","score":0,"rank":4}`},
		{"/v1/players/nobody", 404, ""},
	}

	live := e.start(t, Options{Redis: rdb, RedisPrefix: prefix})
	checkBoard(t, live, cases)
	if n := counter(t, live.s.m.boardReads.WithLabelValues("postgres")); n != 0 {
		t.Fatalf("%v reads from PostgreSQL with Redis up", n)
	}
	if n := counter(t, live.s.m.boardReads.WithLabelValues("redis")); n != 8 {
		t.Fatalf("%v reads from Redis, want 8", n)
	}

	// Redis flushed: not built, PostgreSQL answers.
	if _, err := testenv.DeleteKeys(ctx, rdb, prefix); err != nil {
		t.Fatal(err)
	}
	flushed := e.start(t, Options{Redis: rdb, RedisPrefix: prefix})
	checkBoard(t, flushed, cases)
	if n := counter(t, flushed.s.m.boardReads.WithLabelValues("postgres")); n != 8 {
		t.Fatalf("%v reads from PostgreSQL with Redis not built, want 8", n)
	}

	// Redis down: nothing listens there.
	dead := redis.NewClient(&redis.Options{Addr: deadAddr(t), MaxRetries: -1})
	t.Cleanup(func() { dead.Close() })
	down := e.start(t, Options{Redis: dead, RedisPrefix: prefix})
	checkBoard(t, down, cases)
	if n := counter(t, down.s.m.boardReads.WithLabelValues("postgres")); n != 8 {
		t.Fatalf("%v reads from PostgreSQL with Redis down, want 8", n)
	}
}

// deadAddr returns a loopback address where nothing listens (a port
// just released).
func deadAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
