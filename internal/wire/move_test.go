package wire

import (
	"slices"
	"strings"
	"testing"

	"treasure/internal/game"
)

func TestParseMove(t *testing.T) {
	long := "[" + strings.Repeat("1,", game.MaxPath) + "1]" // 17 nodes
	full := "[" + strings.Repeat("1,", game.MaxPath-1) + "1]"
	tests := []struct {
		name string
		line string
		seq  uint64    // Item.Seq wanted, for moves and errors alike
		path []uint64  // wanted when code is ""
		code game.Code // "" for a well-formed move
	}{
		{"plain move", `{"type":"move","seq":7,"path":[1,2,3]}`, 7, []uint64{1, 2, 3}, ""},
		{"keys in any order with spaces", " { \"path\" : [ 4 , 5 ] ,\t\"seq\" : 9 , \"type\" : \"move\" } \r", 9, []uint64{4, 5}, ""},
		{"spawn is one node", `{"type":"move","seq":1,"path":[42]}`, 1, []uint64{42}, ""},
		{"node 0 parses (unknown_node later)", `{"type":"move","seq":1,"path":[0]}`, 1, []uint64{0}, ""},
		{"16 nodes", `{"type":"move","seq":1,"path":` + full + `}`, 1, slices.Repeat([]uint64{1}, game.MaxPath), ""},
		{"unknown keys are ignored", `{"type":"move","seq":3,"path":[1],"sent_at":"now","x":{"y":[1,2]}}`, 3, []uint64{1}, ""},
		{"escaped key and value", `{"typ\u0065":"\u006dove","seq":3,"path":[1]}`, 3, []uint64{1}, ""},
		{"last duplicate wins", `{"type":"move","seq":3,"seq":4,"path":[9],"path":[1,2]}`, 4, []uint64{1, 2}, ""},
		{"largest seq", `{"type":"move","seq":9007199254740991,"path":[1]}`, MaxSeq, []uint64{1}, ""},
		{"huge node saturates", `{"type":"move","seq":1,"path":[18446744073709551615,99999999999999999999999]}`, 1, []uint64{1<<64 - 1, 1<<64 - 1}, ""},
		{"largest uint64 node", `{"type":"move","seq":1,"path":[18446744073709551615]}`, 1, []uint64{1<<64 - 1}, ""},

		{"invalid JSON", `{"type":"move","seq":1,"path":[1,2}`, 0, nil, game.CodeBadJSON},
		{"trailing garbage", `{"type":"move","seq":1,"path":[1]} x`, 0, nil, game.CodeBadJSON},
		{"two objects on a line", `{"type":"move","seq":1,"path":[1]}{"type":"move","seq":2,"path":[1]}`, 0, nil, game.CodeBadJSON},
		{"trailing comma", `{"type":"move","seq":1,"path":[1,]}`, 0, nil, game.CodeBadJSON},
		{"leading zero is invalid JSON", `{"type":"move","seq":01,"path":[1]}`, 0, nil, game.CodeBadJSON},
		{"single quotes", `{'type':'move'}`, 0, nil, game.CodeBadJSON},
		{"raw control character in a string", "{\"type\":\"mo\x01ve\",\"seq\":1,\"path\":[1]}", 0, nil, game.CodeBadJSON},
		{"not JSON at all", `move 1 2 3`, 0, nil, game.CodeBadJSON},

		{"array is not a move", `[1,2,3]`, 0, nil, game.CodeBadRequest},
		{"null is not a move", `null`, 0, nil, game.CodeBadRequest},
		{"number is not a move", `5`, 0, nil, game.CodeBadRequest},
		{"wrong type keeps seq", `{"type":"jump","seq":5,"path":[1]}`, 5, nil, game.CodeBadRequest},
		{"type is case-sensitive", `{"type":"Move","seq":5,"path":[1]}`, 5, nil, game.CodeBadRequest},
		{"keys are case-sensitive", `{"Type":"move","seq":5,"path":[1]}`, 5, nil, game.CodeBadRequest},
		{"missing type", `{"seq":5,"path":[1]}`, 5, nil, game.CodeBadRequest},
		{"type not a string", `{"type":1,"seq":5,"path":[1]}`, 5, nil, game.CodeBadRequest},
		{"missing seq", `{"type":"move","path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq zero", `{"type":"move","seq":0,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"negative seq", `{"type":"move","seq":-3,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"fractional seq", `{"type":"move","seq":1.5,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq 2.0 is not an integer literal", `{"type":"move","seq":2.0,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq with exponent", `{"type":"move","seq":1e3,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq as a string", `{"type":"move","seq":"5","path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq null", `{"type":"move","seq":null,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq past MaxSeq", `{"type":"move","seq":9007199254740992,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"seq past uint64", `{"type":"move","seq":184467440737095516160,"path":[1]}`, 0, nil, game.CodeBadRequest},
		{"missing path", `{"type":"move","seq":5}`, 5, nil, game.CodeBadRequest},
		{"path null", `{"type":"move","seq":5,"path":null}`, 5, nil, game.CodeBadRequest},
		{"path not an array", `{"type":"move","seq":5,"path":"1,2"}`, 5, nil, game.CodeBadRequest},
		{"path object", `{"type":"move","seq":5,"path":{"0":1}}`, 5, nil, game.CodeBadRequest},
		{"empty path", `{"type":"move","seq":5,"path":[]}`, 5, nil, game.CodeBadRequest},
		{"negative node", `{"type":"move","seq":5,"path":[1,-2]}`, 5, nil, game.CodeBadRequest},
		{"fractional node", `{"type":"move","seq":5,"path":[1,2.5]}`, 5, nil, game.CodeBadRequest},
		{"node with exponent", `{"type":"move","seq":5,"path":[1e2]}`, 5, nil, game.CodeBadRequest},
		{"node as a string", `{"type":"move","seq":5,"path":["1"]}`, 5, nil, game.CodeBadRequest},
		{"node -0", `{"type":"move","seq":5,"path":[-0]}`, 5, nil, game.CodeBadRequest},
		{"nested array node", `{"type":"move","seq":5,"path":[[1]]}`, 5, nil, game.CodeBadRequest},

		{"17 nodes", `{"type":"move","seq":5,"path":` + long + `}`, 5, nil, game.CodePathTooLong},
		{"17 huge nodes", `{"type":"move","seq":5,"path":[` + strings.Repeat("99999999999999999999999,", 16) + `1]}`, 5, nil, game.CodePathTooLong},
		// Precedence: bad_json, bad_request, path_too_long.
		{"bad seq beats path_too_long", `{"type":"move","seq":0,"path":` + long + `}`, 0, nil, game.CodeBadRequest},
		{"bad type beats path_too_long", `{"type":"run","seq":5,"path":` + long + `}`, 5, nil, game.CodeBadRequest},
		{"bad node beats path_too_long", `{"type":"move","seq":5,"path":[` + strings.Repeat("1,", 20) + `"x"]}`, 5, nil, game.CodeBadRequest},
		{"bad_json beats everything", `{"type":"move","seq":0,"path":` + long, 0, nil, game.CodeBadJSON},
	}
	var p Parser
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			it := p.ParseMove([]byte(tc.line))
			if tc.code == "" {
				if it.Err != nil {
					t.Fatalf("error %v, want move seq %d path %v", it.Err, tc.seq, tc.path)
				}
				if it.Seq != tc.seq || !slices.Equal(it.Path, tc.path) {
					t.Fatalf("got seq %d path %v, want seq %d path %v", it.Seq, it.Path, tc.seq, tc.path)
				}
				return
			}
			if it.Err == nil {
				t.Fatalf("accepted (seq %d path %v), want %s", it.Seq, it.Path, tc.code)
			}
			if it.Err.Code != tc.code || it.Seq != tc.seq || it.Path != nil {
				t.Fatalf("got %v seq %d path %v, want %s seq %d", it.Err, it.Seq, it.Path, tc.code, tc.seq)
			}
			if it.Err.Msg == "" {
				t.Fatal("error without a message")
			}
			// The slow path alone must agree (the fast path only speeds up).
			if s := p.slow([]byte(tc.line)); s.Err == nil || s.Err.Code != tc.code || s.Seq != tc.seq {
				t.Fatalf("slow path says %+v", s)
			}
		})
	}
}

// TestFastPathTakesUsualMoves checks that the usual shapes never reach
// the slow path (which allocates), and that the fast path declines what it
// must leave to the slow path.
func TestFastPathTakesUsualMoves(t *testing.T) {
	var p Parser
	for _, line := range []string{
		`{"type":"move","seq":1,"path":[1]}`,
		`{"type":"move","seq":123456,"path":[10,20,30,40,50,60,70,80,90,100,110,120]}`,
		` {"seq":2, "path":[0, 5], "type":"move"} ` + "\r",
		`{"path":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"type":"move","seq":9007199254740991}`,
	} {
		p.paths = p.paths[:0]
		if _, ok := p.fast([]byte(line)); !ok {
			t.Errorf("fast path declined %s", line)
		}
	}
	for _, line := range []string{
		`{"type":"move","seq":1,"path":[1],"extra":1}`,
		`{"type":"move","seq":1,"seq":2,"path":[1]}`,
		`{"type":"move","seq":0,"path":[1]}`,
		`{"type":"move","seq":9007199254740992,"path":[1]}`,
		`{"type":"move","seq":1,"path":[]}`,
		`{"type":"move","seq":1,"path":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}`,
		`{"type":"move","seq":1,"path":[18446744073709551616]}`,
		`{"type":"move","seq":1,"path":[1.0]}`,
		`{"type":"move","seq":1,"path":[1]`,
		`{"type":"move","seq":1}`,
		`{"type":"mov\u0065","seq":1,"path":[1]}`,
	} {
		p.paths = p.paths[:0]
		if _, ok := p.fast([]byte(line)); ok {
			t.Errorf("fast path took %s", line)
		}
	}
}

func TestParseFrame(t *testing.T) {
	frame := "{\"type\":\"move\",\"seq\":1,\"path\":[5]}\r\n" +
		"\n" +
		"  \t\r\n" +
		"{\"type\":\"move\",\"seq\":2,\"path\":[5,6,7]}\n" +
		"{\"type\":\"move\",\"seq\":3,\"path\":[7,\n" + // a move split over two lines: two bad lines
		"8]}\n" +
		"{\"type\":\"move\",\"seq\":4,\"path\":[]}\n" +
		"{\"type\":\"move\",\"seq\":5,\"path\":[7,8]}" // no final newline
	var p Parser
	items := p.ParseFrame([]byte(frame), nil)
	type want struct {
		seq  uint64
		path []uint64
		code game.Code
	}
	wants := []want{
		{1, []uint64{5}, ""},
		{2, []uint64{5, 6, 7}, ""},
		{0, nil, game.CodeBadJSON},
		{0, nil, game.CodeBadJSON},
		{4, nil, game.CodeBadRequest},
		{5, []uint64{7, 8}, ""},
	}
	if len(items) != len(wants) {
		t.Fatalf("got %d items, want %d: %+v", len(items), len(wants), items)
	}
	for i, w := range wants {
		it := items[i]
		code := game.Code("")
		if it.Err != nil {
			code = it.Err.Code
		}
		if it.Seq != w.seq || code != w.code || !slices.Equal(it.Path, w.path) {
			t.Errorf("item %d: got seq %d path %v err %v, want seq %d path %v code %q", i, it.Seq, it.Path, it.Err, w.seq, w.path, w.code)
		}
	}
	// Paths are capped: appending to one must not overwrite the next.
	_ = append(items[0].Path, 99)
	if items[1].Path[0] != 5 {
		t.Fatal("appending to one path overwrote the next")
	}
	if got := p.ParseFrame([]byte("\n\r\n  \n"), nil); len(got) != 0 {
		t.Fatalf("blank frame gave %+v", got)
	}
	if got := p.ParseFrame(nil, nil); len(got) != 0 {
		t.Fatalf("empty frame gave %+v", got)
	}
}

// TestParseFrameReusesBuffers checks the zero-allocation claim for a
// frame of well-formed moves once the parser and dst are warm.
func TestParseFrameReusesBuffers(t *testing.T) {
	frame := []byte(strings.Repeat(`{"type":"move","seq":123,"path":[10,20,30,40,50,60,70,80,90,100,110,120]}`+"\n", 8))
	var p Parser
	items := p.ParseFrame(frame, nil)
	allocs := testing.AllocsPerRun(100, func() {
		items = p.ParseFrame(frame, items[:0])
	})
	if allocs != 0 || len(items) != 8 || items[7].Err != nil {
		t.Fatalf("%v allocs per frame, %d items", allocs, len(items))
	}
}

func TestParseBody(t *testing.T) {
	var p Parser
	tests := []struct {
		name  string
		body  string
		array bool
		codes []game.Code // one per item, "" for a move
		seqs  []uint64
	}{
		{"one object", `{"type":"move","seq":1,"path":[1,2]}`, false, []game.Code{""}, []uint64{1}},
		{"object over lines", "{\n\"type\": \"move\",\n\"seq\": 1,\n\"path\": [1, 2]\n}\n", false, []game.Code{""}, []uint64{1}},
		{"array of moves", ` [ {"type":"move","seq":1,"path":[1,2]} , {"type":"move","seq":2,"path":[2]}] `, true, []game.Code{"", ""}, []uint64{1, 2}},
		{"array with bad elements", `[{"type":"move","seq":1,"path":[1]},5,"x",{"type":"move","seq":3},{"type":"move","seq":4,"path":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]},null,[1]]`, true,
			[]game.Code{"", game.CodeBadRequest, game.CodeBadRequest, game.CodeBadRequest, game.CodePathTooLong, game.CodeBadRequest, game.CodeBadRequest},
			[]uint64{1, 0, 0, 3, 4, 0, 0}},
		{"array with strings holding brackets", `[{"type":"move","seq":1,"path":[1],"note":"]},[\"{"},{"type":"move","seq":2,"path":[2]}]`, true, []game.Code{"", ""}, []uint64{1, 2}},
		{"empty array", `[]`, true, nil, nil},
		{"invalid array", `[{"type":"move","seq":1,"path":[1]},`, false, []game.Code{game.CodeBadJSON}, []uint64{0}},
		{"empty body", ``, false, []game.Code{game.CodeBadJSON}, []uint64{0}},
		{"blank body", " \n ", false, []game.Code{game.CodeBadJSON}, []uint64{0}},
		{"scalar body", `7`, false, []game.Code{game.CodeBadRequest}, []uint64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			items, array := p.ParseBody([]byte(tc.body), nil)
			if array != tc.array || len(items) != len(tc.codes) {
				t.Fatalf("got array %v, %d items %+v; want array %v, %d items", array, len(items), items, tc.array, len(tc.codes))
			}
			for i, it := range items {
				code := game.Code("")
				if it.Err != nil {
					code = it.Err.Code
				}
				if code != tc.codes[i] || it.Seq != tc.seqs[i] {
					t.Errorf("item %d: got %v seq %d, want %q seq %d", i, it.Err, it.Seq, tc.codes[i], tc.seqs[i])
				}
			}
		})
	}
}
