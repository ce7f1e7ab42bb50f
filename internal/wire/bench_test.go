package wire

import (
	"encoding/json"
	"testing"
	"time"

	"treasure/internal/game"
)

const move12 = `{"type":"move","seq":123456,"path":[1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012]}`

// BenchmarkParseMove12 parses a frame holding one 12-node move.
func BenchmarkParseMove12(b *testing.B) {
	frame := []byte(move12)
	var p Parser
	var items []Item
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		items = p.ParseFrame(frame, items[:0])
	}
	if len(items) != 1 || items[0].Err != nil || len(items[0].Path) != 12 {
		b.Fatalf("%+v", items)
	}
}

// BenchmarkParseMove12Slow is the encoding/json path alone, for comparison.
func BenchmarkParseMove12Slow(b *testing.B) {
	line := []byte(move12)
	var p Parser
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		p.paths = p.paths[:0]
		if it := p.slow(line); it.Err != nil {
			b.Fatal(it.Err)
		}
	}
}

// BenchmarkParseMove12Struct is plain json.Unmarshal into a struct, the
// obvious alternative, for comparison.
func BenchmarkParseMove12Struct(b *testing.B) {
	line := []byte(move12)
	var m struct {
		Type string
		Seq  uint64
		Path []uint64
	}
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		m.Path = m.Path[:0]
		if err := json.Unmarshal(line, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseFrame8 parses a frame of eight 12-node moves.
func BenchmarkParseFrame8(b *testing.B) {
	var frame []byte
	for range 8 {
		frame = append(frame, move12...)
		frame = append(frame, '\n')
	}
	var p Parser
	var items []Item
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		items = p.ParseFrame(frame, items[:0])
	}
}

func BenchmarkAppendAck(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendAck(buf[:0], 123456)
	}
}

func BenchmarkAppendError(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendError(buf[:0], 123456, game.CodeRateLimited, "at most 20 moves/s, bursts of 40", 37*time.Millisecond)
	}
}

func BenchmarkAppendProximity(b *testing.B) {
	buf := make([]byte, 0, 256)
	m := Proximity{ID: 98765, Seq: 123456, Node: 1234567, Found: true, Treasure: "gold-coin_17", TreasureNode: 1234999, Distance: 1873}
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendProximity(buf[:0], m)
	}
}

func BenchmarkAppendLeaderboard100(b *testing.B) {
	top := make([]game.Entry, 100)
	for i := range top {
		top[i] = game.Entry{Player: "player-" + string(rune('a'+i%26)) + "-0123456789", Score: int64(100000 - i*17), Rank: int64(i + 1)}
	}
	buf := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendLeaderboard(buf[:0], top)
	}
	b.SetBytes(int64(len(buf)))
}
