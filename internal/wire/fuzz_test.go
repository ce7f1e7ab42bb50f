package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"treasure/internal/game"
)

var intLiteral = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

// refInt is the reference reading of an integer literal: a json.Number
// of digits only, saturating at math.MaxUint64.
func refInt(v any) (uint64, bool) {
	n, ok := v.(json.Number)
	if !ok || !intLiteral.MatchString(string(n)) {
		return 0, false
	}
	u, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		return 1<<64 - 1, true // out of range: saturates
	}
	return u, true
}

// refMove is an independent reading of one move line with encoding/json's
// generic decoding, following the rules of the package doc.
func refMove(line []byte) (seq uint64, path []uint64, code game.Code) {
	if !json.Valid(line) {
		return 0, nil, game.CodeBadJSON
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		panic(err) // json.Valid said yes
	}
	m, ok := v.(map[string]any)
	if !ok {
		return 0, nil, game.CodeBadRequest
	}
	s, sok := refInt(m["seq"])
	if sok && s >= 1 && s <= MaxSeq {
		seq = s
	} else {
		sok = false
	}
	if m["type"] != "move" || !sok {
		return seq, nil, game.CodeBadRequest
	}
	arr, ok := m["path"].([]any)
	if !ok || len(arr) == 0 {
		return seq, nil, game.CodeBadRequest
	}
	for _, el := range arr {
		u, ok := refInt(el)
		if !ok {
			return seq, nil, game.CodeBadRequest
		}
		path = append(path, u)
	}
	if len(path) > game.MaxPath {
		return seq, nil, game.CodePathTooLong
	}
	return seq, path, ""
}

func codeOf(it Item) game.Code {
	if it.Err == nil {
		return ""
	}
	return it.Err.Code
}

// checkItem holds a parsed Item to the reference reading of its line.
func checkItem(t *testing.T, line []byte, it Item) {
	t.Helper()
	seq, path, code := refMove(line)
	if codeOf(it) != code || it.Seq != seq || !slices.Equal(it.Path, path) {
		t.Fatalf("line %q: got seq %d path %v err %v; reference seq %d path %v code %q", line, it.Seq, it.Path, it.Err, seq, path, code)
	}
	if it.Err != nil && (it.Path != nil || it.Err.Msg == "") {
		t.Fatalf("line %q: error %v with path %v", line, it.Err, it.Path)
	}
}

var moveSeeds = []string{
	`{"type":"move","seq":1,"path":[1,2,3]}`,
	`{"type":"move","seq":123456,"path":[10,20,30,40,50,60,70,80,90,100,110,120]}` + "\r\n" + `{"type":"move","seq":2,"path":[]}`,
	` { "path" : [ 4 , 5 ] , "seq" : 9 , "type" : "move" } `,
	`{"type":"move","seq":0,"path":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}`,
	`{"type":"move","seq":9007199254740992,"path":[18446744073709551616]}`,
	`{"type":"move","seq":1.0,"path":[-0,1e2,"3"]}`,
	`{"typ\u0065":"move","seq":1,"seq":2,"path":[1],"x":[{"]":"["}]}`,
	`[{"type":"move","seq":1,"path":[1]},{"type":"move","seq":2,"path":[1,2]}]`,
	`[1,"x",null,{}]`,
	`{"type":"move","seq":1,"path":[1,]}`,
	"\n\n  \r\n",
	`null`,
	`{"type":"move","seq":01,"path":[1]}`,
}

// The -fuzzminimizetime 50x in the commands below: with the default (60 s
// of minimizing per new input) the fuzzer on the project's box stalls at
// 0 execs/s for long stretches; FuzzDecodeBatch in internal/event does too.
//
// FuzzParseFrame holds the frame parser to an independent reading of each
// line with encoding/json: in particular a line is bad_json exactly when
// json.Valid rejects it. It also checks that the fast path agrees with the
// slow one and that ParseBody agrees with the same reading per element.
//
//	go test -run '^$' -fuzz FuzzParseFrame -fuzztime 60s -fuzzminimizetime 50x ./internal/wire/
func FuzzParseFrame(f *testing.F) {
	for _, s := range moveSeeds {
		f.Add([]byte(s))
	}
	var p Parser
	var items []Item
	f.Fuzz(func(t *testing.T, frame []byte) {
		items = p.ParseFrame(frame, items[:0])
		var lines [][]byte
		for line := range bytes.SplitSeq(frame, []byte("\n")) {
			if len(bytes.Trim(line, " \t\r")) > 0 {
				lines = append(lines, line)
			}
		}
		if len(items) != len(lines) {
			t.Fatalf("frame %q: %d items for %d lines", frame, len(items), len(lines))
		}
		for i, line := range lines {
			checkItem(t, line, items[i])
			// The slow path alone gives the same answer.
			var q Parser
			s := q.slow(line)
			if codeOf(s) != codeOf(items[i]) || s.Seq != items[i].Seq || !slices.Equal(s.Path, items[i].Path) {
				t.Fatalf("line %q: fast+slow %+v, slow alone %+v", line, items[i], s)
			}
		}

		// The same bytes as an HTTP body.
		body, array := p.ParseBody(frame, nil)
		var elems []json.RawMessage
		trimmed := bytes.TrimLeft(frame, " \t\r\n")
		isArray := json.Valid(frame) && trimmed[0] == '[' && json.Unmarshal(frame, &elems) == nil
		if array != isArray {
			t.Fatalf("body %q: array %v, encoding/json says %v", frame, array, isArray)
		}
		if !array {
			if len(body) != 1 {
				t.Fatalf("body %q: %d items", frame, len(body))
			}
			checkItem(t, frame, body[0])
			return
		}
		if len(body) != len(elems) {
			t.Fatalf("body %q: %d items for %d elements", frame, len(body), len(elems))
		}
		for i, el := range elems {
			checkItem(t, el, body[i])
		}
	})
}

// FuzzParseDrop checks that the drop parser never panics, says bad_json
// exactly when encoding/json finds the body invalid, and that what it
// accepts is what encoding/json reads.
//
//	go test -run '^$' -fuzz FuzzParseDrop -fuzztime 60s -fuzzminimizetime 50x ./internal/wire/
func FuzzParseDrop(f *testing.F) {
	for _, s := range []string{
		`{"treasures":[{"id":"gold-1","node":42,"points":100},{"id":"b","node":7,"points":1}]}`,
		`{"treasures":[]}`,
		`{"treasures":[{"id":"a","node":-1,"points":0}]}`,
		`{"treasures":[{"id":"\u0061","node":1e2,"points":2147483648}]}`,
		`{"treasures":null}`,
		`[]`,
		`{"treasures":[{"id":"a","node":1,"points":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		drops, err := ParseDrop(body, nil)
		var ge *game.Error
		if err != nil && !errors.As(err, &ge) {
			t.Fatalf("error %v is not a *game.Error", err)
		}
		if (ge != nil && ge.Code == game.CodeBadJSON) != !json.Valid(body) {
			t.Fatalf("body %q: error %v, json.Valid %v", body, err, json.Valid(body))
		}
		if err != nil {
			if ge.Code != game.CodeBadJSON && ge.Code != game.CodeBadRequest || len(drops) != 0 {
				t.Fatalf("body %q: error %v with %d drops", body, err, len(drops))
			}
			return
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v struct{ Treasures []map[string]any }
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("body %q accepted, encoding/json says %v", body, err)
		}
		if len(v.Treasures) != len(drops) {
			t.Fatalf("body %q: %d drops, encoding/json reads %d", body, len(drops), len(v.Treasures))
		}
		for i, d := range drops {
			m := v.Treasures[i]
			node, ok := refInt(m["node"])
			if m["id"] != d.ID || !ok || node != d.Node || m["points"] != json.Number(strconv.FormatUint(uint64(d.Points), 10)) {
				t.Fatalf("body %q: drop %d is %+v, encoding/json reads %v", body, i, d, m)
			}
			if game.CheckTreasure(d.ID, int64(d.Points)) != nil {
				t.Fatalf("body %q: drop %+v accepted against CheckTreasure", body, d)
			}
		}
	})
}

// FuzzAppendString holds the string encoder to encoding/json (HTML
// escaping off) byte for byte, and every encoder using it to valid JSON.
//
//	go test -run '^$' -fuzz FuzzAppendString -fuzztime 30s -fuzzminimizetime 50x ./internal/wire/
func FuzzAppendString(f *testing.F) {
	for _, s := range tricky {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Fatalf("AppendString(%q) = %s, encoding/json gives %s", s, got, want.Bytes())
		}
		for _, b := range [][]byte{
			AppendError(nil, 1, game.CodeRateLimited, s, 1),
			AppendLeaderboard(nil, []game.Entry{{Player: s}, {Player: s}}),
			AppendPlayer(nil, game.Entry{Player: s, Score: -1, Rank: 1}),
		} {
			if !json.Valid(b) {
				t.Fatalf("invalid JSON %q", b)
			}
		}
	})
}
