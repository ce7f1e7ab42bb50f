package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"treasure/internal/graph"
	"treasure/internal/testgraph"
)

type nearestLine struct {
	Node     uint64 `json:"node"`
	Treasure *struct {
		ID       string `json:"id"`
		Node     uint64 `json:"node"`
		Distance uint32 `json:"distance"`
	} `json:"treasure"`
}

func runCLI(t *testing.T, stdin string, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNearestRealGraph answers random nodes of a real city and checks every
// answer against the reference Dijkstra.
func TestNearestRealGraph(t *testing.T) {
	grPath := testgraph.Path(t, "amsterdam.gr.gz")
	g, err := graph.LoadDIMACS(grPath)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var csv strings.Builder
	csv.WriteString("id,node,points\n")
	var refs []graph.RefTreasure
	for i := 0; i < 400; i++ {
		v := uint32(r.IntN(g.NumNodes()))
		id := fmt.Sprintf("t%03d", r.IntN(1000))
		fmt.Fprintf(&csv, "%s,%d,%d\n", id, graph.ID(v), 1+r.IntN(9))
		dup := false
		for _, x := range refs {
			dup = dup || x.ID == id
		}
		if !dup { // a repeated id is ignored, as a repeated drop is
			refs = append(refs, graph.RefTreasure{ID: id, Node: v})
		}
	}
	tPath := writeFile(t, "t.csv", csv.String())
	var in strings.Builder
	var queries []uint32
	for i := 0; i < 60; i++ {
		v := uint32(r.IntN(g.NumNodes()))
		queries = append(queries, v)
		fmt.Fprintf(&in, "%d\n", graph.ID(v))
	}
	// A treasure's own node answers distance 0.
	queries = append(queries, refs[0].Node)
	fmt.Fprintf(&in, "%d\n", graph.ID(refs[0].Node))

	code, out, errs := runCLI(t, in.String(), map[string]string{"TREASURE_RADIUS": "2000"},
		"nearest", "--graph", grPath, "--treasures", tPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	found := 0
	for i := 0; sc.Scan(); i++ {
		var got nearestLine
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("line %d %q: %v", i+1, sc.Text(), err)
		}
		v := queries[i]
		want := graph.Reference(g, refs, 2000, v)
		if got.Node != uint64(graph.ID(v)) {
			t.Fatalf("line %d: node %d, want %d", i+1, got.Node, graph.ID(v))
		}
		if (got.Treasure != nil) != want.Found {
			t.Fatalf("node %d: got %s, reference %+v", got.Node, sc.Text(), want)
		}
		if want.Found {
			found++
			if got.Treasure.ID != want.ID || got.Treasure.Distance != want.Dist || got.Treasure.Node != uint64(graph.ID(want.Node)) {
				t.Fatalf("node %d: got %s, reference %+v", got.Node, sc.Text(), want)
			}
		}
		if i == len(queries)-1 && (got.Treasure == nil || got.Treasure.Distance != 0) {
			t.Fatalf("a treasure's own node: %s", sc.Text())
		}
	}
	if found == 0 || found == len(queries) {
		t.Fatalf("%d of %d queries found a treasure: the sample exercises only one case", found, len(queries))
	}
}

func TestNearestErrorsNameTheLine(t *testing.T) {
	gr := writeFile(t, "g.gr", "p sp 3 2\na 1 2 4\na 2 3 4\n")
	good := writeFile(t, "t.csv", "id,node,points\nx,3,1\n")
	tests := []struct {
		name, stdin, csv, want string
		args                   []string
	}{
		{"unknown node", "1\n2\n9\n", good, "stdin line 3: node 9 does not exist", nil},
		{"not a number", "1\nabc\n", good, `stdin line 2: "abc" is not a node id`, nil},
		{"bad csv line", "1\n", writeFile(t, "b.csv", "id,node,points\nx,3,1\ny,3,zero\n"), "line 3: points", nil},
		{"csv node missing", "1\n", writeFile(t, "c.csv", "id,node,points\nx,7,1\n"), "line 2: node 7 does not exist", nil},
		{"missing graph file", "1\n", good, "no such file", []string{"--graph", "/nonexistent.gr"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"nearest", "--graph", gr, "--treasures", tc.csv, "--radius", "100"}, tc.args...)
			code, out, errs := runCLI(t, tc.stdin, nil, args...)
			if code != 2 || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errs, tc.want)
			}
			if tc.name == "unknown node" && strings.Count(out, "\n") != 2 {
				t.Fatalf("answers before the bad line were not written: %q", out)
			}
		})
	}
}

func TestNearestOutputShape(t *testing.T) {
	gr := writeFile(t, "g.gr", "p sp 4 2\na 1 2 4\na 2 3 4\n")
	csv := writeFile(t, "t.csv", "id,node,points\nx,3,1\n")
	code, out, errs := runCLI(t, "1\n 2 \n4\n", nil, "nearest", "--graph", gr, "--treasures", csv, "--radius", "5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := `{"node":1,"treasure":null}
{"node":2,"treasure":{"id":"x","node":3,"distance":4}}
{"node":4,"treasure":null}
`
	if out != want {
		t.Fatalf("output\n%s\nwant\n%s", out, want)
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := runCLI(t, "", nil, "nearest"); code != 2 {
		t.Fatalf("nearest without flags: exit %d, want 2", code)
	}
	if code, _, errs := runCLI(t, "", nil, "bogus"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Fatalf("unknown command: exit %d %q", code, errs)
	}
	if code, out, _ := runCLI(t, "", nil, "help"); code != 0 || !strings.Contains(out, "nearest") {
		t.Fatalf("help: exit %d %q", code, out)
	}
}
