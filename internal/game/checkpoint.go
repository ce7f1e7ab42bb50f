package game

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"

	"treasure/internal/graph"
)

// A checkpoint is an Engine's state, plus what its caller keeps beside it
// (the last applied seq of every player, the log position covered), in a
// versioned, checksummed little-endian binary form. Version 3 adds to
// version 2 each player's SeqWindow holes. Version 2 holds the
// treasures and the nearest-treasure field (8 bytes per node), which
// ReadCheckpoint restores after checking it against the treasures and the
// graph in one pass over the arcs; version 1 (still read) holds the
// treasures only, and ReadCheckpoint rebuilds the field from them, which
// costs seconds on a city partition (see docs/pipeline.md).
//
//	off size field
//	  0    8 magic "TRCKPT\x00\x01"
//	  8    4 format version (CheckpointVersion)
//	 12    4 CRC-32C (Castagnoli) of the header with this field zero
//	 16    4 partition
//	 20    4 partitions
//	 24    4 radius
//	 28    4 N, nodes of the engine's graph
//	 32    4 Own
//	 36    4 CRC-32C of the graph's Offsets and Global arrays (its fingerprint)
//	 40    8 M, arcs of the engine's graph
//	 48    8 Seq, the log position the state covers
//	 56    8 treasures section length
//	 64    8 players section length
//	 72    8 field section length (versions 2 and 3; zero in version 1)
//	 80   16 reserved, zero
//	 96      treasures section, its CRC-32C (4 bytes),
//	         players section, its CRC-32C (4 bytes),
//	         versions 2 and 3: field section, its CRC-32C (4 bytes); nothing after.
//
// The treasures section: uvarint slot count S; uvarint id count; per id
// (every id ever dropped here, in byte order): uvarint length, the id,
// uvarint slot+1 (0: claimed or outside the graph), and for an active slot
// uvarint local node and uvarint points; then uvarint free-slot count and
// the free slots (uvarint each, in the engine's order). Every slot below S
// is either active or free, exactly once.
//
// The players section: uvarint count; per player (byte order): uvarint
// length, the player id, uvarint seq (SeqWindow.Last), and in version 3
// uvarint SeqWindow.Holes (read as 0 from older versions: every seq below
// Last counts as applied, the rule those builds had).
//
// The field section (version 2): N uint32 distances, then N uint32 slots,
// one per local node (Inf and NoNode for a node without a treasure within
// the radius): graph.Field's labels, 8N bytes.
const (
	// CheckpointVersion is the format version this build writes. It reads
	// versions 1, 2 and 3.
	CheckpointVersion = 3

	ckptMagic      = "TRCKPT\x00\x01"
	ckptHeaderSize = 96
	ckptCRCOff     = 12
)

// Errors a checkpoint reader wraps, for errors.Is.
var (
	ErrNotCheckpoint       = errors.New("not a checkpoint (bad magic)")
	ErrCheckpointVersion   = errors.New("unsupported checkpoint version")
	ErrCheckpointTruncated = errors.New("truncated")
	ErrCheckpointCorrupt   = errors.New("corrupt")
	// ErrCheckpointMismatch: a sound checkpoint of another graph,
	// partitioning or radius.
	ErrCheckpointMismatch = errors.New("checkpoint of another graph, partition or radius")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CheckpointMeta is what a checkpoint carries besides the engine.
type CheckpointMeta struct {
	// Partition and Partitions name the engine's partition (0 and 1 for a
	// whole graph).
	Partition, Partitions uint32
	// Seq is the log position the state covers: every input up to it is
	// applied, none after.
	Seq uint64
	// Players holds, per player, which move seqs were applied.
	Players map[string]SeqWindow
}

// CheckpointHeader is a checkpoint's header, readable without the graph.
type CheckpointHeader struct {
	Version               uint32
	Partition, Partitions uint32
	Radius                uint32
	Nodes, Own            uint32
	Arcs                  uint64
	Fingerprint           uint32
	Seq                   uint64
	// TreasuresLen, PlayersLen and FieldLen are the sections' lengths in
	// bytes; FieldLen is zero in version 1.
	TreasuresLen, PlayersLen, FieldLen uint64
}

// Fingerprint returns the CRC-32C of g's Offsets and Global arrays: two
// subgraphs with the same fingerprint, node, own and arc counts are, for a
// checkpoint, the same. It reads every node once.
func Fingerprint(g *graph.Graph) uint32 {
	var buf [4096]byte
	var sum uint32
	for _, arr := range [][]uint32{g.Offsets, g.Global} {
		for len(arr) > 0 {
			n := min(len(arr), len(buf)/4)
			for i, v := range arr[:n] {
				binary.LittleEndian.PutUint32(buf[4*i:], v)
			}
			sum = crc32.Update(sum, castagnoli, buf[:4*n])
			arr = arr[n:]
		}
	}
	return sum
}

// CheckpointState is a copy of an Engine's state and a CheckpointMeta,
// taken by (*Engine).CheckpointState and encoded by Append. It shares
// nothing with the engine, so it may be encoded in another goroutine while
// the engine carries on: the engine's owner pauses only for the copy.
type CheckpointState struct {
	h         CheckpointHeader
	nslots    uint32
	treasures []ckptTreasure
	free      []uint32
	players   []ckptPlayer
	// dist and slot are the field's labels (version 2).
	dist, slot []uint32
}

type ckptTreasure struct {
	id                 string
	slot, node, points uint32 // slot NoNode: claimed or outside the graph
}

type ckptPlayer struct {
	id string
	w  SeqWindow
}

// CheckpointState copies e's state and m. fingerprint is
// Fingerprint(e.Graph()), which the caller computes once per graph. Its
// cost is linear in the ids ever dropped and the players, with no sorting,
// plus a copy of the field's two per-node arrays (8 bytes per node).
func (e *Engine) CheckpointState(m *CheckpointMeta, fingerprint uint32) *CheckpointState {
	s := &CheckpointState{
		h: CheckpointHeader{Version: CheckpointVersion, Partition: m.Partition, Partitions: m.Partitions, Radius: e.field.Radius(),
			Nodes: uint32(e.g.NumNodes()), Own: e.g.Own, Arcs: uint64(e.g.NumArcs()), Fingerprint: fingerprint, Seq: m.Seq},
		nslots:    uint32(len(e.points)),
		treasures: make([]ckptTreasure, 0, len(e.byID)),
		free:      slices.Clone(e.free),
		players:   make([]ckptPlayer, 0, len(m.Players)),
	}
	for id, slot := range e.byID {
		t := ckptTreasure{id: id, slot: slot}
		if slot != graph.NoNode {
			t.node, t.points = e.field.Node(slot), e.points[slot]
		}
		s.treasures = append(s.treasures, t)
	}
	for p, w := range m.Players {
		s.players = append(s.players, ckptPlayer{p, w})
	}
	s.dist, s.slot = e.field.Labels(nil, nil)
	return s
}

// AppendCheckpoint appends e's state and m to dst in the checkpoint format
// and returns the extended slice: e.CheckpointState(m, fingerprint).Append(dst).
func (e *Engine) AppendCheckpoint(dst []byte, m *CheckpointMeta, fingerprint uint32) []byte {
	return e.CheckpointState(m, fingerprint).Append(dst)
}

// Append appends the checkpoint to dst and returns the extended slice. Ids
// and players are written sorted, so that a state has one encoding; Append
// sorts s in place and may be called again.
func (s *CheckpointState) Append(dst []byte) []byte {
	le := binary.LittleEndian
	slices.SortFunc(s.treasures, func(a, b ckptTreasure) int { return strings.Compare(a.id, b.id) })
	slices.SortFunc(s.players, func(a, b ckptPlayer) int { return strings.Compare(a.id, b.id) })
	start := len(dst)
	dst = append(dst, make([]byte, ckptHeaderSize)...)
	h := dst[start:]
	copy(h, ckptMagic)
	le.PutUint32(h[8:], s.h.Version)
	le.PutUint32(h[16:], s.h.Partition)
	le.PutUint32(h[20:], s.h.Partitions)
	le.PutUint32(h[24:], s.h.Radius)
	le.PutUint32(h[28:], s.h.Nodes)
	le.PutUint32(h[32:], s.h.Own)
	le.PutUint32(h[36:], s.h.Fingerprint)
	le.PutUint64(h[40:], s.h.Arcs)
	le.PutUint64(h[48:], s.h.Seq)

	// Treasures.
	t0 := len(dst)
	dst = binary.AppendUvarint(dst, uint64(s.nslots))
	dst = binary.AppendUvarint(dst, uint64(len(s.treasures)))
	for _, t := range s.treasures {
		dst = binary.AppendUvarint(dst, uint64(len(t.id)))
		dst = append(dst, t.id...)
		if t.slot == graph.NoNode {
			dst = append(dst, 0)
			continue
		}
		dst = binary.AppendUvarint(dst, uint64(t.slot)+1)
		dst = binary.AppendUvarint(dst, uint64(t.node))
		dst = binary.AppendUvarint(dst, uint64(t.points))
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.free)))
	for _, f := range s.free {
		dst = binary.AppendUvarint(dst, uint64(f))
	}
	tlen := len(dst) - t0
	dst = le.AppendUint32(dst, crc32.Checksum(dst[t0:], castagnoli))

	// Players.
	p0 := len(dst)
	dst = binary.AppendUvarint(dst, uint64(len(s.players)))
	for _, p := range s.players {
		dst = binary.AppendUvarint(dst, uint64(len(p.id)))
		dst = append(dst, p.id...)
		dst = binary.AppendUvarint(dst, p.w.Last)
		if s.h.Version >= 3 {
			dst = binary.AppendUvarint(dst, p.w.Holes)
		}
	}
	plen := len(dst) - p0
	dst = le.AppendUint32(dst, crc32.Checksum(dst[p0:], castagnoli))

	// Field.
	flen := 0
	if s.h.Version >= 2 {
		f0 := len(dst)
		dst = slices.Grow(dst, 8*len(s.dist)+4)
		for _, d := range s.dist {
			dst = le.AppendUint32(dst, d)
		}
		for _, sl := range s.slot {
			dst = le.AppendUint32(dst, sl)
		}
		flen = len(dst) - f0
		dst = le.AppendUint32(dst, crc32.Checksum(dst[f0:], castagnoli))
	}

	h = dst[start:]
	le.PutUint64(h[56:], uint64(tlen))
	le.PutUint64(h[64:], uint64(plen))
	le.PutUint64(h[72:], uint64(flen))
	le.PutUint32(h[ckptCRCOff:], crc32.Checksum(h[:ckptHeaderSize], castagnoli))
	return dst
}

// ReadCheckpointHeader checks and returns a checkpoint's header: magic,
// version, header checksum, and the total length the section lengths
// imply (a longer or shorter data is refused).
func ReadCheckpointHeader(data []byte) (CheckpointHeader, error) {
	var h CheckpointHeader
	if len(data) < len(ckptMagic) {
		if string(data) == ckptMagic[:len(data)] {
			return h, fmt.Errorf("%w: %d bytes, the header has %d", ErrCheckpointTruncated, len(data), ckptHeaderSize)
		}
		return h, ErrNotCheckpoint
	}
	if string(data[:len(ckptMagic)]) != ckptMagic {
		return h, ErrNotCheckpoint
	}
	if len(data) < ckptHeaderSize {
		return h, fmt.Errorf("%w: %d bytes, the header has %d", ErrCheckpointTruncated, len(data), ckptHeaderSize)
	}
	le := binary.LittleEndian
	h.Version = le.Uint32(data[8:])
	if h.Version < 1 || h.Version > 3 {
		return h, fmt.Errorf("%w: the checkpoint has version %d, this build reads versions 1 to 3", ErrCheckpointVersion, h.Version)
	}
	var hdr [ckptHeaderSize]byte
	copy(hdr[:], data)
	le.PutUint32(hdr[ckptCRCOff:], 0)
	if got, want := crc32.Checksum(hdr[:], castagnoli), le.Uint32(data[ckptCRCOff:]); got != want {
		return h, fmt.Errorf("%w: header checksum 0x%08x, the header says 0x%08x", ErrCheckpointCorrupt, got, want)
	}
	reserved := 72
	if h.Version >= 2 {
		reserved = 80
	}
	for _, b := range data[reserved:ckptHeaderSize] {
		if b != 0 {
			return h, fmt.Errorf("%w: reserved header bytes are not zero", ErrCheckpointCorrupt)
		}
	}
	h.Partition = le.Uint32(data[16:])
	h.Partitions = le.Uint32(data[20:])
	h.Radius = le.Uint32(data[24:])
	h.Nodes = le.Uint32(data[28:])
	h.Own = le.Uint32(data[32:])
	h.Fingerprint = le.Uint32(data[36:])
	h.Arcs = le.Uint64(data[40:])
	h.Seq = le.Uint64(data[48:])
	h.TreasuresLen = le.Uint64(data[56:])
	h.PlayersLen = le.Uint64(data[64:])
	h.FieldLen = le.Uint64(data[72:])
	const maxSection = 1 << 40
	if h.TreasuresLen > maxSection || h.PlayersLen > maxSection || h.FieldLen > maxSection {
		return h, fmt.Errorf("%w: section lengths %d, %d and %d", ErrCheckpointCorrupt, h.TreasuresLen, h.PlayersLen, h.FieldLen)
	}
	want := uint64(ckptHeaderSize) + h.TreasuresLen + 4 + h.PlayersLen + 4
	if h.Version >= 2 {
		if h.FieldLen != 8*uint64(h.Nodes) {
			return h, fmt.Errorf("%w: field section of %d bytes for %d nodes", ErrCheckpointCorrupt, h.FieldLen, h.Nodes)
		}
		want += h.FieldLen + 4
	}
	if uint64(len(data)) < want {
		return h, fmt.Errorf("%w: %d bytes, the header says %d", ErrCheckpointTruncated, len(data), want)
	}
	if uint64(len(data)) > want {
		return h, fmt.Errorf("%w: %d bytes after the last section", ErrCheckpointCorrupt, uint64(len(data))-want)
	}
	return h, nil
}

// ReadCheckpoint checks a checkpoint written by AppendCheckpoint against g
// (the engine's graph: the same subgraph, whose Fingerprint is fingerprint)
// and radius, and returns a new Engine in the state written, with its
// field restored (version 2) or rebuilt from the active treasures
// (version 1), and the meta data. Every
// truncation, checksum failure or inconsistency is an error wrapping
// ErrNotCheckpoint, ErrCheckpointVersion, ErrCheckpointTruncated,
// ErrCheckpointCorrupt or ErrCheckpointMismatch and naming the problem;
// nothing is returned then.
func ReadCheckpoint(data []byte, g *graph.Graph, radius, fingerprint uint32) (*Engine, *CheckpointMeta, error) {
	e, m, err := readCheckpoint(data, g, radius, fingerprint)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint: %w", err)
	}
	return e, m, nil
}

func readCheckpoint(data []byte, g *graph.Graph, radius, fingerprint uint32) (*Engine, *CheckpointMeta, error) {
	h, err := ReadCheckpointHeader(data)
	if err != nil {
		return nil, nil, err
	}
	le := binary.LittleEndian
	tsec := data[ckptHeaderSize : ckptHeaderSize+h.TreasuresLen]
	if got, want := crc32.Checksum(tsec, castagnoli), le.Uint32(data[ckptHeaderSize+h.TreasuresLen:]); got != want {
		return nil, nil, fmt.Errorf("%w: treasures section checksum 0x%08x, the file says 0x%08x", ErrCheckpointCorrupt, got, want)
	}
	p0 := ckptHeaderSize + h.TreasuresLen + 4
	psec := data[p0 : p0+h.PlayersLen]
	if got, want := crc32.Checksum(psec, castagnoli), le.Uint32(data[p0+h.PlayersLen:]); got != want {
		return nil, nil, fmt.Errorf("%w: players section checksum 0x%08x, the file says 0x%08x", ErrCheckpointCorrupt, got, want)
	}
	var fsec []byte
	if h.Version >= 2 {
		f0 := p0 + h.PlayersLen + 4
		fsec = data[f0 : f0+h.FieldLen]
		if got, want := crc32.Checksum(fsec, castagnoli), le.Uint32(data[f0+h.FieldLen:]); got != want {
			return nil, nil, fmt.Errorf("%w: field section checksum 0x%08x, the file says 0x%08x", ErrCheckpointCorrupt, got, want)
		}
	}
	if h.Radius != radius || h.Nodes != uint32(g.NumNodes()) || h.Own != g.Own || h.Arcs != uint64(g.NumArcs()) || h.Fingerprint != fingerprint {
		return nil, nil, fmt.Errorf("%w: the checkpoint's graph has %d nodes (%d own), %d arcs, fingerprint 0x%08x, radius %d; this one %d (%d), %d, 0x%08x, %d",
			ErrCheckpointMismatch, h.Nodes, h.Own, h.Arcs, h.Fingerprint, h.Radius, g.NumNodes(), g.Own, g.NumArcs(), fingerprint, radius)
	}

	e := NewEngine(g, radius)
	r := reader{b: tsec, section: "treasures"}
	nslots := r.count(uint64(len(tsec)))
	nids := r.count(uint64(len(tsec)))
	if r.err != nil {
		return nil, nil, r.err
	}
	e.points = make([]uint32, nslots)
	used := make([]bool, nslots)
	var slots, nodes []uint32
	var ids []string
	prev := ""
	for i := uint64(0); i < nids && r.err == nil; i++ {
		id := r.str(1, MaxTreasureID)
		if r.err != nil {
			break
		}
		if err := CheckTreasure(id, 1); err != nil {
			return nil, nil, fmt.Errorf("%w: treasures section: %w", ErrCheckpointCorrupt, err)
		}
		if i > 0 && id <= prev {
			return nil, nil, fmt.Errorf("%w: treasures section: ids out of order (%q after %q)", ErrCheckpointCorrupt, id, prev)
		}
		prev = id
		s1 := r.uvarint()
		if s1 == 0 {
			e.byID[id] = graph.NoNode
			continue
		}
		s := s1 - 1
		v := r.uvarint()
		pts := r.uvarint()
		if r.err != nil {
			break
		}
		if s >= nslots || used[s] {
			return nil, nil, fmt.Errorf("%w: treasures section: treasure %s in slot %d (of %d, or taken twice)", ErrCheckpointCorrupt, id, s, nslots)
		}
		if v >= uint64(g.NumNodes()) || pts == 0 || pts > 1<<31-1 {
			return nil, nil, fmt.Errorf("%w: treasures section: treasure %s on local node %d with %d points", ErrCheckpointCorrupt, id, v, pts)
		}
		used[s] = true
		e.byID[id] = uint32(s)
		e.points[s] = uint32(pts)
		e.at[uint32(v)] = append(e.at[uint32(v)], uint32(s))
		e.nActive++
		slots, ids, nodes = append(slots, uint32(s)), append(ids, id), append(nodes, uint32(v))
	}
	nfree := r.count(uint64(len(tsec)))
	for i := uint64(0); i < nfree && r.err == nil; i++ {
		s := r.uvarint()
		if r.err != nil {
			break
		}
		if s >= nslots || used[s] {
			return nil, nil, fmt.Errorf("%w: treasures section: free slot %d (of %d) in use", ErrCheckpointCorrupt, s, nslots)
		}
		used[s] = true
		e.free = append(e.free, uint32(s))
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	if err := r.end(); err != nil {
		return nil, nil, err
	}
	if uint64(e.nActive)+nfree != nslots {
		return nil, nil, fmt.Errorf("%w: treasures section: %d active and %d free slots, %d in all", ErrCheckpointCorrupt, e.nActive, nfree, nslots)
	}

	m := &CheckpointMeta{Partition: h.Partition, Partitions: h.Partitions, Seq: h.Seq}
	r = reader{b: psec, section: "players"}
	np := r.count(uint64(len(psec)))
	m.Players = make(map[string]SeqWindow, np)
	prev = ""
	for i := uint64(0); i < np && r.err == nil; i++ {
		p := r.str(0, len(psec))
		var w SeqWindow
		w.Last = r.uvarint()
		if h.Version >= 3 {
			w.Holes = r.uvarint()
		}
		if r.err != nil {
			break
		}
		if i > 0 && p <= prev {
			return nil, nil, fmt.Errorf("%w: players section: players out of order (%q after %q)", ErrCheckpointCorrupt, p, prev)
		}
		prev = p
		m.Players[p] = w
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	if err := r.end(); err != nil {
		return nil, nil, err
	}
	if fsec == nil {
		// Version 1: the field is a function of the active treasures.
		e.field.DropAll(slots, ids, nodes)
		return e, m, nil
	}
	n := int(h.Nodes)
	dist, slot := make([]uint32, n), make([]uint32, n)
	for i := range dist {
		dist[i] = le.Uint32(fsec[4*i:])
		slot[i] = le.Uint32(fsec[4*(n+i):])
	}
	if err := e.field.Restore(dist, slot, slots, ids, nodes); err != nil {
		return nil, nil, fmt.Errorf("%w: field section: %w", ErrCheckpointCorrupt, err)
	}
	return e, m, nil
}

// reader decodes one section; the first problem sticks in err.
type reader struct {
	b       []byte
	off     int
	section string
	err     error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s section: %s at byte %d", ErrCheckpointCorrupt, r.section, what, r.off)
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	if n > 1 && r.b[r.off+n-1] == 0 {
		// An overlong encoding (a last byte of zero): AppendUvarint never
		// writes one, and accepting it would give a state two encodings.
		r.fail("overlong varint")
		return 0
	}
	r.off += n
	return v
}

// count reads a count that cannot exceed limit (each item takes a byte).
func (r *reader) count(limit uint64) uint64 {
	v := r.uvarint()
	if v > limit {
		r.fail(fmt.Sprintf("count %d larger than the section", v))
		return 0
	}
	return v
}

func (r *reader) str(minLen, maxLen int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n < uint64(minLen) || n > uint64(maxLen) || n > uint64(len(r.b)-r.off) {
		r.fail(fmt.Sprintf("string of %d bytes", n))
		return ""
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

func (r *reader) end() error {
	if r.off != len(r.b) {
		return fmt.Errorf("%w: %s section: %d bytes left over", ErrCheckpointCorrupt, r.section, len(r.b)-r.off)
	}
	return nil
}
