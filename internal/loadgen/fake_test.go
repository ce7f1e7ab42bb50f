package loadgen

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/wire"
)

// fake is a minimal in-test double of our own ingest and push services:
// it speaks SPEC.md's wire shapes on one httptest server (both base URLs
// point at it), validates every move with the real wire parser and
// game.ValidateMove, acks it, and pushes a proximity update per accepted
// move with per-player ids, resumable with ?after=. Its knobs inject the
// situations a load generator must cope with.
type fake struct {
	tb  testing.TB
	g   *graph.Graph
	o   fakeOptions
	v   *auth.Verifier
	srv *httptest.Server
	up  websocket.Upgrader

	mu      sync.Mutex
	players map[string]*fakePlayer
	// totals
	accepted, rateLimited, rejected, claims, leaderboardGets int
	rejectedCodes                                            map[game.Code]int
	boardQuery                                               string
	pongs, wsRequests, failedDials                           int
}

type fakeOptions struct {
	// pingOnConnect pings every socket right after the upgrade and
	// counts the pongs (fake.pongs).
	pingOnConnect bool
	// failDials fails the first N WebSocket requests (either service):
	// odd ones with a 503, even ones by closing the connection unanswered.
	failDials int
	// rateLimitEvery answers rate_limited to the first send of every Nth
	// move of a player (0: never).
	rateLimitEvery int
	// dropPushAfter closes each player's push socket once, right after
	// update id N was written (0: never).
	dropPushAfter uint64
	// dropIngestAfter closes each player's ingest socket once, after
	// accepting its Nth move and before acking it (0: never).
	dropIngestAfter int
	// forgetRetries answers stale_seq to a resent accepted move instead of
	// acking it again.
	forgetRetries bool
	// skipID skips update id 3 of every player (a bug a load generator
	// must report).
	skipID bool
	// claimEvery sends a claim and a score, batched in the proximity
	// update's frame with a leaderboard message, after every Nth accepted
	// move (0: never).
	claimEvery int
	// preset is the state players have before the run (an earlier run).
	preset map[string]game.Player
}

type fakePlayer struct {
	state     game.Player
	lastPath  []uint64
	moves     int // accepted
	sends     int // well-formed moves seen (for rateLimitEvery)
	nextID    uint64
	retained  [][]byte // update i has id i+1
	push      *websocket.Conn
	pushConns int
	droppedP  bool
	droppedI  bool
	limited   map[uint64]bool
}

const fakeSecret = "test-secret"

func newFake(tb testing.TB, g *graph.Graph, o fakeOptions) *fake {
	tb.Helper()
	v, err := auth.NewVerifier(fakeSecret)
	if err != nil {
		tb.Fatal(err)
	}
	f := &fake{tb: tb, g: g, o: o, v: v, players: map[string]*fakePlayer{}, rejectedCodes: map[game.Code]int{}}
	for id, st := range o.preset {
		f.player(id).state = st
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/moves/ws", f.ingest)
	mux.HandleFunc("GET /v1/updates/ws", f.updates)
	mux.HandleFunc("GET /v1/leaderboard", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.leaderboardGets++
		f.boardQuery = r.URL.RawQuery
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(wire.AppendTop(nil, []game.Entry{{Player: "alice", Score: 50, Rank: 1}, {Player: "bob", Score: 40, Rank: 2}}, 2))
	})
	f.srv = httptest.NewServer(f.gate(mux))
	tb.Cleanup(f.close)
	return f
}

// gate applies failDials before next.
func (f *fake) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/ws") {
			f.mu.Lock()
			f.wsRequests++
			n := f.wsRequests
			fail := n <= f.o.failDials
			if fail {
				f.failedDials++
			}
			f.mu.Unlock()
			if fail && n%2 == 1 {
				w.Header().Set("Retry-After", "0")
				http.Error(w, "not now", http.StatusServiceUnavailable)
				return
			}
			if fail {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// greet pings ws when pingOnConnect is set, and counts its pongs.
func (f *fake) greet(ws *websocket.Conn) {
	if !f.o.pingOnConnect {
		return
	}
	ws.SetPongHandler(func(string) error {
		f.mu.Lock()
		f.pongs++
		f.mu.Unlock()
		return nil
	})
	ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(5*time.Second))
}

// url is the ws:// base URL of both services.
func (f *fake) url() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") }

func (f *fake) close() {
	f.mu.Lock()
	for _, p := range f.players {
		if p.push != nil {
			p.push.Close()
		}
	}
	f.mu.Unlock()
	f.srv.CloseClientConnections()
	f.srv.Close()
}

func (f *fake) player(id string) *fakePlayer {
	p := f.players[id]
	if p == nil {
		p = &fakePlayer{limited: map[uint64]bool{}}
		f.players[id] = p
	}
	return p
}

func (f *fake) auth(w http.ResponseWriter, r *http.Request) (string, bool) {
	tok, ok := auth.FromRequest(r)
	if !ok {
		http.Error(w, "no token", http.StatusUnauthorized)
		return "", false
	}
	cl, err := f.v.Verify(tok)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return "", false
	}
	return cl.Subject, true
}

// updates serves GET /v1/updates/ws.
func (f *fake) updates(w http.ResponseWriter, r *http.Request) {
	id, ok := f.auth(w, r)
	if !ok {
		return
	}
	after, err := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	resume := err == nil
	ws, err := f.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	f.greet(ws)
	f.mu.Lock()
	p := f.player(id)
	if p.push != nil {
		p.push.Close()
	}
	p.push = ws
	p.pushConns++
	if resume && after < uint64(len(p.retained)) {
		ws.WriteMessage(websocket.TextMessage, bytes.Join(p.retained[after:], []byte("\n")))
	}
	f.mu.Unlock()
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			break
		}
	}
	f.mu.Lock()
	if p.push == ws {
		p.push = nil
	}
	f.mu.Unlock()
	ws.Close()
}

// ingest serves GET /v1/moves/ws.
func (f *fake) ingest(w http.ResponseWriter, r *http.Request) {
	id, ok := f.auth(w, r)
	if !ok {
		return
	}
	ws, err := f.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	f.greet(ws)
	defer ws.Close()
	var (
		parser wire.Parser
		items  []wire.Item
		idx    [game.MaxPath]uint32
	)
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var out [][]byte
		items = parser.ParseFrame(frame, items[:0])
		f.mu.Lock()
		p := f.player(id)
		for _, it := range items {
			if it.Err != nil {
				f.reject(&out, it.Seq, it.Err)
				continue
			}
			p.sends++
			if n := f.o.rateLimitEvery; n > 0 && p.sends%n == 0 && !p.limited[it.Seq] {
				p.limited[it.Seq] = true
				f.rateLimited++
				out = append(out, wire.AppendError(nil, it.Seq, game.CodeRateLimited, "slow down", 3*time.Millisecond))
				continue
			}
			if p.state.Moved && it.Seq == p.state.Seq && slices.Equal(it.Path, p.lastPath) && !f.o.forgetRetries {
				out = append(out, wire.AppendAck(nil, it.Seq)) // a retry after a lost ack
				continue
			}
			if verr := game.ValidateMove(f.g, p.state, it.Seq, it.Path, idx[:len(it.Path)]); verr != nil {
				f.reject(&out, it.Seq, verr)
				continue
			}
			p.state = p.state.Advance(it.Seq, idx[len(it.Path)-1])
			p.lastPath = slices.Clone(it.Path)
			p.moves++
			f.accepted++
			f.publish(p, it.Seq, it.Path[len(it.Path)-1])
			if n := f.o.dropIngestAfter; n > 0 && p.moves == n && !p.droppedI {
				p.droppedI = true
				f.mu.Unlock()
				return // the ack is lost with the socket
			}
			out = append(out, wire.AppendAck(nil, it.Seq))
		}
		f.mu.Unlock()
		if len(out) > 0 {
			if ws.WriteMessage(websocket.TextMessage, bytes.Join(out, []byte("\n"))) != nil {
				return
			}
		}
	}
}

func (f *fake) reject(out *[][]byte, seq uint64, err *game.Error) {
	f.rejected++
	f.rejectedCodes[err.Code]++
	*out = append(*out, wire.AppendError(nil, seq, err.Code, err.Msg, 0))
}

// publish sends the updates of an accepted move; f.mu is held. The
// retained list keeps update id i at index i-1 (nil for a skipped id).
func (f *fake) publish(p *fakePlayer, seq, node uint64) {
	var frame [][]byte
	next := func() uint64 {
		p.nextID++
		if f.o.skipID && p.nextID == 3 {
			p.retained = append(p.retained, nil) // id 3 is never sent
			p.nextID++
		}
		return p.nextID
	}
	add := func(m []byte) {
		p.retained = append(p.retained, m)
		frame = append(frame, m)
	}
	add(wire.AppendProximity(nil, wire.Proximity{ID: next(), Seq: seq, Node: node}))
	if n := f.o.claimEvery; n > 0 && p.moves%n == 0 {
		f.claims++
		add(wire.AppendClaim(nil, next(), seq, "t"+strconv.Itoa(f.claims), 10))
		add(wire.AppendScore(nil, next(), int64(10*p.moves/n), 1))
		frame = append(frame, wire.AppendLeaderboard(nil, []game.Entry{{Player: "alice", Score: 50, Rank: 1}}))
	}
	if p.push != nil {
		p.push.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if p.push.WriteMessage(websocket.TextMessage, bytes.Join(frame, []byte("\n"))) != nil {
			p.push.Close()
			p.push = nil
		}
	}
	if d := f.o.dropPushAfter; d > 0 && p.nextID >= d && !p.droppedP && p.push != nil {
		p.droppedP = true
		p.push.Close()
		p.push = nil
	}
}

// snapshot returns a copy of the fake's totals and per-player state.
type fakeTotals struct {
	accepted, rateLimited, rejected, claims, leaderboardGets int
	rejectedCodes                                            map[game.Code]int
	boardQuery                                               string
	pongs, failedDials                                       int
	players                                                  map[string]fakePlayerTotals
}

type fakePlayerTotals struct {
	state     game.Player
	moves     int
	pushConns int
	droppedP  bool
	droppedI  bool
}

func (f *fake) totals() fakeTotals {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := fakeTotals{
		accepted: f.accepted, rateLimited: f.rateLimited, rejected: f.rejected, claims: f.claims,
		leaderboardGets: f.leaderboardGets, rejectedCodes: map[game.Code]int{}, boardQuery: f.boardQuery,
		players: map[string]fakePlayerTotals{}, pongs: f.pongs, failedDials: f.failedDials,
	}
	for c, n := range f.rejectedCodes {
		t.rejectedCodes[c] = n
	}
	for id, p := range f.players {
		t.players[id] = fakePlayerTotals{p.state, p.moves, p.pushConns, p.droppedP, p.droppedI}
	}
	return t
}
