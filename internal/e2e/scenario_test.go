package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/testenv"
)

// deployment is what the scenario needs of a running pipeline.
type deployment struct {
	ingest, push string // http://host:port
	secret       string
	g            *graph.Graph
	radius       uint32
	// score reads a player's score from PostgreSQL (-1 when absent).
	score func(player string) int64
}

func (d deployment) token(tb testing.TB, sub, role string) string {
	tb.Helper()
	tok, err := auth.Sign(d.secret, sub, role, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func ws(base string) string { return "ws" + strings.TrimPrefix(base, "http") }

// scenario: an admin drops two treasures; a player spawns two steps from
// one of them and walks: every move gets exactly one ack and one proximity
// update whose answer equals the reference Dijkstra's; the move onto the
// treasure's node claims it and flows to a claim update, a score update, the
// leaderboard, the player endpoint and a PostgreSQL row.
func scenario(t *testing.T, d deployment, player string) {
	g := d.g
	// Treasure X on a node with a two-step approach C - B - X; Y elsewhere.
	var x, b, c uint32
	for v := uint32(1000); ; v++ {
		arcs := g.Neighbors(v)
		if len(arcs) < 1 {
			continue
		}
		b = arcs[0].To
		var ok bool
		for _, a := range g.Neighbors(b) {
			if a.To != v {
				c, ok = a.To, true
				break
			}
		}
		if ok {
			x = v
			break
		}
	}
	y := uint32(g.NumNodes() / 2)
	tx, ty := player+"-X", player+"-Y"
	admin := d.token(t, "admin-"+player, "admin")
	drop := fmt.Sprintf(`{"treasures":[{"id":%q,"node":%d,"points":25},{"id":%q,"node":%d,"points":5}]}`, tx, graph.ID(x), ty, graph.ID(y))
	if code, body := postJSON(t, d.ingest+"/v1/admin/drops", admin, drop); code != 202 || !strings.Contains(body, `"accepted":2`) {
		t.Fatalf("drop: %d %s", code, body)
	}
	if code, _ := postJSON(t, d.ingest+"/v1/admin/drops", d.token(t, player, ""), drop); code != 403 {
		t.Fatalf("drop with a player's token: %d, want 403", code)
	}

	tok := d.token(t, player, "")
	pushSock := dial(t, ws(d.push)+"/v1/updates/ws?after=0", tok)
	moves := dial(t, ws(d.ingest)+"/v1/moves/ws", tok)

	// The walk: spawn at C, step to B, step onto X (claim), then walk on.
	paths := [][]uint32{{c}, {c, b}, {b, x}}
	at := x
	for i := 0; i < 4; i++ {
		p := []uint32{at}
		for j := 0; j < 6; j++ {
			arcs := g.Neighbors(at)
			at = arcs[(i+j)%len(arcs)].To
			p = append(p, at)
		}
		paths = append(paths, p)
	}
	active := []graph.RefTreasure{{ID: tx, Node: x}, {ID: ty, Node: y}}
	var lastID uint64
	var score *msg
	for i, p := range paths {
		seq := uint64(i + 1)
		wire := make([]uint32, len(p))
		for j, v := range p {
			wire[j] = graph.ID(v)
		}
		moves.send(moveJSON(seq, wire...))
		ack := moves.next(10 * time.Second)
		if ack.Type != "ack" || ack.Seq != seq {
			t.Fatalf("move %d: got %+v, want its ack", seq, ack)
		}
		last := p[len(p)-1]
		claimed := last == x && i == 2
		if claimed {
			active = active[1:]
		}
		want := graph.Reference(g, active, d.radius, last)
		ms := pushSock.until(20*time.Second, func(m msg) bool { return m.Type == "proximity" && m.Seq == seq })
		var sawClaim bool
		for _, m := range ms {
			if m.Type == "leaderboard" {
				continue
			}
			if m.ID != lastID+1 {
				t.Fatalf("update ids jump from %d to %d (%+v)", lastID, m.ID, m)
			}
			lastID = m.ID
			switch m.Type {
			case "proximity":
				if m.Seq != seq {
					t.Fatalf("proximity for seq %d before seq %d's", m.Seq, seq)
				}
			case "score":
				m := m
				score = &m
			case "claim":
				sawClaim = true
				if !claimed || m.Seq != seq || m.Points != 25 || string(m.Treasure) != fmt.Sprintf("%q", tx) {
					t.Fatalf("unexpected claim %+v (treasure %s) at move %d", m, m.Treasure, seq)
				}
			}
		}
		if claimed && !sawClaim {
			t.Fatalf("move %d onto treasure %s: no claim update before its proximity update", seq, tx)
		}
		prox := ms[len(ms)-1]
		if prox.Node != uint64(graph.ID(last)) {
			t.Fatalf("move %d: proximity for node %d, want %d", seq, prox.Node, graph.ID(last))
		}
		got := prox.nearest(t)
		if (got != nil) != want.Found || (got != nil && (got.ID != want.ID || got.Distance != uint64(want.Dist) || got.Node != uint64(graph.ID(want.Node)))) {
			t.Fatalf("move %d at node %d: proximity %s, reference %+v", seq, graph.ID(last), prox.Treasure, want)
		}
	}
	// The score update follows the claim (ranker → OUT → push).
	if score == nil {
		ms := pushSock.until(20*time.Second, func(m msg) bool { return m.Type == "score" })
		m := ms[len(ms)-1]
		if m.ID != lastID+1 {
			t.Fatalf("score update id %d, want %d", m.ID, lastID+1)
		}
		score = &m
	}
	if score.Score != 25 || score.Rank < 1 {
		t.Fatalf("score update %+v, want score 25", *score)
	}
	// A second move with the same seq (a retry) is acked again, not stored twice.
	moves.send(moveJSON(uint64(len(paths)), graphIDs(paths[len(paths)-1])...))
	if ack := moves.next(10 * time.Second); ack.Type != "ack" {
		t.Fatalf("retry of the last move: %+v, want an ack", ack)
	}
	// A bad move gets its error and the socket stays usable.
	moves.send(`{"type":"move","seq":1,"path":[1]}`)
	if e := moves.next(10 * time.Second); e.Type != "error" || e.Code != "stale_seq" {
		t.Fatalf("stale move: %+v", e)
	}

	var board struct {
		Top []struct {
			Player string `json:"player"`
			Score  int64  `json:"score"`
			Rank   int64  `json:"rank"`
		} `json:"top"`
		Players int64 `json:"players"`
	}
	testenv.WaitUntil(t, 10*time.Second, "leaderboard shows the claim", func() bool {
		getJSON(t, d.push+"/v1/leaderboard?limit=1000", &board)
		for _, e := range board.Top {
			if e.Player == player {
				return e.Score == 25
			}
		}
		return false
	})
	var me struct {
		Player string `json:"player"`
		Score  int64  `json:"score"`
		Rank   int64  `json:"rank"`
	}
	if code := getJSON(t, d.push+"/v1/players/"+player, &me); code != 200 || me.Player != player || me.Score != 25 || me.Rank < 1 {
		t.Fatalf("GET /v1/players/%s: %d %+v", player, code, me)
	}
	if code := getJSON(t, d.push+"/v1/players/nobody-"+player, nil); code != 404 {
		t.Fatalf("unknown player: %d, want 404", code)
	}
	if s := d.score(player); s != 25 {
		t.Fatalf("PostgreSQL holds score %d for %s, want 25", s, player)
	}
}

func graphIDs(p []uint32) []uint32 {
	out := make([]uint32, len(p))
	for i, v := range p {
		out[i] = graph.ID(v)
	}
	return out
}
