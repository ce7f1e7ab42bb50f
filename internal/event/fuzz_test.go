package event_test

import (
	"testing"

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
		for i := 0; r.Next(); i++ {
			want := batch.Events[i]
			if r.Kind() != event.KindOf(want) {
				t.Fatalf("event %d: Reader kind %v, Decode kind %v", i, r.Kind(), event.KindOf(want))
			}
			if r.Kind() == event.KindUnknown {
				continue
			}
			known = append(known, want)
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
