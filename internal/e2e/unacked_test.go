package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/faults"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestProcessKillIngestWithStoredUnackedMoves (issue 9, faults under
// load) forces the case TestProcessKillEachService only makes likely: an
// ingest process is SIGKILLed while JetStream has stored moves whose
// publish ack ingest never received, so the players got no answer. The
// ingest process talks to NATS through a testenv.StallProxy; with the
// proxy holding the server's bytes back, players send moves, the test
// waits until the IN stream holds every one of them (and no player has an
// answer), then kills ingest and starts a new one (straight to NATS) on
// the same address. Each of those moves ends on a treasure dropped there
// for it, so that a second effect would show as a second claim.
//
// Two kinds of players, as SPEC lets a client do after a lost answer:
//   - "resend" players had two moves in flight (S, S+1) and send both
//     again, same seqs and paths: each answer must be an ack or stale_seq
//     (SPEC: the seq is used, by the stored move), never another error;
//   - "next" players had one move S in flight and send S+1, starting where
//     S ended, without resending S: S is in the log, so it is the player's
//     last accepted move and S+1 is continuous (SPEC) — it must be acked.
//
// Then every player walks on a few moves. Checks: OUT holds exactly one
// proximity result per (player, seq) (readOut fails on a second), for
// exactly the seqs acked or stored, each on the end node of the path that
// was stored; each in-flight move's treasure is claimed exactly once, by
// it; no move answered with an error has a result; PostgreSQL's scores
// are the points of the claims in OUT; and a replay of the log agrees with
// OUT, PostgreSQL and Redis (faults.LogAgrees).
func TestProcessKillIngestWithStoredUnackedMoves(t *testing.T) {
	t.Parallel()
	// Registered before the processes: its cleanup runs after they stop.
	px := testenv.NewStallProxy(t, testenv.NATSURL())
	c := startClusterEnv(t, []string{"TREASURE_NATS_URL=" + px.URL()})
	g := c.d.g
	ingestWS := ws(c.d.ingest)

	type player struct {
		name   string
		w      *walker
		resend bool
		// flight are the moves sent while the acks were held back: their
		// seqs, paths (wire ids) and end nodes.
		flight []flightMove
	}
	type outcome struct {
		path   []uint32 // the stored path (wire ids)
		answer string   // "ack", an error code, or "" (none: in flight at the kill)
	}
	const resendPlayers, nextPlayers, walkBefore, walkAfter = 4, 3, 3, 5
	var ps []*player
	// effect[name][seq] is what must be in effect for each seq: the path
	// that was acked or stored. errored collects every error answer.
	effect := map[string]map[uint64]outcome{}
	var errored []string
	record := func(p *player, seq uint64, path []uint32, m msg) {
		t.Helper()
		if m.Type == "ack" {
			effect[p.name][seq] = outcome{path: path, answer: "ack"}
			return
		}
		errored = append(errored, fmt.Sprintf("%s/%d", p.name, seq))
	}
	for i := range resendPlayers + nextPlayers {
		p := &player{resend: i < resendPlayers}
		kind := "next"
		if p.resend {
			kind = "resend"
		}
		p.name = fmt.Sprintf("%s-%d", kind, i)
		effect[p.name] = map[uint64]outcome{}
		p.w = newWalker(t, c.d, ingestWS, p.name, uint32((i*7919+101)%g.NumNodes()))
		ps = append(ps, p)
	}
	walk := func(p *player, n int) {
		t.Helper()
		for range n {
			to := p.w.step()
			seq, path := p.w.seq+1, p.w.path(to)
			for _, m := range p.w.move(to, 60*time.Second) {
				record(p, seq, path, m) // unavailable answers
			}
			effect[p.name][p.w.seq] = outcome{path: path, answer: "ack"}
		}
	}
	for _, p := range ps {
		walk(p, walkBefore)
	}

	// Plan the moves in flight: each ends on a node of its own, where a
	// treasure is dropped for it.
	used := map[uint32]bool{}
	pick := func(from uint32) uint32 {
		t.Helper()
		for _, a := range g.Neighbors(from) {
			if a.To != from && !used[a.To] {
				used[a.To] = true
				return a.To
			}
		}
		t.Fatalf("node %d has no neighbour free for a move in flight", graph.ID(from))
		return 0
	}
	points := map[string]int64{}
	var drops []string
	for _, p := range ps {
		at := p.w.at
		n := 1
		if p.resend {
			n = 2
		}
		for k := range n {
			to := pick(at)
			f := flightMove{seq: p.w.seq + 1 + uint64(k), path: []uint32{graph.ID(at), graph.ID(to)}, end: to,
				treasure: fmt.Sprintf("t-%s-%d", p.name, p.w.seq+1+uint64(k))}
			points[f.treasure] = int64(3 + k)
			drops = append(drops, fmt.Sprintf(`{"id":%q,"node":%d,"points":%d}`, f.treasure, graph.ID(to), points[f.treasure]))
			p.flight = append(p.flight, f)
			at = to
		}
	}
	body := `{"treasures":[` + strings.Join(drops, ",") + `]}`
	if code, resp := postJSON(t, c.d.ingest+"/v1/admin/drops", c.d.token(t, "admin", "admin"), body); code != 202 || strings.TrimSpace(resp) != fmt.Sprintf(`{"accepted":%d}`, len(points)) {
		t.Fatalf("drop of %d treasures: %d %s", len(points), code, resp)
	}

	// Hold JetStream's answers back, send the moves, and wait until the
	// log holds them all.
	px.Pause()
	inBefore := inMoves(t, c.js, c.topo)
	for _, p := range ps {
		lines := make([]string, len(p.flight))
		for k, f := range p.flight {
			lines[k] = moveJSON(f.seq, f.path...)
		}
		p.w.sock.send(strings.Join(lines, "\n"))
	}
	testenv.WaitUntil(t, 60*time.Second, "the IN stream holding every move in flight", func() bool {
		in := inMoves(t, c.js, c.topo)
		for _, p := range ps {
			for _, f := range p.flight {
				if in[fmt.Sprintf("%s/%d", p.name, f.seq)] != 1 {
					return false
				}
			}
		}
		return true
	})
	for _, p := range ps {
		select {
		case m, ok := <-p.w.sock.in:
			if ok {
				t.Fatalf("%s got %+v while JetStream's answers were held back: the test does not force the case", p.name, m)
			}
		default:
		}
	}
	t.Logf("IN held %d moves before and every one of the %d moves in flight at the kill", len(inBefore), func() int {
		n := 0
		for _, p := range ps {
			n += len(p.flight)
		}
		return n
	}())
	c.ingest.kill(t)
	px.Resume()
	c.ingest = c.startAt("ingest (restarted, direct)", c.ingest.addrVar, c.ingest.addr, c.ingest.args...)
	c.waitReady(c.ingest)

	// The players reconnect.
	for _, p := range ps {
		p.w.sock = dial(t, ingestWS+"/v1/moves/ws", c.d.token(t, p.name, ""))
		for _, f := range p.flight {
			effect[p.name][f.seq] = outcome{path: f.path} // stored: in effect whatever the answers
		}
		last := p.flight[len(p.flight)-1]
		if p.resend {
			lines := make([]string, len(p.flight))
			for k, f := range p.flight {
				lines[k] = moveJSON(f.seq, f.path...)
			}
			p.w.sock.send(strings.Join(lines, "\n"))
			for _, f := range p.flight {
				m := p.w.sock.next(30 * time.Second)
				if m.Seq != f.seq || !(m.Type == "ack" || m.Type == "error" && m.Code == "stale_seq") {
					t.Errorf("%s resent move %d, stored before the kill: answered %+v; want an ack or stale_seq", p.name, f.seq, m)
				}
				t.Logf("%s: resent move %d answered %s %s", p.name, f.seq, m.Type, m.Code)
			}
		} else {
			seq := last.seq + 1
			to := pick(last.end)
			path := []uint32{graph.ID(last.end), graph.ID(to)}
			p.w.sock.send(moveJSON(seq, path...))
			m := p.w.sock.next(30 * time.Second)
			if m.Seq != seq || m.Type != "ack" {
				record(p, seq, path, m)
				t.Fatalf("%s's move %d from node %d, where its move %d (stored before the kill, never answered) ended: answered %+v; "+
					"SPEC: the stored move is the player's last accepted one, so this move is continuous and must be accepted",
					p.name, seq, graph.ID(last.end), last.seq, m)
			}
			record(p, seq, path, m)
			last = flightMove{seq: seq, path: path, end: to}
		}
		p.w.seq, p.w.at, p.w.spawn = last.seq, last.end, false
	}
	for _, p := range ps {
		walk(p, walkAfter)
	}

	// OUT: one result per (player, seq) in effect, on the stored path's
	// end, none for anything else; one claim per treasure of a move in
	// flight, by that move.
	want := 0
	for _, e := range effect {
		want += len(e)
	}
	var out outLog
	testenv.WaitUntil(t, 60*time.Second, fmt.Sprintf("%d proximity results on OUT", want), func() bool {
		out = readOut(t, c.js, c.topo)
		return len(out.prox) >= want
	})
	for name, e := range effect {
		for seq, o := range e {
			key := fmt.Sprintf("%s/%d", name, seq)
			r, ok := out.prox[key]
			if !ok {
				t.Errorf("%s: no proximity result on OUT for a move in effect", key)
				continue
			}
			var node uint32
			if _, err := fmt.Sscanf(r, "node %d", &node); err != nil || node != o.path[len(o.path)-1] {
				t.Errorf("%s: result %q, want node %d (end of %v)", key, r, o.path[len(o.path)-1], o.path)
			}
		}
	}
	for key := range out.prox {
		name, seq, _ := strings.Cut(key, "/")
		var s uint64
		fmt.Sscan(seq, &s)
		if _, ok := effect[name][s]; !ok {
			t.Errorf("%s: a proximity result on OUT for a move never acked nor stored", key)
		}
	}
	for _, key := range errored {
		name, seq, _ := strings.Cut(key, "/")
		var s uint64
		fmt.Sscan(seq, &s)
		if _, ok := effect[name][s]; !ok {
			if _, ok := out.prox[key]; ok {
				t.Errorf("%s: answered with an error, yet it has a result on OUT", key)
			}
		}
	}
	for _, p := range ps {
		for _, f := range p.flight {
			want := fmt.Sprintf("%s/%d +%d", p.name, f.seq, points[f.treasure])
			if got := out.claims[f.treasure]; got != want {
				t.Errorf("treasure %s (under move %s/%d, stored before the kill): claim %q, want %q", f.treasure, p.name, f.seq, got, want)
			}
		}
	}
	if len(out.claims) != len(points) {
		t.Errorf("OUT holds %d claims, want the %d of the moves in flight", len(out.claims), len(points))
	}

	// PostgreSQL: each player's score is the points of its claims.
	wantScore := map[string]int64{}
	for id, cl := range out.claims {
		name, _, _ := strings.Cut(cl, "/")
		wantScore[name] += points[id]
	}
	testenv.WaitUntil(t, 60*time.Second, "PostgreSQL's scores equal to the points claimed", func() bool {
		for name, s := range wantScore {
			if c.d.score(name) != s {
				return false
			}
		}
		return true
	})
	rep := faults.LogAgrees(t, faults.Live{
		Graph: g, Part: c.part(t), Radius: c.d.radius, Topology: c.topo, JS: c.js,
		Postgres: c.pool, Redis: c.rdb, RedisPrefix: c.topo.Prefix + ":",
	}, 60*time.Second)
	t.Logf("%d moves in effect, %d error answers, %d claims; a replay of the log agrees: %d claims, %d players", want, len(errored), len(out.claims), rep.Claims, rep.Players)
}

// flightMove is a move sent while JetStream's answers were held back.
type flightMove struct {
	seq      uint64
	path     []uint32 // wire ids
	end      uint32   // graph index of the path's last node
	treasure string   // the treasure dropped on end
}

// inMoves counts the moves in the IN stream by "player/seq".
func inMoves(t *testing.T, js jetstream.JetStream, topo natsjs.Topology) map[string]int {
	t.Helper()
	got := map[string]int{}
	var rd event.Reader
	var mv event.Move
	err := natsjs.Replay(context.Background(), js, natsjs.ReplayOptions{Stream: topo.InStream(), MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := rd.Reset(m.Data); err != nil {
				return err
			}
			for rd.Next() {
				if rd.Kind() != event.KindMove {
					continue
				}
				if err := rd.Move(&mv); err != nil {
					return err
				}
				got[fmt.Sprintf("%s/%d", mv.Player, mv.Seq)]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
