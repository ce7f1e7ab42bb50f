package event_test

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// marshalHops is the reference encoding of a batch with hop timestamps.
func marshalHops(tb testing.TB, h event.Hops, events ...*eventpb.Event) []byte {
	tb.Helper()
	b, err := proto.Marshal(&eventpb.Batch{SchemaVersion: event.SchemaVersion, Events: events,
		InputPublishedUnixNanos: h.InputPublished, InputConsumedUnixNanos: h.InputConsumed})
	if err != nil {
		tb.Fatalf("marshal batch: %v", err)
	}
	return b
}

func TestHopsRoundTrip(t *testing.T) {
	h := event.Hops{InputPublished: 1_795_000_000_123_456_789, InputConsumed: 1_795_000_000_123_999_000}
	events := sampleEvents()
	for _, tc := range []struct {
		name string
		h    event.Hops
	}{
		{"both", h},
		{"published only", event.Hops{InputPublished: h.InputPublished}},
		{"consumed only", event.Hops{InputConsumed: h.InputConsumed}},
		{"negative", event.Hops{InputPublished: -1, InputConsumed: -1 << 63}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b event.Builder
			if err := b.SetHops(tc.h); err != nil {
				t.Fatal(err)
			}
			for i, ev := range events {
				if err := b.Add(ev); err != nil {
					t.Fatal(err)
				}
				// Bytes between Adds must not leave the hop fields in the
				// middle of the events.
				if i%2 == 0 {
					b.Bytes()
				}
			}
			data := b.Bytes()
			if want := marshalHops(t, tc.h, events...); !bytes.Equal(data, want) {
				t.Fatalf("builder bytes differ from proto.Marshal:\n got %x\nwant %x", data, want)
			}
			if b.Size() != len(data) {
				t.Fatalf("Size %d, %d bytes", b.Size(), len(data))
			}
			var batch eventpb.Batch
			if err := event.Decode(data, &batch); err != nil {
				t.Fatal(err)
			}
			if batch.InputPublishedUnixNanos != tc.h.InputPublished || batch.InputConsumedUnixNanos != tc.h.InputConsumed {
				t.Fatalf("Decode: hops %d, %d; want %+v", batch.InputPublishedUnixNanos, batch.InputConsumedUnixNanos, tc.h)
			}
			var r event.Reader
			if err := r.Reset(data); err != nil {
				t.Fatal(err)
			}
			if r.Hops() != tc.h || r.Len() != len(events) {
				t.Fatalf("Reader: hops %+v, %d events; want %+v, %d", r.Hops(), r.Len(), tc.h, len(events))
			}
			for i := 0; r.Next(); i++ {
				var ev eventpb.Event
				if err := r.Event(&ev); err != nil || !proto.Equal(&ev, events[i]) {
					t.Fatalf("event %d: %v, %v", i, &ev, err)
				}
			}
		})
	}
}

func TestHopsKeptByResetRemovedByZero(t *testing.T) {
	h := event.Hops{InputPublished: 10, InputConsumed: 20}
	moves := sampleMoves(3, 1)
	var b event.Builder
	if err := b.SetHops(h); err != nil {
		t.Fatal(err)
	}
	if err := b.AddMove(moves[0]); err != nil {
		t.Fatal(err)
	}
	b.Bytes()
	b.Reset()
	if b.Hops() != h {
		t.Fatalf("Reset dropped the hops: %+v", b.Hops())
	}
	if err := b.AddMove(moves[1]); err != nil {
		t.Fatal(err)
	}
	if want := marshalHops(t, h, moveEvent(moves[1])); !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("after Reset:\n got %x\nwant %x", b.Bytes(), want)
	}
	// Changing the hops of a batch that holds events rewrites them.
	if err := b.SetHops(event.Hops{}); err != nil {
		t.Fatal(err)
	}
	if want := marshalBatch(t, moveEvent(moves[1])); !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("zero hops:\n got %x\nwant %x", b.Bytes(), want)
	}
	var r event.Reader
	if err := r.Reset(b.Bytes()); err != nil || r.Hops() != (event.Hops{}) {
		t.Fatalf("zero hops read back as %+v, %v", r.Hops(), err)
	}
}

// Batches written before the hop fields existed (revision 2) decode, with
// zero hops, through both decoders.
func TestHopsAbsentInOldBatches(t *testing.T) {
	events := sampleEvents()
	old, err := proto.Marshal(&eventpb.Batch{SchemaVersion: 2, Events: events})
	if err != nil {
		t.Fatal(err)
	}
	var batch eventpb.Batch
	if err := event.Decode(old, &batch); err != nil {
		t.Fatal(err)
	}
	if batch.SchemaVersion != 2 || batch.InputPublishedUnixNanos != 0 || batch.InputConsumedUnixNanos != 0 || len(batch.Events) != len(events) {
		t.Fatalf("old batch decoded as version %d, hops %d/%d, %d events", batch.SchemaVersion,
			batch.InputPublishedUnixNanos, batch.InputConsumedUnixNanos, len(batch.Events))
	}
	var r event.Reader
	if err := r.Reset(old); err != nil {
		t.Fatal(err)
	}
	if r.Version() != 2 || r.Hops() != (event.Hops{}) {
		t.Fatalf("Reader: version %d, hops %+v", r.Version(), r.Hops())
	}
	var m event.Move
	for i := 0; r.Next(); i++ {
		if r.Kind() == event.KindMove {
			if err := r.Move(&m); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var ev eventpb.Event
		if err := r.Event(&ev); err != nil || !proto.Equal(&ev, events[i]) {
			t.Fatalf("event %d: %v, %v", i, &ev, err)
		}
	}
	// A batch of revision 2, byte for byte as the previous Builder wrote it:
	// version 2, one move {player "a", seq 1, path [5]}.
	golden := []byte{0x08, 0x02, 0x12, 0x0a, 0x0a, 0x08, 0x0a, 0x01, 'a', 0x10, 0x01, 0x1a, 0x01, 0x05}
	if err := r.Reset(golden); err != nil || !r.Next() || r.Move(&m) != nil || string(m.Player) != "a" || m.Path[0] != 5 || r.Hops() != (event.Hops{}) {
		t.Fatalf("golden revision-2 batch: %v, move %+v, hops %+v", err, m, r.Hops())
	}
}

func TestHopsCountAgainstTheCap(t *testing.T) {
	h := event.Hops{InputPublished: 1, InputConsumed: 2}
	moves := sampleMoves(200, 3)
	b := event.Builder{MaxBytes: 2048}
	if err := b.SetHops(h); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range moves {
		err := b.AddMove(m)
		if errors.Is(err, event.ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if len(b.Bytes()) > 2048 || b.Size() != len(b.Bytes()) {
			t.Fatalf("%d bytes (Size %d) past the cap of 2048", len(b.Bytes()), b.Size())
		}
	}
	if n == 0 || n == len(moves) {
		t.Fatalf("added %d of %d moves: the cap never applied", n, len(moves))
	}
	// A full batch without hops may have no room for them.
	var nb event.Builder
	nb.MaxBytes = 2048
	for _, m := range moves {
		if errors.Is(nb.AddMove(m), event.ErrFull) {
			break
		}
	}
	before := append([]byte(nil), nb.Bytes()...)
	err := nb.SetHops(h)
	switch {
	case len(before)+18 > 2048:
		if !errors.Is(err, event.ErrFull) || !bytes.Equal(nb.Bytes(), before) {
			t.Fatalf("SetHops on a full batch (%d bytes): %v, changed %v", len(before), err, !bytes.Equal(nb.Bytes(), before))
		}
	case err != nil:
		t.Fatalf("SetHops with room left (%d bytes): %v", len(before), err)
	case len(nb.Bytes()) != len(before)+18:
		t.Fatalf("SetHops: %d bytes, want %d", len(nb.Bytes()), len(before)+18)
	}
}
