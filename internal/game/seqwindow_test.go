package game

import (
	"math/rand/v2"
	"testing"
)

// TestSeqWindowMatchesTheSetOfAppliedSeqs drives SeqWindows with random
// seqs (in order, with gaps, repeats and late arrivals) and compares
// Applied with the set of seqs applied: equal within the window, applied
// beyond it.
func TestSeqWindowMatchesTheSetOfAppliedSeqs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for run := range 2000 {
		var w SeqWindow
		set := map[uint64]bool{}
		var last uint64
		next := uint64(1)
		for range 200 {
			var seq uint64
			switch r.IntN(4) {
			case 0, 1: // ahead, with a gap now and then
				next += uint64(1 + r.IntN(3)*r.IntN(40))
				seq = next
			case 2: // a late one or a repeat, within or beyond the window
				seq = max(1, next-uint64(r.IntN(80)))
			default:
				seq = uint64(1 + r.IntN(int(next)))
			}
			want := set[seq] || (last > seq && last-seq > SeqWindowSize)
			if got := w.Applied(seq); got != want {
				t.Fatalf("run %d: Applied(%d) = %v, want %v (last %d, window %+v)", run, seq, got, want, last, w)
			}
			if !want {
				w.Apply(seq)
				set[seq] = true
				last = max(last, seq)
			}
			if w.Last != last {
				t.Fatalf("run %d: Last %d, want %d", run, w.Last, last)
			}
		}
	}
}

func TestSeqWindowCases(t *testing.T) {
	var w SeqWindow
	if w.Applied(1) {
		t.Fatal("an empty window applied seq 1")
	}
	w.Apply(12) // first seen at 12: 1..11 are holes
	for seq := uint64(1); seq <= 11; seq++ {
		if w.Applied(seq) {
			t.Fatalf("seq %d applied after only 12", seq)
		}
	}
	w.Apply(10)
	w.Apply(13)
	for seq, want := range map[uint64]bool{9: false, 10: true, 11: false, 12: true, 13: true, 14: false} {
		if w.Applied(seq) != want {
			t.Fatalf("Applied(%d) = %v, want %v (%+v)", seq, !want, want, w)
		}
	}
	w.Apply(13 + SeqWindowSize + 1) // everything of before is beyond the window
	if !w.Applied(11) || !w.Applied(13) || w.Applied(14) {
		t.Fatalf("after a jump: %+v", w)
	}
}
