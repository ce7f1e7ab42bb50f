package game

import (
	"testing"

	"treasure/internal/graph"
)

// line returns the path graph 1 - 2 - 3 - 4 (wire ids) plus an isolated 5.
func line(tb testing.TB) *graph.Graph {
	tb.Helper()
	g, err := graph.FromEdges(5, []graph.Edge{{U: 0, V: 1, Len: 5}, {U: 1, V: 2, Len: 5}, {U: 2, V: 3, Len: 5}}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

func TestValidateMove(t *testing.T) {
	g := line(t)
	at2 := Player{Seq: 10, Node: 1, Moved: true} // on wire node 2
	long := make([]uint64, MaxPath+1)
	for i := range long {
		long[i] = uint64(1 + i%2)
	}
	tests := []struct {
		name string
		p    Player
		seq  uint64
		path []uint64
		want Code // "" for accepted
	}{
		{"first move spawns anywhere", Player{}, 1, []uint64{4}, ""},
		{"first move may walk", Player{}, 7, []uint64{4, 3, 2}, ""},
		{"continuing walk", at2, 11, []uint64{2, 3, 4, 3}, ""},
		{"staying put is a 1-node move", at2, 11, []uint64{2}, ""},
		{"seq jumps are fine", at2, 1000, []uint64{2, 1}, ""},
		{"longest path accepted", Player{}, 1, long[:MaxPath], ""},
		{"seq zero is bad_request", at2, 0, []uint64{2}, CodeBadRequest},
		{"empty path is bad_request", at2, 11, nil, CodeBadRequest},
		{"17 nodes is path_too_long", Player{}, 1, long, CodePathTooLong},
		{"node 0 is unknown", Player{}, 1, []uint64{0}, CodeUnknownNode},
		{"node past N is unknown", at2, 11, []uint64{2, 6}, CodeUnknownNode},
		{"equal seq is stale", at2, 10, []uint64{2, 3}, CodeStaleSeq},
		{"lower seq is stale", at2, 3, []uint64{2, 3}, CodeStaleSeq},
		{"wrong start is discontinuous", at2, 11, []uint64{3, 4}, CodeDiscontinous},
		{"jump is not_adjacent", at2, 11, []uint64{2, 4}, CodeNotAdjacent},
		{"isolated node is not adjacent", Player{}, 1, []uint64{5, 4}, CodeNotAdjacent},
		{"repeat node is not adjacent (no self-loops)", at2, 11, []uint64{2, 2}, CodeNotAdjacent},
		// Precedence: the first code in SPEC order wins.
		{"bad_request beats path_too_long", at2, 0, long, CodeBadRequest},
		{"path_too_long beats unknown_node", Player{}, 1, append([]uint64{99}, long...), CodePathTooLong},
		{"unknown_node beats stale_seq", at2, 1, []uint64{2, 99}, CodeUnknownNode},
		{"stale_seq beats discontinuous", at2, 1, []uint64{4}, CodeStaleSeq},
		{"discontinuous beats not_adjacent", at2, 11, []uint64{1, 4}, CodeDiscontinous},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idx := make([]uint32, len(tc.path))
			err := ValidateMove(g, tc.p, tc.seq, tc.path, idx)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				for i, id := range tc.path {
					if uint64(graph.ID(idx[i])) != id {
						t.Fatalf("idx[%d] = %d for wire id %d", i, idx[i], id)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %s", tc.want)
			}
			if err.Code != tc.want {
				t.Fatalf("code %s (%s), want %s", err.Code, err.Msg, tc.want)
			}
			if err.Msg == "" {
				t.Fatal("empty message")
			}
		})
	}
}

func TestCheckTreasure(t *testing.T) {
	good := []struct {
		id string
		p  int64
	}{{"a", 1}, {"Gold_Bar-7", 100}, {string(make64('x')), 5}}
	for _, c := range good {
		if err := CheckTreasure(c.id, c.p); err != nil {
			t.Errorf("%q/%d rejected: %v", c.id, c.p, err)
		}
	}
	bad := []struct {
		id string
		p  int64
	}{{"", 1}, {string(make64('x')) + "y", 1}, {"a b", 1}, {"é", 1}, {"a/b", 1}, {"ok", 0}, {"ok", -3}, {"ok", 1 << 40}}
	for _, c := range bad {
		if err := CheckTreasure(c.id, c.p); err == nil {
			t.Errorf("%q/%d accepted", c.id, c.p)
		}
	}
}

func make64(c byte) []byte {
	b := make([]byte, MaxTreasureID)
	for i := range b {
		b[i] = c
	}
	return b
}
