package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"treasure/internal/graph"
	"treasure/internal/testgraph"
)

// A compiled snapshot answers nearest exactly as the DIMACS file does.
func TestGraphCompileThenNearest(t *testing.T) {
	gr := testgraph.Path(t, "amsterdam.gr.gz")
	snap := filepath.Join(t.TempDir(), "a.snap")
	if code, out, errs := runCLI(t, "", nil, "graph", "compile", "--in", gr, "--out", snap); code != 0 || !strings.Contains(out, "68213 nodes") {
		t.Fatalf("compile: exit %d %q %q", code, out, errs)
	}
	csv := writeFile(t, "t.csv", "id,node,points\nA,100,1\nB,5000,2\nC,60000,3\n")
	stdin := "100\n101\n4999\n5001\n60001\n1\n"
	_, fromGr, _ := runCLI(t, stdin, nil, "nearest", "--graph", gr, "--treasures", csv)
	code, fromSnap, errs := runCLI(t, stdin, nil, "nearest", "--graph", snap, "--treasures", csv)
	if code != 0 || fromSnap != fromGr || strings.Count(fromSnap, "\n") != 6 {
		t.Fatalf("exit %d %s\nsnapshot answers:\n%s\nDIMACS answers:\n%s", code, errs, fromSnap, fromGr)
	}
	if !strings.Contains(fromSnap, `{"node":100,"treasure":{"id":"A","node":100,"distance":0}}`) {
		t.Fatalf("treasure's own node not at distance 0:\n%s", fromSnap)
	}
}

func TestGraphGenPartitionInfo(t *testing.T) {
	snap := filepath.Join(t.TempDir(), "city.snap")
	code, out, errs := runCLI(t, "", nil, "graph", "gen", "--nodes", "20000", "--edges", "55000", "--seed", "3", "--out", snap)
	if code != 0 || !strings.Contains(out, "generated 20000 nodes, 55000 edges") {
		t.Fatalf("gen: exit %d %q %q", code, out, errs)
	}
	g, err := graph.LoadSnapshot(snap)
	if err != nil || g.NumNodes() != 20000 || g.NumArcs() != 110000 || !g.HasCoords() {
		t.Fatalf("generated snapshot: %v, err %v", g, err)
	}
	code, out, errs = runCLI(t, "", nil, "graph", "partition", "--graph", snap, "--k", "4", "--radius", "300")
	if code != 0 || strings.Count(out, "\n") != 9 || !strings.Contains(out, "recursive coordinate bisection") || !strings.Contains(out, "all      20000") {
		t.Fatalf("partition: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ = runCLI(t, "", nil, "graph", "info", "--graph", snap); code != 0 || !strings.Contains(out, "20000 nodes, 110000 arcs") {
		t.Fatalf("info: exit %d %q", code, out)
	}
	if code, _, errs = runCLI(t, "", nil, "graph", "gen", "--nodes", "10", "--edges", "1000", "--out", snap); code != 2 || errs == "" {
		t.Fatalf("impossible gen: exit %d %q", code, errs)
	}
	if code, _, errs = runCLI(t, "", nil, "graph", "info", "--graph", writeFile(t, "bad.snap", "TRSNAP\x00\x01garbage")); code != 2 || !strings.Contains(errs, "snapshot") {
		t.Fatalf("corrupt snapshot: exit %d %q", code, errs)
	}
}
