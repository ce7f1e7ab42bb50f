package push

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// A push checkpoint is the state the feed built from the OUT stream up to
// a sequence, in a versioned, checksummed little-endian binary form: every
// player's next id, highest delivered result seq, resume ring and held
// updates, and the leaderboard the sockets get. All of it is a function
// of the stream's contents up to Seq, so any instance's checkpoint at a
// sequence is byte-for-byte the same (players are written in id order).
//
//	off size field
//	  0    8 magic "TRPUSH\x00\x01"
//	  8    4 format version (CheckpointVersion)
//	 12    4 CRC-32C (Castagnoli) of the header with this field zero
//	 16    8 Seq, the OUT stream position the state covers
//	 24    8 players section length
//	 32    8 board section length
//	 40    8 reserved, zero
//	 48      players section, its CRC-32C (4 bytes),
//	         board section, its CRC-32C (4 bytes); nothing after.
//
// The players section: uvarint count; per player (ids in byte order, no
// duplicates): uvarint length, the id, uvarint next id (≥ 1), uvarint
// last (highest proximity seq delivered), uvarint ring count (≤ next-1),
// per ring record (oldest first) uvarint length and the record
// (appendRecord's form), uvarint held count, per held update (arrival
// order) uvarint seq, uvarint prev_seq, uvarint length and the record.
// A player the stream never mentioned (next 1, nothing held) is left out.
//
// The board section: byte seen (0 or 1; 1 once a leaderboard event was
// applied), uvarint its version, uvarint length and the latest
// leaderboard message pushed to sockets (empty: none yet).
const (
	// CheckpointVersion is the push checkpoint format version this build
	// writes and reads.
	CheckpointVersion = 1

	ckptMagic      = "TRPUSH\x00\x01"
	ckptHeaderSize = 48
	ckptCRCOff     = 12
)

// Errors a checkpoint reader wraps, for errors.Is.
var (
	ErrNotCheckpoint       = errors.New("not a push checkpoint (bad magic)")
	ErrCheckpointVersion   = errors.New("unsupported push checkpoint version")
	ErrCheckpointTruncated = errors.New("truncated")
	ErrCheckpointCorrupt   = errors.New("corrupt")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// feedState is what a checkpoint restores besides the players: the
// position and the leaderboard.
type feedState struct {
	seq       uint64
	lbSeen    bool
	lbVersion uint64
	board     []byte // the latest leaderboard message; nil before the first
}

// appendPlayers appends the players section of h's state. Called by the
// feed goroutine (the only writer of player state) between steps; each
// shard is locked while it is read.
func (h *hub) appendPlayers(dst []byte) []byte {
	type entry struct {
		id     string
		off, n int
	}
	var buf []byte
	var entries []entry
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for id, p := range sh.players {
			held := 0
			if p.hold != nil {
				held = p.hold.live
			}
			if p.next == 1 && held == 0 {
				continue // made by a socket's registration only
			}
			off := len(buf)
			buf = binary.AppendUvarint(buf, p.next)
			buf = binary.AppendUvarint(buf, p.last)
			buf = binary.AppendUvarint(buf, uint64(p.ring.count))
			buf = append(buf, p.ring.buf[p.ring.off:]...) // already length-prefixed
			buf = binary.AppendUvarint(buf, uint64(held))
			if held > 0 {
				for _, it := range p.hold.items {
					if it.done {
						continue
					}
					buf = binary.AppendUvarint(buf, it.seq)
					buf = binary.AppendUvarint(buf, it.prev)
					buf = binary.AppendUvarint(buf, uint64(it.n))
					buf = append(buf, p.hold.buf[it.off:it.off+it.n]...)
				}
			}
			entries = append(entries, entry{id: id, off: off, n: len(buf) - off})
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(entries, func(a, b entry) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	dst = binary.AppendUvarint(dst, uint64(len(entries)))
	for _, e := range entries {
		dst = binary.AppendUvarint(dst, uint64(len(e.id)))
		dst = append(dst, e.id...)
		dst = append(dst, buf[e.off:e.off+e.n]...)
	}
	return dst
}

// appendCheckpoint appends a whole checkpoint of h's players and fs.
func appendCheckpoint(dst []byte, h *hub, fs *feedState) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, ckptHeaderSize)...)
	p0 := len(dst)
	dst = h.appendPlayers(dst)
	pn := len(dst) - p0
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[p0:], castagnoli))
	b0 := len(dst)
	if fs.lbSeen {
		dst = append(dst, 1)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, fs.lbVersion)
	dst = binary.AppendUvarint(dst, uint64(len(fs.board)))
	dst = append(dst, fs.board...)
	bn := len(dst) - b0
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[b0:], castagnoli))
	hd := dst[start : start+ckptHeaderSize]
	copy(hd, ckptMagic)
	binary.LittleEndian.PutUint32(hd[8:], CheckpointVersion)
	binary.LittleEndian.PutUint64(hd[16:], fs.seq)
	binary.LittleEndian.PutUint64(hd[24:], uint64(pn))
	binary.LittleEndian.PutUint64(hd[32:], uint64(bn))
	binary.LittleEndian.PutUint32(hd[ckptCRCOff:], crc32.Checksum(hd, castagnoli))
	return dst
}

// readCheckpoint checks data and loads its players into h, which must be
// new (no player yet), and returns the rest of the state. Every
// truncation, checksum mismatch or malformed field is an error naming it,
// wrapping ErrCheckpointTruncated, ErrCheckpointCorrupt, ErrNotCheckpoint
// or ErrCheckpointVersion; on error h may hold part of the players and
// must be discarded.
func readCheckpoint(data []byte, h *hub) (*feedState, error) {
	if len(data) < ckptHeaderSize {
		return nil, fmt.Errorf("push checkpoint header: %d of %d bytes: %w", len(data), ckptHeaderSize, ErrCheckpointTruncated)
	}
	hd := data[:ckptHeaderSize]
	if string(hd[:8]) != ckptMagic {
		return nil, ErrNotCheckpoint
	}
	var zero [ckptHeaderSize]byte
	copy(zero[:], hd)
	clear(zero[ckptCRCOff : ckptCRCOff+4])
	if crc32.Checksum(zero[:], castagnoli) != binary.LittleEndian.Uint32(hd[ckptCRCOff:]) {
		return nil, fmt.Errorf("push checkpoint header: checksum mismatch: %w", ErrCheckpointCorrupt)
	}
	if v := binary.LittleEndian.Uint32(hd[8:]); v != CheckpointVersion {
		return nil, fmt.Errorf("%w %d (this build reads %d)", ErrCheckpointVersion, v, CheckpointVersion)
	}
	if !bytes.Equal(hd[40:48], zero[40:48]) {
		return nil, fmt.Errorf("push checkpoint header: reserved bytes not zero: %w", ErrCheckpointCorrupt)
	}
	fs := &feedState{seq: binary.LittleEndian.Uint64(hd[16:])}
	pn, bn := binary.LittleEndian.Uint64(hd[24:]), binary.LittleEndian.Uint64(hd[32:])
	rest := data[ckptHeaderSize:]
	section := func(name string, n uint64) ([]byte, error) {
		if n > uint64(len(rest)) || uint64(len(rest))-n < 4 {
			return nil, fmt.Errorf("push checkpoint %s section: %d bytes and its checksum announced, %d left: %w", name, n, len(rest), ErrCheckpointTruncated)
		}
		s := rest[:n]
		if crc32.Checksum(s, castagnoli) != binary.LittleEndian.Uint32(rest[n:]) {
			return nil, fmt.Errorf("push checkpoint %s section: checksum mismatch: %w", name, ErrCheckpointCorrupt)
		}
		rest = rest[n+4:]
		return s, nil
	}
	ps, err := section("players", pn)
	if err != nil {
		return nil, err
	}
	bs, err := section("board", bn)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("push checkpoint: %d bytes after the board section: %w", len(rest), ErrCheckpointCorrupt)
	}
	if err := h.readPlayers(ps); err != nil {
		return nil, fmt.Errorf("push checkpoint players section: %w", err)
	}
	d := decoder{b: bs}
	switch seen := d.byte(); {
	case d.err != nil:
	case seen > 1:
		d.fail("leaderboard seen flag %d", seen)
	default:
		fs.lbSeen = seen == 1
	}
	fs.lbVersion = d.uvarint()
	if b := d.bytes(); len(b) > 0 {
		fs.board = append([]byte(nil), b...)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the leaderboard", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("push checkpoint board section: %w", d.err)
	}
	return fs, nil
}

// readPlayers loads a checked players section into h.
func (h *hub) readPlayers(b []byte) error {
	d := decoder{b: b}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(b)) {
		d.fail("%d players in %d bytes", n, len(b))
	}
	var prev string
	for i := uint64(0); i < n && d.err == nil; i++ {
		id := string(d.bytes())
		if d.err != nil {
			break
		}
		if i > 0 && id <= prev {
			d.fail("player %q after %q: ids not in increasing order", id, prev)
			break
		}
		prev = id
		p := &player{next: d.uvarint(), last: d.uvarint()}
		rc := d.uvarint()
		if d.err == nil && (p.next == 0 || rc > p.next-1 || rc > uint64(len(d.b))) {
			d.fail("player %q: next id %d with %d retained updates", id, p.next, rc)
		}
		for j := uint64(0); j < rc && d.err == nil; j++ {
			rec := d.bytes()
			if d.err == nil && !validRecord(rec) {
				d.fail("player %q: retained update %d does not decode", id, j)
			}
			if d.err == nil {
				p.ring.push(rec, max(h.ringSize, int(rc)))
			}
		}
		for p.ring.count > h.ringSize {
			p.ring.dropOldest() // this instance keeps fewer
		}
		hc := d.uvarint()
		if d.err == nil && hc > uint64(len(d.b)) {
			d.fail("player %q: %d held updates in %d bytes", id, hc, len(d.b))
		}
		if hc > 0 && d.err == nil {
			p.hold = &holdQueue{}
		}
		for j := uint64(0); j < hc && d.err == nil; j++ {
			seq, pv := d.uvarint(), d.uvarint()
			rec := d.bytes()
			if d.err == nil && !validRecord(rec) {
				d.fail("player %q: held update %d does not decode", id, j)
			}
			if d.err != nil {
				break
			}
			q := p.hold
			off := len(q.buf)
			q.buf = append(q.buf, rec...)
			q.items = append(q.items, heldItem{kind: rec[0], seq: seq, prev: pv, off: off, n: len(rec)})
			q.live++
		}
		if d.err == nil {
			sh := h.shard(id)
			sh.mu.Lock()
			sh.players[id] = p
			sh.mu.Unlock()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the last player", len(d.b))
	}
	return d.err
}

// validRecord reports whether rec is a record recordJSON reads.
func validRecord(rec []byte) bool {
	_, ok := recordJSON(nil, 1, rec)
	return ok
}

// decoder reads uvarints and length-prefixed byte strings, keeping the
// first error (which wraps ErrCheckpointTruncated or ErrCheckpointCorrupt).
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format+": %w", append(args, ErrCheckpointCorrupt)...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n == 0 {
		d.err = fmt.Errorf("number at the end of the section: %w", ErrCheckpointTruncated)
		return 0
	}
	if n < 0 {
		d.fail("number overflows 64 bits")
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		// An overlong encoding: the writer never makes one, and a state
		// has one encoding (the package doc).
		d.fail("overlong number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("byte at the end of the section: %w", ErrCheckpointTruncated)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%d-byte string with %d bytes left: %w", n, len(d.b), ErrCheckpointTruncated)
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}
