package game

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"hash/crc32"
	"strconv"
	"strings"
	"testing"

	"treasure/internal/graph"
)

// Fuzzers of the files the game reads from outside: treasure lists
// (`treasure nearest --treasures FILE`, what-if runs) and checkpoints
// (proximity's object store). FuzzReadCheckpoint (checkpoint_test.go)
// feeds raw bytes, which rarely get past the header's checksum; the
// fuzzer here rebuilds the header and checksums around fuzzed sections so
// that the section decoders are what it explores.
//
//	go test -run '^$' -fuzz '^FuzzReadTreasureCSV$' -fuzztime 60s ./internal/game/
//	go test -run '^$' -fuzz '^FuzzCheckpointSections$' -fuzztime 60s ./internal/game/

// FuzzReadTreasureCSV: no input panics the reader; every row it accepts
// passes CheckTreasure with a positive node, and the rows written back as
// CSV read back the same.
func FuzzReadTreasureCSV(f *testing.F) {
	for _, s := range []string{
		"id,node,points\ngold,12,50\n\nsilver, 3 ,5\n",
		"points,id,node,extra\n9,x,1,zzz\n",
		"\ufeffID , Node,POINTS\r\na,1,1\r\n",
		"id,node,points\n\"q\"\"uote\",1,1\n",
		"id,node,points\na,0,1\n",
		"id,node,points\na,18446744073709551616,1\n",
		"id,node,points\na,1,2147483648\n",
		"id,node\n",
		"",
		"id,node,points\na,1\n",
		"id,node,points\n\"unterminated,1,1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := ReadTreasureCSV(bytes.NewReader(data))
		if err != nil {
			if rows != nil {
				t.Fatalf("%d rows along with error %v", len(rows), err)
			}
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error %q does not name the line", err)
			}
			return
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		_ = w.Write([]string{"id", "node", "points"})
		for _, r := range rows {
			if r.NodeID == 0 || CheckTreasure(r.ID, int64(r.Points)) != nil || r.Line < 2 {
				t.Fatalf("accepted row %+v", r)
			}
			_ = w.Write([]string{r.ID, strconv.FormatUint(r.NodeID, 10), strconv.FormatUint(uint64(r.Points), 10)})
		}
		w.Flush()
		back, err := ReadTreasureCSV(&buf)
		if err != nil {
			t.Fatalf("rows %+v written back: %v", rows, err)
		}
		if len(back) != len(rows) {
			t.Fatalf("%d rows read back as %d", len(rows), len(back))
		}
		for i := range rows {
			a, b := rows[i], back[i]
			if a.ID != b.ID || a.NodeID != b.NodeID || a.Points != b.Points {
				t.Fatalf("row %+v read back as %+v", a, b)
			}
		}
	})
}

// fuzzCkpt is a small engine's checkpoint, the template the section
// fuzzer rebuilds around its inputs.
type fuzzCkpt struct {
	g      *graph.Graph
	radius uint32
	fp     uint32
	data   []byte
	h      CheckpointHeader
}

func newFuzzCkpt(tb testing.TB) *fuzzCkpt {
	tb.Helper()
	// A 4×4 grid, edges of length 10.
	var edges []graph.Edge
	for v := uint32(0); v < 16; v++ {
		if v%4 < 3 {
			edges = append(edges, graph.Edge{U: v, V: v + 1, Len: 10})
		}
		if v < 12 {
			edges = append(edges, graph.Edge{U: v, V: v + 4, Len: 10})
		}
	}
	g, err := graph.FromEdges(16, edges, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c := &fuzzCkpt{g: g, radius: 25, fp: Fingerprint(g)}
	e := NewEngine(g, c.radius)
	e.DropAll([]Treasure{{ID: "a", Node: 0, Points: 5}, {ID: "b", Node: 5, Points: 1}, {ID: "c", Node: 5, Points: 7}, {ID: "d", Node: 15, Points: 2}})
	if _, _, err := e.Move(5, nil); err != nil { // claims b and c: two free slots
		tb.Fatal(err)
	}
	e.Drop(Treasure{ID: "e", Node: 9, Points: 3}) // takes a free slot
	m := &CheckpointMeta{Partition: 0, Partitions: 1, Seq: 99, Players: map[string]SeqWindow{"ann": {Last: 4}, "bob": {Last: 1}}}
	c.data = e.AppendCheckpoint(nil, m, c.fp)
	if c.h, err = ReadCheckpointHeader(c.data); err != nil {
		tb.Fatal(err)
	}
	return c
}

// sections returns the template's treasures, players and field sections.
func (c *fuzzCkpt) sections() (ts, ps, fs []byte) {
	t0 := uint64(ckptHeaderSize)
	p0 := t0 + c.h.TreasuresLen + 4
	f0 := p0 + c.h.PlayersLen + 4
	return c.data[t0 : t0+c.h.TreasuresLen], c.data[p0 : p0+c.h.PlayersLen], c.data[f0 : f0+c.h.FieldLen]
}

// build writes a checkpoint of the template's header with the given
// sections, lengths and checksums right: the current version, or version
// 1 (no field section) when field is nil.
func (c *fuzzCkpt) build(ts, ps, field []byte) []byte {
	le := binary.LittleEndian
	out := append([]byte(nil), c.data[:ckptHeaderSize]...)
	for _, s := range [][]byte{ts, ps, field} {
		if s == nil {
			continue
		}
		out = append(out, s...)
		out = le.AppendUint32(out, crc32.Checksum(s, castagnoli))
	}
	h := out[:ckptHeaderSize]
	version := uint32(CheckpointVersion)
	if field == nil {
		version = 1
		clear(h[72:80])
	} else {
		le.PutUint64(h[72:], uint64(len(field)))
	}
	le.PutUint32(h[8:], version)
	le.PutUint64(h[56:], uint64(len(ts)))
	le.PutUint64(h[64:], uint64(len(ps)))
	le.PutUint32(h[ckptCRCOff:], 0)
	le.PutUint32(h[ckptCRCOff:], crc32.Checksum(h, castagnoli))
	return out
}

// FuzzCheckpointSections feeds fuzzed treasures, players and field
// sections in a checkpoint whose header and checksums are right: the
// reader never panics, every error wraps ErrCheckpointCorrupt or
// ErrCheckpointTruncated, and a checkpoint it accepts writes back (in the
// current version) to bytes it reads again to the same state. A checkpoint of
// the current version it accepts writes back to the very same bytes.
func FuzzCheckpointSections(f *testing.F) {
	c := newFuzzCkpt(f)
	ts, ps, fs := c.sections()
	f.Add(ts, ps, fs, true)
	f.Add(ts, ps, []byte(nil), false)
	f.Add([]byte{0, 0, 0}, []byte{0}, []byte(nil), false)
	f.Add(ts[:len(ts)-1], ps, fs, true)
	f.Add(ts, append(bytes.Clone(ps), 0), fs, true)
	f.Fuzz(func(t *testing.T, ts, ps, field []byte, v2 bool) {
		if v2 {
			// The header checks the field's length against the nodes;
			// fuzz its contents, not its length.
			want := int(8 * c.h.Nodes)
			field = append(field[:min(len(field), want):min(len(field), want)], make([]byte, max(0, want-len(field)))...)
		} else {
			field = nil
		}
		data := c.build(ts, ps, field)
		e, m, err := ReadCheckpoint(data, c.g, c.radius, c.fp)
		if err != nil {
			if !errors.Is(err, ErrCheckpointCorrupt) && !errors.Is(err, ErrCheckpointTruncated) {
				t.Fatalf("error %v wraps neither corrupt nor truncated", err)
			}
			return
		}
		again := e.AppendCheckpoint(nil, m, c.fp)
		if v2 && !bytes.Equal(again, data) {
			t.Fatal("accepted a checkpoint that writes back differently")
		}
		e2, m2, err := ReadCheckpoint(again, c.g, c.radius, c.fp)
		if err != nil {
			t.Fatalf("an accepted checkpoint written back does not read: %v", err)
		}
		if third := e2.AppendCheckpoint(nil, m2, c.fp); !bytes.Equal(third, again) {
			t.Fatal("an accepted checkpoint does not write back stably")
		}
		// The engine is usable: every own node answers.
		for v := uint32(0); v < c.g.Own; v++ {
			if _, err := e.Nearest(v); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestCheckpointSectionsTemplate: the fuzzer's template round-trips, so
// that the fuzzer starts from inputs the reader accepts.
func TestCheckpointSectionsTemplate(t *testing.T) {
	c := newFuzzCkpt(t)
	ts, ps, fs := c.sections()
	if got := c.build(ts, ps, fs); !bytes.Equal(got, c.data) {
		t.Fatal("rebuilding the template's sections changed its bytes")
	}
	// Version 1 has no field section and players as bare seqs: the
	// template's (current) players section does not parse as version 1's,
	// and is refused as corrupt, never read as something else.
	if _, _, err := ReadCheckpoint(c.build(ts, ps, nil), c.g, c.radius, c.fp); !errors.Is(err, ErrCheckpointCorrupt) {
		t.Fatalf("version 1 of the template with the current players section: %v, want corrupt", err)
	}
	if _, _, err := ReadCheckpoint(c.build(ts, ps, make([]byte, len(fs))), c.g, c.radius, c.fp); err == nil {
		t.Fatal("a zeroed field section was accepted")
	}
}
