package graph

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// ioRandomGraph builds a graph of n nodes with about deg·n/2 random edges,
// duplicates and self-loops included, and coordinates when coords is set.
func ioRandomGraph(tb testing.TB, seed uint64, n, deg int, coords bool) *Graph {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	edges := make([]Edge, 0, n*deg/2)
	for range n * deg / 2 {
		edges = append(edges, Edge{U: uint32(r.IntN(n)), V: uint32(r.IntN(n)), Len: 1 + uint32(r.IntN(1000))})
	}
	var x, y []int32
	if coords {
		x, y = make([]int32, n), make([]int32, n)
		for i := range x {
			x[i], y[i] = r.Int32()-1<<30, -r.Int32()
		}
	}
	g, err := FromEdges(n, edges, x, y)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// ioSubgraph dresses g up as a partition's subgraph.
func ioSubgraph(g *Graph, own uint32) *Graph {
	c := *g
	c.Global = make([]uint32, g.NumNodes())
	for i := range c.Global {
		c.Global[i] = uint32(i)*3 + 11
	}
	c.Own = own
	return &c
}

func ioSnapshotBytes(tb testing.TB, g *Graph) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, g); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// ioFixCRC recomputes the checksum of a snapshot after a test changed it.
func ioFixCRC(data []byte) {
	if len(data) < snapHeaderSize {
		return
	}
	binary.LittleEndian.PutUint32(data[snapCRCOff:], 0)
	binary.LittleEndian.PutUint32(data[snapCRCOff:], crc32.Checksum(data, castagnoli))
}

func ioSnapshotCases(tb testing.TB) []struct {
	name string
	g    *Graph
} {
	tiny := ioWithCoords(ioTiny, ioTinyX, ioTinyY)
	return []struct {
		name string
		g    *Graph
	}{
		{"tiny with coordinates", tiny},
		{"tiny without coordinates", ioTiny},
		{"tiny subgraph", ioSubgraph(tiny, 2)},
		{"subgraph without coordinates", ioSubgraph(ioTiny, 5)},
		{"no nodes", &Graph{Offsets: []uint32{0}, Arcs: []Arc{}}},
		{"no nodes with coordinates and global", &Graph{Offsets: []uint32{0}, Arcs: []Arc{}, X: []int32{}, Y: []int32{}, Global: []uint32{}}},
		{"odd node count", ioRandomGraph(tb, 1, 1001, 3, true)},
		{"random subgraph", ioSubgraph(ioRandomGraph(tb, 2, 4000, 5, false), 1000)},
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, tt := range ioSnapshotCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			data := ioSnapshotBytes(t, tt.g)
			if len(data)%8 != 0 {
				t.Fatalf("snapshot of %d bytes, want a multiple of 8", len(data))
			}
			g, err := ReadSnapshot(data)
			if err != nil {
				t.Fatal(err)
			}
			ioAssertEqual(t, g, tt.g)
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
			if again := ioSnapshotBytes(t, g); !bytes.Equal(again, data) {
				t.Fatal("writing the read graph gives other bytes")
			}
			// Zero copy: the graph's arrays are views of data.
			if unsafe.SliceData(g.Offsets) != (*uint32)(unsafe.Pointer(&data[snapHeaderSize])) {
				t.Fatal("offsets were copied, want a view of the input")
			}
		})
	}
}

func TestReadSnapshotMisaligned(t *testing.T) {
	g := ioRandomGraph(t, 3, 300, 4, true)
	data := ioSnapshotBytes(t, g)
	buf := make([]byte, len(data)+1)
	copy(buf[1:], data)
	got, err := ReadSnapshot(buf[1:])
	if err != nil {
		t.Fatal(err)
	}
	ioAssertEqual(t, got, g)
}

func TestSaveLoadSnapshot(t *testing.T) {
	g := ioSubgraph(ioRandomGraph(t, 4, 2000, 4, true), 700)
	path := filepath.Join(t.TempDir(), "g.snap")
	if err := SaveSnapshot(path, g); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	ioAssertEqual(t, got, g)
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want only g.snap", entries, err)
	}
}

func TestSaveSnapshotRefusesBadGraph(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.snap")
	err := SaveSnapshot(path, &Graph{Offsets: []uint32{0, 2}, Arcs: []Arc{{0, 1}}})
	if err == nil || !strings.Contains(err.Error(), "offsets span 0..2, want 0..1") {
		t.Fatalf("error %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
		t.Fatalf("left %v behind", entries)
	}
}

func TestWriteSnapshotRefusesBadGraph(t *testing.T) {
	tests := []struct {
		name string
		g    *Graph
		want string
	}{
		{"zero graph", &Graph{}, "snapshot: graph: no offsets"},
		{"arc out of range", &Graph{Offsets: []uint32{0, 1}, Arcs: []Arc{{5, 1}}}, "node 0 has an arc to 5 of 1"},
		{"self-loop", &Graph{Offsets: []uint32{0, 1}, Arcs: []Arc{{0, 1}}}, "self-loop at node 0"},
		{"zero length", &Graph{Offsets: []uint32{0, 1, 1}, Arcs: []Arc{{1, 0}}}, "arc 0-1: edge length must be positive"},
		{"unsorted", &Graph{Offsets: []uint32{0, 2, 2, 2}, Arcs: []Arc{{2, 1}, {1, 1}}}, "arcs of node 0 unsorted or duplicated"},
		{"offsets decrease", &Graph{Offsets: []uint32{0, 2, 1, 2}, Arcs: []Arc{{1, 1}, {2, 1}}}, "offsets of node 1 (2..1) out of order"},
		{"offset beyond the arcs", &Graph{Offsets: []uint32{0, 9, 1}, Arcs: []Arc{{1, 1}}}, "offsets of node 0 (0..9) out of order or beyond 1 arcs"},
		{"coordinates of the wrong length", &Graph{Offsets: []uint32{0, 0}, Arcs: []Arc{}, X: []int32{1}, Y: []int32{}}, "coordinates for 1/0 nodes, want 1"},
		{"global of the wrong length", &Graph{Offsets: []uint32{0, 0}, Arcs: []Arc{}, Global: []uint32{1, 2}}, "2 global ids for 1 nodes"},
		{"own above N", &Graph{Offsets: []uint32{0, 0}, Arcs: []Arc{}, Own: 2}, "2 own nodes of 1"},
		{"global index NoNode", &Graph{Offsets: []uint32{0, 0}, Arcs: []Arc{}, Global: []uint32{NoNode}}, "node 0 has global index 4294967295"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteSnapshot(&buf, tt.g)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Fatalf("wrote %d bytes of a bad graph", buf.Len())
			}
		})
	}
}

type ioFailWriter struct{ after int }

func (w *ioFailWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("disk full")
	}
	w.after--
	return len(p), nil
}

func TestWriteSnapshotWriteError(t *testing.T) {
	for after := range 3 {
		err := WriteSnapshot(&ioFailWriter{after: after}, ioTiny)
		if err == nil || err.Error() != "snapshot: write: disk full" {
			t.Fatalf("after %d writes: error %v", after, err)
		}
	}
}

func TestReadSnapshotHeaderErrors(t *testing.T) {
	good := ioSnapshotBytes(t, ioWithCoords(ioTiny, ioTinyX, ioTinyY))
	edit := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	le := binary.LittleEndian
	tests := []struct {
		name string
		data []byte
		is   error
		want string
	}{
		{"empty", nil, ErrSnapshotTruncated, "snapshot: truncated: 0 bytes, the header has 64"},
		{"magic prefix only", good[:5], ErrSnapshotTruncated, "truncated: 5 bytes, the header has 64"},
		{"header cut short", good[:40], ErrSnapshotTruncated, "truncated: 40 bytes, the header has 64"},
		{"payload cut short", good[:len(good)-8], ErrSnapshotTruncated, "truncated: 192 bytes, the header says 200"},
		{"foreign short file", []byte("hi"), ErrNotSnapshot, "snapshot: not a graph snapshot (bad magic)"},
		{"foreign file", []byte("p sp 5 7\na 1 2 3\n"), ErrNotSnapshot, "not a graph snapshot (bad magic)"},
		{"gzip file", ioGzip(t, good), ErrNotSnapshot, "not a graph snapshot (bad magic)"},
		{"newer version", edit(func(b []byte) []byte { le.PutUint32(b[8:], 2); return b }), ErrSnapshotVersion,
			"snapshot: unsupported snapshot version: the file has version 2, this build reads version 1"},
		{"trailing bytes", append(slices.Clone(good), 0), ErrSnapshotCorrupt, "corrupt: 1 bytes after the payload"},
		{"flipped payload bit", edit(func(b []byte) []byte { b[100] ^= 4; return b }), ErrSnapshotCorrupt, "corrupt: checksum 0x"},
		{"flipped checksum bit", edit(func(b []byte) []byte { b[snapCRCOff] ^= 1; return b }), ErrSnapshotCorrupt, "corrupt: checksum 0x"},
		{"unknown flag", edit(func(b []byte) []byte { b[12] |= 8; return b }), ErrSnapshotCorrupt, "corrupt: unknown flags 0x9"},
		{"more nodes than the payload holds", edit(func(b []byte) []byte { le.PutUint32(b[16:], 6); return b }), ErrSnapshotCorrupt,
			"corrupt: payload of 136 bytes in the header, 6 nodes and 8 arcs need 144"},
		{"too many nodes", edit(func(b []byte) []byte { le.PutUint32(b[16:], NoNode); return b }), ErrSnapshotCorrupt, "corrupt: 4294967295 nodes, more than 4294967294"},
		{"payload length lies", edit(func(b []byte) []byte { le.PutUint64(b[32:], 1<<63); return b }), ErrSnapshotCorrupt, "corrupt: payload of 9223372036854775808 bytes"},
		{"reserved byte set", edit(func(b []byte) []byte { b[63] = 1; return b }), ErrSnapshotCorrupt, "corrupt: reserved header bytes are not zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := ReadSnapshot(tt.data)
			if err == nil {
				t.Fatalf("read %d nodes, want error", g.NumNodes())
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}

// TestReadSnapshotStructureErrors corrupts the arrays and fixes the checksum
// up, as a buggy writer would: the structural checks must catch what the
// checksum cannot.
func TestReadSnapshotStructureErrors(t *testing.T) {
	good := ioSnapshotBytes(t, ioSubgraph(ioWithCoords(ioTiny, ioTinyX, ioTinyY), 3))
	l := layoutOf(5, 8, snapFlagCoords|snapFlagGlobal)
	le := binary.LittleEndian
	put := func(off uint64, v uint32) []byte {
		b := slices.Clone(good)
		le.PutUint32(b[off:], v)
		ioFixCRC(b)
		return b
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"first offset not zero", put(l.offsets, 1), "offsets span 1..8, want 0..8"},
		{"last offset not M", put(l.offsets+5*4, 7), "offsets span 0..7, want 0..8"},
		{"offsets decrease", put(l.offsets+2*4, 0), "offsets of node 1 (1..0) out of order"},
		{"offset beyond the arcs", put(l.offsets+1*4, 100), "offsets of node 0 (0..100) out of order or beyond 8 arcs"},
		{"arc to a node beyond N", put(l.arcs, 5), "node 0 has an arc to 5 of 5: node out of range"},
		{"arc to NoNode", put(l.arcs+8*7, NoNode), "node 4 has an arc to 4294967295 of 5"},
		{"self-loop", put(l.arcs, 0), "self-loop at node 0"},
		{"duplicate arc", put(l.arcs+8*2, 0), "arcs of node 1 unsorted or duplicated"},
		{"zero length", put(l.arcs+4, 0), "arc 0-1: edge length must be positive"},
		{"own above N", put(24, 6), "6 own nodes of 5"},
		{"global NoNode", put(l.global+4*4, NoNode), "node 4 has global index 4294967295"},
		{"coordinate padding", put(l.x+5*4, 1), "padding bytes are not zero"},
		{"global padding", put(l.global+5*4, 1), "padding bytes are not zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadSnapshot(tt.data)
			if !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want corrupt containing %q", err, tt.want)
			}
		})
	}
	// Four nodes: five offsets, so the offsets section has padding too.
	b := ioSnapshotBytes(t, &Graph{Offsets: []uint32{0, 1, 2, 2, 2}, Arcs: []Arc{{1, 1}, {0, 1}}, Own: 4})
	b[snapHeaderSize+5*4] = 1
	ioFixCRC(b)
	if _, err := ReadSnapshot(b); !errors.Is(err, ErrSnapshotCorrupt) || !strings.Contains(err.Error(), "padding bytes are not zero") {
		t.Fatalf("offsets padding set: error %v, want corrupt padding", err)
	}
	// A changed coordinate is still a valid snapshot: coordinates are free.
	if _, err := ReadSnapshot(put(l.x, 12345)); err != nil {
		t.Fatal(err)
	}
}

// TestReadSnapshotEveryCorruption flips each byte and truncates at each
// length: always an error, never a panic. With the checksum fixed up after
// each change, the result is an error or a graph that is safe to walk.
func TestReadSnapshotEveryCorruption(t *testing.T) {
	for _, tt := range ioSnapshotCases(t)[:6] {
		good := ioSnapshotBytes(t, tt.g)
		for i := range good {
			b := slices.Clone(good)
			b[i] ^= 0x5a
			_, err := ReadSnapshot(b)
			var want error
			switch {
			case i < 8:
				want = ErrNotSnapshot
			case i < 12:
				want = ErrSnapshotVersion
			default:
				want = ErrSnapshotCorrupt
			}
			if !errors.Is(err, want) {
				t.Fatalf("%s: byte %d flipped: error %v, want %v", tt.name, i, err, want)
			}
			for _, v := range []byte{0, 1, 0xff, b[i] ^ 0x80} {
				b[i] = v
				ioFixCRC(b)
				if g, err := ReadSnapshot(b); err == nil {
					ioWalk(g)
				}
			}
		}
		for n := range len(good) {
			if _, err := ReadSnapshot(good[:n]); !errors.Is(err, ErrSnapshotTruncated) {
				t.Fatalf("%s: cut at %d of %d bytes: error %v, want truncated", tt.name, n, len(good), err)
			}
		}
	}
}

// ioWalk touches every array entry of g through the accessors, as the search
// code does; it panics if a loader let an inconsistent graph through.
func ioWalk(g *Graph) uint64 {
	var sum uint64
	for v := range uint32(g.NumNodes()) {
		for _, a := range g.Neighbors(v) {
			sum += uint64(a.Len) + uint64(g.Degree(a.To)) + uint64(g.GlobalIndex(a.To))
			if g.HasCoords() {
				sum += uint64(g.X[a.To]) + uint64(g.Y[v])
			}
		}
	}
	for v := range g.Own {
		sum += uint64(g.GlobalIndex(v))
	}
	return sum
}

func TestLoadSnapshotErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	data := ioSnapshotBytes(t, ioTiny)
	cut := filepath.Join(dir, "cut.snap")
	if err := os.WriteFile(cut, data[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSnapshot(cut)
	if want := "snapshot " + cut + ": truncated: 100 bytes, the header says "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %v, want prefix %q", err, want)
	}
	_, err = LoadSnapshot(filepath.Join(dir, "none.snap"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "none.snap") {
		t.Fatalf("error %v, want not-exist naming none.snap", err)
	}
}

func TestMapSnapshot(t *testing.T) {
	big := ioSubgraph(ioRandomGraph(t, 5, 20000, 4, true), 9000) // over the 64 KiB read threshold
	small := ioWithCoords(ioTiny, ioTinyX, ioTinyY)
	for _, g := range []*Graph{big, small} {
		path := filepath.Join(t.TempDir(), "g.snap")
		if err := SaveSnapshot(path, g); err != nil {
			t.Fatal(err)
		}
		got, release, err := MapSnapshot(path)
		if err != nil {
			t.Fatal(err)
		}
		ioAssertEqual(t, got, g)
		ioWalk(got)
		if err := release(); err != nil {
			t.Fatal(err)
		}
		if g == big {
			if err := release(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("second release: error %v, want %v", err, os.ErrClosed)
			}
		}
	}
}

func TestMapSnapshotErrors(t *testing.T) {
	data := ioSnapshotBytes(t, ioRandomGraph(t, 6, 20000, 4, false))
	flipped := slices.Clone(data)
	flipped[len(flipped)/2] ^= 1
	dir := ioWriteFiles(t, map[string][]byte{
		"cut.snap":   data[:len(data)-1],
		"flip.snap":  flipped,
		"small.snap": data[:100],
	})
	tests := []struct {
		file string
		is   error
		want string
	}{
		{"cut.snap", ErrSnapshotTruncated, "cut.snap: truncated"},
		{"flip.snap", ErrSnapshotCorrupt, "flip.snap: corrupt: checksum"},
		{"small.snap", ErrSnapshotTruncated, "small.snap: truncated: 100 bytes"},
		{"none.snap", os.ErrNotExist, "none.snap"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			g, release, err := MapSnapshot(filepath.Join(dir, tt.file))
			if err == nil {
				release()
				t.Fatalf("mapped %d nodes, want error", g.NumNodes())
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}
