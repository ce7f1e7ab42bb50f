package graph

import (
	"path/filepath"
	"testing"
)

// TestDigest: the same roads give the same digest whether read from
// DIMACS, with or without coordinates, or from a snapshot; one arc length
// or one edge more changes it.
func TestDigest(t *testing.T) {
	t.Parallel()
	g := ioRandomGraph(t, 3, 500, 6, true)
	d := Digest(g)
	if len(d) != 64 {
		t.Fatalf("digest %q, want 64 hex digits", d)
	}
	path := filepath.Join(t.TempDir(), "g.snap")
	if err := SaveSnapshot(path, g); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if Digest(s) != d {
		t.Errorf("snapshot digest differs")
	}
	noCoords := *g
	noCoords.X, noCoords.Y = nil, nil
	if Digest(&noCoords) != d {
		t.Errorf("digest depends on coordinates")
	}
	longer := *g
	longer.Arcs = append([]Arc(nil), g.Arcs...)
	longer.Arcs[17].Len++
	if Digest(&longer) == d {
		t.Errorf("an arc length changed, digest did not")
	}
	other := ioRandomGraph(t, 4, 500, 6, true)
	if Digest(other) == d {
		t.Errorf("another graph has the same digest")
	}
	tiny, err := LoadDIMACS(filepath.Join("testdata", "dimacs-tiny.gr"))
	if err != nil {
		t.Fatal(err)
	}
	if Digest(tiny) == d || Digest(tiny) != Digest(tiny) {
		t.Errorf("tiny graph digest not stable or not distinct")
	}
}
