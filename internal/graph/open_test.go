package graph

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestOpenDispatchesByContent(t *testing.T) {
	gr := ioTestdata(t, "dimacs-tiny.gr")
	co := ioTestdata(t, "dimacs-tiny.co")
	withXY := ioWithCoords(ioTiny, ioTinyX, ioTinyY)
	sub := ioSubgraph(withXY, 2)
	dir := ioWriteFiles(t, map[string][]byte{
		"a.gr":       gr,
		"a.co":       co,
		"b.gr.gz":    ioGzip(t, gr),
		"b.co.gz":    ioGzip(t, co),
		"c.snap":     ioSnapshotBytes(t, withXY),
		"sub.snap":   ioSnapshotBytes(t, sub),
		"snap.gr.gz": ioSnapshotBytes(t, ioTiny), // a snapshot under a DIMACS name
		"graph.bin":  ioGzip(t, gr),              // gzip under no known name: no coordinates
	})
	tests := []struct {
		file string
		want *Graph
	}{
		{"a.gr", withXY},
		{"b.gr.gz", withXY},
		{"c.snap", withXY},
		{"sub.snap", sub},
		{"snap.gr.gz", ioTiny},
		{"graph.bin", ioTiny},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			g, err := Open(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			ioAssertEqual(t, g, tt.want)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	v2 := ioSnapshotBytes(t, ioTiny)
	binary.LittleEndian.PutUint32(v2[8:], 2)
	badMagic := slices.Clone(ioSnapshotBytes(t, ioTiny))
	badMagic[7] = 9
	dir := ioWriteFiles(t, map[string][]byte{
		"v2.snap":    v2,
		"magic.snap": badMagic,
		"cut.snap":   ioSnapshotBytes(t, ioTiny)[:70],
		"text.gr":    []byte("p sp 2 1\na 1 2 0\n"),
		"empty":      nil,
	})
	tests := []struct {
		file string
		is   error
		want string
	}{
		{"v2.snap", ErrSnapshotVersion, "v2.snap: unsupported snapshot version: the file has version 2, this build reads version 1"},
		{"magic.snap", ErrNotSnapshot, "magic.snap: not a graph snapshot (bad magic)"},
		{"cut.snap", ErrSnapshotTruncated, "cut.snap: truncated: 70 bytes"},
		{"text.gr", nil, `text.gr:2: non-positive length "0"`},
		{"empty", nil, "empty: missing p line"},
		{"missing.gr", os.ErrNotExist, "missing.gr"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			g, err := Open(filepath.Join(dir, tt.file))
			if err == nil {
				t.Fatalf("opened %d nodes, want error", g.NumNodes())
			}
			if (tt.is != nil && !errors.Is(err, tt.is)) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}
