package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/testenv"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// socket's reader and writer, and every feed, must be gone once Run has
// returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const secret = "push-test-secret"

var small = natsjs.Limits{MaxBytes: 16 << 20, MaxMsgs: 100_000}

// env is one test's isolated world: an OUT stream under a fresh prefix
// and a fresh PostgreSQL schema with the score tables.
type env struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	topo natsjs.Topology
	pg   *pgstoreEnv
}

type pgstoreEnv struct {
	store *pgstore.Store
	opts  Options // Postgres set
}

func newEnv(tb testing.TB) env {
	tb.Helper()
	nc, js, prefix := testenv.JetStream(tb)
	topo := natsjs.Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}
	if err := topo.Ensure(ctxFor(tb, 30*time.Second), js); err != nil {
		tb.Fatal(err)
	}
	pool, _ := testenv.Postgres(tb)
	if err := pgstore.Migrate(ctxFor(tb, 30*time.Second), pool); err != nil {
		tb.Fatal(err)
	}
	return env{nc: nc, js: js, topo: topo, pg: &pgstoreEnv{store: pgstore.New(pool), opts: Options{Postgres: pool}}}
}

// ctxFor returns a context cancelled at cleanup or after d: the deadline
// only stops a wedged test.
func ctxFor(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// running is a Server running its feed behind an httptest server.
type running struct {
	s    *Server
	http *httptest.Server
	stop func()
}

// start runs a Server on e with o's non-zero fields; stop (also run at
// cleanup) cancels Run, waits for it, then closes the HTTP server.
func (e env) start(tb testing.TB, o Options) *running {
	tb.Helper()
	v, err := auth.NewVerifier(secret)
	if err != nil {
		tb.Fatal(err)
	}
	o.Topology, o.JS, o.Verifier = e.topo, e.js, v
	if o.Postgres == nil {
		o.Postgres = e.pg.opts.Postgres
	}
	if o.Log == nil {
		o.Log = testLog()
	}
	s, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	hs := httptest.NewServer(s.Handler())
	r := &running{s: s, http: hs}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				tb.Errorf("Run did not return within 30 s of cancel")
			}
			hs.Close()
		})
	}
	tb.Cleanup(r.stop)
	testenv.WaitFor(tb, 30*time.Second, func() string {
		if err := s.Ready(); err != nil {
			return err.Error()
		}
		return ""
	})
	return r
}

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// Events, as the proximity workers and the ranker write them.

func prox(player string, seq uint64, node uint32, treasure string, tnode uint32, dist uint64) *eventpb.Event {
	p := &eventpb.ProximityResult{Player: player, Seq: seq, Node: node}
	if treasure != "" {
		p.Treasure = &eventpb.NearestTreasure{Id: treasure, Node: tnode, Distance: dist}
	}
	return &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: p}}
}

func claim(player string, seq uint64, treasure string, points uint64) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: player, Seq: seq, Treasure: treasure, Points: points}}}
}

func score(player string, sc, rank uint64) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{Player: player, Score: sc, Rank: rank}}}
}

func board(version uint64, top ...*eventpb.LeaderboardEntry) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Leaderboard{Leaderboard: &eventpb.LeaderboardSnapshot{Top: top, Players: uint64(len(top)), Version: version}}}
}

func row(player string, sc, rank uint64) *eventpb.LeaderboardEntry {
	return &eventpb.LeaderboardEntry{Player: player, Score: sc, Rank: rank}
}

// publish stores one batch of events on subject.
func (e env) publish(tb testing.TB, subject string, evs ...*eventpb.Event) {
	tb.Helper()
	data, err := event.AppendBatch(nil, evs)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := e.js.Publish(ctxFor(tb, 30*time.Second), subject, data); err != nil {
		tb.Fatal(err)
	}
}

// proxN returns n proximity results of player with seqs from seq0.
func proxN(player string, seq0 uint64, n int) []*eventpb.Event {
	evs := make([]*eventpb.Event, n)
	for i := range evs {
		evs[i] = prox(player, seq0+uint64(i), uint32(100+i), "", 0, 0)
	}
	return evs
}

// client is a player's update socket.
type client struct {
	tb    testing.TB
	ws    *websocket.Conn
	lines []string
	// frames counts the frames read.
	frames int
}

func token(tb testing.TB, player string) string {
	tb.Helper()
	tok, err := auth.Sign(secret, player, "", time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// dial opens player's socket; query is appended (for example "after=3").
func (r *running) dial(tb testing.TB, player, query string) *client {
	tb.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(r.wsURL(tb, player, query), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("dial %s?%s: %v (status %d)", player, query, err, status)
	}
	c := &client{tb: tb, ws: ws}
	tb.Cleanup(func() { ws.Close() })
	return c
}

func (r *running) wsURL(tb testing.TB, player, query string) string {
	u := "ws" + strings.TrimPrefix(r.http.URL, "http") + "/v1/updates/ws?token=" + url.QueryEscape(token(tb, player))
	if query != "" {
		u += "&" + query
	}
	return u
}

// next returns the next message, reading a frame when none is pending.
// The read deadline only stops a wedged test.
func (c *client) next() string {
	c.tb.Helper()
	for len(c.lines) == 0 {
		_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.tb.Fatalf("read: %v", err)
		}
		if typ != websocket.TextMessage {
			c.tb.Fatalf("frame of type %d, want text", typ)
		}
		c.frames++
		for _, l := range bytes.Split(data, []byte{'\n'}) {
			if len(l) == 0 {
				c.tb.Fatalf("empty message in frame %q", data)
			}
			c.lines = append(c.lines, string(l))
		}
	}
	l := c.lines[0]
	c.lines = c.lines[1:]
	return l
}

// nextUpdate returns the next message that is not a leaderboard.
func (c *client) nextUpdate() map[string]any {
	c.tb.Helper()
	for {
		m := decode(c.tb, c.next())
		if m["type"] != "leaderboard" {
			return m
		}
	}
}

func decode(tb testing.TB, s string) map[string]any {
	tb.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		tb.Fatalf("message %q: %v", s, err)
	}
	if d.More() {
		tb.Fatalf("message %q: more than one JSON value", s)
	}
	return m
}

// want fails unless got is exactly the JSON object w (same keys, same
// values).
func want(tb testing.TB, got map[string]any, w string) {
	tb.Helper()
	if exp := decode(tb, w); !reflect.DeepEqual(got, exp) {
		g, _ := json.Marshal(got)
		tb.Fatalf("got %s\nwant %s", g, w)
	}
}

func id(tb testing.TB, m map[string]any) uint64 {
	tb.Helper()
	n, ok := m["id"].(json.Number)
	if !ok {
		tb.Fatalf("message %v has no id", m)
	}
	var v uint64
	if _, err := fmt.Sscan(n.String(), &v); err != nil {
		tb.Fatal(err)
	}
	return v
}

// TestUpdatesAreNumberedPerPlayerInOutOrder publishes the outputs of
// two partitions and the ranker, interleaved, and checks each player's
// messages: exactly SPEC's JSON, ids from 1 in OUT order, and the
// leaderboard to both.
func TestUpdatesAreNumberedPerPlayerInOutOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	alice, bob := r.dial(t, "alice", ""), r.dial(t, "bob", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 2 {
			return fmt.Sprintf("%d sockets registered, want 2", n)
		}
		return ""
	})

	e.publish(t, e.topo.OutSubject(0),
		prox("alice", 1, 17, "", 0, 0),
		prox("bob", 1, 42, "T-1", 43, 250))
	e.publish(t, e.topo.OutSubject(1),
		claim("alice", 2, "T_9", 5),
		prox("alice", 2, 99, "T-1", 43, 1999))
	e.publish(t, e.topo.RankSubject(),
		score("alice", 5, 1),
		board(1, row("alice", 5, 1)))
	e.publish(t, e.topo.OutSubject(0), prox("bob", 2, 43, "", 0, 0))

	want(t, alice.nextUpdate(), `{"type":"proximity","id":1,"seq":1,"node":17,"treasure":null}`)
	want(t, alice.nextUpdate(), `{"type":"claim","id":2,"seq":2,"treasure":"T_9","points":5}`)
	want(t, alice.nextUpdate(), `{"type":"proximity","id":3,"seq":2,"node":99,"treasure":{"id":"T-1","node":43,"distance":1999}}`)
	want(t, alice.nextUpdate(), `{"type":"score","id":4,"score":5,"rank":1}`)
	want(t, decode(t, alice.next()), `{"type":"leaderboard","top":[{"player":"alice","score":5,"rank":1}]}`)

	want(t, bob.nextUpdate(), `{"type":"proximity","id":1,"seq":1,"node":42,"treasure":{"id":"T-1","node":43,"distance":250}}`)
	want(t, decode(t, bob.next()), `{"type":"leaderboard","top":[{"player":"alice","score":5,"rank":1}]}`)
	want(t, bob.nextUpdate(), `{"type":"proximity","id":2,"seq":2,"node":43,"treasure":null}`)
}

// TestResumeDeliversEveryMissedUpdateOnce disconnects a player mid-stream
// and reconnects with ?after=, again and again, while updates keep
// coming one message at a time: every update is received exactly once,
// in order, across every handover.
func TestResumeDeliversEveryMissedUpdateOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{RingSize: 1024})
	c := r.dial(t, "carol", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 1 {
			return "socket not registered"
		}
		return ""
	})
	e.publish(t, e.topo.OutSubject(0), proxN("carol", 1, 30)...)
	var got []uint64
	for len(got) < 10 {
		got = append(got, id(t, c.nextUpdate()))
	}
	c.ws.Close()

	// While away: more updates. Then, while reconnecting over and over,
	// still more, one per message on alternating subjects.
	e.publish(t, e.topo.OutSubject(1), proxN("carol", 31, 20)...)
	const total = 50 + 400
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 400; i++ {
			e.publish(t, e.topo.OutSubject(i%2), prox("carol", uint64(51+i), 1, "", 0, 0))
		}
	}()
	reconnects := 0
	for got[len(got)-1] < total {
		c := r.dial(t, "carol", fmt.Sprintf("after=%d", got[len(got)-1]))
		reconnects++
		for k := 0; k < 7 && got[len(got)-1] < total; k++ {
			got = append(got, id(t, c.nextUpdate()))
		}
		c.ws.Close()
	}
	wg.Wait()
	for i, v := range got {
		if v != uint64(i+1) {
			t.Fatalf("message %d has id %d, want %d (%d reconnects): ids received %v", i+1, v, i+1, reconnects, got)
		}
	}
}

// TestResumeFromZeroAndPastTheRing: after=0 sends every retained update;
// when the ring no longer holds I+1 the socket gets what is retained (the
// first id then jumps); without after only live updates come.
func TestResumeFromZeroAndPastTheRing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.publish(t, e.topo.OutSubject(0), proxN("dave", 1, 20)...)
	e.publish(t, e.topo.OutSubject(0), claim("dave", 20, "gold", 7))
	r := e.start(t, Options{RingSize: 8})

	ids := func(c *client, n int) []uint64 {
		var v []uint64
		for len(v) < n {
			v = append(v, id(t, c.nextUpdate()))
		}
		return v
	}
	all := r.dial(t, "dave", "after=0")
	if got := ids(all, 8); !reflect.DeepEqual(got, []uint64{14, 15, 16, 17, 18, 19, 20, 21}) {
		t.Fatalf("after=0 with a ring of 8 and 21 updates: ids %v", got)
	}
	gap := r.dial(t, "dave", "after=3") // 4 is gone: what is retained
	if got := ids(gap, 8); got[0] != 14 || got[7] != 21 {
		t.Fatalf("after=3: ids %v, want 14..21", got)
	}
	tail := r.dial(t, "dave", "after=19")
	m := tail.nextUpdate()
	want(t, m, `{"type":"proximity","id":20,"seq":20,"node":119,"treasure":null}`)
	want(t, tail.nextUpdate(), `{"type":"claim","id":21,"seq":20,"treasure":"gold","points":7}`)
	live := r.dial(t, "dave", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 4 {
			return fmt.Sprintf("%d sockets registered, want 4", n)
		}
		return ""
	})
	// A fifth socket replaces the oldest (code 1008, "replaced"); the
	// replacement happens as the fifth registers.
	beyond := r.dial(t, "dave", "after=21")
	_ = all.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ce *websocket.CloseError
	for {
		_, _, err := all.ws.ReadMessage()
		if err == nil {
			continue
		}
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "replaced" {
			t.Fatalf("oldest socket ended with %v, want close 1008 replaced", err)
		}
		break
	}
	// Several sockets of one player all get its updates.
	e.publish(t, e.topo.OutSubject(1), prox("dave", 21, 5, "", 0, 0))
	for _, c := range []*client{live, beyond, tail} {
		want(t, c.nextUpdate(), `{"type":"proximity","id":22,"seq":21,"node":5,"treasure":null}`)
	}
}

// TestInstanceStartedLaterGivesSameIds: a second push instance replays
// the stream and numbers every player's updates as the first did.
func TestInstanceStartedLaterGivesSameIds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.start(t, Options{})
	players := []string{"p1", "p2", "p3"}
	for round := 0; round < 10; round++ {
		var out [2][]*eventpb.Event
		for i, p := range players {
			seq := uint64(round + 1)
			out[(round+i)%2] = append(out[(round+i)%2], prox(p, seq, uint32(round), "T", 7, uint64(i)))
			if (round+i)%4 == 0 {
				out[(round+i)%2] = append(out[(round+i)%2], claim(p, seq, fmt.Sprintf("T%d-%d", round, i), 3))
			}
		}
		e.publish(t, e.topo.OutSubject(0), out[0]...)
		e.publish(t, e.topo.OutSubject(1), out[1]...)
		e.publish(t, e.topo.RankSubject(), score(players[round%3], uint64(3*round), 1))
	}
	b := e.start(t, Options{}) // ready: it has read everything published
	for _, p := range players {
		n := b.s.hub.nextID(p) - 1
		if n < 10 {
			t.Fatalf("%s: %d updates, want at least 10", p, n)
		}
		testenv.WaitFor(t, 10*time.Second, func() string {
			if got := a.s.hub.nextID(p) - 1; got != n {
				return fmt.Sprintf("%s: first instance at %d updates, second at %d", p, got, n)
			}
			return ""
		})
		ca, cb := a.dial(t, p, "after=0"), b.dial(t, p, "after=0")
		for i := uint64(1); i <= n; i++ {
			ma, mb := ca.nextUpdate(), cb.nextUpdate()
			if !reflect.DeepEqual(ma, mb) || id(t, ma) != i {
				t.Fatalf("%s update %d: first instance %v, second %v", p, i, ma, mb)
			}
		}
	}
}

// TestSlowClientIsClosedOthersKeepReceiving: a client that never reads is
// closed as slow (1008 "slow") once the path to it is full and its queue
// fills, while another player's socket receives every update. Each round
// sends the slow player fewer updates than its queue holds, so only a
// client that stops reading overflows it.
func TestSlowClientIsClosedOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{QueueSize: 128, WriteTimeout: time.Minute})
	slowWS, _, err := websocket.DefaultDialer.Dial(r.wsURL(t, "slow", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slowWS.Close()
	fast := r.dial(t, "fast", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 2 {
			return "sockets not registered"
		}
		return ""
	})

	var fastIDs uint64
	for round := 0; counter(t, r.s.m.slow) == 0; round++ {
		if round == 20000 {
			t.Fatal("20000 rounds of 100 updates and the slow client was not disconnected")
		}
		e.publish(t, e.topo.OutSubject(0), append(proxN("slow", uint64(100*round+1), 100), prox("fast", uint64(round+1), 1, "", 0, 0))...)
		// The fast client keeps receiving while the slow one is stuck.
		fastIDs++
		if got := id(t, fast.nextUpdate()); got != fastIDs {
			t.Fatalf("fast client got id %d, want %d", got, fastIDs)
		}
	}
	t.Logf("slow disconnect after %d updates to the slow client; %v direct writes, %v handed off", 100*fastIDs, counter(t, r.s.m.direct), counter(t, r.s.m.handoffs))
	if counter(t, r.s.m.direct) == 0 {
		t.Error("the caught-up feed wrote nothing directly")
	}
	// The slow client, reading at last, finds its data then the close.
	_ = slowWS.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, _, err := slowWS.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "slow" {
			t.Fatalf("slow client's socket ended with %v, want close 1008 slow", err)
		}
		break
	}
	e.publish(t, e.topo.OutSubject(1), prox("fast", fastIDs+1, 2, "", 0, 0))
	if got := id(t, fast.nextUpdate()); got != fastIDs+1 {
		t.Fatalf("fast client got id %d after the slow disconnect, want %d", got, fastIDs+1)
	}
}

// TestLeaderboardGoesToEverySocketNewestOnly: snapshots reach every
// socket, an older version is dropped, and a socket opened later starts
// with the latest.
func TestLeaderboardGoesToEverySocketNewestOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	c1, c2 := r.dial(t, "u1", ""), r.dial(t, "u2", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 2 {
			return "sockets not registered"
		}
		return ""
	})
	v2 := `{"type":"leaderboard","top":[{"player":"u1","score":9,"rank":1},{"player":"u2","score":9,"rank":1}]}`
	e.publish(t, e.topo.RankSubject(), board(2, row("u1", 9, 1), row("u2", 9, 1)))
	want(t, decode(t, c1.next()), v2)
	want(t, decode(t, c2.next()), v2)
	e.publish(t, e.topo.RankSubject(), board(1, row("stale", 1, 1)), board(2, row("same", 1, 1)))
	e.publish(t, e.topo.RankSubject(), board(3, row("u2", 12, 1), row("u1", 9, 2)))
	v3 := `{"type":"leaderboard","top":[{"player":"u2","score":12,"rank":1},{"player":"u1","score":9,"rank":2}]}`
	want(t, decode(t, c1.next()), v3)
	want(t, decode(t, c2.next()), v3)
	late := r.dial(t, "u3", "")
	want(t, decode(t, late.next()), v3)
}

// TestUpdatesSocketRefusals: 401 before the upgrade without a valid
// token, 400 for a bad after; a Bearer header is accepted.
func TestUpdatesSocketRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	base := "ws" + strings.TrimPrefix(r.http.URL, "http") + "/v1/updates/ws"
	bad, _ := auth.Sign("another-secret", "eve", "", time.Hour)
	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
		status int
	}{
		{"no token", base, nil, http.StatusUnauthorized},
		{"bad signature", base + "?token=" + bad, nil, http.StatusUnauthorized},
		{"garbage token", base + "?token=abc", nil, http.StatusUnauthorized},
		{"bad after", base + "?token=" + token(t, "eve") + "&after=-1", nil, http.StatusBadRequest},
		{"after not a number", base + "?token=" + token(t, "eve") + "&after=x", nil, http.StatusBadRequest},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(tc.url, tc.header)
		if err == nil {
			ws.Close()
			t.Fatalf("%s: upgraded", tc.name)
		}
		if resp == nil || resp.StatusCode != tc.status {
			t.Fatalf("%s: %v, want status %d", tc.name, resp, tc.status)
		}
	}
	ws, _, err := websocket.DefaultDialer.Dial(base, http.Header{"Authorization": {"Bearer " + token(t, "eve")}})
	if err != nil {
		t.Fatalf("bearer header: %v", err)
	}
	ws.Close()
}

// TestShutdownClosesSockets: Run's end closes every socket with 1001
// after what was queued, and refuses new ones.
func TestShutdownClosesSockets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	c := r.dial(t, "zed", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 1 {
			return "socket not registered"
		}
		return ""
	})
	r.stop()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("socket ended with %v, want close 1001", err)
		}
		break
	}
}

// TestNotReadyUntilCaughtUp: with a stream holding messages, sockets are
// refused (503) until the feed has read them, and the ids then count
// every one.
func TestNotReadyUntilCaughtUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := 0; i < 20; i++ {
		e.publish(t, e.topo.OutSubject(i%2), proxN("early", uint64(10*i+1), 10)...)
	}
	v, _ := auth.NewVerifier(secret)
	s, err := New(Options{Topology: e.topo, JS: e.js, Verifier: v, Postgres: e.pg.opts.Postgres})
	if err != nil {
		t.Fatal(err)
	}
	if s.Ready() == nil {
		t.Fatal("ready before Run")
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/v1/updates/ws?token="+token(t, "early"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("socket before the feed caught up: %v %v, want 503", err, resp)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testenv.WaitFor(t, 30*time.Second, func() string {
		if err := s.Ready(); err != nil {
			return err.Error()
		}
		return ""
	})
	if n := s.hub.nextID("early"); n != 201 {
		t.Errorf("ready with %d updates applied, want 200", n-1)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBadEventsAreSkipped: a message that is not a batch is skipped and
// counted; the ids of later updates are unaffected.
func TestBadEventsAreSkipped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.js.Publish(ctxFor(t, 10*time.Second), e.topo.OutSubject(0), []byte("not a batch")); err != nil {
		t.Fatal(err)
	}
	e.publish(t, e.topo.OutSubject(0), prox("frank", 1, 3, "", 0, 0))
	r := e.start(t, Options{})
	c := r.dial(t, "frank", "after=0")
	want(t, c.nextUpdate(), `{"type":"proximity","id":1,"seq":1,"node":3,"treasure":null}`)
	if n := counter(t, r.s.m.bad); n != 1 {
		t.Fatalf("%v bad events counted, want 1", n)
	}
}

// counter reads a counter's value.
func counter(tb testing.TB, c prometheus.Counter) float64 {
	tb.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		tb.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestSilentClientIsDropped: with pings every 20 ms and a 200 ms pong
// wait, a client that answers pings (gorilla's reader does, while
// reading) stays, and one that never reads, so never answers, is
// dropped.
func TestSilentClientIsDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{PingInterval: 20 * time.Millisecond, PongWait: 200 * time.Millisecond})
	alive := r.dial(t, "alive", "")
	var pings atomic.Int64
	alive.ws.SetPingHandler(func(data string) error {
		pings.Add(1)
		return alive.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			if _, _, err := alive.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	r.dial(t, "silent", "") // never reads
	testenv.WaitFor(t, 20*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 1 {
			return fmt.Sprintf("%d sockets, want only the one that answers pings", n)
		}
		return ""
	})
	// The answering client has outlived several pong waits.
	n0 := pings.Load()
	testenv.WaitFor(t, 20*time.Second, func() string {
		if p := pings.Load(); p < n0+30 {
			return fmt.Sprintf("%d pings answered since the silent client left, want 30 (600 ms, three pong waits)", p-n0)
		}
		return ""
	})
	if _, n := r.s.hub.stats(); n != 1 {
		t.Fatalf("%d sockets after the pings, want the answering one", n)
	}
	alive.ws.Close()
	<-readerDone
}
