package ranker

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// TestStandingsMatchReplayingTheLog checks standings against the
// definition: apply the claims one at a time to a board and read each
// claimer's score and rank right after their claim.
func TestStandingsMatchReplayingTheLog(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		nPlayers := rapid.IntRange(1, 8).Draw(t, "players")
		board := make(map[string]int64, nPlayers)
		for i := range nPlayers {
			// Some players start with a score (claims before the window),
			// others are merely seen (0).
			board[fmt.Sprint("p", i)] = int64(rapid.IntRange(0, 3).Draw(t, "start")) * 5
		}
		n := rapid.IntRange(1, 30).Draw(t, "claims")
		first := rapid.IntRange(0, n-1).Draw(t, "first") // claims before it are accepted
		var log []stored
		var want []standing
		for i := range n {
			p := fmt.Sprint("p", rapid.IntRange(0, nPlayers-1).Draw(t, "player"))
			c := stored{pos: position(uint64(i/3+1), i%3), treasure: fmt.Sprint("t", i), player: p, points: int64(rapid.IntRange(1, 10).Draw(t, "points"))}
			board[p] += c.points
			above := int64(0)
			for _, s := range board {
				if s > board[p] {
					above++
				}
			}
			log = append(log, c)
			want = append(want, standing{score: board[p], rank: 1 + above})
		}
		ahead := log[first:]
		now := map[string]int64{}
		for _, c := range ahead {
			now[c.player] = board[c.player]
		}
		// Ask for a random subset, in order.
		var idx []int
		for i := range ahead {
			if rapid.Bool().Draw(t, "want") {
				idx = append(idx, i)
			}
		}
		count := func(scores []int64) ([]int64, error) {
			out := make([]int64, len(scores))
			for i, s := range scores {
				for _, v := range board {
					if v > s {
						out[i]++
					}
				}
			}
			return out, nil
		}
		got, err := standings(ahead, now, idx, count)
		if err != nil {
			t.Fatal(err)
		}
		for k, i := range idx {
			if got[k] != want[first+i] {
				t.Fatalf("claim %d (%s +%d): got score %d rank %d, want score %d rank %d",
					first+i, ahead[i].player, ahead[i].points, got[k].score, got[k].rank, want[first+i].score, want[first+i].rank)
			}
		}
	})
}

func TestMergeStoredKeepsOrderAndOneEntryPerPosition(t *testing.T) {
	t.Parallel()
	a := []stored{{pos: 1}, {pos: 4}, {pos: 6}}
	b := []stored{{pos: 2}, {pos: 4}, {pos: 7}}
	got := mergeStored(a, b)
	var pos []uint64
	for _, s := range got {
		pos = append(pos, s.pos)
	}
	if fmt.Sprint(pos) != "[1 2 4 6 7]" {
		t.Fatalf("merged positions %v, want [1 2 4 6 7]", pos)
	}
}

func TestResumePointAndVersions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		id              string
		published, ver  uint64
		board, ok       bool
		next            uint64
		nextOK          bool
		publishedAtNext uint64
		description     string
	}{
		{id: "rank-10", published: 10, ver: 10<<versionShift - 1, ok: true, publishedAtNext: 10, next: 10 << versionShift, nextOK: true, description: "events stored through 10: a snapshot at 10 is new"},
		{id: "rank-10-1", published: 9, ver: 10<<versionShift - 1, ok: true, publishedAtNext: 9, nextOK: false, description: "part of input 10 stored: no snapshot until 10 is covered"},
		{id: "rank-10-1", published: 9, ver: 10<<versionShift - 1, ok: true, publishedAtNext: 10, next: 10 << versionShift, nextOK: true, description: "then input 10 covered"},
		{id: "board-655361", published: 10, ver: 10<<versionShift | 1, board: true, ok: true, publishedAtNext: 10, next: 10<<versionShift | 2, nextOK: true, description: "a second snapshot at the same point counts up"},
		{id: "out-1-2", ok: false, publishedAtNext: 0, next: 1, nextOK: true, description: "not ours: nothing known"},
		{id: "rank-x", ok: false, publishedAtNext: 3, next: 3 << versionShift, nextOK: true, description: "garbage"},
	} {
		pub, ver, board, ok := resumePoint(c.id)
		if ok != c.ok || ok && (pub != c.published || ver != c.ver || board != c.board) {
			t.Errorf("%s: resumePoint(%q) = %d, %d, %v, %v; want %d, %d, %v, %v", c.description, c.id, pub, ver, board, ok, c.published, c.ver, c.board, c.ok)
			continue
		}
		v, vok := nextVersion(c.publishedAtNext, ver)
		if vok != c.nextOK || vok && v != c.next {
			t.Errorf("%s: nextVersion(%d, %d) = %d, %v; want %d, %v", c.description, c.publishedAtNext, ver, v, vok, c.next, c.nextOK)
		}
		if vok && v <= ver {
			t.Errorf("%s: version %d not above %d", c.description, v, ver)
		}
	}
}

func TestProximityPlayerReadsTheLastPlayer(t *testing.T) {
	t.Parallel()
	// Event{proximity: {player: "a", seq: 3}} then a second proximity
	// member {player: "bob"}: proto merges them, the last player wins.
	raw := []byte{0x22, 0x05, 0x0a, 0x01, 'a', 0x10, 0x03, 0x22, 0x05, 0x0a, 0x03, 'b', 'o', 'b'}
	p, ok := proximityPlayer(raw)
	if !ok || string(p) != "bob" {
		t.Fatalf("got %q, %v; want bob", p, ok)
	}
	if _, ok := proximityPlayer([]byte{0x22, 0x09, 0x0a}); ok {
		t.Fatal("a truncated event was read")
	}
	if _, ok := proximityPlayer([]byte{0x22, 0x02, 0x10, 0x03}); ok {
		t.Fatal("a result without a player was read")
	}
}
