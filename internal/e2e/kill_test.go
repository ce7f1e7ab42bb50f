package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"treasure/internal/faults"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/services/proximity"
)

// killRounds is how many times TestProcessKillEachService kills every
// service: 1 in CI; TREASURE_FAULTS_LONG=1 (make faults-long) makes it 3.
func killRounds() int {
	if os.Getenv("TREASURE_FAULTS_LONG") != "" {
		return 3
	}
	return 1
}

// TestProcessKillEachService (issue 9, faults under load): simulated
// players walk a city full of treasures while each service process in turn
// — proximity (partition 0), ranker, ingest, push — is SIGKILLed (no
// drain, no ack, no flush) and a new one started with the same flags on
// the same address. Before its kill a consumer (proximity, ranker) is
// frozen (SIGSTOP) until JetStream has delivered it messages it has not
// acked, so that the kill always leaves work in flight; ingest is frozen
// a moment with moves arriving, so that moves are in its socket buffers
// and batches. The players reconnect and resend as SPEC says (a dropped
// ingest socket: the move in flight again, stale_seq meaning it was
// stored; a dropped push socket: ?after= its last id). Load continues
// after every restart.
//
// Then: every accepted move got exactly one proximity update (push ids
// without gaps across two push instances); OUT holds exactly one result
// per (player, seq), in per-player runs from seq 1, and at most one claim
// per treasure; PostgreSQL holds the points of exactly those claims; and
// the claims, scores, ranks and leaderboard in OUT, PostgreSQL and Redis
// equal a replay of the IN stream (faults.LogAgrees, `treasure replay
// --verify`).
func TestProcessKillEachService(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	g := c.d.g

	// Treasures on every 10th node: with some 1000 moves, claims are sure.
	points := map[string]int64{}
	var b strings.Builder
	b.WriteString(`{"treasures":[`)
	for v := 0; v < g.NumNodes(); v += 10 {
		id := fmt.Sprintf("k%d", v)
		points[id] = int64(1 + v%7)
		if len(points) > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%q,"node":%d,"points":%d}`, id, graph.ID(uint32(v)), points[id])
	}
	b.WriteString(`]}`)
	if code, body := postJSON(t, c.d.ingest+"/v1/admin/drops", c.d.token(t, "admin", "admin"), b.String()); code != 202 || strings.TrimSpace(body) != fmt.Sprintf(`{"accepted":%d}`, len(points)) {
		t.Fatalf("drop of %d treasures: %d %s", len(points), code, body)
	}

	const players = 20
	wk := startWalkers(t, loadgen.Options{
		IngestURL: ws(c.d.ingest), PushURL: ws(c.d.push), Graph: g,
		Players: players, MovesPerSecond: 4, Secret: secret, PlayerPrefix: "walker-", Seed: 11,
		Drain: 45 * time.Second,
	})
	wk.progress(t, "walkers under way", 100)

	type kill struct {
		name    string
		unacked int // messages delivered to it and not acked, at the kill
		at      uint64
	}
	var kills []kill
	for round := range killRounds() {
		for _, victim := range []**proc{&c.prox[0], &c.ranker, &c.ingest, &c.push} {
			p := *victim
			k := kill{name: p.name, at: wk.accepted.Load()}
			switch victim {
			case &c.prox[0]:
				k.unacked = c.freezeUntilUnacked(p, c.topo.InStream(), proximity.Durable(c.topo, 0))
			case &c.ranker:
				k.unacked = c.freezeUntilUnacked(p, c.topo.OutStream(), c.topo.Prefix+"-ranker")
			case &c.ingest:
				// Moves keep arriving at a frozen ingest: they wait in its
				// sockets and batches, and the kill drops them unanswered.
				if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
			}
			p.kill(t)
			name := strings.TrimSuffix(p.name, " (restarted)")
			*victim = c.startAt(name+" (restarted)", p.addrVar, p.addr, p.args...)
			c.waitReady(*victim)
			kills = append(kills, k)
			wk.progress(t, fmt.Sprintf("moves accepted after %s's restart (round %d)", name, round+1), 60)
		}
	}
	for _, k := range kills {
		t.Logf("killed %s at %d moves accepted (%d messages delivered to it and not acked)", k.name, k.at, k.unacked)
	}
	final := wk.finish(t)
	// Sockets dropped by a kill, dials refused while a service was down,
	// and acks that never came from a killed ingest are the faults
	// themselves; any other error (a SPEC code) is not.
	for code, n := range final.Errors {
		switch code {
		case "closed", "dial", "ack_timeout", "unavailable":
		default:
			t.Errorf("loadgen: %d × %s", n, code)
		}
	}
	for _, p := range []*proc{c.prox[0], c.ranker, c.ingest, c.push} {
		if !strings.HasSuffix(p.name, "(restarted)") {
			t.Fatalf("%s was never restarted", p.name)
		}
	}
	if n := metric(t, c.prox[0], "treasure_proximity_moves_total"); n == 0 {
		t.Error("the restarted proximity process evaluated no move")
	}

	// OUT: readOut fails on a second result for a move or a second claim
	// of a treasure; every walker's seqs 1..n have a result, and nothing
	// else does.
	out := readOut(t, c.js, c.topo)
	contiguous := 0
	for i := 0; i < players; i++ {
		for seq := 1; ; seq++ {
			if _, ok := out.prox[fmt.Sprintf("walker-%d/%d", i, seq)]; !ok {
				break
			}
			contiguous++
		}
	}
	if uint64(len(out.prox)) != final.TotalMoves || contiguous != len(out.prox) {
		t.Fatalf("OUT holds %d proximity results (%d in per-player runs from seq 1) for %d accepted moves",
			len(out.prox), contiguous, final.TotalMoves)
	}
	if len(out.claims) == 0 {
		t.Fatal("no treasure was claimed: the run does not exercise claims")
	}
	if uint64(len(out.claims)) != final.Claims {
		t.Fatalf("OUT holds %d claims, the players received %d", len(out.claims), final.Claims)
	}
	scoresMatchClaims(t, c.pool, out, points, 60*time.Second)
	rep := faults.LogAgrees(t, faults.Live{
		Graph: g, Part: c.part(t), Radius: c.d.radius, Topology: c.topo, JS: c.js,
		Postgres: c.pool, Redis: c.rdb, RedisPrefix: c.topo.Prefix + ":",
	}, 60*time.Second)
	t.Logf("a replay of the log agrees with OUT, PostgreSQL and Redis: %d claims, %d players, %d with a score", rep.Claims, rep.Players, rep.Scoring)
}

// freezeUntilUnacked stops p (SIGSTOP) until JetStream has delivered it
// messages of its durable consumer that it has not acked, and returns how
// many. A freeze that lands between two pull requests sees no delivery
// (the frozen process asks for nothing): then p is thawed briefly and
// frozen again. p is left frozen, for a kill.
func (c *cluster) freezeUntilUnacked(p *proc, stream, durable string) int {
	t := c.t
	t.Helper()
	cons, err := c.js.Consumer(context.Background(), stream, durable)
	if err != nil {
		t.Fatalf("%s's consumer %s: %v", p.name, durable, err)
	}
	for attempt := range 10 {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if info, err := cons.Info(context.Background()); err == nil && info.NumAckPending > 0 {
				return info.NumAckPending
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+attempt*37) * time.Millisecond)
	}
	t.Fatalf("no message was ever delivered to a frozen %s and left unacked (10 freezes of 3 s)", p.name)
	return 0
}

// part is the partition assignment the processes computed.
func (c *cluster) part(t *testing.T) []uint32 {
	t.Helper()
	part, err := graph.Partition(c.d.g, c.topo.Partitions)
	if err != nil {
		t.Fatal(err)
	}
	return part
}
