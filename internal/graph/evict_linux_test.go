package graph

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// rssFile is this process's resident file-backed memory (RssFile of
// /proc/self/status), in bytes.
func rssFile(tb testing.TB) int64 {
	tb.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestEvictPagesLeavesTheResidentSetAndTheGraphWhole maps a snapshot of
// about 24 MB, touches every page, evicts them: the process's resident
// file-backed memory falls by most of the mapping, and the graph still reads
// back equal to the original (its pages fault back in).
func TestEvictPagesLeavesTheResidentSetAndTheGraphWhole(t *testing.T) {
	g, err := Generate(GenOptions{Nodes: 400_000, Edges: 1_100_000, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "g.snap")
	if err := SaveSnapshot(path, g); err != nil {
		t.Fatal(err)
	}
	got, release, err := MapSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release() })
	size := int64(len(got.mapped))
	ioWalk(got) // every page resident
	before := rssFile(t)
	if err := got.EvictPages(); err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if before-after < size/2 {
		t.Fatalf("RssFile %d → %d bytes after evicting a %d-byte mapping: want it to fall by at least half of it", before, after, size)
	}
	ioAssertEqual(t, got, g)

	// A graph in the heap has nothing to evict.
	if err := g.EvictPages(); err != nil {
		t.Fatal(err)
	}
}
