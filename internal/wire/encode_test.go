package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"treasure/internal/game"
)

// tricky strings for player ids, treasure ids and messages.
var tricky = []string{
	"",
	"alice",
	`quote " and backslash \ and slash /`,
	"controls \x00\x01\x07\b\f\n\r\t\x1f\x7f end",
	"non-ASCII: ünïcødé ☃ 𝄞 日本",
	"separators \u2028 and \u2029",
	"invalid UTF-8 \xff\xfe and a cut rune \xe2\x98",
	"<html> & 'apostrophes'",
	"\\u0041 literally",
}

// decode parses an encoder's output with encoding/json, failing on
// anything but exactly one valid JSON object.
func decode(tb testing.TB, b []byte) map[string]any {
	tb.Helper()
	if !json.Valid(b) {
		tb.Fatalf("invalid JSON: %s", b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("decode %s: %v", b, err)
	}
	if bytes.ContainsAny(b, "\n") {
		tb.Fatalf("output holds a newline: %q", b)
	}
	return m
}

// valid is s as encoding/json would give it back after a round trip:
// invalid UTF-8 bytes become U+FFFD.
func valid(tb testing.TB, s string) string {
	tb.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func num(n string) json.Number { return json.Number(n) }

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range tricky {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		got := AppendString(nil, s)
		if !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Errorf("AppendString(%q) = %s, encoding/json gives %s", s, got, want.Bytes())
		}
	}
}

func TestEncodersRoundTrip(t *testing.T) {
	for _, s := range tricky {
		v := valid(t, s)
		entries := []game.Entry{{Player: s, Score: 1500, Rank: 1}, {Player: "bob", Score: -2, Rank: 2}}
		wantEntries := []any{
			map[string]any{"player": v, "score": num("1500"), "rank": num("1")},
			map[string]any{"player": "bob", "score": num("-2"), "rank": num("2")},
		}
		tests := []struct {
			name string
			got  []byte
			want map[string]any
		}{
			{"ack", AppendAck(nil, 18446744073709551615), map[string]any{"type": "ack", "seq": num("18446744073709551615")}},
			{"error", AppendError(nil, 7, game.CodeNotAdjacent, s, time.Second),
				map[string]any{"type": "error", "seq": num("7"), "code": "not_adjacent", "message": v}},
			{"error with unknown seq", AppendError(nil, 0, game.CodeBadJSON, s, 0),
				map[string]any{"type": "error", "seq": num("0"), "code": "bad_json", "message": v}},
			{"rate_limited", AppendError(nil, 8, game.CodeRateLimited, s, 49*time.Millisecond+1),
				map[string]any{"type": "error", "seq": num("8"), "code": "rate_limited", "message": v, "retry_after_ms": num("50")}},
			{"unavailable", AppendError(nil, 9, game.CodeUnavailable, s, 0),
				map[string]any{"type": "error", "seq": num("9"), "code": "unavailable", "message": v, "retry_after_ms": num("1")}},
			{"proximity found", AppendProximity(nil, Proximity{ID: 3, Seq: 9, Node: 1234, Found: true, Treasure: s, TreasureNode: 77, Distance: 1999}),
				map[string]any{"type": "proximity", "id": num("3"), "seq": num("9"), "node": num("1234"),
					"treasure": map[string]any{"id": v, "node": num("77"), "distance": num("1999")}}},
			{"proximity null", AppendProximity(nil, Proximity{ID: 4, Seq: 10, Node: 5, Treasure: "ignored", Distance: 3}),
				map[string]any{"type": "proximity", "id": num("4"), "seq": num("10"), "node": num("5"), "treasure": nil}},
			{"claim", AppendClaim(nil, 5, 10, s, 250),
				map[string]any{"type": "claim", "id": num("5"), "seq": num("10"), "treasure": v, "points": num("250")}},
			{"score", AppendScore(nil, 6, 1750, 12),
				map[string]any{"type": "score", "id": num("6"), "score": num("1750"), "rank": num("12")}},
			{"leaderboard", AppendLeaderboard(nil, entries),
				map[string]any{"type": "leaderboard", "top": wantEntries}},
			{"empty leaderboard", AppendLeaderboard(nil, nil),
				map[string]any{"type": "leaderboard", "top": []any{}}},
			{"top", AppendTop(nil, entries, 35000),
				map[string]any{"top": wantEntries, "players": num("35000")}},
			{"empty top", AppendTop(nil, nil, 0),
				map[string]any{"top": []any{}, "players": num("0")}},
			{"player", AppendPlayer(nil, entries[0]),
				map[string]any{"player": v, "score": num("1500"), "rank": num("1")}},
			{"accepted", AppendAccepted(nil, 3), map[string]any{"accepted": num("3")}},
		}
		for _, tc := range tests {
			if got := decode(t, tc.got); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s for %q:\n got %s\n = %#v\nwant %#v", tc.name, s, tc.got, got, tc.want)
			}
		}
	}
}

func TestEncodersAppend(t *testing.T) {
	// Appending keeps what dst held and joins into a frame that a client
	// splits on newlines.
	var frame []byte
	frame = AppendAck(frame, 1)
	frame = append(frame, '\n')
	frame = AppendError(frame, 2, game.CodeStaleSeq, "seq 2 is not above the last accepted seq 5", 0)
	lines := strings.Split(string(frame), "\n")
	if len(lines) != 2 || lines[0] != `{"type":"ack","seq":1}` ||
		lines[1] != `{"type":"error","seq":2,"code":"stale_seq","message":"seq 2 is not above the last accepted seq 5"}` {
		t.Fatalf("frame %q", frame)
	}
}

func TestRetryAfterMs(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 1}, {0, 1}, {1, 1}, {time.Millisecond, 1}, {time.Millisecond + 1, 2},
		{50 * time.Millisecond, 50}, {1<<63 - 1, (1<<63-1)/int64(time.Millisecond) + 1},
	} {
		if got := RetryAfterMs(tc.d); got != tc.want {
			t.Errorf("RetryAfterMs(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

func TestEncodersDoNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 4096)
	top := []game.Entry{{Player: "alice", Score: 10, Rank: 1}, {Player: "bob \"b\"", Score: 5, Rank: 2}}
	allocs := testing.AllocsPerRun(100, func() {
		b := AppendAck(buf[:0], 12345)
		b = AppendError(b, 1, game.CodeRateLimited, "too fast: at most 20 moves/s", 37*time.Millisecond)
		b = AppendProximity(b, Proximity{ID: 1, Seq: 2, Node: 3, Found: true, Treasure: "gold-1", TreasureNode: 4, Distance: 5})
		b = AppendClaim(b, 1, 2, "gold-1", 100)
		b = AppendScore(b, 1, 100, 1)
		b = AppendLeaderboard(b, top)
		b = AppendTop(b, top, 2)
		b = AppendPlayer(b, top[1])
		_ = AppendAccepted(b, 2)
	})
	if allocs != 0 {
		t.Fatalf("%v allocs", allocs)
	}
}
