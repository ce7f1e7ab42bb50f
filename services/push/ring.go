package push

import (
	"encoding/binary"

	"treasure/internal/wire"
)

// The kinds of per-player update, as the first byte of a record.
const (
	recProximity      byte = 1 // treasure: null
	recProximityFound byte = 2
	recClaim          byte = 3
	recScore          byte = 4
)

// update is one per-player update before it gets its id: the fields of a
// proximity, claim or score message. The feed fills one per event and
// reuses it.
type update struct {
	kind     byte
	seq      uint64 // proximity, claim
	node     uint64 // proximity: the move's last node
	tnode    uint64 // proximity: the treasure's node
	dist     uint64 // proximity: the distance to it
	points   uint64 // claim
	score    int64  // score
	rank     uint64 // score
	treasure string // proximity (found), claim
	prev     uint64 // proximity, claim: the seq of the player's move before (not in the record)
}

// appendRecord appends u's compact record (without its length prefix):
// the kind byte, the numbers as uvarints, the treasure id last (its
// length is the rest of the record). A proximity update with a treasure
// takes about 15–20 bytes, against about 100 as JSON.
func appendRecord(dst []byte, u *update) []byte {
	dst = append(dst, u.kind)
	switch u.kind {
	case recProximity:
		dst = binary.AppendUvarint(dst, u.seq)
		dst = binary.AppendUvarint(dst, u.node)
	case recProximityFound:
		dst = binary.AppendUvarint(dst, u.seq)
		dst = binary.AppendUvarint(dst, u.node)
		dst = binary.AppendUvarint(dst, u.tnode)
		dst = binary.AppendUvarint(dst, u.dist)
		dst = append(dst, u.treasure...)
	case recClaim:
		dst = binary.AppendUvarint(dst, u.seq)
		dst = binary.AppendUvarint(dst, u.points)
		dst = append(dst, u.treasure...)
	case recScore:
		dst = binary.AppendUvarint(dst, uint64(u.score))
		dst = binary.AppendUvarint(dst, u.rank)
	}
	return dst
}

// appendJSON appends u as the player message with the given id, encoded
// by package wire.
func appendJSON(dst []byte, id uint64, u *update) []byte {
	switch u.kind {
	case recProximity, recProximityFound:
		return wire.AppendProximity(dst, wire.Proximity{
			ID: id, Seq: u.seq, Node: u.node,
			Found: u.kind == recProximityFound, Treasure: u.treasure, TreasureNode: u.tnode, Distance: u.dist,
		})
	case recClaim:
		return wire.AppendClaim(dst, id, u.seq, u.treasure, u.points)
	default:
		return wire.AppendScore(dst, id, u.score, u.rank)
	}
}

// recordJSON decodes one record written by appendRecord and appends its
// JSON with the given id. It reports false for a record it cannot read
// (never written by appendRecord), appending nothing.
func recordJSON(dst []byte, id uint64, rec []byte) ([]byte, bool) {
	if len(rec) == 0 {
		return dst, false
	}
	u := update{kind: rec[0]}
	b := rec[1:]
	next := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			b = nil
			u.kind = 0
			return 0
		}
		b = b[n:]
		return v
	}
	switch u.kind {
	case recProximity:
		u.seq, u.node = next(), next()
	case recProximityFound:
		u.seq, u.node, u.tnode, u.dist = next(), next(), next(), next()
		u.treasure = string(b)
	case recClaim:
		u.seq, u.points = next(), next()
		u.treasure = string(b)
	case recScore:
		u.score, u.rank = int64(next()), next()
	default:
		return dst, false
	}
	if u.kind == 0 {
		return dst, false
	}
	return appendJSON(dst, id, &u), true
}

// ring holds a player's most recent updates as length-prefixed compact
// records, oldest first, in one byte slice: records from off to the end
// are retained, the bytes before off are dead and reclaimed by moving the
// live records down when the slice is full. So a full ring costs about
// 1.25 times its live bytes, and a player with few updates a few dozen
// bytes. Not safe for concurrent use (its shard's lock
// guards it).
type ring struct {
	buf   []byte
	off   int
	count int // records retained
}

// push appends rec, first dropping the oldest record when the ring holds
// limit of them.
func (r *ring) push(rec []byte, limit int) {
	if limit <= 0 {
		return
	}
	for r.count >= limit {
		r.dropOldest()
	}
	need := uvarintLen(uint64(len(rec))) + len(rec)
	if len(r.buf)+need > cap(r.buf) {
		live := len(r.buf) - r.off + need
		if r.off > 0 && 5*live <= 4*cap(r.buf) {
			// Once the dead bytes are gone at least a fifth of the
			// slice is free: the copy is amortized over the appends
			// that fill that room (at most four bytes moved per byte
			// appended, in practice far fewer).
			r.buf = r.buf[:copy(r.buf, r.buf[r.off:])]
			r.off = 0
		} else {
			// Grow by a quarter: a full ring's size is steady, so its
			// slice settles at about 1.25 times the live records.
			nb := make([]byte, live-need, live+live/4+32)
			copy(nb, r.buf[r.off:])
			r.buf, r.off = nb, 0
		}
	}
	r.buf = binary.AppendUvarint(r.buf, uint64(len(rec)))
	r.buf = append(r.buf, rec...)
	r.count++
}

func (r *ring) dropOldest() {
	n, k := binary.Uvarint(r.buf[r.off:])
	r.off += k + int(n)
	r.count--
	if r.count == 0 {
		r.buf, r.off = r.buf[:0], 0
	}
}

// since returns the retained records whose ids are above after, given that
// the newest record has id last, and the id of the first one returned.
// The bytes alias the ring: copy them before the lock is released.
func (r *ring) since(after, last uint64) (recs []byte, first uint64) {
	first = last + 1 - uint64(r.count)
	b := r.buf[r.off:]
	for first <= after && len(b) > 0 {
		n, k := binary.Uvarint(b)
		b = b[k+int(n):]
		first++
	}
	return b, first
}

// each calls f for every record of recs (as returned by since), in order.
func eachRecord(recs []byte, f func(rec []byte) bool) {
	for len(recs) > 0 {
		n, k := binary.Uvarint(recs)
		if k <= 0 || uint64(len(recs)-k) < n {
			return
		}
		if !f(recs[k : k+int(n)]) {
			return
		}
		recs = recs[k+int(n):]
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
