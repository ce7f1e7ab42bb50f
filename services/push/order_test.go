package push

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/testenv"
)

// Events as proximity writes them since schema revision 4: with prev_seq.

func proxPrev(player string, seq, prev uint64) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: player, Seq: seq, Node: uint32(seq), PrevSeq: prev}}}
}

func claimPrev(player string, seq, prev uint64, treasure string) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: player, Seq: seq, Treasure: treasure, Points: 5, PrevSeq: prev}}}
}

// feedServer is a Server with a hub and no NATS, fed batches by apply.
func feedServer() *Server {
	s := &Server{o: Options{Log: testLog()}, m: newMetrics(nil, nil)}
	s.hub = newHub(DefaultRingSize, DefaultMaxSockets)
	return s
}

// feed applies evs to s, cut into batches of at most per events.
func feed(tb testing.TB, s *Server, per int, evs []*eventpb.Event) {
	tb.Helper()
	for len(evs) > 0 {
		n := min(per, len(evs))
		data, err := event.AppendBatch(nil, evs[:n])
		if err != nil {
			tb.Fatal(err)
		}
		s.apply(data)
		evs = evs[n:]
	}
}

// delivered returns the JSON of every update player got, in id order,
// from the resume ring (which holds them in the order they went out).
func delivered(tb testing.TB, s *Server, player string) []string {
	tb.Helper()
	sh := s.hub.shard(player)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p := sh.players[player]
	if p == nil {
		return nil
	}
	recs, first := p.ring.since(0, p.next-1)
	var out []string
	eachRecord(recs, func(rec []byte) bool {
		b, ok := recordJSON(nil, first, rec)
		if !ok {
			tb.Fatalf("bad record %x", rec)
		}
		out = append(out, string(b))
		first++
		return true
	})
	return out
}

// outOfOrder is alice's moves 1…6 as two partitions' workers might have
// interleaved them in P_OUT: 2 (claiming T2, then its score from the
// ranker) before 1, 4 before 3, 6 before 5; bob's one update in between.
func outOfOrder() []*eventpb.Event {
	return []*eventpb.Event{
		claimPrev("alice", 2, 1, "T2"),
		proxPrev("alice", 2, 1),
		score("alice", 5, 1),
		proxPrev("bob", 7, 6),
		proxPrev("alice", 1, 0),
		proxPrev("alice", 4, 3),
		proxPrev("alice", 3, 2),
		proxPrev("alice", 6, 5),
		proxPrev("alice", 5, 4),
	}
}

var inMoveOrder = []string{
	`{"type":"proximity","id":1,"seq":1,"node":1,"treasure":null}`,
	`{"type":"claim","id":2,"seq":2,"treasure":"T2","points":5}`,
	`{"type":"proximity","id":3,"seq":2,"node":2,"treasure":null}`,
	`{"type":"score","id":4,"score":5,"rank":1}`,
	`{"type":"proximity","id":5,"seq":3,"node":3,"treasure":null}`,
	`{"type":"proximity","id":6,"seq":4,"node":4,"treasure":null}`,
	`{"type":"proximity","id":7,"seq":5,"node":5,"treasure":null}`,
	`{"type":"proximity","id":8,"seq":6,"node":6,"treasure":null}`,
}

func TestOutOfOrderResultsAreDeliveredInMoveOrder(t *testing.T) {
	// However P_OUT is cut into batches, every instance gives the same
	// updates the same ids, in move order.
	for _, per := range []int{1, 2, 3, 100} {
		s := feedServer()
		feed(t, s, per, outOfOrder())
		got := delivered(t, s, "alice")
		if strings.Join(got, "\n") != strings.Join(inMoveOrder, "\n") {
			t.Fatalf("batches of %d: alice got\n%s\nwant\n%s", per, strings.Join(got, "\n"), strings.Join(inMoveOrder, "\n"))
		}
		// bob's first update seen has prev_seq 6 > 0: held, alone, until
		// MaxHeld more or its predecessor comes.
		if got := delivered(t, s, "bob"); len(got) != 0 {
			t.Fatalf("bob got %v, want nothing yet (waiting for move 6)", got)
		}
		if c := counter(t, s.hub.order.held); c != 6 {
			t.Fatalf("held counter %v, want 6 (alice's claim 2, result 2, score, 4, 6; bob's 7)", c)
		}
		if c := counter(t, s.hub.order.forced); c != 0 {
			t.Fatalf("forced releases %v, want 0", c)
		}
	}
}

// Results without prev_seq (logs older than revision 4) keep P_OUT order.
func TestResultsWithoutPrevSeqKeepOutOrder(t *testing.T) {
	s := feedServer()
	feed(t, s, 2, []*eventpb.Event{proxPrev("carol", 2, 0), proxPrev("carol", 1, 0), proxPrev("carol", 3, 0)})
	got := strings.Join(delivered(t, s, "carol"), "\n")
	want := `{"type":"proximity","id":1,"seq":2,"node":2,"treasure":null}
{"type":"proximity","id":2,"seq":1,"node":1,"treasure":null}
{"type":"proximity","id":3,"seq":3,"node":3,"treasure":null}`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// A predecessor that never comes holds the player's updates until more
// than MaxHeld are held; then they all go, in move order, past the gap.
func TestMissingPredecessorIsPassedAfterMaxHeld(t *testing.T) {
	s := feedServer()
	evs := []*eventpb.Event{proxPrev("dave", 1, 0)}
	// Move 2 was lost; 3…(3+MaxHeld) arrive, and 2 of them out of order.
	for seq := uint64(3); seq <= 3+MaxHeld; seq++ {
		evs = append(evs, proxPrev("dave", seq, seq-1))
	}
	evs[5], evs[6] = evs[6], evs[5]
	feed(t, s, 7, evs[:len(evs)-1])
	if got := delivered(t, s, "dave"); len(got) != 1 {
		t.Fatalf("with %d held, dave got %d updates, want 1", MaxHeld, len(got))
	}
	feed(t, s, 7, evs[len(evs)-1:])
	got := delivered(t, s, "dave")
	if len(got) != 2+MaxHeld {
		t.Fatalf("dave got %d updates, want %d", len(got), 2+MaxHeld)
	}
	for i, g := range got {
		seq := uint64(i + 1)
		if i > 0 {
			seq++ // 2 never came
		}
		if w := fmt.Sprintf(`{"type":"proximity","id":%d,"seq":%d,"node":%d,"treasure":null}`, i+1, seq, seq); g != w {
			t.Fatalf("update %d is %s, want %s", i+1, g, w)
		}
	}
	if c := counter(t, s.hub.order.forced); c != 1 {
		t.Fatalf("forced releases %v, want 1", c)
	}
	// Nothing is held any more: the next move goes at once.
	feed(t, s, 1, []*eventpb.Event{proxPrev("dave", 4+MaxHeld, 3+MaxHeld)})
	if got := delivered(t, s, "dave"); len(got) != 3+MaxHeld {
		t.Fatalf("dave got %d updates, want %d", len(got), 3+MaxHeld)
	}
}

// TestResumeAcrossAHeldUpdate: on the real feed, a socket resuming with
// ?after= while a result is held gets it, with its id, once its
// predecessor arrives; a second instance started later gives the same
// ids.
func TestResumeAcrossAHeldUpdate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, Options{})
	c := r.dial(t, "erin", "")
	testenv.WaitFor(t, 10*time.Second, func() string {
		if _, n := r.s.hub.stats(); n != 1 {
			return "socket not registered"
		}
		return ""
	})
	e.publish(t, e.topo.OutSubject(0), proxPrev("erin", 1, 0))
	want(t, c.nextUpdate(), `{"type":"proximity","id":1,"seq":1,"node":1,"treasure":null}`)
	e.publish(t, e.topo.OutSubject(1), proxPrev("erin", 3, 2)) // held: 2 is missing
	c.ws.Close()
	testenv.WaitFor(t, 10*time.Second, func() string {
		if n := counter(t, r.s.hub.order.held); n != 1 {
			return fmt.Sprintf("%v held, want 1", n)
		}
		return ""
	})
	if n := r.s.hub.nextID("erin"); n != 2 {
		t.Fatalf("next id %d while move 3 is held, want 2", n)
	}
	c = r.dial(t, "erin", "after=1")
	e.publish(t, e.topo.OutSubject(0), proxPrev("erin", 2, 1))
	want(t, c.nextUpdate(), `{"type":"proximity","id":2,"seq":2,"node":2,"treasure":null}`)
	want(t, c.nextUpdate(), `{"type":"proximity","id":3,"seq":3,"node":3,"treasure":null}`)
	c.ws.Close()

	c = r.dial(t, "erin", "after=1")
	want(t, c.nextUpdate(), `{"type":"proximity","id":2,"seq":2,"node":2,"treasure":null}`)
	want(t, c.nextUpdate(), `{"type":"proximity","id":3,"seq":3,"node":3,"treasure":null}`)

	later := e.start(t, Options{})
	d := later.dial(t, "erin", "after=0")
	for i := 1; i <= 3; i++ {
		want(t, d.nextUpdate(), fmt.Sprintf(`{"type":"proximity","id":%d,"seq":%d,"node":%d,"treasure":null}`, i, i, i))
	}
}
