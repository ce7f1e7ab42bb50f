package graph

import (
	"bytes"
	"errors"
	"testing"
)

// ioFuzzLimits keeps what a fuzzed p line may declare small, so that the
// fuzzer explores parsing instead of allocating.
var ioFuzzLimits = DIMACSOptions{MaxNodes: 1 << 12, MaxSegments: 1 << 12}

// FuzzReadDIMACS feeds arbitrary .gr and .co inputs to the reader: it never
// panics, every error is a *ParseError, and every graph it returns passes
// Validate and survives a snapshot round trip.
func FuzzReadDIMACS(f *testing.F) {
	gr := ioTestdata(f, "dimacs-tiny.gr")
	co := ioTestdata(f, "dimacs-tiny.co")
	f.Add(gr, co, true)
	f.Add(gr, []byte(nil), false)
	f.Add(ioGzip(f, gr), ioGzip(f, co), true)
	f.Add([]byte("p sp 3 2\na 1 2 1\r\na 2 3 4294967295"), []byte("p aux sp co 3\nv 3 1 1\nv 2 -2147483648 0\nv 1 0 2147483647\n"), true)
	f.Add([]byte("c\np sp 0 0\n"), []byte("p aux sp co 0\n"), true)
	f.Add([]byte("p sp 2 1\na 1 1 5\n"), []byte(nil), false)
	f.Add([]byte("p sp 2 1\na 1 2 -5\n"), []byte("v 1 1 1\n"), true)
	f.Fuzz(func(t *testing.T, gr, co []byte, withCo bool) {
		var g *Graph
		var err error
		if withCo {
			g, err = ReadDIMACSWith(bytes.NewReader(gr), bytes.NewReader(co), ioFuzzLimits)
		} else {
			g, err = ReadDIMACSWith(bytes.NewReader(gr), nil, ioFuzzLimits)
		}
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *ParseError", err, err)
			}
			return
		}
		if err := g.Validate(); err != nil {
			t.Fatalf("read an invalid graph: %v", err)
		}
		if g.HasCoords() != withCo || int(g.Own) != g.NumNodes() || g.Global != nil {
			t.Fatalf("coordinates %v (want %v), own %d of %d, global %v", g.HasCoords(), withCo, g.Own, g.NumNodes(), g.Global != nil)
		}
		var buf bytes.Buffer
		if err := WriteSnapshot(&buf, g); err != nil {
			t.Fatal(err)
		}
		back, err := ReadSnapshot(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		ioAssertEqual(t, back, g)
	})
}

// FuzzReadSnapshot feeds arbitrary bytes to the snapshot reader, as they
// are and with the checksum fixed up (so that the fuzzer reaches the
// structural checks): it never panics, a graph it accepts is safe to walk,
// and writing that graph gives back the same bytes (one encoding per graph).
func FuzzReadSnapshot(f *testing.F) {
	for _, tt := range ioSnapshotCases(f)[:6] {
		f.Add(ioSnapshotBytes(f, tt.g))
	}
	f.Add([]byte(snapMagic))
	f.Add([]byte("p sp 1 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(data []byte) {
			g, err := ReadSnapshot(data)
			if err != nil {
				if !errors.Is(err, ErrNotSnapshot) && !errors.Is(err, ErrSnapshotVersion) &&
					!errors.Is(err, ErrSnapshotTruncated) && !errors.Is(err, ErrSnapshotCorrupt) {
					t.Fatalf("error %v wraps none of the snapshot errors", err)
				}
				return
			}
			ioWalk(g)
			var buf bytes.Buffer
			if err := WriteSnapshot(&buf, g); err != nil {
				t.Fatalf("accepted a graph the writer refuses: %v", err)
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatal("accepted bytes that are not the graph's encoding")
			}
		}
		check(bytes.Clone(data))
		fixed := bytes.Clone(data)
		ioFixCRC(fixed)
		check(fixed)
	})
}
