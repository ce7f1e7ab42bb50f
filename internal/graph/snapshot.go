package graph

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"unsafe"
)

// A snapshot is a Graph compiled to its flat arrays, loaded in one read (or
// mapped) without parsing: a fixed little-endian header, then 8-byte
// aligned sections that are used in place as the graph's slices.
//
//	off size field
//	  0    8 magic "TRSNAP\x00\x01"
//	  8    4 format version (SnapshotVersion)
//	 12    4 flags: 1 coordinates, 2 Global (a partition's subgraph)
//	 16    4 N, nodes
//	 20    4 M, arcs
//	 24    4 Own
//	 28    4 CRC-32C (Castagnoli) of header (with this field zero) + payload
//	 32    8 payload length in bytes
//	 40   24 reserved, zero
//	 64      offsets [N+1]uint32, arcs [M]{to, len uint32},
//	         X [N]int32, Y [N]int32 (flag 1), Global [N]uint32 (flag 2),
//	         each section padded with zeros to a multiple of 8 bytes.
const (
	// SnapshotVersion is the format version this build writes and reads.
	SnapshotVersion = 1

	snapMagic      = "TRSNAP\x00\x01"
	snapHeaderSize = 64
	snapCRCOff     = 28

	snapFlagCoords = 1 << 0
	snapFlagGlobal = 1 << 1
)

// Errors a snapshot reader wraps, for errors.Is.
var (
	ErrNotSnapshot       = errors.New("not a graph snapshot (bad magic)")
	ErrSnapshotVersion   = errors.New("unsupported snapshot version")
	ErrSnapshotTruncated = errors.New("truncated")
	ErrSnapshotCorrupt   = errors.New("corrupt")
	ErrBigEndian         = errors.New("snapshots are little-endian; big-endian hosts are not supported")
)

var (
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
	littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1
)

type snapLayout struct {
	offsets, arcs, x, y, global, end uint64 // byte offsets in the file
}

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

func layoutOf(n, m uint64, flags uint32) snapLayout {
	var l snapLayout
	off := uint64(snapHeaderSize)
	l.offsets, off = off, off+align8((n+1)*4)
	l.arcs, off = off, off+m*8
	if flags&snapFlagCoords != 0 {
		l.x, off = off, off+align8(n*4)
		l.y, off = off, off+align8(n*4)
	}
	if flags&snapFlagGlobal != 0 {
		l.global, off = off, off+align8(n*4)
	}
	l.end = off
	return l
}

// asBytes views a slice of 4- or 8-byte plain values as its bytes.
func asBytes[T uint32 | int32 | Arc](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(z)))
}

// WriteSnapshot writes g to w as a snapshot. It refuses a graph whose
// arrays are inconsistent (see ReadSnapshot for what is checked) and
// returns ErrBigEndian on a big-endian host. It does not close w.
func WriteSnapshot(w io.Writer, g *Graph) error {
	if !littleEndian {
		return fmt.Errorf("snapshot: %w", ErrBigEndian)
	}
	if err := g.checkCSR(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	n, m := uint64(g.NumNodes()), uint64(len(g.Arcs))
	var flags uint32
	if g.X != nil {
		flags |= snapFlagCoords
	}
	if g.Global != nil {
		flags |= snapFlagGlobal
	}
	var pad [8]byte
	parts := [][]byte{}
	add := func(b []byte) {
		parts = append(parts, b)
		if r := len(b) % 8; r != 0 {
			parts = append(parts, pad[:8-r])
		}
	}
	add(asBytes(g.Offsets))
	add(asBytes(g.Arcs))
	if g.X != nil {
		add(asBytes(g.X))
		add(asBytes(g.Y))
	}
	if g.Global != nil {
		add(asBytes(g.Global))
	}
	l := layoutOf(n, m, flags)

	var h [snapHeaderSize]byte
	copy(h[:], snapMagic)
	le := binary.LittleEndian
	le.PutUint32(h[8:], SnapshotVersion)
	le.PutUint32(h[12:], flags)
	le.PutUint32(h[16:], uint32(n))
	le.PutUint32(h[20:], uint32(m))
	le.PutUint32(h[24:], g.Own)
	le.PutUint64(h[32:], l.end-snapHeaderSize)
	crc := crc32.Update(0, castagnoli, h[:])
	for _, p := range parts {
		crc = crc32.Update(crc, castagnoli, p)
	}
	le.PutUint32(h[snapCRCOff:], crc)

	if _, err := w.Write(h[:]); err != nil {
		return fmt.Errorf("snapshot: write: %w", err)
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return fmt.Errorf("snapshot: write: %w", err)
		}
	}
	return nil
}

// SaveSnapshot writes g as a snapshot file at path, atomically: it writes a
// temporary file beside path, syncs it and renames it over path.
func SaveSnapshot(path string, g *Graph) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = WriteSnapshot(f, g); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// LoadSnapshot reads the snapshot file at path in one read into a single
// pointer-free buffer on the Go heap and returns the graph that views it
// (see ReadSnapshot). The memory is the garbage collector's: the graph can
// be dropped like any other value. For the graph a process serves for its
// whole life, MapSnapshot (or Open) is much faster to load.
func LoadSnapshot(path string) (*Graph, error) {
	data, err := readAligned(path)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	g, err := readSnapshot(data, true)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return g, nil
}

// MapSnapshot maps the snapshot file at path read-only into memory and
// returns the graph that views the mapping, checked as ReadSnapshot checks
// it. Nothing is copied: the kernel's page cache is the graph's memory,
// shared by every process that maps the same file, and loading costs the
// checksum and the structural checks (tens of milliseconds for the 2.3 M
// node graph, where reading it into fresh heap memory takes up to a second
// on a VM that faults pages in slowly).
//
// The graph is read-only: writing to its arrays crashes the process. It is
// valid until release is called; release unmaps it, after which any use of
// the graph or of slices taken from it crashes the process, so call it only
// once nothing refers to the graph (a process that serves one graph for its
// whole life need never call it). Replace a mapped snapshot file by rename,
// as SaveSnapshot does, never by rewriting it in place.
func MapSnapshot(path string) (g *Graph, release func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	size := st.Size()
	if size < 1<<16 || uint64(size) > math.MaxInt || !st.Mode().IsRegular() {
		// Small or odd files: a read is as cheap, and the heap is simpler.
		g, err := LoadSnapshot(path)
		return g, func() error { return nil }, err
	}
	data, err := mmapFile(f, int(size))
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: map %s: %w", path, err)
	}
	g, err = readSnapshot(data, true)
	if err != nil {
		munmap(data)
		return nil, nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	g.mapped = data
	var once sync.Once
	release = func() error {
		err := os.ErrClosed
		once.Do(func() { err = munmap(data) })
		if err != nil {
			return fmt.Errorf("snapshot: unmap %s: %w", path, err)
		}
		return nil
	}
	return g, release, nil
}

// EvictPages tells the kernel that this process will not touch a mapped
// graph's arrays soon: their pages leave the process's resident set (the
// page cache keeps them, shared with every process mapping the file) and
// come back on the next touch, at the cost of a minor fault each. A worker
// that serves only its partitions' subgraphs calls it once they are built,
// so that its RSS holds what it uses. The graph stays valid. It does nothing
// for a graph read into the heap.
func (g *Graph) EvictPages() error {
	if g.mapped == nil {
		return nil
	}
	if err := adviseDontNeed(g.mapped); err != nil {
		return fmt.Errorf("graph: evict pages: %w", err)
	}
	return nil
}

// readAligned reads a whole file into an 8-byte aligned buffer.
func readAligned(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 0 || uint64(size) > math.MaxInt-7 {
		return nil, fmt.Errorf("%s: %d bytes is too large", path, size)
	}
	data := alignedBytes(int(size))
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// alignedBytes returns n zero bytes starting at an 8-byte aligned address,
// in memory the garbage collector does not scan.
func alignedBytes(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
}

// ReadSnapshot returns the graph held in a snapshot. The graph's slices are
// views of data (copied first only when data is not 8-byte aligned), so
// data must not be modified afterwards.
//
// It checks, in O(N+M), everything that later code relies on to index
// safely: magic, version, flags, sizes, the CRC-32C, monotone offsets that
// end at M, arc targets below N without self-loops, sorted and unique per
// node, positive lengths, Own <= N and Global entries that are valid
// indices. It does not check symmetry (every arc has its reverse), which is
// O(M·degree): call Graph.Validate for that on untrusted files.
//
// Errors wrap ErrNotSnapshot, ErrSnapshotVersion, ErrSnapshotTruncated,
// ErrSnapshotCorrupt or ErrBigEndian and name the problem.
func ReadSnapshot(data []byte) (*Graph, error) {
	g, err := readSnapshot(data, true)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return g, nil
}

// readSnapshot is ReadSnapshot; verifyCRC false lets the fuzz tests reach
// the structural checks behind the checksum.
func readSnapshot(data []byte, verifyCRC bool) (*Graph, error) {
	if !littleEndian {
		return nil, ErrBigEndian
	}
	if len(data) < len(snapMagic) {
		if string(data) == snapMagic[:len(data)] {
			return nil, fmt.Errorf("%w: %d bytes, the header has %d", ErrSnapshotTruncated, len(data), snapHeaderSize)
		}
		return nil, ErrNotSnapshot
	}
	if string(data[:len(snapMagic)]) != snapMagic {
		return nil, ErrNotSnapshot
	}
	if len(data) < snapHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, the header has %d", ErrSnapshotTruncated, len(data), snapHeaderSize)
	}
	le := binary.LittleEndian
	if v := le.Uint32(data[8:]); v != SnapshotVersion {
		return nil, fmt.Errorf("%w: the file has version %d, this build reads version %d", ErrSnapshotVersion, v, SnapshotVersion)
	}
	flags := le.Uint32(data[12:])
	n := uint64(le.Uint32(data[16:]))
	m := uint64(le.Uint32(data[20:]))
	own := le.Uint32(data[24:])
	sum := le.Uint32(data[snapCRCOff:])
	payload := le.Uint64(data[32:])
	if flags&^(snapFlagCoords|snapFlagGlobal) != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrSnapshotCorrupt, flags)
	}
	if n > MaxNodes {
		return nil, fmt.Errorf("%w: %d nodes, more than %d", ErrSnapshotCorrupt, n, uint64(MaxNodes))
	}
	for _, b := range data[40:snapHeaderSize] {
		if b != 0 {
			return nil, fmt.Errorf("%w: reserved header bytes are not zero", ErrSnapshotCorrupt)
		}
	}
	l := layoutOf(n, m, flags)
	if payload != l.end-snapHeaderSize {
		return nil, fmt.Errorf("%w: payload of %d bytes in the header, %d nodes and %d arcs need %d", ErrSnapshotCorrupt, payload, n, m, l.end-snapHeaderSize)
	}
	if uint64(len(data)) < l.end {
		return nil, fmt.Errorf("%w: %d bytes, the header says %d", ErrSnapshotTruncated, len(data), l.end)
	}
	if uint64(len(data)) > l.end {
		return nil, fmt.Errorf("%w: %d bytes after the payload", ErrSnapshotCorrupt, uint64(len(data))-l.end)
	}
	if verifyCRC {
		var h [snapHeaderSize]byte
		copy(h[:], data)
		le.PutUint32(h[snapCRCOff:], 0)
		got := crc32.Update(crc32.Update(0, castagnoli, h[:]), castagnoli, data[snapHeaderSize:])
		if got != sum {
			return nil, fmt.Errorf("%w: checksum 0x%08x, the header says 0x%08x", ErrSnapshotCorrupt, got, sum)
		}
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(data)))%8 != 0 {
		data = append(alignedBytes(len(data))[:0], data...)
	}
	g := &Graph{
		Offsets: view[uint32](data, l.offsets, n+1),
		Arcs:    view[Arc](data, l.arcs, m),
		Own:     own,
	}
	if flags&snapFlagCoords != 0 {
		g.X = view[int32](data, l.x, n)
		g.Y = view[int32](data, l.y, n)
	}
	if flags&snapFlagGlobal != 0 {
		g.Global = view[uint32](data, l.global, n)
	}
	if err := checkPadding(data, l, n, m, flags); err != nil {
		return nil, err
	}
	if err := g.checkCSR(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshotCorrupt, err)
	}
	return g, nil
}

// view returns the count values of type T at byte offset off of data, which
// the caller has bounds-checked and aligned. It is never nil.
func view[T uint32 | int32 | Arc](data []byte, off, count uint64) []T {
	if count == 0 {
		return []T{}
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&data[off])), count)
}

// checkPadding requires the padding after 4-byte sections to be zero, so
// that a snapshot has exactly one encoding.
func checkPadding(data []byte, l snapLayout, n, m uint64, flags uint32) error {
	check := func(start, size uint64) error {
		for _, b := range data[start+size : start+align8(size)] {
			if b != 0 {
				return fmt.Errorf("%w: padding bytes are not zero", ErrSnapshotCorrupt)
			}
		}
		return nil
	}
	if err := check(l.offsets, (n+1)*4); err != nil {
		return err
	}
	if flags&snapFlagCoords != 0 {
		if err := check(l.x, n*4); err != nil {
			return err
		}
		if err := check(l.y, n*4); err != nil {
			return err
		}
	}
	if flags&snapFlagGlobal != 0 {
		return check(l.global, n*4)
	}
	return nil
}
