package push

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/gorilla/websocket"
)

// TestRecordsRoundTripToTheSameJSON: a retained record re-encodes to the
// bytes the live path sent.
func TestRecordsRoundTripToTheSameJSON(t *testing.T) {
	for _, u := range []update{
		{kind: recProximity, seq: 1, node: 0},
		{kind: recProximity, seq: 1 << 40, node: 1<<32 - 1},
		{kind: recProximityFound, seq: 7, node: 123456, tnode: 99, dist: 2000, treasure: "T-1_x"},
		{kind: recProximityFound, seq: 7, node: 1, tnode: 1, dist: 0, treasure: strings.Repeat("z", 64)},
		{kind: recClaim, seq: 3, points: 1 << 50, treasure: "gold"},
		{kind: recScore, score: 1 << 53, rank: 35000},
		{kind: recScore, score: 0, rank: 1},
	} {
		live := appendJSON(nil, 42, &u)
		got, ok := recordJSON(nil, 42, appendRecord(nil, &u))
		if !ok || string(got) != string(live) {
			t.Fatalf("%+v: live %s, from the record %s (ok %v)", u, live, got, ok)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {9, 1}, {recScore}, {recProximity, 0x80}} {
		if got, ok := recordJSON(nil, 1, bad); ok || len(got) != 0 {
			t.Fatalf("record %v decoded to %q", bad, got)
		}
	}
}

// TestRingKeepsTheNewestAndAnswersSince: a ring of 5 after 1..n pushes
// holds the last 5, and since(after) returns those above after.
func TestRingKeepsTheNewestAndAnswersSince(t *testing.T) {
	var r ring
	ids := func(after, last uint64) []string {
		recs, first := r.since(after, last)
		var out []string
		eachRecord(recs, func(rec []byte) bool {
			js, _ := recordJSON(nil, first, rec)
			out = append(out, string(js))
			first++
			return true
		})
		return out
	}
	for n := uint64(1); n <= 300; n++ {
		// Records of varying sizes, so that compaction moves them about.
		u := update{kind: recProximityFound, seq: n, node: n * 1000, tnode: 1, dist: n, treasure: strings.Repeat("t", int(n%40))}
		r.push(appendRecord(nil, &u), 5)
		if want := min(n, 5); uint64(r.count) != want {
			t.Fatalf("after %d pushes: %d records", n, r.count)
		}
		got := ids(0, n)
		if uint64(len(got)) != min(n, 5) {
			t.Fatalf("after %d pushes: %d records from since(0)", n, len(got))
		}
		for i, js := range got {
			id := n - uint64(len(got)) + 1 + uint64(i)
			if !strings.HasPrefix(js, fmt.Sprintf(`{"type":"proximity","id":%d,"seq":%d,`, id, id)) {
				t.Fatalf("after %d pushes, record %d: %s", n, i, js)
			}
		}
		if n > 3 {
			if got := ids(n-2, n); len(got) != 2 {
				t.Fatalf("since(%d) after %d pushes: %d records, want 2", n-2, n, len(got))
			}
		}
		if got := ids(n, n); len(got) != 0 {
			t.Fatalf("since(last): %v", got)
		}
		if cap(r.buf) > 2*5*(1+2+3+1+2+40)+64 || len(r.buf)-r.off > 5*(1+1+2+3+1+2+40) {
			t.Fatalf("after %d pushes the ring's buffer holds %d bytes", n, cap(r.buf))
		}
	}
}

// TestRingMemory fills every player's ring with proximity answers naming
// a treasure (the largest common update) and bounds what push holds per
// player, counted from the hub's own structures (the player, its ring's
// buffer, its id and map slot) rather than from the process's heap, which
// other goroutines and the collector's timing move. With -v it prints the
// figure.
func TestRingMemory(t *testing.T) {
	const players = 1000
	names := make([]string, players)
	for p := range names {
		names[p] = fmt.Sprintf("player-%08d", p)
	}
	h := newHub(DefaultRingSize, DefaultMaxSockets)
	for i := 0; i < DefaultRingSize+50; i++ {
		for p := 0; p < players; p++ {
			u := update{kind: recProximityFound, seq: uint64(i + 1), node: 1_000_000 + uint64(p), tnode: 2_000_000, dist: 1500, treasure: "T0042"}
			h.deliver(names[p], &u)
		}
	}
	const mapSlot = 2 * (unsafe.Sizeof("") + unsafe.Sizeof((*player)(nil))) // key and value, at a load factor of about one half
	var held, seen uintptr
	for i := range h.shards {
		for id, p := range h.shards[i].players {
			seen++
			r := &p.ring
			if r.count != DefaultRingSize {
				t.Fatalf("%s's ring holds %d records, want %d", id, r.count, DefaultRingSize)
			}
			if live := len(r.buf) - r.off; cap(r.buf) > live+live/4+64 {
				t.Fatalf("%s's ring: %d bytes of buffer for %d live", id, cap(r.buf), live)
			}
			held += unsafe.Sizeof(*p) + uintptr(cap(r.buf)) + uintptr(len(id)) + mapSlot
		}
	}
	if seen != players {
		t.Fatalf("%d players in the hub, want %d", seen, players)
	}
	per := float64(held) / players
	t.Logf("ring of %d proximity answers with a treasure: %.0f bytes per player (%.1f MiB for 35,000 players)", DefaultRingSize, per, per*35000/(1<<20))
	if per > 8<<10 {
		t.Fatalf("%.0f bytes per player, want under 8 KiB", per)
	}
}

// TestQueueOverflowMarksSlow: the queue takes QueueSize messages, and the
// next one closes the socket as slow and frees its buffer.
func TestQueueOverflowMarksSlow(t *testing.T) {
	s := &Server{o: Options{QueueSize: 3}, m: newMetrics(nil, nil)}
	c := newConn(s, nil, "p")
	for i := 0; i < 3; i++ {
		c.enqueue([]byte(`{"x":1}`), 0)
	}
	if c.kicked || c.n != 3 || string(c.buf) != "{\"x\":1}\n{\"x\":1}\n{\"x\":1}\n" {
		t.Fatalf("after 3 messages: kicked %v, n %d, buf %q", c.kicked, c.n, c.buf)
	}
	c.lbWake = true
	c.enqueue([]byte(`{"x":2}`), 0)
	if !c.kicked || c.code != websocket.ClosePolicyViolation || c.reason != "slow" || c.buf != nil || c.lbWake {
		t.Fatalf("after overflow: kicked %v, code %d %q, buf %q", c.kicked, c.code, c.reason, c.buf)
	}
	select {
	case <-c.done:
	default:
		t.Fatal("done not closed")
	}
	if counter(t, s.m.slow) != 1 {
		t.Fatal("slow disconnect not counted")
	}
}
