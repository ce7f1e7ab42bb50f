package ranker

import (
	"cmp"
	"slices"
)

// stored is a claim as PostgreSQL holds it: the one claim that counts for
// its treasure (the first in log order).
type stored struct {
	pos      uint64 // log position in P_OUT: stream sequence << posShift | index in the batch
	treasure string
	player   string
	points   int64
}

// standing is a player's score and rank right after one claim.
type standing struct {
	score, rank int64
}

// standings computes, for the claims ahead[i] with i in want, the claiming
// player's score and rank right after that claim in log order.
//
// ahead must hold, sorted by position, every stored claim at a position
// after some point P of the log, and now the current score of every player
// holding one of them; every index in want must be in ahead. countAbove
// answers, for each score, the number of players whose current score is
// strictly higher (the live board: Redis, or PostgreSQL). The state of the
// board right after ahead[i] is the current one with the claims after i
// taken back, so
//
//	rank = 1 + countAbove(s) − #{q holding claims ahead: now[q] > s}
//	         + #{q holding claims ahead: score of q right after ahead[i] > s}
//
// which one backward walk over ahead with a Fenwick tree over the scores
// the players take answers in O(n log n) for n = len(ahead). The answer
// depends only on the log and on the board's current state, not on how the
// log was cut into batches nor on how often it was delivered: that is what
// makes the published ScoreChanged events the same on a replay.
func standings(ahead []stored, now map[string]int64, want []int, countAbove func([]int64) ([]int64, error)) ([]standing, error) {
	out := make([]standing, len(want))
	if len(want) == 0 {
		return out, nil
	}
	// Players and their current scores.
	idx := make(map[string]int32, len(now))
	cur := make([]int64, 0, len(now))
	for i := range ahead {
		p := ahead[i].player
		if _, ok := idx[p]; !ok {
			idx[p] = int32(len(cur))
			cur = append(cur, now[p])
		}
	}
	nowSorted := slices.Clone(cur)
	slices.Sort(nowSorted)

	// First walk: the score right after each claim, and every value the
	// players' scores take on the way back.
	after := make([]int64, len(ahead))
	vals := slices.Clone(cur)
	for i := len(ahead) - 1; i >= 0; i-- {
		p := idx[ahead[i].player]
		after[i] = cur[p]
		cur[p] -= ahead[i].points
		vals = append(vals, cur[p])
	}
	slices.Sort(vals)
	vals = slices.Compact(vals)

	// Second walk: count, at each wanted claim, the players holding claims
	// ahead whose score is above the claimer's.
	for p, j := range idx {
		cur[j] = now[p]
	}
	f := newFenwick(len(vals))
	rank := func(v int64) int {
		i, _ := slices.BinarySearch(vals, v)
		return i
	}
	for _, v := range cur {
		f.add(rank(v), 1)
	}
	wantAt := make(map[int]int, len(want))
	for k, i := range want {
		wantAt[i] = k
	}
	above := make([]int64, len(want))
	for i := len(ahead) - 1; i >= 0; i-- {
		p := idx[ahead[i].player]
		if k, ok := wantAt[i]; ok {
			// Values above after[i]: all minus those <= it.
			above[k] = int64(len(cur) - f.sum(rank(after[i])))
		}
		f.add(rank(cur[p]), -1)
		cur[p] -= ahead[i].points
		f.add(rank(cur[p]), 1)
	}

	scores := make([]int64, len(want))
	for k, i := range want {
		scores[k] = after[i]
	}
	counts, err := countAbove(scores)
	if err != nil {
		return nil, err
	}
	for k, s := range scores {
		// Players holding claims ahead whose current score is above s.
		j, _ := slices.BinarySearch(nowSorted, s+1)
		nowAbove := int64(len(nowSorted) - j)
		out[k] = standing{score: s, rank: 1 + counts[k] - nowAbove + above[k]}
	}
	return out, nil
}

// fenwick is a binary indexed tree of counts over value ranks 0..n-1.
type fenwick []int32

func newFenwick(n int) fenwick { return make(fenwick, n+1) }

func (f fenwick) add(i int, d int32) {
	for i++; i < len(f); i += i & -i {
		f[i] += d
	}
}

// sum returns the count of values with rank <= i.
func (f fenwick) sum(i int) int {
	s := 0
	for i++; i > 0; i -= i & -i {
		s += int(f[i])
	}
	return s
}

// mergeStored merges b into a, both sorted by position, keeping one entry
// per position, and returns the merged slice (a's backing array may be
// reused only when b is empty).
func mergeStored(a, b []stored) []stored {
	if len(b) == 0 {
		return a
	}
	out := make([]stored, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i].pos < b[j].pos:
			out = append(out, a[i])
			i++
		case i == len(a) || b[j].pos < a[i].pos:
			out = append(out, b[j])
			j++
		default: // same claim: keep one
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// sortStored sorts claims by position.
func sortStored(s []stored) {
	slices.SortFunc(s, func(a, b stored) int { return cmp.Compare(a.pos, b.pos) })
}
