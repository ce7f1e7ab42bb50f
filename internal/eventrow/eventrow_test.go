package eventrow_test

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/eventrow"
)

// sampleEvents returns one event of every kind with every field set, and
// the variants whose presence matters (no nearest treasure, no position).
func sampleEvents() []*eventpb.Event {
	pos := &eventpb.LogPosition{StreamSeq: 123456789, Index: 17}
	return []*eventpb.Event{
		{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{Player: "alice", Seq: 7, Path: []uint32{1, 2, 300000, 4294967295}, IngestUnixNanos: -5, Partition: 3, PrevSeq: 6}}},
		{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{Player: "zed", Seq: 1}}},
		{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: "gold_1-A", Node: 42, Points: 250, IngestUnixNanos: 1_795_000_000_000_000_000}}},
		{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: "bob", Seq: 9, Treasure: "gold_1-A", Points: 250, Node: 42, Move: pos, PrevSeq: 8}}},
		{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: "bob", Seq: 9, Treasure: "x", Points: 1, Node: 42, Move: &eventpb.LogPosition{}}}},
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: "bob", Seq: 9, Node: 42,
			Treasure: &eventpb.NearestTreasure{Id: "silver", Node: 43, Distance: 1999}, Move: pos, IngestUnixNanos: 77, PrevSeq: 8}}},
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: "carol", Seq: 1, Node: 5, Move: pos}}},
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: "carol", Seq: 2, Node: 5,
			Treasure: &eventpb.NearestTreasure{Id: "on-the-node", Node: 5}}}},
		{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{Player: "bob", Score: 250, Rank: 1,
			Cause: &eventpb.ClaimRef{Treasure: "gold_1-A", Move: pos}}}},
		{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{Player: "bob", Score: 0, Rank: 3}}},
		{Kind: &eventpb.Event_Leaderboard{Leaderboard: &eventpb.LeaderboardSnapshot{
			Top: []*eventpb.LeaderboardEntry{
				{Player: "bob", Score: 250, Rank: 1},
				{Player: "dave", Score: 250, Rank: 1},
				{Player: "ünïcødé", Score: 10, Rank: 3},
			},
			Players: 3, Version: 88}}},
		{Kind: &eventpb.Event_Leaderboard{Leaderboard: &eventpb.LeaderboardSnapshot{Version: 1}}},
	}
}

// unknownEvent is an Event of a kind a newer schema revision added (field 9).
func unknownEvent(tb testing.TB) *eventpb.Event {
	tb.Helper()
	raw := protowire.AppendTag(nil, 9, protowire.BytesType)
	raw = protowire.AppendBytes(raw, []byte{0x08, 0x2a})
	var ev eventpb.Event
	if err := proto.Unmarshal(raw, &ev); err != nil {
		tb.Fatal(err)
	}
	return &ev
}

func marshal(tb testing.TB, b *eventpb.Batch) []byte {
	tb.Helper()
	data, err := proto.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

type message struct {
	msg   eventrow.Message
	batch *eventpb.Batch // nil for an invalid payload
}

// sampleMessages returns messages of every shape Flatten knows.
func sampleMessages(tb testing.TB) []message {
	t0 := time.Unix(1_795_000_000, 123456789)
	full := &eventpb.Batch{SchemaVersion: event.SchemaVersion, Events: sampleEvents(), InputPublishedUnixNanos: 11, InputConsumedUnixNanos: 22}
	onlyConsumed := &eventpb.Batch{SchemaVersion: 3, Events: sampleEvents()[:1], InputConsumedUnixNanos: 5}
	unknown := &eventpb.Batch{SchemaVersion: event.SchemaVersion, Events: []*eventpb.Event{sampleEvents()[0], unknownEvent(tb)}}
	empty := &eventpb.Batch{SchemaVersion: 1}
	var out []message
	for i, b := range []*eventpb.Batch{full, onlyConsumed, unknown, empty} {
		out = append(out, message{eventrow.Message{Stream: "t1_IN", Subject: "t1.in.3", Seq: uint64(10 + i), Time: t0.Add(time.Duration(i)), Data: marshal(tb, b)}, b})
	}
	out = append(out, message{eventrow.Message{Stream: "t1_OUT", Subject: "t1.out.rank", Seq: 99, Time: t0, Data: []byte("not a batch")}, nil})
	return out
}

func TestFlattenThenBatchIsTheOriginal(t *testing.T) {
	for _, m := range sampleMessages(t) {
		rows, err := eventrow.Flatten(nil, m.msg)
		if err != nil {
			t.Fatalf("seq %d: %v", m.msg.Seq, err)
		}
		for _, r := range rows {
			if r.StreamSeq != m.msg.Seq || r.Subject != m.msg.Subject || r.Published != m.msg.Time.UnixNano() {
				t.Errorf("seq %d: row placed at %s seq %d time %d", m.msg.Seq, r.Subject, r.StreamSeq, r.Published)
			}
		}
		data, err := eventrow.Data(rows)
		if err != nil {
			t.Fatalf("seq %d: data: %v", m.msg.Seq, err)
		}
		if !bytes.Equal(data, m.msg.Data) {
			t.Errorf("seq %d: rebuilt payload differs from the original", m.msg.Seq)
		}
		if m.batch == nil {
			if len(rows) != 1 || rows[0].Kind != eventrow.KindInvalid || rows[0].Index != -1 {
				t.Errorf("invalid payload: rows %+v", rows)
			}
			if _, err := eventrow.Batch(rows); err == nil {
				t.Error("invalid payload: Batch succeeded")
			}
			continue
		}
		b, err := eventrow.Batch(rows)
		if err != nil {
			t.Fatalf("seq %d: batch: %v", m.msg.Seq, err)
		}
		if !proto.Equal(b, m.batch) {
			t.Errorf("seq %d: rebuilt batch\n%v\nwant\n%v", m.msg.Seq, b, m.batch)
		}
	}
}

func TestFlattenColumns(t *testing.T) {
	msgs := sampleMessages(t)
	rows, err := eventrow.Flatten(nil, msgs[0].msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(sampleEvents()) {
		t.Fatalf("%d rows, want %d", len(rows), len(sampleEvents()))
	}
	mv, claim, prox, none, score, lb := rows[0], rows[3], rows[5], rows[6], rows[8], rows[10]
	check := func(what string, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("%s", what)
		}
	}
	check("stream role IN", mv.Stream == "IN")
	check("partition 3", mv.Partition == 3)
	check("index", mv.Index == 0 && lb.Index == 10 && mv.Events == int32(len(rows)))
	check("hops", *mv.InputPublished == 11 && *mv.InputConsumed == 22)
	check("move kind", mv.Kind == "move")
	check("move node is the last of the path", *mv.Node == 4294967295 && len(mv.Path) == 4)
	check("move fields", *mv.Player == "alice" && *mv.Seq == 7 && *mv.PrevSeq == 6 && *mv.MovePartition == 3 && *mv.Ingest == -5)
	check("move has no claim fields", mv.Treasure == nil && mv.Points == nil && mv.MoveStreamSeq == nil && mv.Top == nil && mv.Raw == nil)
	check("claim fields", *claim.Treasure == "gold_1-A" && *claim.Points == 250 && *claim.MoveStreamSeq == 123456789 && *claim.MoveIndex == 17 && *claim.PrevSeq == 8)
	check("claim has no path", claim.Path == nil && claim.Ingest == nil)
	check("proximity nearest", *prox.Treasure == "silver" && *prox.TreasureNode == 43 && *prox.Distance == 1999)
	check("proximity without treasure", none.Treasure == nil && none.TreasureNode == nil && none.Distance == nil && *none.Node == 5)
	check("score", *score.Score == 250 && *score.Rank == 1 && *score.Treasure == "gold_1-A")
	check("leaderboard", len(lb.Top) == 3 && lb.Top[2].Player == "ünïcødé" && *lb.Version == 88 && *lb.Players == 3 && lb.Player == nil)

	rank, err := eventrow.Flatten(nil, msgs[4].msg)
	if err != nil {
		t.Fatal(err)
	}
	check("rank subject partition -1", rank[0].Partition == -1 && rank[0].Stream == "OUT")
	empty, _ := eventrow.Flatten(nil, msgs[3].msg)
	check("empty batch: one row", len(empty) == 1 && empty[0].Kind == eventrow.KindEmpty && empty[0].Index == -1 && empty[0].Events == 0)
	unk, _ := eventrow.Flatten(nil, msgs[2].msg)
	check("unknown kind keeps its bytes", len(unk) == 2 && unk[1].Kind == "unknown" && len(unk[1].Raw) > 0)
}

func TestBatchRefusesRowsOfAnotherShape(t *testing.T) {
	rows, err := eventrow.Flatten(nil, sampleMessages(t)[0].msg)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]eventrow.Row{
		"none":          nil,
		"missing event": rows[:len(rows)-1],
		"swapped":       append([]eventrow.Row{rows[1], rows[0]}, rows[2:]...),
	}
	other := append([]eventrow.Row(nil), rows...)
	other[2].StreamSeq++
	cases["two messages"] = other
	bad := append([]eventrow.Row(nil), rows...)
	bad[1].Kind = "teleport"
	cases["unknown kind name"] = bad
	for name, rs := range cases {
		if _, err := eventrow.Batch(rs); err == nil {
			t.Errorf("%s: Batch accepted it", name)
		}
	}
}

// TestParquetRoundTrip writes every sample row with parquet-go and reads it
// back with parquet-go's reader, comparing field by field.
func TestParquetRoundTrip(t *testing.T) {
	var rows []eventrow.Row
	for _, m := range sampleMessages(t) {
		var err error
		if rows, err = eventrow.Flatten(rows, m.msg); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[eventrow.Row](&buf)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fld := range f.Schema().Fields() {
		names = append(names, fld.Name())
	}
	if !reflect.DeepEqual(names, eventrow.Columns) {
		t.Errorf("parquet columns %v\nColumns        %v", names, eventrow.Columns)
	}
	r := parquet.NewGenericReader[eventrow.Row](bytes.NewReader(buf.Bytes()))
	got := make([]eventrow.Row, len(rows)+1)
	n, err := r.Read(got)
	if n != len(rows) {
		t.Fatalf("read %d rows (%v), wrote %d", n, err, len(rows))
	}
	for i := range rows {
		compareRows(t, i, got[i], rows[i])
	}
}

// compareRows reports every field of got that differs from want, treating
// an empty and a nil slice alike only where both mean "no elements".
func compareRows(tb testing.TB, i int, got, want eventrow.Row) {
	tb.Helper()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for f := 0; f < gv.NumField(); f++ {
		g, w := gv.Field(f), wv.Field(f)
		name := gv.Type().Field(f).Name
		if g.Kind() == reflect.Slice && g.Len() == 0 && w.Len() == 0 {
			if g.IsNil() != w.IsNil() && name != "Path" && name != "Top" {
				tb.Errorf("row %d %s: nil %v, want nil %v", i, name, g.IsNil(), w.IsNil())
			}
			continue
		}
		if !reflect.DeepEqual(g.Interface(), w.Interface()) {
			tb.Errorf("row %d (%s) %s: %v, want %v", i, want.Kind, name, show(g), show(w))
		}
	}
}

func show(v reflect.Value) any {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "null"
		}
		return v.Elem().Interface()
	}
	return v.Interface()
}

// TestColumnsDocumented fails when a column is missing from schemas/archive.md.
func TestColumnsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../schemas/archive.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range eventrow.Columns {
		if !strings.Contains(string(doc), "| `"+c+"` |") {
			t.Errorf("column %s is not in schemas/archive.md's table", c)
		}
	}
}

func TestRecordHasOneFieldPerColumn(t *testing.T) {
	rows, err := eventrow.Flatten(nil, sampleMessages(t)[0].msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if rec := r.Record(nil); len(rec) != len(eventrow.Columns) {
			t.Fatalf("%s: %d fields, %d columns", r.Kind, len(rec), len(eventrow.Columns))
		}
	}
	rec := rows[0].Record(nil)
	if rec[14] != "[1,2,300000,4294967295]" || rec[18] != "" || rec[6] != "1795000000123456789" {
		t.Errorf("move record %q", rec)
	}
}

// TestFlattenerMatchesFlatten flattens the sample messages, four rounds,
// with one reused Flattener and with Flatten: the same rows, field by
// field, and Parquet written from the reused rows one message at a time
// (Reset after each, in even rounds; rows piling up between Resets in odd
// ones) is byte for byte the file written from Flatten's (the writer
// copies what it is given, so that the calls after a Reset may overwrite
// the Flattener's buffers).
func TestFlattenerMatchesFlatten(t *testing.T) {
	var f eventrow.Flattener
	var fresh, reused bytes.Buffer
	wf := parquet.NewGenericWriter[eventrow.Row](&fresh)
	wr := parquet.NewGenericWriter[eventrow.Row](&reused)
	write := func(want, got []eventrow.Row) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Flattener's %d rows differ from Flatten's %d", len(got), len(want))
			for i := range min(len(got), len(want)) {
				compareRows(t, i, got[i], want[i])
			}
		}
		if _, err := wf.Write(want); err != nil {
			t.Fatal(err)
		}
		if _, err := wr.Write(got); err != nil {
			t.Fatal(err)
		}
	}
	rows := 0
	for round := range 4 {
		var want, got []eventrow.Row // odd rounds: the round's rows
		for _, m := range sampleMessages(t) {
			w, err := eventrow.Flatten(nil, m.msg)
			if err != nil {
				t.Fatal(err)
			}
			n := len(got)
			if got, err = f.Flatten(got, m.msg); err != nil {
				t.Fatal(err)
			}
			rows += len(got) - n
			if round%2 == 0 {
				write(w, got)
				got = got[:0]
				f.Reset()
			} else {
				want = append(want, w...)
			}
		}
		if round%2 == 1 {
			write(want, got)
			f.Reset()
		}
	}
	if err := errors.Join(wf.Close(), wr.Close()); err != nil {
		t.Fatal(err)
	}
	if rows < 40 || !bytes.Equal(fresh.Bytes(), reused.Bytes()) {
		t.Errorf("%d rows: Parquet from the reused rows (%d bytes) differs from Flatten's (%d bytes)", rows, reused.Len(), fresh.Len())
	}
}

// TestFlattenerPathsAreSeparate: appending to one row's path leaves the
// next row's alone (the rows of a message share one buffer).
func TestFlattenerPathsAreSeparate(t *testing.T) {
	b := &eventpb.Batch{SchemaVersion: event.SchemaVersion, Events: []*eventpb.Event{
		{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{Player: "a", Seq: 1, Path: []uint32{1, 2, 3}}}},
		{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{Player: "b", Seq: 1, Path: []uint32{4, 5}}}},
	}}
	m := eventrow.Message{Stream: "t1_IN", Subject: "t1.in.0", Seq: 1, Time: time.Unix(1, 0), Data: marshal(t, b)}
	var f eventrow.Flattener
	for range 2 {
		f.Reset()
		rows, err := f.Flatten(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		second := append([]uint32(nil), rows[1].Path...)
		_ = append(rows[0].Path, 9, 9, 9, 9)
		if !reflect.DeepEqual(rows[1].Path, []uint32{4, 5}) || !reflect.DeepEqual(second, []uint32{4, 5}) {
			t.Errorf("row 1's path %v after an append to row 0's, want %v (not nil)", rows[1].Path, second)
		}
	}
}
