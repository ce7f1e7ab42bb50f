package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// hopHistograms are the per-hop latency histograms (docs/operations.md);
// each counts at least one observation per move that reached a socket.
var hopHistograms = []string{
	"treasure_ingest_hop_received_to_published_seconds",
	"treasure_proximity_hop_log_wait_seconds",
	"treasure_proximity_hop_consumed_to_result_seconds",
	"treasure_push_hop_result_to_consumed_seconds",
	"treasure_push_hop_result_to_sent_seconds",
	"treasure_push_hop_received_to_sent_seconds",
}

// TestHopTimestamps: players walk with their push sockets open; every hop
// histogram of every service counts every move, and the hop timestamps of
// each proximity result read back from the streams are in pipeline order:
// ingest received ≤ published (the IN message's JetStream timestamp, which
// the result batch copies) ≤ proximity consumed ≤ result published (the
// OUT message's JetStream timestamp) ≤ the client's receipt of the update
// (after push sent it).
func TestHopTimestamps(t *testing.T) {
	t.Parallel()
	const (
		players = 4
		perMove = 8
	)
	p := startInProcess(t, 2)
	g := p.d.g

	// Every round, each player sends one move, then every ack and update
	// is awaited: several players' moves share batches, as under load.
	type player struct {
		id          string
		push, moves *socket
		at          uint32
	}
	ps := make([]*player, players)
	for i := range ps {
		id := fmt.Sprintf("hops-%d", i)
		tok := p.d.token(t, id, "")
		ps[i] = &player{id: id, push: dial(t, ws(p.d.push)+"/v1/updates/ws", tok),
			moves: dial(t, ws(p.d.ingest)+"/v1/moves/ws", tok), at: uint32(1000 + 7919*i)}
	}
	// received[player/seq] is when the test client read the update.
	received := map[string]int64{}
	for seq := uint64(1); seq <= perMove; seq++ {
		for _, pl := range ps {
			path := []uint32{graph.ID(pl.at)}
			if seq > 1 {
				arcs := g.Neighbors(pl.at)
				pl.at = arcs[int(seq)%len(arcs)].To
				path = append(path, graph.ID(pl.at))
			}
			pl.moves.send(moveJSON(seq, path...))
		}
		for _, pl := range ps {
			if ack := pl.moves.next(20 * time.Second); ack.Type != "ack" || ack.Seq != seq {
				t.Fatalf("%s move %d: got %+v, want its ack", pl.id, seq, ack)
			}
			pl.push.until(20*time.Second, func(m msg) bool { return m.Type == "proximity" && m.Seq == seq })
			received[fmt.Sprintf("%s/%d", pl.id, seq)] = time.Now().UnixNano()
		}
	}
	const moves = players * perMove

	// Every hop histogram counted every move. The last observations may
	// trail the updates the clients read (push observes after its write
	// returns, proximity after its publish is acked): poll.
	counts := map[string]uint64{}
	testenv.WaitUntil(t, 20*time.Second, "every hop histogram counting every move", func() bool {
		mfs, err := p.st.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		clear(counts)
		for _, mf := range mfs {
			if mf.GetType() == dto.MetricType_HISTOGRAM && strings.Contains(mf.GetName(), "_hop_") {
				for _, m := range mf.GetMetric() {
					counts[mf.GetName()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
		for _, name := range hopHistograms {
			if counts[name] < moves {
				return false
			}
		}
		return true
	})
	for name, n := range counts {
		t.Logf("%s: %d observations", name, n)
	}

	// The timestamps on the events read back from the streams.
	ctx := context.Background()
	in, err := p.js.Stream(ctx, p.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	var b eventpb.Batch
	checked := 0
	err = natsjs.Replay(ctx, p.js, natsjs.ReplayOptions{Stream: p.topo.OutStream(), MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if err := event.Decode(m.Data, &b); err != nil {
				return err
			}
			published, consumed, result := b.InputPublishedUnixNanos, b.InputConsumedUnixNanos, m.Time.UnixNano()
			for _, ev := range b.Events {
				r := ev.GetProximity()
				if r == nil {
					continue
				}
				key := fmt.Sprintf("%s/%d", r.Player, r.Seq)
				sent, ok := received[key]
				if !ok {
					t.Errorf("result for %s, a move no client made", key)
					continue
				}
				checked++
				// The published time is the IN message's own timestamp.
				raw, err := in.GetMsg(ctx, r.GetMove().GetStreamSeq())
				if err != nil {
					return fmt.Errorf("IN message %d: %w", r.GetMove().GetStreamSeq(), err)
				}
				if !raw.Time.Equal(time.Unix(0, published)) {
					t.Errorf("%s: batch says its input was published at %d, the IN message was stored at %d", key, published, raw.Time.UnixNano())
				}
				stamps := []int64{r.IngestUnixNanos, published, consumed, result, sent}
				for i := 1; i < len(stamps); i++ {
					if stamps[i-1] <= 0 || stamps[i-1] > stamps[i] {
						t.Errorf("%s: hop timestamps out of order (received, published, consumed, result, client): %v", key, stamps)
						break
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked != moves {
		t.Fatalf("checked the hops of %d results, want %d", checked, moves)
	}
}
