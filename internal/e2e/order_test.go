package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"treasure/internal/graph"
	"treasure/internal/ratelimit"
	"treasure/internal/stack/stacktest"
)

// TestUpdatesComeInMoveOrderAcrossPartitions: players walk back and forth
// over edges whose ends lie in different partitions, so their consecutive
// moves go to different proximity workers, with many moves in flight
// (open loop: a burst of moves is written before its acks are read). Every
// player's proximity updates come in move order, one per move, with ids
// 1, 2, 3, … (SPEC: "per player in move order").
func TestUpdatesComeInMoveOrderAcrossPartitions(t *testing.T) {
	t.Parallel()
	const (
		partitions = 2
		players    = 8
		moves      = 240
		burst      = 40
	)
	p := startInProcessConf(t, partitions, nil, func(o *stacktest.Options) {
		o.RateLimit = ratelimit.Limit{Rate: 1e6, Burst: 1 << 20}
	})
	g := p.d.g
	part, err := graph.Partition(g, partitions)
	if err != nil {
		t.Fatal(err)
	}
	// Edges across the cut, one per player.
	type edge struct{ a, b uint32 }
	var edges []edge
	for v := uint32(0); v < uint32(g.NumNodes()) && len(edges) < players; v++ {
		for _, arc := range g.Neighbors(v) {
			if part[arc.To] != part[v] && len(g.Neighbors(arc.To)) > 0 {
				edges = append(edges, edge{v, arc.To})
				break
			}
		}
	}
	if len(edges) < players {
		t.Fatalf("found %d edges across the partitions, want %d", len(edges), players)
	}

	var wg sync.WaitGroup
	for i := 0; i < players; i++ {
		player := fmt.Sprintf("walker-%d", i)
		e := edges[i]
		tok := p.d.token(t, player, "")
		updates := dial(t, ws(p.d.push)+"/v1/updates/ws?after=0", tok)
		sock := dial(t, ws(p.d.ingest)+"/v1/moves/ws", tok)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Move 1 spawns on a; then a→b, b→a, …: the last node
			// alternates between the two partitions.
			at, other := e.a, e.b
			for seq := uint64(1); seq <= moves; {
				n := 0
				for ; n < burst && seq+uint64(n) <= moves; n++ {
					s := seq + uint64(n)
					if s == 1 {
						sock.send(moveJSON(s, graph.ID(at)))
						continue
					}
					sock.send(moveJSON(s, graph.ID(at), graph.ID(other)))
					at, other = other, at
				}
				for k := 0; k < n; k++ {
					ack := sock.next(30 * time.Second)
					if ack.Type != "ack" || ack.Seq != seq+uint64(k) {
						t.Errorf("%s: got %+v, want the ack of move %d", player, ack, seq+uint64(k))
						return
					}
				}
				seq += uint64(n)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var id, seq uint64
			for seq < moves {
				m := updates.next(60 * time.Second)
				if m.Type == "leaderboard" {
					continue
				}
				if m.ID != id+1 {
					t.Errorf("%s: update id %d after %d", player, m.ID, id)
					return
				}
				id = m.ID
				if m.Type != "proximity" {
					continue
				}
				if m.Seq != seq+1 {
					t.Errorf("%s: proximity update for move %d after move %d's", player, m.Seq, seq)
					return
				}
				seq = m.Seq
			}
		}()
	}
	wg.Wait()
}
