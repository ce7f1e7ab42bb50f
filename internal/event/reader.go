package event

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event/eventpb"
)

// Decode decodes a whole batch into dst with the generated code. It returns
// ErrNotBatch when data has no schema version, and a wrapped error for any
// input the protobuf runtime rejects. It never panics on bad input.
func Decode(data []byte, dst *eventpb.Batch) error {
	if err := proto.Unmarshal(data, dst); err != nil {
		return fmt.Errorf("decode batch: %w", err)
	}
	if dst.SchemaVersion == 0 {
		return ErrNotBatch
	}
	return nil
}

// Reader walks the events of one encoded batch in order, decoding each only
// when asked:
//
//	if err := r.Reset(msg.Data()); err != nil { /* poison: dead-letter it */ }
//	for r.Next() {
//		switch r.Kind() {
//		case event.KindMove:
//			err = r.Move(&mv)
//		case event.KindUnknown:
//			// an event kind newer than this reader: skip it
//		default:
//			err = r.Event(&ev)
//		}
//	}
//
// Reset checks the framing of the batch and of every event in it; the
// content of an event is checked when it is decoded, so a batch is accepted
// whole exactly when Reset and the decode of each of its events succeed,
// which is exactly when proto.Unmarshal accepts it. The zero Reader holds an
// empty batch. A Reader is not safe for concurrent use and keeps data until
// the next Reset.
type Reader struct {
	data    []byte
	version uint32
	n       int
	hops    Hops

	off   int    // offset of the next Batch field in data
	seen  int    // events returned by Next so far
	raw   []byte // the current encoded Event
	kind  Kind
	mixed bool // the current event holds segments of more than one kind
}

// Reset makes r read data, which r keeps (without copying) until the next
// Reset. It returns ErrNotBatch when data has no schema version and a
// wrapped error when the framing of the batch or of one of its events is
// broken; r is then empty.
func (r *Reader) Reset(data []byte) error {
	*r = Reader{}
	var version uint64
	var hops Hops
	n := 0
	for b := data; len(b) > 0; {
		num, typ, tn := consumeTag(b)
		if tn < 0 {
			return fmt.Errorf("decode batch: %w", parseError(tn))
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if vn < 0 {
			return fmt.Errorf("decode batch: %w", parseError(vn))
		}
		switch {
		case num == fieldBatchVersion && typ == protowire.VarintType:
			version, _ = protowire.ConsumeVarint(b[tn:])
		case num == fieldBatchPublished && typ == protowire.Fixed64Type:
			v, _ := protowire.ConsumeFixed64(b[tn:])
			hops.InputPublished = int64(v)
		case num == fieldBatchConsumed && typ == protowire.Fixed64Type:
			v, _ := protowire.ConsumeFixed64(b[tn:])
			hops.InputConsumed = int64(v)
		case num == fieldBatchEvents && typ == protowire.BytesType:
			ev, _ := protowire.ConsumeBytes(b[tn:])
			if _, _, err := scanEvent(ev); err != nil {
				return fmt.Errorf("decode batch: event %d: %w", n, err)
			}
			n++
		}
		b = b[tn+vn:]
	}
	if uint32(version) == 0 {
		return ErrNotBatch
	}
	r.data, r.version, r.n, r.hops = data, uint32(version), n, hops
	return nil
}

// scanEvent returns the kind of an encoded Event (the last oneof member on
// the wire wins, as in proto.Unmarshal) and whether it holds members of
// more than one kind, checking the framing of its fields.
func scanEvent(b []byte) (kind Kind, mixed bool, err error) {
	for len(b) > 0 {
		num, typ, tn := consumeTag(b)
		if tn < 0 {
			return KindUnknown, false, parseError(tn)
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if vn < 0 {
			return KindUnknown, false, parseError(vn)
		}
		if typ == protowire.BytesType && num >= 1 && num <= protowire.Number(maxKind) {
			if kind != KindUnknown && Kind(num) != kind {
				mixed = true
			}
			kind = Kind(num)
		}
		b = b[tn+vn:]
	}
	return kind, mixed, nil
}

// Version returns the batch's schema version.
func (r *Reader) Version() uint32 { return r.version }

// Hops returns the batch's hop timestamps; zero in batches written
// without them (every batch before schema revision 3).
func (r *Reader) Hops() Hops { return r.hops }

// Len returns the number of events in the batch.
func (r *Reader) Len() int { return r.n }

// Next advances to the next event and reports whether there is one.
func (r *Reader) Next() bool {
	for r.off < len(r.data) {
		b := r.data[r.off:]
		num, typ, tn := consumeTag(b)
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		r.off += tn + vn
		if num == fieldBatchEvents && typ == protowire.BytesType {
			r.raw, _ = protowire.ConsumeBytes(b[tn:])
			r.kind, r.mixed, _ = scanEvent(r.raw)
			r.seen++
			return true
		}
	}
	r.raw, r.kind, r.mixed = nil, KindUnknown, false
	return false
}

// Index returns the current event's index in the batch (its
// LogPosition.index), -1 before the first Next.
func (r *Reader) Index() int { return r.seen - 1 }

// Kind returns the current event's kind.
func (r *Reader) Kind() Kind { return r.kind }

// Raw returns the current encoded Event message. It aliases the batch.
func (r *Reader) Raw() []byte { return r.raw }

// Event decodes the current event into dst with the generated code.
func (r *Reader) Event(dst *eventpb.Event) error {
	if err := proto.Unmarshal(r.raw, dst); err != nil {
		return fmt.Errorf("decode %v event: %w", r.kind, err)
	}
	return nil
}

// Move is a decoded MoveAccepted that reuses its memory from one event to
// the next: Player aliases the batch given to Reader.Reset (copy it, for
// instance with string(m.Player), to keep it past the batch) and Path
// reuses its backing array.
type Move struct {
	Player          []byte
	Seq             uint64
	Path            []uint32
	IngestUnixNanos int64
	Partition       uint32
	PrevSeq         uint64
}

// Proto copies m into dst.
func (m *Move) Proto(dst *eventpb.MoveAccepted) {
	dst.Player = string(m.Player)
	dst.Seq = m.Seq
	dst.Path = append(dst.Path[:0], m.Path...)
	dst.IngestUnixNanos = m.IngestUnixNanos
	dst.Partition = m.Partition
	dst.PrevSeq = m.PrevSeq
}

// Move decodes the current event, which must be of KindMove (else
// ErrKind), into dst without allocating once dst.Path has grown. It accepts
// exactly what proto.Unmarshal accepts and yields the same values.
func (r *Reader) Move(dst *Move) error {
	if r.kind != KindMove {
		return ErrKind
	}
	*dst = Move{Path: dst.Path[:0]}
	if r.mixed {
		// Members of other kinds precede the move: proto.Unmarshal checks
		// and discards them. Rare and never written by Builder, so take
		// the generated path rather than copy its rules.
		var ev eventpb.Event
		if err := r.Event(&ev); err != nil {
			return err
		}
		m := ev.GetMove()
		dst.Player = []byte(m.Player)
		dst.Seq, dst.IngestUnixNanos, dst.Partition, dst.PrevSeq = m.Seq, m.IngestUnixNanos, m.Partition, m.PrevSeq
		dst.Path = append(dst.Path, m.Path...)
		return nil
	}
	// Every member is a move: proto.Unmarshal merges them in order.
	for b := r.raw; len(b) > 0; {
		num, typ, tn := consumeTag(b)
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if num == protowire.Number(KindMove) && typ == protowire.BytesType {
			m, _ := protowire.ConsumeBytes(b[tn:])
			if err := mergeMove(m, dst); err != nil {
				return fmt.Errorf("decode move event: %w", err)
			}
		}
		b = b[tn+vn:]
	}
	return nil
}

var (
	errUTF8        = errors.New("string field contains invalid UTF-8")
	errFieldNumber = errors.New("invalid field number")
)

// consumeTag is protowire.ConsumeTag that also rejects field numbers above
// protowire.MaxValidNumber, as proto.Unmarshal does; errors are negative
// lengths, to be turned into errors with parseError.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, errCodeFieldNumber
	}
	return num, typ, n
}

// errCodeFieldNumber is the negative length consumeTag returns for a field
// number above the maximum; parseError turns it into errFieldNumber.
const errCodeFieldNumber = -100

func parseError(n int) error {
	if n == errCodeFieldNumber {
		return errFieldNumber
	}
	return protowire.ParseError(n)
}

// mergeMove decodes the fields of an encoded MoveAccepted into dst with
// proto.Unmarshal's rules: the last scalar wins, path elements append
// (packed or not), a known field with another wire type is an unknown field
// and skipped like any unknown field.
func mergeMove(b []byte, dst *Move) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return parseError(n)
		}
		b = b[n:]
		switch {
		case num == fieldMovePlayer && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return parseError(n)
			}
			if !utf8.Valid(v) {
				return errUTF8
			}
			dst.Player = v
			b = b[n:]
		case num == fieldMoveSeq && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return parseError(n)
			}
			dst.Seq = v
			b = b[n:]
		case num == fieldMovePath && typ == protowire.BytesType:
			p, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return parseError(n)
			}
			for len(p) > 0 {
				v, vn := protowire.ConsumeVarint(p)
				if vn < 0 {
					return parseError(vn)
				}
				dst.Path = append(dst.Path, uint32(v))
				p = p[vn:]
			}
			b = b[n:]
		case num == fieldMovePath && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return parseError(n)
			}
			dst.Path = append(dst.Path, uint32(v))
			b = b[n:]
		case num == fieldMoveIngest && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return parseError(n)
			}
			dst.IngestUnixNanos = int64(v)
			b = b[n:]
		case num == fieldMovePartition && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return parseError(n)
			}
			dst.Partition = uint32(v)
			b = b[n:]
		case num == fieldMovePrevSeq && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return parseError(n)
			}
			dst.PrevSeq = v
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return parseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}
