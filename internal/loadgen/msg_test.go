package loadgen

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"treasure/internal/game"
	"treasure/internal/wire"
)

func TestEachLineSplitsFrames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		frame string
		want  []string
	}{
		{"one message", `{"a":1}`, []string{`{"a":1}`}},
		{"three messages", "{\"a\":1}\n{\"b\":2}\n{\"c\":3}", []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}},
		{"trailing newline", "{\"a\":1}\n", []string{`{"a":1}`}},
		{"crlf", "{\"a\":1}\r\n{\"b\":2}\r\n", []string{`{"a":1}`, `{"b":2}`}},
		{"blank lines skipped", "\n \n{\"a\":1}\n\t\n\n{\"b\":2}", []string{`{"a":1}`, `{"b":2}`}},
		{"empty frame", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			eachLine([]byte(c.frame), func(line []byte) { got = append(got, string(line)) })
			if !slices.Equal(got, c.want) {
				t.Fatalf("eachLine(%q) = %q, want %q", c.frame, got, c.want)
			}
		})
	}
}

func TestParseMsgReadsTheServersMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		line []byte
		want msg
	}{
		{"ack", wire.AppendAck(nil, 17), msg{kind: kindAck, hasSeq: true, seq: 17}},
		{"rate limited", wire.AppendError(nil, 5, game.CodeRateLimited, "slow down", 1500*time.Microsecond),
			msg{kind: kindError, hasSeq: true, seq: 5, code: []byte("rate_limited"), message: []byte("slow down"), retryAfterMs: 2}},
		{"discontinuous", wire.AppendError(nil, 9, game.CodeDiscontinous, "path starts at node 4 but the player is at node 77", 0),
			msg{kind: kindError, hasSeq: true, seq: 9, code: []byte("discontinuous"), message: []byte("path starts at node 4 but the player is at node 77")}},
		{"proximity, no treasure", wire.AppendProximity(nil, wire.Proximity{ID: 3, Seq: 8, Node: 1234}),
			msg{kind: kindProximity, hasID: true, id: 3, hasSeq: true, seq: 8, node: 1234}},
		{"proximity, treasure", wire.AppendProximity(nil, wire.Proximity{ID: 4, Seq: 9, Node: 12, Found: true, Treasure: `t"1`, TreasureNode: 99, Distance: 400}),
			msg{kind: kindProximity, hasID: true, id: 4, hasSeq: true, seq: 9, node: 12}},
		{"claim", wire.AppendClaim(nil, 5, 9, "gold", 30), msg{kind: kindClaim, hasID: true, id: 5, hasSeq: true, seq: 9}},
		{"score", wire.AppendScore(nil, 6, 30, 2), msg{kind: kindScore, hasID: true, id: 6}},
		{"leaderboard", wire.AppendLeaderboard(nil, []game.Entry{{Player: "a]}", Score: 3, Rank: 1}, {Player: "b", Score: 1, Rank: 2}}), msg{kind: kindLeaderboard}},
		{"unknown type", []byte(`{"type":"hello","extra":[1,{"id":"x"}]}`), msg{}},
		{"keys in another order, spaces", []byte(" { \"seq\" : 4 , \"type\" : \"ack\" } "), msg{kind: kindAck, hasSeq: true, seq: 4}},
		{"escaped type", []byte(`{"type":"\u0061ck","seq":2}`), msg{kind: kindAck, hasSeq: true, seq: 2}},
		{"repeated key, last wins", []byte(`{"type":"ack","seq":1,"seq":2}`), msg{kind: kindAck, hasSeq: true, seq: 2}},
		{"empty object", []byte(`{}`), msg{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseMsg(c.line)
			if !ok {
				t.Fatalf("parseMsg(%s) failed", c.line)
			}
			if !sameMsg(got, c.want) {
				t.Fatalf("parseMsg(%s) = %+v, want %+v", c.line, got, c.want)
			}
		})
	}
}

func TestParseMsgRejectsWhatIsNotAMessage(t *testing.T) {
	t.Parallel()
	for _, line := range []string{
		``, `[]`, `"ack"`, `null`, `{`, `{"type":"ack"`, `{"type":"ack",}`, `{"type":"ack"}x`,
		`{"type":ack}`, `{"type":1}`, `{"seq":-1}`, `{"seq":1.5}`, `{"seq":1e3}`, `{"seq":"1"}`,
		`{"seq":01}`, `{"seq":18446744073709551616}`, `{"id":null}`, `{"code":3}`,
		`{"type":"ack" "seq":1}`, `{"x":{"y":1}`, `{"x":"unterminated}`, "{\"x\":\"a\x01\"}",
	} {
		if m, ok := parseMsg([]byte(line)); ok {
			t.Errorf("parseMsg(%q) = %+v, want a failure", line, m)
		}
	}
}

func TestNodeInMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		text string
		want uint64
		ok   bool
	}{
		{"path starts at node 4 but the player is at node 77", 77, true},
		{"at node 5", 5, true},
		{"the player is elsewhere", 0, false},
		{"at node x", 0, false},
	}
	for _, c := range cases {
		got, ok := nodeInMessage([]byte(c.text))
		if got != c.want || ok != c.ok {
			t.Errorf("nodeInMessage(%q) = %d, %v; want %d, %v", c.text, got, ok, c.want, c.ok)
		}
	}
	// The words game.ValidateMove uses, whatever they are now.
	g := amsterdam(t)
	var idx [game.MaxPath]uint32
	st := game.Player{Seq: 1, Node: 10, Moved: true}
	err := game.ValidateMove(g, st, 2, []uint64{1}, idx[:1])
	if err == nil || err.Code != game.CodeDiscontinous {
		t.Fatalf("ValidateMove: %v, want discontinuous", err)
	}
	if got, ok := nodeInMessage([]byte(err.Msg)); !ok || got != 11 {
		t.Fatalf("nodeInMessage(%q) = %d, %v; want 11 (the wire id of index 10)", err.Msg, got, ok)
	}
}

func TestAppendMoveParsesBack(t *testing.T) {
	t.Parallel()
	var p wire.Parser
	for _, path := range [][]uint64{{1}, {5, 6, 7, 8, 9, 10}, {18446744073709551615, 0, 3}} {
		line := appendMove(nil, 42, path)
		it := p.ParseMove(line)
		if it.Err != nil || it.Seq != 42 || !slices.Equal(it.Path, path) {
			t.Fatalf("appendMove(42, %v) = %s, parsed as %+v", path, line, it)
		}
	}
}

func sameMsg(a, b msg) bool {
	return a.kind == b.kind && a.hasID == b.hasID && a.hasSeq == b.hasSeq && a.id == b.id && a.seq == b.seq &&
		a.node == b.node && a.retryAfterMs == b.retryAfterMs && bytes.Equal(a.code, b.code) && bytes.Equal(a.message, b.message)
}

// referenceMsg decodes line with encoding/json the way parseMsg promises
// to: a JSON object, the fields it reads of the right type at every
// occurrence, the last occurrence counting.
func referenceMsg(line []byte) (msg, bool) {
	var m msg
	if !json.Valid(line) {
		return m, false
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return m, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return m, false
		}
		key := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return m, false
		}
		str := func() ([]byte, bool) {
			var s string
			if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
		num := func() (uint64, bool) {
			if raw[0] == '-' || bytes.ContainsAny(raw, ".eE") {
				return 0, false
			}
			v, err := strconv.ParseUint(string(raw), 10, 64)
			return v, err == nil
		}
		var ok bool
		switch key {
		case "type":
			var s []byte
			if s, ok = str(); ok {
				m.kind = kindOther
				for k, name := range kinds {
					if name != "" && string(s) == name {
						m.kind = kind(k)
					}
				}
			}
		case "code":
			m.code, ok = str()
		case "message":
			m.message, ok = str()
		case "id":
			m.id, ok = num()
			m.hasID = ok
		case "seq":
			m.seq, ok = num()
			m.hasSeq = ok
		case "node":
			m.node, ok = num()
		case "retry_after_ms":
			m.retryAfterMs, ok = num()
		default:
			ok = true
		}
		if !ok {
			return m, false
		}
	}
	return m, true
}

// FuzzParseMsg checks parseMsg against encoding/json on every valid JSON
// line, and that no input makes it panic.
func FuzzParseMsg(f *testing.F) {
	for _, s := range []string{
		`{"type":"ack","seq":1}`,
		`{"type":"error","seq":3,"code":"rate_limited","message":"x","retry_after_ms":20}`,
		`{"type":"proximity","id":1,"seq":1,"node":5,"treasure":{"id":"a","node":2,"distance":3}}`,
		`{"type":"leaderboard","top":[{"player":"p\"1","score":1,"rank":1}]}`,
		`{"type":"\u0061ck","seq":01}`, `{"seq":1e2}`, `{"a":[{"b":"}"}]}`, `[1]`, `{"seq":18446744073709551615}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		got, ok := parseMsg(line)
		if !json.Valid(line) || !utf8.Valid(line) {
			return // lenient on invalid input (servers send valid UTF-8 JSON): only no panic
		}
		want, wantOK := referenceMsg(line)
		if ok != wantOK {
			t.Fatalf("parseMsg(%q) ok = %v, encoding/json says %v", line, ok, wantOK)
		}
		if ok && !sameMsg(got, want) {
			t.Fatalf("parseMsg(%q) = %+v, encoding/json reads %+v", line, got, want)
		}
	})
}
