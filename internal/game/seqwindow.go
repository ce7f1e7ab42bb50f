package game

// SeqWindow is what a partition remembers of one player's applied moves,
// to tell a move it has applied already from one it has not: the highest
// seq applied, and which of the SeqWindowSize seqs below it were not.
//
// A player's moves usually reach a partition in seq order, with gaps where
// moves went to other partitions. Two things break the order: a copy of a
// move stored again (a client resending an unacked move after an ingest
// restart) — applied already, to be skipped; and a move stored after later
// moves of the same player (its batch published again after a JetStream
// leader change, while later batches were stored by the new leader) — not
// applied yet, to be applied. A seq more than SeqWindowSize below Last
// counts as applied. The zero value has applied nothing.
type SeqWindow struct {
	// Last is the highest seq applied (0: none).
	Last uint64
	// Holes has bit i set when seq Last-1-i was not applied.
	Holes uint64
}

// SeqWindowSize is how far below the highest applied seq a SeqWindow
// tells applied seqs from skipped ones.
const SeqWindowSize = 64

// Applied reports whether seq was applied (or is too old to tell).
func (w SeqWindow) Applied(seq uint64) bool {
	if seq > w.Last {
		return false
	}
	d := w.Last - seq
	if d == 0 || d > SeqWindowSize {
		return true
	}
	return w.Holes&(1<<(d-1)) == 0
}

// Apply records seq as applied.
func (w *SeqWindow) Apply(seq uint64) {
	if seq <= w.Last {
		if d := w.Last - seq; d > 0 && d <= SeqWindowSize {
			w.Holes &^= 1 << (d - 1)
		}
		return
	}
	d := seq - w.Last
	// The seqs between the old Last and seq are holes, the old Last is not.
	switch {
	case w.Last == 0:
		// Nothing was applied: everything below seq is a hole, as far as
		// the window reaches.
		w.Holes = ^uint64(0)
		if seq-1 < SeqWindowSize {
			w.Holes = 1<<(seq-1) - 1
		}
	case d > SeqWindowSize:
		w.Holes = ^uint64(0)
	default:
		// Shift the old window up by d; the d-1 seqs in between are holes.
		holes := uint64(0)
		if d < SeqWindowSize {
			holes = w.Holes << d
		}
		w.Holes = holes | (1<<(d-1) - 1)
	}
	w.Last = seq
}
