package event

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event/eventpb"
)

// Field numbers from events.proto, for the hand-written paths.
const (
	fieldBatchVersion   = 1 // Batch.schema_version
	fieldBatchEvents    = 2 // Batch.events
	fieldBatchPublished = 3 // Batch.input_published_unix_nanos (sfixed64)
	fieldBatchConsumed  = 4 // Batch.input_consumed_unix_nanos (sfixed64)

	fieldMovePlayer    = 1 // MoveAccepted.player
	fieldMoveSeq       = 2 // MoveAccepted.seq
	fieldMovePath      = 3 // MoveAccepted.path (packed)
	fieldMoveIngest    = 4 // MoveAccepted.ingest_unix_nanos (sfixed64)
	fieldMovePartition = 5 // MoveAccepted.partition
	fieldMovePrevSeq   = 6 // MoveAccepted.prev_seq
)

// Default caps of a Builder. 64 KiB keeps a batch far below NATS's default
// max_payload (1 MiB) and holds about 500 typical moves.
const (
	DefaultMaxBytes  = 64 << 10
	DefaultMaxEvents = 1024
)

// Builder appends events, in the order added, to one encoded Batch whose
// bytes are ready to publish as a JetStream message. It caps the batch at
// MaxBytes encoded bytes and MaxEvents events: an Add that would cross a cap
// returns ErrFull and leaves the batch as it was, so that the publisher
// sends Bytes, calls Reset and adds the event again.
//
// The zero Builder is ready to use with the default caps. Reset keeps the
// buffer, so a Builder reused across batches stops allocating once its
// buffer has grown. A Builder is not safe for concurrent use.
//
// SetHops adds the batch-level hop timestamps; the bytes stay exactly
// those proto.Marshal writes for the same Batch (the hop fields, numbered
// after the events, come last).
type Builder struct {
	// MaxBytes caps len(Bytes()); 0 means DefaultMaxBytes.
	MaxBytes int
	// MaxEvents caps Len(); 0 means DefaultMaxEvents.
	MaxEvents int

	buf  []byte // header and events, then the hop fields when tail > 0
	n    int
	hops Hops
	tail int // bytes of hop fields at the end of buf (appended by Bytes)
}

// Hops are a batch's hop timestamps (Batch.input_published_unix_nanos and
// input_consumed_unix_nanos): for a batch written from one input message,
// when the log stored that input and when the writer began processing it,
// in Unix nanoseconds, 0 when unknown. They measure latency only: nothing
// the pipeline computes may depend on them (docs/pipeline.md).
type Hops struct {
	InputPublished int64
	InputConsumed  int64
}

// size returns the encoded size of h's fields (0 for the zero Hops).
func (h Hops) size() int {
	n := 0
	if h.InputPublished != 0 {
		n += 1 + 8
	}
	if h.InputConsumed != 0 {
		n += 1 + 8
	}
	return n
}

func (h Hops) append(buf []byte) []byte {
	if h.InputPublished != 0 {
		buf = protowire.AppendTag(buf, fieldBatchPublished, protowire.Fixed64Type)
		buf = protowire.AppendFixed64(buf, uint64(h.InputPublished))
	}
	if h.InputConsumed != 0 {
		buf = protowire.AppendTag(buf, fieldBatchConsumed, protowire.Fixed64Type)
		buf = protowire.AppendFixed64(buf, uint64(h.InputConsumed))
	}
	return buf
}

// batchHeader is Batch.schema_version = SchemaVersion, the first bytes of
// every batch (proto.Marshal writes fields in number order, and so do we).
var batchHeader = protowire.AppendVarint(protowire.AppendTag(nil, fieldBatchVersion, protowire.VarintType), SchemaVersion)

func (b *Builder) limits() (maxBytes, maxEvents int) {
	maxBytes, maxEvents = b.MaxBytes, b.MaxEvents
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxEvents <= 0 {
		maxEvents = DefaultMaxEvents
	}
	return maxBytes, maxEvents
}

// header makes buf hold the header and events only, ready to append an
// event.
func (b *Builder) header() {
	if len(b.buf) == 0 {
		b.buf = append(b.buf, batchHeader...)
	}
	b.buf = b.buf[:len(b.buf)-b.tail]
	b.tail = 0
}

// Reset empties the batch and keeps its buffer and its hops.
func (b *Builder) Reset() {
	b.buf = b.buf[:0]
	b.n = 0
	b.tail = 0
}

// SetHops makes h the hop timestamps of this batch and of the following
// ones (Reset keeps them; the zero Hops removes them). It returns ErrFull,
// changing nothing, when the batch holds events that would no longer fit
// its byte cap beside the new fields.
func (b *Builder) SetHops(h Hops) error {
	maxBytes, _ := b.limits()
	if b.n > 0 && b.body()+h.size() > maxBytes {
		return ErrFull
	}
	b.header()
	b.hops = h
	return nil
}

// Hops returns the hop timestamps that SetHops set.
func (b *Builder) Hops() Hops { return b.hops }

// Len returns the number of events in the batch.
func (b *Builder) Len() int { return b.n }

// body returns the encoded size of the header and the events.
func (b *Builder) body() int {
	if len(b.buf) == 0 {
		return len(batchHeader)
	}
	return len(b.buf) - b.tail
}

// Size returns the encoded size of the batch so far.
func (b *Builder) Size() int { return b.body() + b.hops.size() }

// Bytes returns the encoded batch. It aliases the Builder's buffer and is
// valid until the next Add, AddMove, SetHops or Reset; a publisher that
// hands it to a client which keeps it must copy it (nats.go copies on
// publish).
func (b *Builder) Bytes() []byte {
	b.header()
	n := len(b.buf)
	b.buf = b.hops.append(b.buf)
	b.tail = len(b.buf) - n
	return b.buf
}

// fits checks the caps for adding an event whose encoded Event message is
// evSize bytes: ErrTooLarge when it exceeds MaxBytes even alone, ErrFull
// when it does not fit beside the events already in the batch.
func (b *Builder) fits(evSize int) error {
	maxBytes, maxEvents := b.limits()
	field := protowire.SizeTag(fieldBatchEvents) + protowire.SizeBytes(evSize)
	if len(batchHeader)+b.hops.size()+field > maxBytes {
		return ErrTooLarge
	}
	if b.n >= maxEvents || b.Size()+field > maxBytes {
		return ErrFull
	}
	return nil
}

// Add appends ev, encoded by the generated code, to the batch. It returns
// ErrFull or ErrTooLarge (batch unchanged) when a cap stops it, ErrNoKind
// for an event without kind, and a wrapped error when ev does not encode
// (a string that is not UTF-8). It does not allocate once the buffer has
// grown. ev is not retained.
func (b *Builder) Add(ev *eventpb.Event) error {
	if KindOf(ev) == KindUnknown {
		return ErrNoKind
	}
	size := proto.Size(ev)
	if err := b.fits(size); err != nil {
		return err
	}
	b.header()
	old := len(b.buf)
	b.buf = protowire.AppendTag(b.buf, fieldBatchEvents, protowire.BytesType)
	b.buf = protowire.AppendVarint(b.buf, uint64(size))
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b.buf, ev)
	if err == nil && len(out)-len(b.buf) != size {
		err = fmt.Errorf("size changed from %d to %d while encoding", size, len(out)-len(b.buf))
	}
	if err != nil {
		b.buf = b.buf[:old]
		return fmt.Errorf("encode %v event: %w", KindOf(ev), err)
	}
	b.buf = out
	b.n++
	return nil
}

// AddMove appends a MoveAccepted event to the batch. It writes the same
// bytes as Add(&eventpb.Event{Kind: &eventpb.Event_Move{Move: m}}), with a
// hand-written protowire encoder that neither allocates nor needs the
// wrapper. Errors are those of Add; a nil m is ErrNoKind.
func (b *Builder) AddMove(m *eventpb.MoveAccepted) error {
	if m == nil {
		return ErrNoKind
	}
	if !utf8.ValidString(m.Player) {
		return fmt.Errorf("encode move event: player is not valid UTF-8")
	}
	msize, pathSize := moveSize(m)
	evSize := protowire.SizeTag(protowire.Number(KindMove)) + protowire.SizeBytes(msize)
	if err := b.fits(evSize); err != nil {
		return err
	}
	b.header()
	buf := b.buf
	buf = protowire.AppendTag(buf, fieldBatchEvents, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(evSize))
	buf = protowire.AppendTag(buf, protowire.Number(KindMove), protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(msize))
	b.buf = appendMove(buf, m, pathSize)
	b.n++
	return nil
}

// moveSize returns the encoded size of m and of its packed path payload,
// omitting zero fields as proto3 does.
func moveSize(m *eventpb.MoveAccepted) (size, pathSize int) {
	if len(m.Player) > 0 {
		size += 1 + protowire.SizeBytes(len(m.Player))
	}
	if m.Seq != 0 {
		size += 1 + protowire.SizeVarint(m.Seq)
	}
	for _, v := range m.Path {
		pathSize += protowire.SizeVarint(uint64(v))
	}
	if len(m.Path) > 0 {
		size += 1 + protowire.SizeBytes(pathSize)
	}
	if m.IngestUnixNanos != 0 {
		size += 1 + 8
	}
	if m.Partition != 0 {
		size += 1 + protowire.SizeVarint(uint64(m.Partition))
	}
	if m.PrevSeq != 0 {
		size += 1 + protowire.SizeVarint(m.PrevSeq)
	}
	return size, pathSize
}

// appendMove appends m's fields in number order, as proto.Marshal does.
func appendMove(buf []byte, m *eventpb.MoveAccepted, pathSize int) []byte {
	if len(m.Player) > 0 {
		buf = protowire.AppendTag(buf, fieldMovePlayer, protowire.BytesType)
		buf = protowire.AppendString(buf, m.Player)
	}
	if m.Seq != 0 {
		buf = protowire.AppendTag(buf, fieldMoveSeq, protowire.VarintType)
		buf = protowire.AppendVarint(buf, m.Seq)
	}
	if len(m.Path) > 0 {
		buf = protowire.AppendTag(buf, fieldMovePath, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(pathSize))
		for _, v := range m.Path {
			buf = protowire.AppendVarint(buf, uint64(v))
		}
	}
	if m.IngestUnixNanos != 0 {
		buf = protowire.AppendTag(buf, fieldMoveIngest, protowire.Fixed64Type)
		buf = protowire.AppendFixed64(buf, uint64(m.IngestUnixNanos))
	}
	if m.Partition != 0 {
		buf = protowire.AppendTag(buf, fieldMovePartition, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(m.Partition))
	}
	if m.PrevSeq != 0 {
		buf = protowire.AppendTag(buf, fieldMovePrevSeq, protowire.VarintType)
		buf = protowire.AppendVarint(buf, m.PrevSeq)
	}
	return buf
}

// AppendBatch appends to dst a whole Batch holding events, in order, with
// no cap, and returns the extended buffer. It is Builder without the caps,
// for writers that already hold a bounded list; on error dst is returned
// unchanged in length.
func AppendBatch(dst []byte, events []*eventpb.Event) ([]byte, error) {
	old := len(dst)
	dst = append(dst, batchHeader...)
	for _, ev := range events {
		if KindOf(ev) == KindUnknown {
			return dst[:old], ErrNoKind
		}
		size := proto.Size(ev)
		dst = protowire.AppendTag(dst, fieldBatchEvents, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		var err error
		dst, err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(dst, ev)
		if err != nil {
			return dst[:old], fmt.Errorf("encode %v event: %w", KindOf(ev), err)
		}
	}
	return dst, nil
}
