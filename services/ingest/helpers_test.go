package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/ratelimit"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

const (
	testSecret = "ingest-test-secret"
	testK      = 4
	// waitFor bounds every wait for a reply: a guard against hangs, not
	// a timing assertion.
	waitFor = 20 * time.Second
)

// small bounds the test streams (the file store reserves MaxBytes).
var small = natsjs.Limits{MaxBytes: 8 << 20, MaxMsgs: 100_000}

// noLimit is a rate limit no test reaches unless it means to.
var noLimit = ratelimit.Limit{Rate: 1e6, Burst: 1_000_000}

var (
	graphOnce sync.Once
	tg        *graph.Graph
	tpart     []uint32
	tgErr     error
)

// amsterdam loads the amsterdam graph and its partition into testK parts,
// once per test binary.
func amsterdam(tb testing.TB) (*graph.Graph, []uint32) {
	tb.Helper()
	path := testgraph.Path(tb, "amsterdam.gr.gz")
	graphOnce.Do(func() {
		tg, tgErr = graph.LoadDIMACS(path)
		if tgErr == nil {
			tpart, tgErr = graph.Partition(tg, testK)
		}
	})
	if tgErr != nil {
		tb.Fatal(tgErr)
	}
	return tg, tpart
}

// testEnv is one test's JetStream streams and Redis keys.
type testEnv struct {
	g       *graph.Graph
	part    []uint32
	nc      *nats.Conn
	js      jetstream.JetStream
	topo    natsjs.Topology
	rdb     *redis.Client
	rprefix string
}

func newEnv(tb testing.TB, in natsjs.Limits) *testEnv {
	tb.Helper()
	g, part := amsterdam(tb)
	nc, js, prefix := testenv.JetStream(tb)
	topo := natsjs.Topology{Prefix: prefix, Partitions: testK, In: in, Out: small, Upd: small, DLQ: small}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := topo.Ensure(ctx, js); err != nil {
		tb.Fatal(err)
	}
	rdb, rprefix := testenv.Redis(tb)
	return &testEnv{g: g, part: part, nc: nc, js: js, topo: topo, rdb: rdb, rprefix: rprefix}
}

// testServer is one running Ingest behind an httptest server.
type testServer struct {
	in   *Ingest
	srv  *httptest.Server
	stop func()
}

// start runs an Ingest over e (options adjusted by mod) until stop or the
// end of the test.
func (e *testEnv) start(tb testing.TB, mod func(*Options)) *testServer {
	tb.Helper()
	o := Options{
		Graph: e.g, Part: e.part, Topology: e.topo, NC: e.nc, JS: e.js,
		Redis: e.rdb, RedisPrefix: e.rprefix, JWTSecret: testSecret, RateLimit: noLimit,
	}
	if mod != nil {
		mod(&o)
	}
	in, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	deadline := time.Now().Add(waitFor)
	for in.Ready() != nil {
		select {
		case err := <-done:
			cancel()
			tb.Fatalf("run: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			tb.Fatalf("not ready: %v", in.Ready())
		}
		time.Sleep(time.Millisecond)
	}
	srv := httptest.NewServer(in.Handler())
	s := &testServer{in: in, srv: srv}
	s.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("run: %v", err)
			}
		case <-time.After(2 * DefaultShutdownTimeout):
			tb.Errorf("Run has not returned %v after its context was cancelled", 2*DefaultShutdownTimeout)
		}
		srv.Close()
	})
	tb.Cleanup(s.stop)
	return s
}

func token(tb testing.TB, player, role string) string {
	tb.Helper()
	tok, err := auth.Sign(testSecret, player, role, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// msg is one reply as a client reads it.
type msg struct {
	Type         string `json:"type"`
	Seq          uint64 `json:"seq"`
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs *int64 `json:"retry_after_ms"`
}

func (m msg) String() string {
	if m.Type == "ack" {
		return fmt.Sprintf("ack %d", m.Seq)
	}
	return fmt.Sprintf("error %d %s (%s)", m.Seq, m.Code, m.Message)
}

// client is a move socket as a player's program holds it.
type client struct {
	tb     testing.TB
	ws     *websocket.Conn
	queued []msg
	frames int
}

func (s *testServer) wsURL() string {
	return "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/v1/moves/ws"
}

// dial opens a socket for player with a token in the query.
func (s *testServer) dial(tb testing.TB, player string) *client {
	tb.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL()+"?token="+token(tb, player, ""), nil)
	if err != nil {
		tb.Fatalf("dial: %v (response %v)", err, resp)
	}
	tb.Cleanup(func() { ws.Close() })
	return &client{tb: tb, ws: ws}
}

// send writes one text frame holding lines joined by "\n".
func (c *client) send(lines ...string) {
	c.tb.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(strings.Join(lines, "\n"))); err != nil {
		c.tb.Fatalf("send: %v", err)
	}
}

// next returns the next reply, reading frames as needed.
func (c *client) next() msg {
	c.tb.Helper()
	for len(c.queued) == 0 {
		_ = c.ws.SetReadDeadline(time.Now().Add(waitFor))
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.tb.Fatalf("read: %v", err)
		}
		if mt != websocket.TextMessage {
			c.tb.Fatalf("frame of type %d", mt)
		}
		c.frames++
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			var m msg
			if err := json.Unmarshal(line, &m); err != nil {
				c.tb.Fatalf("reply %q: %v", line, err)
			}
			c.queued = append(c.queued, m)
		}
	}
	m := c.queued[0]
	c.queued = c.queued[1:]
	return m
}

// expectAck reads the next reply and fails unless it acks seq.
func (c *client) expectAck(seq uint64) {
	c.tb.Helper()
	if m := c.next(); m.Type != "ack" || m.Seq != seq {
		c.tb.Fatalf("got %v, want ack %d", m, seq)
	}
}

// expectError reads the next reply and fails unless it is code for seq.
func (c *client) expectError(seq uint64, code string) msg {
	c.tb.Helper()
	m := c.next()
	if m.Type != "error" || m.Seq != seq || m.Code != code {
		c.tb.Fatalf("got %v, want error %d %s", m, seq, code)
	}
	if m.Message == "" {
		c.tb.Fatalf("error %v without a message", m)
	}
	hasRetry := code == "rate_limited" || code == "unavailable"
	if hasRetry != (m.RetryAfterMs != nil) || hasRetry && *m.RetryAfterMs < 1 {
		c.tb.Fatalf("error %v: retry_after_ms %v", m, m.RetryAfterMs)
	}
	return m
}

func moveLine(seq uint64, path []uint64) string {
	b, _ := json.Marshal(map[string]any{"type": "move", "seq": seq, "path": path})
	return string(b)
}

// walker makes valid moves for one player walking the graph.
type walker struct {
	g       *graph.Graph
	r       *rand.Rand
	at      uint32 // index
	prev    uint32
	seq     uint64
	started bool
}

func newWalker(g *graph.Graph, seed uint64) *walker {
	r := rand.New(rand.NewPCG(seed, 17))
	v := uint32(r.IntN(g.NumNodes()))
	for g.Degree(v) < 2 {
		v = uint32(r.IntN(g.NumNodes()))
	}
	return &walker{g: g, r: r, at: v, prev: graph.NoNode}
}

// path returns a path of n nodes from where the walker stands (without
// moving it).
func (w *walker) path(n int) []uint64 {
	at, prev := w.at, w.prev
	p := []uint64{uint64(graph.ID(at))}
	for len(p) < n {
		arcs := w.g.Neighbors(at)
		next := arcs[w.r.IntN(len(arcs))].To
		if next == prev && len(arcs) > 1 {
			next = arcs[w.r.IntN(len(arcs))].To
		}
		prev, at = at, next
		p = append(p, uint64(graph.ID(at)))
	}
	return p
}

// accept moves the walker along path (which must start where it stands)
// with seq.
func (w *walker) accept(seq uint64, path []uint64) {
	last, _ := graph.Index(path[len(path)-1], w.g.NumNodes())
	if len(path) > 1 {
		w.prev, _ = graph.Index(path[len(path)-2], w.g.NumNodes())
	}
	w.at, w.seq, w.started = last, seq, true
}

// step returns the next valid move (seq+1, n nodes) and accepts it.
func (w *walker) step(n int) (uint64, []uint64) {
	p := w.path(n)
	seq := w.seq + 1
	w.accept(seq, p)
	return seq, p
}

// nonNeighbour returns a node (index) that is neither v nor adjacent to v.
func nonNeighbour(g *graph.Graph, v uint32) uint32 {
	for u := uint32(0); ; u++ {
		if u == v {
			continue
		}
		if _, ok := g.ArcLen(v, u); !ok {
			return u
		}
	}
}

// inMove is one MoveAccepted read back from the IN stream.
type inMove struct {
	subject  string
	seqInLog uint64
	m        *eventpb.MoveAccepted
}

// readIn reads the whole IN stream: the moves, and the drops by subject.
func readIn(tb testing.TB, e *testEnv) (moves []inMove, drops map[string][]*eventpb.TreasureDropped) {
	tb.Helper()
	drops = map[string][]*eventpb.TreasureDropped{}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var rd event.Reader
	var mv event.Move
	var ev eventpb.Event
	err := natsjs.Replay(ctx, e.js, natsjs.ReplayOptions{Stream: e.topo.InStream(), MaxWait: 100 * time.Millisecond}, func(_ context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := rd.Reset(m.Data); err != nil {
				return err
			}
			for rd.Next() {
				switch rd.Kind() {
				case event.KindMove:
					if err := rd.Move(&mv); err != nil {
						return err
					}
					pm := &eventpb.MoveAccepted{}
					mv.Proto(pm)
					moves = append(moves, inMove{subject: m.Subject, seqInLog: m.Seq, m: pm})
				case event.KindDrop:
					if err := rd.Event(&ev); err != nil {
						return err
					}
					drops[m.Subject] = append(drops[m.Subject], ev.GetDrop())
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return moves, drops
}

// post sends body to path with tok (none when empty) and returns the
// status and body.
func (s *testServer) post(tb testing.TB, path, tok, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, s.srv.URL+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b.String()
}

// playerState reads a player's state from Redis as Ingest stored it.
func (e *testEnv) playerState(tb testing.TB, player string) (state, bool) {
	tb.Helper()
	v, err := e.rdb.HGet(context.Background(), e.rprefix+"players", player).Result()
	if err == redis.Nil {
		return state{}, false
	}
	if err != nil {
		tb.Fatal(err)
	}
	st, err := parseState(v, e.g.NumNodes())
	if err != nil {
		tb.Fatal(err)
	}
	return st, true
}
