package graph

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"treasure/internal/testgraph"
)

// ioRealGraphs lists the road networks of ../shared/data with the figures of
// its README. segments is the number of distinct segments after removing
// duplicates: the README's segment count minus its duplicate count.
// Duplicates were counted independently once with
//
//	zcat NAME.gr.gz | awk '$1=="a"{u=$2+0;v=$3+0;if(u>v){t=u;u=v;v=t}; if((u" "v) in s)d++; s[u" "v]=1} END{print d+0}'
//
// which agrees with the README where it lists duplicates, finds 6 in
// amsterdam that the README leaves out (76,718 - 6), and none in the three
// -topology graphs. No file has a self-loop.
var ioRealGraphs = []struct {
	name     string
	nodes    int
	segments int
	coords   bool
	validate bool // run the O(M·degree) Graph.Validate too
}{
	{"amsterdam", 68213, 76718 - 6, true, true},
	{"luxembourg", 114599, 119666, true, true},
	{"seattle", 148463, 173187 - 77, true, false},
	{"delhi", 231161, 279192 - 28, true, false},
	{"rome", 234496, 258206 - 13, true, false},
	{"moscow", 411992, 451135 - 216, true, false},
	{"ny-topology", 264346, 365050, false, false},
	{"fla-topology", 1070376, 1343951, false, false},
	{"ne-topology", 1524453, 1934010, false, false},
}

func TestLoadRealGraphs(t *testing.T) {
	for _, tt := range ioRealGraphs {
		t.Run(tt.name, func(t *testing.T) {
			if testing.Short() && tt.nodes > 1_000_000 {
				t.Skip("big topology graph skipped in -short mode")
			}
			g, err := Open(testgraph.Path(t, tt.name+".gr.gz"))
			if err != nil {
				t.Fatal(err)
			}
			if g.NumNodes() != tt.nodes {
				t.Errorf("%d nodes, want %d", g.NumNodes(), tt.nodes)
			}
			if g.NumArcs() != 2*tt.segments {
				t.Errorf("%d arcs, want %d (twice %d distinct segments)", g.NumArcs(), 2*tt.segments, tt.segments)
			}
			if g.HasCoords() != tt.coords {
				t.Errorf("coordinates %v, want %v", g.HasCoords(), tt.coords)
			}
			if g.Global != nil || int(g.Own) != tt.nodes {
				t.Errorf("global %v, own %d: want a whole graph", g.Global != nil, g.Own)
			}
			if err := g.checkCSR(); err != nil {
				t.Fatal(err)
			}
			if tt.validate {
				if err := g.Validate(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestRealGraphSnapshotRoundTrip(t *testing.T) {
	g, err := LoadDIMACS(testgraph.Path(t, "luxembourg.gr.gz"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "luxembourg.snap")
	if err := SaveSnapshot(path, g); err != nil {
		t.Fatal(err)
	}
	got, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ioAssertEqual(t, got, g)
	// Coordinates are metres in UTM: check one known node survived.
	if got.X[0] != 604893 || got.Y[0] != 5063036 {
		t.Fatalf("node 1 at (%d, %d), want (604893, 5063036)", got.X[0], got.Y[0])
	}
}

// BenchmarkLoadDIMACS measures LoadDIMACS on real files; MB/s counts the
// gzipped bytes read (the .gr.gz and, where present, the .co.gz).
func BenchmarkLoadDIMACS(b *testing.B) {
	for _, name := range []string{"luxembourg", "ne-topology"} {
		b.Run(name, func(b *testing.B) {
			path := testgraph.Path(b, name+".gr.gz")
			b.SetBytes(ioFileSize(b, path) + ioFileSize(b, filepath.Join(filepath.Dir(path), name+".co.gz")))
			for b.Loop() {
				if _, err := LoadDIMACS(path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadSnapshot measures loading the snapshot of ne-topology (the
// largest real graph) and of a random graph at the original scale (2.3 M
// nodes, 13.8 M arcs, coordinates), read into the heap (LoadSnapshot) and
// mapped (MapSnapshot); MB/s counts the snapshot's bytes.
func BenchmarkLoadSnapshot(b *testing.B) {
	graphs := []struct {
		name string
		load func(testing.TB) *Graph
	}{
		{"ne-topology", func(tb testing.TB) *Graph {
			g, err := LoadDIMACS(testgraph.Path(tb, "ne-topology.gr.gz"))
			if err != nil {
				tb.Fatal(err)
			}
			return g
		}},
		{"random-2.3M", func(tb testing.TB) *Graph { return ioRandomGraph(tb, 7, 2_300_000, 6, true) }},
	}
	for _, gr := range graphs {
		b.Run(gr.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "g.snap")
			g := gr.load(b)
			if err := SaveSnapshot(path, g); err != nil {
				b.Fatal(err)
			}
			arcs := float64(g.NumArcs())
			g = nil
			b.Run("read", func(b *testing.B) {
				b.SetBytes(ioFileSize(b, path))
				for b.Loop() {
					if _, err := LoadSnapshot(path); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(arcs, "arcs")
			})
			b.Run("map", func(b *testing.B) {
				b.SetBytes(ioFileSize(b, path))
				for b.Loop() {
					_, release, err := MapSnapshot(path)
					if err != nil {
						b.Fatal(err)
					}
					if err := release(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(arcs, "arcs")
			})
		})
	}
}

// BenchmarkWriteSnapshot measures WriteSnapshot of ne-topology to memory.
func BenchmarkWriteSnapshot(b *testing.B) {
	g, err := LoadDIMACS(testgraph.Path(b, "ne-topology.gr.gz"))
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := WriteSnapshot(&buf, g); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(buf.Len()))
	}
}

func ioFileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	st, err := os.Stat(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		tb.Fatal(err)
	}
	return st.Size()
}
