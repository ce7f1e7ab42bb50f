package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/testenv"
)

// outLog is what a run published on OUT: proximity results by player/seq,
// claims by treasure.
type outLog struct {
	prox   map[string]string
	claims map[string]string
}

func readOut(t *testing.T, js jetstream.JetStream, topo natsjs.Topology) outLog {
	t.Helper()
	o, err := readOutErr(js, topo)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// readOutErr is readOut returning what it found wrong (a result or claim
// twice, an unreadable message) with what it read up to there.
func readOutErr(js jetstream.JetStream, topo natsjs.Topology) (outLog, error) {
	o := outLog{prox: map[string]string{}, claims: map[string]string{}}
	// Where each result and claim was read, for a failure's message: a
	// double claim or result is told apart by the OUT messages holding it.
	where := map[string]string{}
	var b eventpb.Batch
	err := natsjs.Replay(context.Background(), js, natsjs.ReplayOptions{Stream: topo.OutStream(), MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := event.Decode(m.Data, &b); err != nil {
				return err
			}
			for _, ev := range b.Events {
				at := fmt.Sprintf("OUT seq %d (%s, id %s, stored %s)", m.Seq, m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Time.Format("15:04:05.000"))
				if p := ev.GetProximity(); p != nil {
					key := fmt.Sprintf("%s/%d", p.Player, p.Seq)
					if _, dup := o.prox[key]; dup {
						return fmt.Errorf("two proximity results for %s: %s and %s", key, where["p"+key], at)
					}
					o.prox[key] = fmt.Sprintf("node %d treasure %v", p.Node, p.Treasure)
					where["p"+key] = at
				}
				if c := ev.GetClaim(); c != nil {
					claim := fmt.Sprintf("%s/%d +%d", c.Player, c.Seq, c.Points)
					if first, dup := o.claims[c.Treasure]; dup {
						return fmt.Errorf("treasure %s claimed twice: by %s in %s, and by %s in %s", c.Treasure, first, where["c"+c.Treasure], claim, at)
					}
					o.claims[c.Treasure] = claim
					where["c"+c.Treasure] = at
				}
			}
		}
		return nil
	})
	return o, err
}

// quiet waits until the ranker has consumed everything on OUT and OUT
// holds want proximity results.
func quiet(t *testing.T, p inproc, want int) outLog {
	t.Helper()
	var o outLog
	testenv.WaitUntil(t, 60*time.Second, fmt.Sprintf("%d proximity results and an idle ranker", want), func() bool {
		o = readOut(t, p.js, p.topo)
		if len(o.prox) < want {
			return false
		}
		c, err := p.js.Consumer(context.Background(), p.topo.OutStream(), p.st.Ranker.Durable())
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	return o
}

// TestReplayReproducesTheRun: simulated players walk a city full of
// treasures; then the run's log (the IN stream) is copied into fresh
// streams and replayed by a fresh pipeline with empty Redis and
// PostgreSQL. The replay gives the same proximity results, the same
// claims, and the same scores and ranks (SPEC "Determinism").
func TestReplayReproducesTheRun(t *testing.T) {
	t.Parallel()
	live := startInProcess(t, 2)
	g := live.d.g
	admin := live.d.token(t, "admin", "admin")
	r := rand.New(rand.NewPCG(5, 5))
	var b strings.Builder
	b.WriteString(`{"treasures":[`)
	for i := 0; i < 3000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"r%d","node":%d,"points":%d}`, i, graph.ID(uint32(r.IntN(g.NumNodes()))), 1+r.IntN(3))
	}
	b.WriteString(`]}`)
	if code, body := postJSON(t, live.d.ingest+"/v1/admin/drops", admin, b.String()); code != 202 {
		t.Fatalf("drop: %d %s", code, body)
	}
	var final loadgen.Stats
	err := loadgen.Run(context.Background(), loadgen.Options{
		IngestURL: ws(live.d.ingest), PushURL: ws(live.d.push), Graph: g, Players: 25, MovesPerSecond: 10,
		Secret: secret, PlayerPrefix: "replay-", Seed: 3, Duration: 5 * time.Second,
	}, func(s loadgen.Stats) {
		if s.Final {
			final = s
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if final.TotalMoves < 200 || final.Gaps != 0 || final.Duplicates != 0 {
		t.Fatalf("live run: %d moves accepted, %d gaps, %d duplicate updates", final.TotalMoves, final.Gaps, final.Duplicates)
	}
	liveOut := quiet(t, live, int(final.TotalMoves))
	if len(liveOut.claims) == 0 {
		t.Fatal("no treasure was claimed: the run does not exercise claims")
	}

	// Replay: copy the log, then start a fresh pipeline on it.
	replay := startInProcessWith(t, 2, func(topo natsjs.Topology, js jetstream.JetStream) {
		err := natsjs.Replay(context.Background(), live.js, natsjs.ReplayOptions{Stream: live.topo.InStream(), MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				subject := topo.Prefix + strings.TrimPrefix(m.Subject, live.topo.Prefix)
				if _, err := js.Publish(ctx, subject, m.Data); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	replayOut := quiet(t, replay, len(liveOut.prox))

	for k, v := range liveOut.prox {
		if replayOut.prox[k] != v {
			t.Fatalf("move %s: live %s, replay %s", k, v, replayOut.prox[k])
		}
	}
	if len(replayOut.prox) != len(liveOut.prox) {
		t.Fatalf("%d results live, %d replayed", len(liveOut.prox), len(replayOut.prox))
	}
	for k, v := range liveOut.claims {
		if replayOut.claims[k] != v {
			t.Fatalf("treasure %s: live claim %s, replay %s", k, v, replayOut.claims[k])
		}
	}
	if len(replayOut.claims) != len(liveOut.claims) {
		t.Fatalf("%d claims live, %d replayed", len(liveOut.claims), len(replayOut.claims))
	}
	// Scores and ranks, player by player, from each run's PostgreSQL.
	board := func(p inproc) map[string]string {
		top, players, err := pgstore.New(p.pool).Leaderboard(context.Background(), 1000)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{"#players": fmt.Sprint(players)}
		for _, e := range top {
			m[e.Player] = fmt.Sprintf("score %d rank %d", e.Score, e.Rank)
		}
		return m
	}
	lb, rb := board(live), board(replay)
	if fmt.Sprint(lb) != fmt.Sprint(rb) {
		t.Fatalf("final leaderboards differ:\nlive   %v\nreplay %v", lb, rb)
	}
	t.Logf("%d moves, %d claims, %d scoring players reproduced", len(liveOut.prox), len(liveOut.claims), len(lb)-1)
}
