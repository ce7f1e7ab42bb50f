package event_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

func TestRoundTripEveryEvent(t *testing.T) {
	events := sampleEvents()
	var b event.Builder
	for _, ev := range events {
		if err := b.Add(ev); err != nil {
			t.Fatalf("add %v: %v", event.KindOf(ev), err)
		}
	}
	data := b.Bytes()
	if want := marshalBatch(t, events...); !bytes.Equal(data, want) {
		t.Fatalf("builder bytes differ from proto.Marshal:\n got %x\nwant %x", data, want)
	}
	appended, err := event.AppendBatch([]byte("prefix"), events)
	if err != nil || !bytes.Equal(appended, append([]byte("prefix"), data...)) {
		t.Fatalf("AppendBatch = %x, %v; want prefix + %x", appended, err, data)
	}

	var batch eventpb.Batch
	if err := event.Decode(data, &batch); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if batch.SchemaVersion != event.SchemaVersion || len(batch.Events) != len(events) {
		t.Fatalf("decoded version %d, %d events; want %d, %d", batch.SchemaVersion, len(batch.Events), event.SchemaVersion, len(events))
	}
	var r event.Reader
	if err := r.Reset(data); err != nil {
		t.Fatalf("reader reset: %v", err)
	}
	if r.Len() != len(events) || r.Version() != event.SchemaVersion {
		t.Fatalf("reader: %d events, version %d", r.Len(), r.Version())
	}
	for i, want := range events {
		if !proto.Equal(batch.Events[i], want) {
			t.Errorf("event %d (%v): decoded %v, want %v", i, event.KindOf(want), batch.Events[i], want)
		}
		if !r.Next() {
			t.Fatalf("reader stopped after %d events", i)
		}
		if r.Index() != i || r.Kind() != event.KindOf(want) {
			t.Errorf("reader event %d: index %d kind %v, want kind %v", i, r.Index(), r.Kind(), event.KindOf(want))
		}
		var got eventpb.Event
		if err := r.Event(&got); err != nil || !proto.Equal(&got, want) {
			t.Errorf("reader event %d: %v, %v; want %v", i, &got, err, want)
		}
		if r.Kind() == event.KindMove {
			var m event.Move
			var pm eventpb.MoveAccepted
			if err := r.Move(&m); err != nil {
				t.Fatalf("reader move %d: %v", i, err)
			}
			m.Proto(&pm)
			if !proto.Equal(&pm, want.GetMove()) {
				t.Errorf("reader move %d: %v, want %v", i, &pm, want.GetMove())
			}
		} else if err := r.Move(new(event.Move)); !errors.Is(err, event.ErrKind) {
			t.Errorf("Move on a %v event: err %v, want ErrKind", r.Kind(), err)
		}
	}
	if r.Next() {
		t.Fatalf("reader has more than %d events", len(events))
	}
}

func TestEmptyBatch(t *testing.T) {
	var b event.Builder
	data := b.Bytes()
	if b.Len() != 0 || len(data) != b.Size() {
		t.Fatalf("empty builder: len %d, size %d, %d bytes", b.Len(), b.Size(), len(data))
	}
	var r event.Reader
	if err := r.Reset(data); err != nil || r.Next() {
		t.Fatalf("empty batch: reset %v, next true", err)
	}
	var zero event.Reader
	if zero.Next() || zero.Len() != 0 {
		t.Fatal("zero Reader is not empty")
	}
}

// TestAddMoveMatchesProto holds the hand-written MoveAccepted encoder and
// decoder to the generated code: same bytes out, same values back, for
// typical moves and for edge values (zero fields, maximum ids, unicode).
func TestAddMoveMatchesProto(t *testing.T) {
	moves := append(sampleMoves(300, 7),
		&eventpb.MoveAccepted{},
		&eventpb.MoveAccepted{Player: "x"},
		&eventpb.MoveAccepted{Path: []uint32{0, 0, 0}},
		&eventpb.MoveAccepted{Player: "ünï ☃ 𝄞", Seq: 1<<64 - 1, Path: []uint32{1<<32 - 1, 127, 128, 16383, 16384},
			IngestUnixNanos: -1 << 63, Partition: 1<<32 - 1, PrevSeq: 1<<64 - 1},
		&eventpb.MoveAccepted{Player: strings.Repeat("p", 300), Seq: 1, Path: make([]uint32, 16), IngestUnixNanos: 1},
	)
	var viaAdd, viaMove event.Builder
	viaAdd.MaxBytes, viaMove.MaxBytes = 1<<20, 1<<20
	for _, m := range moves {
		if err := viaAdd.Add(moveEvent(m)); err != nil {
			t.Fatalf("add: %v", err)
		}
		if err := viaMove.AddMove(m); err != nil {
			t.Fatalf("add move: %v", err)
		}
	}
	if !bytes.Equal(viaAdd.Bytes(), viaMove.Bytes()) {
		t.Fatal("AddMove bytes differ from Add bytes")
	}
	var batch eventpb.Batch
	if err := proto.Unmarshal(viaMove.Bytes(), &batch); err != nil {
		t.Fatalf("proto.Unmarshal of AddMove output: %v", err)
	}
	var r event.Reader
	if err := r.Reset(viaMove.Bytes()); err != nil {
		t.Fatal(err)
	}
	var m event.Move
	var got eventpb.MoveAccepted
	for i := 0; r.Next(); i++ {
		if err := r.Move(&m); err != nil {
			t.Fatalf("move %d: %v", i, err)
		}
		m.Proto(&got)
		if !proto.Equal(&got, moves[i]) || !proto.Equal(batch.Events[i].GetMove(), moves[i]) {
			t.Fatalf("move %d: Reader.Move %v, proto %v, want %v", i, &got, batch.Events[i].GetMove(), moves[i])
		}
	}
}

func TestMoveDecodeDoesNotAllocate(t *testing.T) {
	var b event.Builder
	for _, m := range sampleMoves(64, 3) {
		if err := b.AddMove(m); err != nil {
			t.Fatal(err)
		}
	}
	data := b.Bytes()
	var r event.Reader
	var m event.Move
	allocs := testing.AllocsPerRun(20, func() {
		if err := r.Reset(data); err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			if err := r.Move(&m); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("decoding a batch of moves: %v allocs, want 0", allocs)
	}
	moves := sampleMoves(64, 4)
	allocs = testing.AllocsPerRun(20, func() {
		b.Reset()
		for _, mv := range moves {
			if err := b.AddMove(mv); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("encoding a batch of moves into a grown Builder: %v allocs, want 0", allocs)
	}
}

func TestBuilderCaps(t *testing.T) {
	moves := sampleMoves(1000, 5)
	t.Run("bytes", func(t *testing.T) {
		b := event.Builder{MaxBytes: 4096, MaxEvents: 1 << 20}
		added := 0
		for _, m := range moves {
			before := slices.Clone(b.Bytes())
			err := b.AddMove(m)
			if errors.Is(err, event.ErrFull) {
				if !bytes.Equal(b.Bytes(), before) || b.Len() != added {
					t.Fatal("a refused AddMove changed the batch")
				}
				// The refused move must really not fit.
				grown := event.Builder{MaxBytes: 1 << 20}
				for _, mm := range moves[:added+1] {
					if err := grown.AddMove(mm); err != nil {
						t.Fatal(err)
					}
				}
				if grown.Size() <= 4096 {
					t.Fatalf("refused a move that fits: %d bytes with it", grown.Size())
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			added++
			if b.Size() > 4096 || len(b.Bytes()) != b.Size() {
				t.Fatalf("batch of %d bytes (Size %d) past the 4096 cap", len(b.Bytes()), b.Size())
			}
		}
		if added == 0 || added == len(moves) {
			t.Fatalf("added %d of %d moves: the cap never applied", added, len(moves))
		}
		if b.Len() != added {
			t.Fatalf("Len %d, added %d", b.Len(), added)
		}
		var r event.Reader
		if err := r.Reset(b.Bytes()); err != nil || r.Len() != added {
			t.Fatalf("capped batch: %v, %d events, want %d", err, r.Len(), added)
		}
		b.Reset()
		if b.Len() != 0 || b.AddMove(moves[added]) != nil || b.Len() != 1 {
			t.Fatal("the refused move does not go into a reset batch")
		}
	})
	t.Run("events", func(t *testing.T) {
		b := event.Builder{MaxEvents: 10}
		for i, m := range moves[:10] {
			if err := b.Add(moveEvent(m)); err != nil {
				t.Fatalf("move %d: %v", i, err)
			}
		}
		if err := b.AddMove(moves[10]); !errors.Is(err, event.ErrFull) {
			t.Fatalf("11th move: %v, want ErrFull", err)
		}
		if err := b.Add(moveEvent(moves[10])); !errors.Is(err, event.ErrFull) {
			t.Fatalf("11th event: %v, want ErrFull", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		var b event.Builder
		n := 0
		for {
			err := b.AddMove(moves[n%len(moves)])
			if errors.Is(err, event.ErrFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if b.Size() > event.DefaultMaxBytes || b.Size() < event.DefaultMaxBytes-200 || n > event.DefaultMaxEvents {
			t.Fatalf("default caps: stopped at %d events, %d bytes", n, b.Size())
		}
	})
	t.Run("too large", func(t *testing.T) {
		b := event.Builder{MaxBytes: 64}
		big := &eventpb.MoveAccepted{Player: strings.Repeat("p", 64)}
		if err := b.AddMove(big); !errors.Is(err, event.ErrTooLarge) {
			t.Fatalf("AddMove: %v, want ErrTooLarge", err)
		}
		if err := b.Add(moveEvent(big)); !errors.Is(err, event.ErrTooLarge) {
			t.Fatalf("Add: %v, want ErrTooLarge", err)
		}
		if b.Len() != 0 {
			t.Fatal("an oversized event went in")
		}
	})
}

func TestBuilderRefusesBadEvents(t *testing.T) {
	var b event.Builder
	if err := b.AddMove(sampleMoves(1, 9)[0]); err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(b.Bytes())
	bad := &eventpb.MoveAccepted{Player: "bad\xff", Seq: 1}
	cases := map[string]func() error{
		"nil event":    func() error { return b.Add(nil) },
		"no kind":      func() error { return b.Add(&eventpb.Event{}) },
		"nil move":     func() error { return b.AddMove(nil) },
		"utf8 AddMove": func() error { return b.AddMove(bad) },
		"utf8 Add":     func() error { return b.Add(moveEvent(bad)) },
		"utf8 claim": func() error {
			return b.Add(&eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Treasure: "\xc0"}}})
		},
	}
	for name, add := range cases {
		if err := add(); err == nil {
			t.Errorf("%s: no error", name)
		}
		if !bytes.Equal(b.Bytes(), before) || b.Len() != 1 {
			t.Fatalf("%s: a refused event changed the batch", name)
		}
	}
	if _, err := event.AppendBatch(nil, []*eventpb.Event{moveEvent(bad)}); err == nil {
		t.Error("AppendBatch accepted invalid UTF-8")
	}
	if out, err := event.AppendBatch([]byte("keep"), []*eventpb.Event{{}}); !errors.Is(err, event.ErrNoKind) || string(out) != "keep" {
		t.Errorf("AppendBatch of an empty event: %q, %v", out, err)
	}
}

// TestDecodeRejectsGarbage: broken input gives an error from Decode and
// from the Reader (at Reset or at the event's decode), never a panic.
func TestDecodeRejectsGarbage(t *testing.T) {
	valid := marshalBatch(t, sampleEvents()...)
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	version := cat(tag(1, protowire.VarintType), []byte{1})
	eventOf := func(b []byte) []byte { return protowire.AppendBytes(tag(2, protowire.BytesType), b) }
	moveOf := func(b []byte) []byte { return protowire.AppendBytes(tag(1, protowire.BytesType), b) }
	cases := map[string][]byte{
		"empty":                  nil,
		"no version":             eventOf(moveOf(nil)),
		"version zero":           cat(tag(1, protowire.VarintType), []byte{0}),
		"text":                   []byte(`{"type":"move","seq":1}`),
		"truncated":              valid[:len(valid)-3],
		"field number zero":      cat(version, []byte{0x02, 0x00}),
		"field number too big":   cat(version, protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3)),
		"varint overflow":        cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 11)),
		"event length past end":  cat(version, tag(2, protowire.BytesType), []byte{0x7f, 0x08}),
		"stray end group":        cat(version, tag(5, protowire.EndGroupType)),
		"event framing broken":   cat(version, eventOf([]byte{0x0a, 0x05, 0x01})),
		"move player not utf8":   cat(version, eventOf(moveOf(protowire.AppendString(tag(1, protowire.BytesType), "\xff\xfe")))),
		"move path truncated":    cat(version, eventOf(moveOf(cat(tag(3, protowire.BytesType), []byte{0x02, 0x80, 0x80})))),
		"move seq truncated":     cat(version, eventOf(moveOf(cat(tag(2, protowire.VarintType), []byte{0x80})))),
		"move ingest truncated":  cat(version, eventOf(moveOf(cat(tag(4, protowire.Fixed64Type), []byte{1, 2, 3})))),
		"claim treasure no utf8": cat(version, eventOf(protowire.AppendBytes(tag(3, protowire.BytesType), protowire.AppendString(tag(3, protowire.BytesType), "\xff")))),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			var batch eventpb.Batch
			if err := event.Decode(data, &batch); err == nil {
				t.Errorf("Decode accepted it: %v", &batch)
			}
			if err := readAll(data); err == nil {
				t.Error("Reader accepted it")
			}
		})
	}
	if err := event.Decode(cases["no version"], new(eventpb.Batch)); !errors.Is(err, event.ErrNotBatch) {
		t.Errorf("no version: %v, want ErrNotBatch", err)
	}
	if err := readAll(valid); err != nil {
		t.Errorf("valid batch: %v", err)
	}
}

// readAll walks a batch with a Reader, decoding every event, and returns
// the first error.
func readAll(data []byte) error {
	var r event.Reader
	if err := r.Reset(data); err != nil {
		return err
	}
	var m event.Move
	var p event.Proximity
	var ev eventpb.Event
	for r.Next() {
		var err error
		switch r.Kind() {
		case event.KindMove:
			err = r.Move(&m)
		case event.KindProximity:
			err = r.Proximity(&p)
		default:
			err = r.Event(&ev)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// TestForwardCompatible: a batch from a newer writer (higher version, an
// unknown batch field, an event kind and a move field this revision does
// not know) reads fine; the unknown kind shows as KindUnknown.
func TestForwardCompatible(t *testing.T) {
	m := sampleMoves(1, 11)[0]
	moveBytes, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	moveBytes = protowire.AppendVarint(protowire.AppendTag(moveBytes, 9, protowire.VarintType), 77) // future field
	var data []byte
	data = protowire.AppendVarint(protowire.AppendTag(data, 1, protowire.VarintType), 7)
	data = protowire.AppendString(protowire.AppendTag(data, 3, protowire.BytesType), "future batch field")
	data = protowire.AppendBytes(protowire.AppendTag(data, 2, protowire.BytesType),
		protowire.AppendString(protowire.AppendTag(nil, 40, protowire.BytesType), "future kind"))
	data = protowire.AppendBytes(protowire.AppendTag(data, 2, protowire.BytesType),
		protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), moveBytes))

	var r event.Reader
	if err := r.Reset(data); err != nil {
		t.Fatal(err)
	}
	if r.Version() != 7 || r.Len() != 2 {
		t.Fatalf("version %d, %d events", r.Version(), r.Len())
	}
	if !r.Next() || r.Kind() != event.KindUnknown {
		t.Fatalf("first event: kind %v, want unknown", r.Kind())
	}
	if !r.Next() || r.Kind() != event.KindMove {
		t.Fatalf("second event: kind %v, want move", r.Kind())
	}
	var mv event.Move
	var got eventpb.MoveAccepted
	if err := r.Move(&mv); err != nil {
		t.Fatal(err)
	}
	mv.Proto(&got)
	if !proto.Equal(&got, m) {
		t.Fatalf("move %v, want %v", &got, m)
	}
	if err := event.Decode(data, new(eventpb.Batch)); err != nil {
		t.Fatalf("Decode: %v", err)
	}
}

// TestMoveNonCanonical: encodings other than ours that proto.Unmarshal
// accepts (unpacked path, repeated fields, fields out of order, a move
// split in two members, other kinds before the move) decode to what
// proto.Unmarshal yields.
func TestMoveNonCanonical(t *testing.T) {
	tag := protowire.AppendTag
	var m1 []byte
	m1 = tag(m1, 3, protowire.VarintType)
	m1 = protowire.AppendVarint(m1, 5)
	m1 = protowire.AppendString(tag(m1, 1, protowire.BytesType), "first")
	m1 = protowire.AppendVarint(tag(m1, 5, protowire.VarintType), 1<<40+3) // truncates to uint32
	m1 = protowire.AppendBytes(tag(m1, 2, protowire.BytesType), []byte("seq as bytes: unknown"))
	m1 = protowire.AppendVarint(tag(m1, 2, protowire.VarintType), 10)
	m1 = protowire.AppendBytes(tag(m1, 3, protowire.BytesType), protowire.AppendVarint(protowire.AppendVarint(nil, 6), 7))
	m1 = protowire.AppendFixed64(tag(m1, 4, protowire.Fixed64Type), 99)
	var m2 []byte
	m2 = protowire.AppendString(tag(m2, 1, protowire.BytesType), "second")
	m2 = protowire.AppendVarint(tag(m2, 3, protowire.VarintType), 8)
	m2 = protowire.AppendFixed32(tag(m2, 4, protowire.Fixed32Type), 1) // wrong wire type: unknown

	drop, err := proto.Marshal(&eventpb.TreasureDropped{Id: "t", Node: 1, Points: 2})
	if err != nil {
		t.Fatal(err)
	}
	events := map[string][]byte{
		"split move": protowire.AppendBytes(tag(protowire.AppendBytes(tag(nil, 1, protowire.BytesType), m1), 1, protowire.BytesType), m2),
		"drop then move": protowire.AppendBytes(tag(
			protowire.AppendBytes(tag(nil, 2, protowire.BytesType), drop), 1, protowire.BytesType), m1),
		"move, drop, move": protowire.AppendBytes(tag(protowire.AppendBytes(tag(
			protowire.AppendBytes(tag(nil, 1, protowire.BytesType), m2), 2, protowire.BytesType), drop), 1, protowire.BytesType), m1),
	}
	for name, ev := range events {
		t.Run(name, func(t *testing.T) {
			data := protowire.AppendVarint(tag(nil, 1, protowire.VarintType), 1)
			data = protowire.AppendBytes(tag(data, 2, protowire.BytesType), ev)
			var batch eventpb.Batch
			if err := proto.Unmarshal(data, &batch); err != nil {
				t.Fatal(err)
			}
			want := batch.Events[0].GetMove()
			if want == nil {
				t.Fatal("proto sees no move")
			}
			want.ProtoReflect().SetUnknown(nil) // Move keeps no unknown fields
			var r event.Reader
			if err := r.Reset(data); err != nil || !r.Next() {
				t.Fatal(err)
			}
			mv := event.Move{Path: []uint32{42, 42}} // stale content must go
			var got eventpb.MoveAccepted
			if err := r.Move(&mv); err != nil {
				t.Fatal(err)
			}
			mv.Proto(&got)
			if !proto.Equal(&got, want) {
				t.Fatalf("Reader.Move %v, proto.Unmarshal %v", &got, want)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[event.Kind]string{event.KindMove: "move", event.KindLeaderboard: "leaderboard", event.KindUnknown: "unknown", 200: "unknown"} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, k.String(), want)
		}
	}
}

// TestHandCodecCoversSchema pins what the hand-written code knows of the
// schema: the fields of MoveAccepted and the kinds of Event. A change to
// either in events.proto fails here until Builder.AddMove, Reader.Move and
// the Kind constants are extended to match.
func TestHandCodecCoversSchema(t *testing.T) {
	type fieldInfo struct {
		number int
		kind   string
		list   bool
	}
	wantMove := map[string]fieldInfo{
		"player":            {1, "string", false},
		"seq":               {2, "uint64", false},
		"path":              {3, "uint32", true},
		"ingest_unix_nanos": {4, "sfixed64", false},
		"partition":         {5, "uint32", false},
		"prev_seq":          {6, "uint64", false},
	}
	md := (&eventpb.MoveAccepted{}).ProtoReflect().Descriptor()
	fields := md.Fields()
	if fields.Len() != len(wantMove) {
		t.Errorf("MoveAccepted has %d fields, the hand-written codec knows %d: extend builder.go and reader.go", fields.Len(), len(wantMove))
	}
	for i := range fields.Len() {
		f := fields.Get(i)
		got := fieldInfo{int(f.Number()), f.Kind().String(), f.IsList()}
		if want, ok := wantMove[string(f.Name())]; !ok || got != want || (f.IsList() && !f.IsPacked()) {
			t.Errorf("MoveAccepted.%s is %+v (packed %v), the hand-written codec knows %+v: extend builder.go and reader.go", f.Name(), got, f.IsPacked(), want)
		}
	}

	oneof := (&eventpb.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")
	if oneof == nil {
		t.Fatal("Event has no oneof kind")
	}
	kinds := oneof.Fields()
	if kinds.Len() != int(event.KindLeaderboard) {
		t.Errorf("Event has %d kinds, package event knows %d", kinds.Len(), event.KindLeaderboard)
	}
	for i := range kinds.Len() {
		f := kinds.Get(i)
		if k := event.Kind(f.Number()); k.String() != string(f.Name()) {
			t.Errorf("Event.%s is field %d, but Kind(%d) is %q", f.Name(), f.Number(), f.Number(), k)
		}
	}
}
