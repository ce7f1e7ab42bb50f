package event_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// FuzzDecodeBatch feeds arbitrary bytes to both decoders and holds them to
// each other: the Reader (with the hand-written move decoder) accepts
// exactly what proto.Unmarshal accepts and yields the same events, nothing
// panics, and what decodes re-encodes to the same events.
//
//	go test -run '^$' -fuzz FuzzDecodeBatch -fuzztime 60s ./internal/event/
func FuzzDecodeBatch(f *testing.F) {
	f.Add(marshalBatch(f, sampleEvents()...))
	var b event.Builder
	for _, m := range sampleMoves(4, 2) {
		if err := b.AddMove(m); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(b.Bytes())
	if err := b.SetHops(event.Hops{InputPublished: 1_795_000_000_000_000_000, InputConsumed: -1}); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Add([]byte{0x08, 0x01, 0x12, 0x04, 0x0a, 0x02, 0x0a, 0x00})
	f.Add([]byte{0x08, 0x01, 0x12, 0x06, 0x12, 0x00, 0x0a, 0x02, 0x18, 0x05})

	for _, p := range proximitySeeds() {
		f.Add(p)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var batch eventpb.Batch
		decErr := event.Decode(data, &batch)
		readErr := readAll(data)
		if (decErr == nil) != (readErr == nil) {
			t.Fatalf("Decode error %v, Reader error %v", decErr, readErr)
		}
		if decErr != nil {
			return
		}

		var r event.Reader
		if err := r.Reset(data); err != nil {
			t.Fatal(err)
		}
		if r.Version() != batch.SchemaVersion || r.Len() != len(batch.Events) {
			t.Fatalf("Reader: version %d, %d events; Decode: %d, %d", r.Version(), r.Len(), batch.SchemaVersion, len(batch.Events))
		}
		if want := (event.Hops{InputPublished: batch.InputPublishedUnixNanos, InputConsumed: batch.InputConsumedUnixNanos}); r.Hops() != want {
			t.Fatalf("Reader: hops %+v; Decode: %+v", r.Hops(), want)
		}
		var known []*eventpb.Event
		var mv event.Move
		var px event.Proximity
		for i := 0; r.Next(); i++ {
			want := batch.Events[i]
			if r.Kind() != event.KindOf(want) {
				t.Fatalf("event %d: Reader kind %v, Decode kind %v", i, r.Kind(), event.KindOf(want))
			}
			if r.Kind() == event.KindUnknown {
				continue
			}
			known = append(known, want)
			if r.Kind() == event.KindProximity {
				if err := r.Proximity(&px); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				var got eventpb.ProximityResult
				px.Proto(&got)
				w := proto.Clone(want.GetProximity()).(*eventpb.ProximityResult)
				dropUnknown(w)
				if !proto.Equal(&got, w) {
					t.Fatalf("event %d: Reader.Proximity %v, Decode %v", i, &got, w)
				}
				continue
			}
			if r.Kind() != event.KindMove {
				continue
			}
			if err := r.Move(&mv); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			var got eventpb.MoveAccepted
			mv.Proto(&got)
			w := proto.Clone(want.GetMove()).(*eventpb.MoveAccepted)
			w.ProtoReflect().SetUnknown(nil)
			if !proto.Equal(&got, w) {
				t.Fatalf("event %d: Reader.Move %v, Decode %v", i, &got, w)
			}
		}

		out, err := event.AppendBatch(nil, known)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again eventpb.Batch
		if err := event.Decode(out, &again); err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if len(again.Events) != len(known) {
			t.Fatalf("re-encoded %d events, decoded %d", len(known), len(again.Events))
		}
		for i := range known {
			if !proto.Equal(again.Events[i], known[i]) {
				t.Fatalf("event %d changed in a round trip: %v, then %v", i, known[i], again.Events[i])
			}
		}
	})
}

// dropUnknown clears the unknown fields of a proximity result and of the
// messages it holds (the hand-written decoder keeps none).
func dropUnknown(p *eventpb.ProximityResult) {
	p.ProtoReflect().SetUnknown(nil)
	if p.Treasure != nil {
		p.Treasure.ProtoReflect().SetUnknown(nil)
	}
	if p.Move != nil {
		p.Move.ProtoReflect().SetUnknown(nil)
	}
}

// proximitySeeds are batches of one proximity event written by hand, in
// the shapes the generated encoder never writes and proto.Unmarshal still
// reads: a NearestTreasure that comes twice (merged), empty nested
// messages (present), unknown fields inside each message, fields with
// another wire type; and ones it refuses (invalid UTF-8, truncated).
func proximitySeeds() [][]byte {
	msg := func(fields ...[]byte) []byte {
		var b []byte
		for _, f := range fields {
			b = append(b, f...)
		}
		return b
	}
	bytesField := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	batch := func(prox []byte) []byte {
		ev := bytesField(protowire.Number(event.KindProximity), prox)
		return msg(varint(1, event.SchemaVersion), bytesField(2, ev))
	}
	return [][]byte{
		batch(msg(bytesField(1, []byte("ann")), varint(2, 7), varint(3, 1<<33+5),
			bytesField(4, msg(bytesField(1, []byte("t1")), varint(3, 40))),
			bytesField(4, msg(varint(2, 9), varint(15, 1))),
			bytesField(5, nil), varint(7, 6), varint(20, 3))),
		batch(msg(bytesField(4, nil), bytesField(5, msg(varint(1, 12), varint(2, 3), varint(2, 4))), varint(1, 5))),
		batch(msg(varint(4, 1), varint(5, 2), bytesField(2, []byte("x")))),
		batch(msg(bytesField(1, []byte{0xff, 0xfe}))),
		batch(msg(bytesField(4, msg(bytesField(1, []byte{0xc3}))))),
		batch(msg(bytesField(5, []byte{0x08}))),
	}
}
