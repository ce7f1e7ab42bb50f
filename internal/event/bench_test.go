package event_test

import (
	"testing"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

const benchBatch = 256

func reportPerEvent(b *testing.B, size int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/event")
	b.ReportMetric(float64(size), "B/batch")
}

// BenchmarkEncodeMoves256 encodes a batch of 256 MoveAccepted events into
// a reused Builder: through the generated code (Add) and through the
// hand-written encoder (AddMove).
func BenchmarkEncodeMoves256(b *testing.B) {
	moves := sampleMoves(benchBatch, 1)
	b.Run("proto", func(b *testing.B) {
		bl := event.Builder{MaxBytes: 1 << 20}
		ev := &eventpb.Event{}
		wrap := &eventpb.Event_Move{}
		b.ReportAllocs()
		for b.Loop() {
			bl.Reset()
			for _, m := range moves {
				wrap.Move = m
				ev.Kind = wrap
				if err := bl.Add(ev); err != nil {
					b.Fatal(err)
				}
			}
		}
		reportPerEvent(b, bl.Size())
	})
	b.Run("protowire", func(b *testing.B) {
		bl := event.Builder{MaxBytes: 1 << 20}
		b.ReportAllocs()
		for b.Loop() {
			bl.Reset()
			for _, m := range moves {
				if err := bl.AddMove(m); err != nil {
					b.Fatal(err)
				}
			}
		}
		reportPerEvent(b, bl.Size())
	})
}

// BenchmarkDecodeMoves256 decodes a batch of 256 MoveAccepted events: the
// whole batch through the generated code (Decode), event by event through
// the generated code (Reader.Event), and through the hand-written decoder
// (Reader.Move).
func BenchmarkDecodeMoves256(b *testing.B) {
	moves := sampleMoves(benchBatch, 1)
	var bl event.Builder
	bl.MaxBytes = 1 << 20
	for _, m := range moves {
		if err := bl.AddMove(m); err != nil {
			b.Fatal(err)
		}
	}
	data := bl.Bytes()
	b.Run("proto-batch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var batch eventpb.Batch
			if err := event.Decode(data, &batch); err != nil || len(batch.Events) != benchBatch {
				b.Fatal(err, len(batch.Events))
			}
		}
		reportPerEvent(b, len(data))
	})
	b.Run("proto-reader", func(b *testing.B) {
		var r event.Reader
		var ev eventpb.Event
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Reset(data); err != nil {
				b.Fatal(err)
			}
			for r.Next() {
				if err := r.Event(&ev); err != nil {
					b.Fatal(err)
				}
			}
		}
		reportPerEvent(b, len(data))
	})
	b.Run("protowire", func(b *testing.B) {
		var r event.Reader
		var m event.Move
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Reset(data); err != nil {
				b.Fatal(err)
			}
			for r.Next() {
				if err := r.Move(&m); err != nil {
					b.Fatal(err)
				}
			}
		}
		reportPerEvent(b, len(data))
	})
}
