package push

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"treasure/internal/event/eventpb"
)

// ckptWorkload is a log of OUT events for players who move through two
// partitions: results and claims out of move order (some predecessors
// never come, forcing releases), scores and leaderboards.
func ckptWorkload(seed uint64, n int) []*eventpb.Event {
	r := rand.New(rand.NewPCG(seed, 1))
	players := []string{"ann", "bob", "cy", "dee", "eve"}
	seq := map[string]uint64{}
	var pending []*eventpb.Event
	var out []*eventpb.Event
	for len(out) < n {
		p := players[r.IntN(len(players))]
		prev := seq[p]
		seq[p] = prev + 1 + uint64(r.IntN(2))
		var ev *eventpb.Event
		switch r.IntN(6) {
		case 0:
			ev = claimPrev(p, seq[p], prev, fmt.Sprintf("T%d", len(out)))
		default:
			ev = proxPrev(p, seq[p], prev)
			if r.IntN(4) == 0 {
				pr := ev.GetProximity()
				pr.Treasure = &eventpb.NearestTreasure{Id: "gold", Node: 9, Distance: uint64(r.IntN(50))}
			}
		}
		if r.IntN(80) == 0 {
			continue // lost: its successors are held until forced out
		}
		pending = append(pending, ev)
		if r.IntN(3) == 0 || len(pending) > 3 {
			i := r.IntN(len(pending)) // a later one overtakes
			out = append(out, pending[i])
			pending = append(pending[:i], pending[i+1:]...)
		}
		switch r.IntN(10) {
		case 0:
			out = append(out, score(p, uint64(len(out)), uint64(1+r.IntN(5))))
		case 1:
			out = append(out, board(uint64(len(out)), row(p, uint64(len(out)), 1)))
		}
	}
	return out
}

// checkpointOf feeds evs to a new Server and returns it and its
// checkpoint, at position seq.
func checkpointOf(tb testing.TB, ring int, seq uint64, evs []*eventpb.Event) (*Server, []byte) {
	tb.Helper()
	s := feedServer()
	s.hub.ringSize = ring
	feed(tb, s, 7, evs)
	s.applied.Store(seq)
	_, data := s.checkpointData()
	return s, data
}

// TestCheckpointRoundTrip: a hub restored from a checkpoint at any point
// of the log and then fed the rest holds exactly the state (ids, rings,
// held updates and order state, leaderboard) of one fed the whole log,
// and delivers the same updates.
func TestCheckpointRoundTrip(t *testing.T) {
	const ring = 16
	evs := ckptWorkload(uint64(t.Name()[0]), 1500)
	whole, want := checkpointOf(t, ring, uint64(len(evs)), evs)
	for _, cut := range []int{0, 1, 37, 400, 999, 1499, 1500} {
		_, data := checkpointOf(t, ring, uint64(cut), evs[:cut])
		s := feedServer()
		s.hub.ringSize = ring
		fs, err := readCheckpoint(data, s.hub)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if fs.seq != uint64(cut) {
			t.Fatalf("cut %d: checkpoint says seq %d", cut, fs.seq)
		}
		s.restore(fs)
		// Re-encoding the restored state gives the same bytes.
		if _, again := s.checkpointData(); !bytes.Equal(again, data) {
			t.Fatalf("cut %d: restored state re-encodes differently", cut)
		}
		feed(t, s, 5, evs[cut:])
		s.applied.Store(uint64(len(evs)))
		if _, got := s.checkpointData(); !bytes.Equal(got, want) {
			t.Fatalf("cut %d: restored+tail state differs from the whole log's (%d vs %d bytes)", cut, len(got), len(want))
		}
		for _, p := range []string{"ann", "bob", "cy", "dee", "eve"} {
			if a, b := s.hub.nextID(p), whole.hub.nextID(p); a != b || a < 10 {
				t.Fatalf("cut %d: %s next id %d, whole log %d", cut, p, a, b)
			}
			if a, b := fmt.Sprint(delivered(t, s, p)), fmt.Sprint(delivered(t, whole, p)); a != b {
				t.Fatalf("cut %d: %s ring\n%s\nwhole log\n%s", cut, p, a, b)
			}
		}
		if a, b := s.hub.latest.Load(), whole.hub.latest.Load(); (a == nil) != (b == nil) || a != nil && !bytes.Equal(a.msg, b.msg) {
			t.Fatalf("cut %d: latest leaderboard differs", cut)
		}
	}
	if forced := counter(t, whole.hub.order.forced); forced == 0 {
		t.Fatalf("the workload forced no release: it does not exercise the order state")
	}
}

// TestCheckpointDamageRefused: every truncation and every flipped byte of
// a checkpoint is an error naming the problem, not a state.
func TestCheckpointDamageRefused(t *testing.T) {
	evs := ckptWorkload(7, 300)
	_, data := checkpointOf(t, 8, 300, evs)
	check := func(what string, b []byte) {
		t.Helper()
		s := feedServer()
		_, err := readCheckpoint(b, s.hub)
		if err == nil {
			t.Fatalf("%s: accepted", what)
		}
		if !errors.Is(err, ErrCheckpointTruncated) && !errors.Is(err, ErrCheckpointCorrupt) &&
			!errors.Is(err, ErrNotCheckpoint) && !errors.Is(err, ErrCheckpointVersion) {
			t.Fatalf("%s: error %v wraps none of the checkpoint errors", what, err)
		}
	}
	for n := 0; n < len(data); n++ {
		check(fmt.Sprintf("truncated to %d of %d bytes", n, len(data)), data[:n])
	}
	check("a byte appended", append(bytes.Clone(data), 0))
	for i := range data {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(data)
			b[i] ^= bit
			check(fmt.Sprintf("byte %d ^%#x", i, bit), b)
		}
	}
	s := feedServer()
	if _, err := readCheckpoint(data, s.hub); err != nil {
		t.Fatalf("undamaged: %v", err)
	}
}
