package push

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// specGraph is a small synthetic city (it has coordinates).
func specGraph(tb testing.TB) *graph.Graph {
	tb.Helper()
	lo, hi := graph.GenLimits(900)
	g, err := graph.Generate(graph.GenOptions{Nodes: 900, Edges: (lo + hi) / 2, Seed: 3})
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// spectator is a spectator socket.
type spectator struct {
	tb   testing.TB
	ws   *websocket.Conn
	raw  []string // every message read
	seen map[string]bool
}

// spectate dials /v1/spectate with tok ("" for none); it returns the
// HTTP status when the upgrade is refused.
func (r *running) spectate(tb testing.TB, tok string) (*spectator, int) {
	tb.Helper()
	u := "ws" + strings.TrimPrefix(r.http.URL, "http") + "/v1/spectate"
	if tok != "" {
		u += "?token=" + url.QueryEscape(tok)
	}
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		if resp == nil {
			tb.Fatal(err)
		}
		return nil, resp.StatusCode
	}
	tb.Cleanup(func() { ws.Close() })
	return &spectator{tb: tb, ws: ws, seen: map[string]bool{}}, http.StatusSwitchingProtocols
}

// specMsg is a spectator message, decoded.
type specMsg struct {
	Type        string
	View        string
	Moves       [][]any
	Players     [][]any
	Gone        []string
	Treasures   [][]any
	Claims      []map[string]any
	Leaderboard *struct{ Top []map[string]any }
	Stats       map[string]float64
}

func (c *spectator) next() specMsg {
	c.tb.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		c.tb.Fatalf("spectator read: %v", err)
	}
	c.raw = append(c.raw, string(data))
	var m specMsg
	if err := json.Unmarshal(data, &m); err != nil {
		c.tb.Fatalf("spectator message %s: %v", data, err)
	}
	return m
}

// until reads messages until ok says stop.
func (c *spectator) until(what string, ok func(specMsg) bool) {
	c.tb.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if ok(c.next()) {
			return
		}
	}
	c.tb.Fatalf("spectator never saw %s; read %d messages", what, len(c.raw))
}

func signed(tb testing.TB, sub, role string) string {
	tb.Helper()
	tok, err := auth.Sign(secret, sub, role, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func hasTreasure(rows [][]any, id string) bool {
	for _, r := range rows {
		if len(r) > 0 && r[0] == id {
			return true
		}
	}
	return false
}

func drop(id string, node uint32, points uint64) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: id, Node: node, Points: points}}}
}

// TestSpectatorViews: without a token the feed shows positions, claims
// and the leaderboard but never an active treasure; a spectator token
// adds the treasures (from drops on IN and from proximity answers); a
// player's token is refused (403), a bad one too (401). Positions carry
// the node's coordinates.
func TestSpectatorViews(t *testing.T) {
	e := newEnv(t)
	g := specGraph(t)
	r := e.start(t, Options{Graph: g, SpectateInterval: 20 * time.Millisecond})

	if _, code := r.spectate(t, signed(t, "p1", "")); code != http.StatusForbidden {
		t.Fatalf("player token: %d, want 403", code)
	}
	if _, code := r.spectate(t, "not-a-token"); code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d, want 401", code)
	}
	pub, _ := r.spectate(t, "")
	full, _ := r.spectate(t, signed(t, "watcher", RoleSpectator))
	if m := pub.next(); m.Type != "hello" || m.View != "public" {
		t.Fatalf("public hello %+v", m)
	}
	if m := full.next(); m.Type != "hello" || m.View != "treasures" {
		t.Fatalf("full hello %+v", m)
	}
	full.until("its snapshot", func(m specMsg) bool { return m.Type == "snapshot" })
	pub.until("its snapshot", func(m specMsg) bool { return m.Type == "snapshot" })

	// A drop on IN (followed once a treasure-view spectator is connected
	// and has had a frame), a player's move whose answer names another
	// treasure, and a leaderboard.
	e.publish(t, e.topo.InSubject(0), drop("gold", 7, 40))
	e.publish(t, e.topo.OutSubject(0), prox("p1", 1, 5, "silver", 9, 12), board(1, row("p0", 3, 1)))
	wantPos := []any{"p1", 5.0, float64(g.X[4]), float64(g.Y[4])}
	sawGold, sawSilver, sawP1, sawBoard := false, false, false, false
	full.until("the treasures, the move and the leaderboard", func(m specMsg) bool {
		sawGold = sawGold || hasTreasure(m.Treasures, "gold")
		sawSilver = sawSilver || hasTreasure(m.Treasures, "silver")
		for _, p := range m.Moves {
			if len(p) == 4 && p[0] == wantPos[0] && p[1] == wantPos[1] && p[2] == wantPos[2] && p[3] == wantPos[3] {
				sawP1 = true
			}
		}
		sawBoard = sawBoard || (m.Leaderboard != nil && len(m.Leaderboard.Top) == 1)
		return sawGold && sawSilver && sawP1 && sawBoard
	})
	pub.until("the move", func(m specMsg) bool {
		for _, p := range m.Moves {
			if p[0] == "p1" {
				return true
			}
		}
		return false
	})

	// The claim goes to both; the treasure leaves the full view.
	e.publish(t, e.topo.OutSubject(1), claim("p1", 2, "gold", 40))
	for _, c := range []*spectator{pub, full} {
		c.until("the claim", func(m specMsg) bool {
			return len(m.Claims) == 1 && m.Claims[0]["treasure"] == "gold" && m.Claims[0]["player"] == "p1" && m.Claims[0]["points"] == 40.0
		})
	}
	for _, raw := range pub.raw {
		if strings.Contains(raw, `"treasures"`) || strings.Contains(raw, "silver") {
			t.Fatalf("the public view revealed an active treasure: %s", raw)
		}
	}
	// A spectator connecting now gets the state in its snapshot.
	late, _ := r.spectate(t, signed(t, "late", RoleAdmin))
	late.next() // hello
	late.until("a snapshot with the player and silver, without gold", func(m specMsg) bool {
		if m.Type != "snapshot" {
			return false
		}
		if hasTreasure(m.Treasures, "gold") {
			t.Fatalf("claimed treasure in the snapshot: %+v", m.Treasures)
		}
		return hasTreasure(m.Treasures, "silver") && hasTreasure(m.Players, "p1") && len(m.Claims) == 1
	})
}

// TestSpectatorSampling: a frame carries at most SpectatePositions
// positions and the feed follows at most SpectatePlayers players; the
// positions held back come in the next frames.
func TestSpectatorSampling(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, Options{Graph: specGraph(t), SpectateInterval: 20 * time.Millisecond, SpectatePositions: 3, SpectatePlayers: 7})
	c, _ := r.spectate(t, "")
	c.next() // hello
	c.until("the snapshot", func(m specMsg) bool { return m.Type == "snapshot" })
	var evs []*eventpb.Event
	for i := range 20 {
		evs = append(evs, prox("s"+string(rune('a'+i)), 1, uint32(10+i), "", 0, 0))
	}
	e.publish(t, e.topo.OutSubject(0), evs...)
	seen := map[string]bool{}
	c.until("the 7 players followed", func(m specMsg) bool {
		if m.Type != "frame" {
			return false
		}
		if len(m.Moves) > 3 {
			t.Fatalf("a frame with %d positions, at most 3", len(m.Moves))
		}
		for _, p := range m.Moves {
			seen[p[0].(string)] = true
		}
		return len(seen) >= 7 && m.Stats["followed"] == 7
	})
	if len(seen) != 7 {
		t.Fatalf("positions of %d players, want the 7 followed: %v", len(seen), seen)
	}
	for i := range 7 {
		if !seen["s"+string(rune('a'+i))] {
			t.Fatalf("the first 7 players are followed; saw %v", seen)
		}
	}
}

// TestSpectatorTapCostsNothingUnwatched: with nobody watching, the feed's
// hook does not allocate; with the tracker's input full it returns at
// once and counts the step as lost.
func TestSpectatorTapCostsNothingUnwatched(t *testing.T) {
	s := &Server{hub: newHub(4, 4)}
	s.ready.Store(true)
	sp := newSpectate(s, Options{SpectateInterval: time.Second, SpectatePositions: 1, SpectatePlayers: 1, MaxSpectators: 1})
	msgs := []natsjs.Msg{{Data: []byte{1}}, {Data: []byte{2}}}
	if n := testing.AllocsPerRun(100, func() { sp.tap(msgs) }); n != 0 {
		t.Fatalf("tap allocates %v times per step with nobody watching", n)
	}
	if len(sp.in) != 0 {
		t.Fatal("tap handed a step over with nobody watching")
	}
	sp.watching.Store(true)
	for range cap(sp.in) + 5 {
		sp.tap(msgs) // never blocks
	}
	if len(sp.in) != cap(sp.in) || sp.lostN.Load() != 5 {
		t.Fatalf("input %d of %d, lost %d; want full and 5 lost", len(sp.in), cap(sp.in), sp.lostN.Load())
	}
}

// TestSpectatorSlowGetsSnapshotNotBacklog: a spectator that does not
// drain its queue holds at most spectateQueue frames, misses the rest,
// and gets a snapshot (not the missed frames) once it has room.
func TestSpectatorSlowGetsSnapshotNotBacklog(t *testing.T) {
	e := newEnv(t)
	s, err := New(Options{Topology: e.topo, JS: e.js, Postgres: e.pg.opts.Postgres, Verifier: mustVerifier(t), SpectatePositions: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.ready.Store(true)
	sp := s.spec
	slow := &specConn{q: make(chan []byte, spectateQueue), done: make(chan struct{})}
	slow.resync.Store(true) // as a new spectator
	sp.socks[slow] = struct{}{}
	sp.watching.Store(true)
	ctx := ctxFor(t, 30*time.Second)
	now := time.Now()
	for i := range 3 * spectateQueue {
		sp.move([]byte("p"+string(rune('a'+i))), uint32(i+1), now)
		sp.tick(ctx, now)
	}
	if len(slow.q) != spectateQueue || !slow.resync.Load() {
		t.Fatalf("queue %d, resync %v: want full and a snapshot due", len(slow.q), slow.resync.Load())
	}
	if first := string(<-slow.q); !strings.HasPrefix(first, `{"type":"snapshot"`) {
		t.Fatalf("first message %s, want the snapshot of a new spectator", first)
	}
	for len(slow.q) > 0 {
		<-slow.q
	}
	sp.tick(ctx, now)
	got := string(<-slow.q)
	if !strings.HasPrefix(got, `{"type":"snapshot"`) || strings.Count(got, `["p`) != 3*spectateQueue {
		t.Fatalf("after missing frames: %s, want a snapshot with all %d players", got, 3*spectateQueue)
	}
	for len(sp.in) > 0 {
		<-sp.in
	}
	for sp.polling.Load() { // the backlog poll of the first tick
		time.Sleep(time.Millisecond)
	}
}

func mustVerifier(tb testing.TB) *auth.Verifier {
	v, err := auth.NewVerifier(secret)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// TestMapEndpoint: GET /v1/map draws a graph with coordinates as grid
// segments inside its box (gzip when asked), and says plainly when there
// is nothing to draw.
func TestMapEndpoint(t *testing.T) {
	g := specGraph(t)
	noCoords := *g
	noCoords.X, noCoords.Y = nil, nil
	for _, tc := range []struct {
		name string
		g    *graph.Graph
		want string
	}{
		{"coordinates", g, ""},
		{"no coordinates", &noCoords, "no node coordinates"},
		{"no graph", nil, "no graph"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{o: Options{Graph: tc.g}}
			rec := func(gz bool) []byte {
				req, _ := http.NewRequest(http.MethodGet, "/v1/map", nil)
				if gz {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				w := httptest.NewRecorder()
				s.serveMap(w, req)
				if w.Code != http.StatusOK {
					t.Fatalf("status %d", w.Code)
				}
				if !gz {
					return w.Body.Bytes()
				}
				if w.Header().Get("Content-Encoding") != "gzip" {
					t.Fatal("no gzip")
				}
				zr, err := gzip.NewReader(w.Body)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(zr)
				return b
			}
			plain := rec(false)
			if !bytes.Equal(plain, rec(true)) {
				t.Fatal("gzip body differs")
			}
			var m struct {
				Coords   bool
				Nodes    int
				Message  string
				Grid     int
				Segments []int
			}
			if err := json.Unmarshal(plain, &m); err != nil {
				t.Fatalf("%s: %v", plain, err)
			}
			if tc.want != "" {
				if m.Coords || !strings.Contains(m.Message, tc.want) {
					t.Fatalf("%s: want coords false and a message with %q", plain, tc.want)
				}
				return
			}
			if !m.Coords || m.Nodes != g.NumNodes() || len(m.Segments) == 0 || len(m.Segments)%4 != 0 || len(m.Segments)/4 > mapMaxSegments {
				t.Fatalf("map: coords %v nodes %d segments %d", m.Coords, m.Nodes, len(m.Segments))
			}
			for _, c := range m.Segments {
				if c < 0 || c > m.Grid {
					t.Fatalf("segment coordinate %d outside the grid 0..%d", c, m.Grid)
				}
			}
		})
	}
}

// TestPageIsServedFromTheBinary: GET / is the page, its script and style
// come from /live/, everything from the binary, nothing from elsewhere.
func TestPageIsServedFromTheBinary(t *testing.T) {
	h := (&Server{}).Handler()
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		h.ServeHTTP(w, req)
		return w
	}
	page := get("/")
	body := page.Body.String()
	if page.Code != 200 || !strings.Contains(body, `<script src="/live/app.js"`) || !strings.Contains(page.Header().Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /: %d %s %v", page.Code, body, page.Header())
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, "<style") {
		t.Fatal("the page refers to another site, or inlines what its policy forbids")
	}
	for path, ctype := range map[string]string{"/live/app.js": "javascript", "/live/app.css": "text/css"} {
		w := get(path)
		if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), ctype) || w.Body.Len() < 500 {
			t.Fatalf("GET %s: %d %q %d bytes", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
	}
	for _, path := range []string{"/live/nope.js", "/nope"} {
		if w := get(path); w.Code != 404 {
			t.Fatalf("GET %s: %d, want 404", path, w.Code)
		}
	}
}

// TestSpectatorsClosedAtShutdown: stopping the server closes spectator
// sockets with 1001 and leaves no goroutine (TestMain checks), and a
// spectator beyond MaxSpectators is refused with 503.
func TestSpectatorsClosedAtShutdown(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, Options{SpectateInterval: 20 * time.Millisecond, MaxSpectators: 1})
	c, _ := r.spectate(t, "")
	c.next() // hello
	if _, code := r.spectate(t, ""); code != http.StatusServiceUnavailable {
		t.Fatalf("second spectator with MaxSpectators 1: %d, want 503", code)
	}
	r.stop()
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, _, err := c.ws.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
				t.Fatalf("closed with %v, want 1001", err)
			}
			return
		}
	}
}

// BenchmarkSpectateApply is the tracker's cost per proximity result while
// someone watches (on its own goroutine, not the feed's): decoding the
// event and recording the position.
func BenchmarkSpectateApply(b *testing.B) {
	s := &Server{hub: newHub(4, 4)}
	sp := newSpectate(s, Options{SpectateInterval: time.Second, SpectatePositions: 500, SpectatePlayers: 5000, MaxSpectators: 1})
	const perBatch = 64
	var evs []*eventpb.Event
	for i := range perBatch {
		evs = append(evs, prox("bench-"+string(rune('a'+i%26))+string(rune('a'+i/26)), uint64(i+1), uint32(100+i), "t-1", 7, 30))
	}
	data, err := event.AppendBatch(nil, evs)
	if err != nil {
		b.Fatal(err)
	}
	in := specInput{data: [][]byte{data}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		sp.apply(in)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/event")
}

// TestProximityFieldsMatchesTheGeneratedDecoder: the tracker's in-place
// reader of proximity results agrees with proto.Unmarshal.
func TestProximityFieldsMatchesTheGeneratedDecoder(t *testing.T) {
	for _, ev := range []*eventpb.Event{
		prox("alice", 3, 17, "", 0, 0),
		prox("bob", 1<<40, 1<<31, "t-9", 1<<30, 12345),
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: "carol", Seq: 2, Node: 5, PrevSeq: 1, IngestUnixNanos: -7,
			Move: &eventpb.LogPosition{StreamSeq: 9, Index: 2}, Treasure: &eventpb.NearestTreasure{Id: "x", Node: 4, Distance: 1}}}},
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{}}},
	} {
		data, err := event.AppendBatch(nil, []*eventpb.Event{ev})
		if err != nil {
			t.Fatal(err)
		}
		var rd event.Reader
		if err := rd.Reset(data); err != nil || !rd.Next() {
			t.Fatal(err)
		}
		player, node, tid, tnode, ok := proximityFields(rd.Raw())
		p := ev.GetProximity()
		wantTID, wantTNode := []byte(nil), uint32(0)
		if tr := p.GetTreasure(); tr != nil {
			wantTID, wantTNode = []byte(tr.GetId()), tr.GetNode()
		}
		if !ok || string(player) != p.GetPlayer() || node != p.GetNode() || !bytes.Equal(tid, wantTID) || (tid == nil) != (wantTID == nil) || tnode != wantTNode {
			t.Fatalf("%v: got %q %d %q %d %v", p, player, node, tid, tnode, ok)
		}
	}
	if _, _, _, _, ok := proximityFields([]byte{0x22, 0x05, 0x0a}); ok {
		t.Fatal("a truncated event parsed")
	}
}
