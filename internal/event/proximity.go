package event

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"treasure/internal/event/eventpb"
)

// Field numbers of ProximityResult and of the messages it holds.
const (
	fieldProxPlayer   = 1 // ProximityResult.player
	fieldProxSeq      = 2 // ProximityResult.seq
	fieldProxNode     = 3 // ProximityResult.node
	fieldProxTreasure = 4 // ProximityResult.treasure (NearestTreasure)
	fieldProxMove     = 5 // ProximityResult.move (LogPosition)
	fieldProxIngest   = 6 // ProximityResult.ingest_unix_nanos (sfixed64)
	fieldProxPrevSeq  = 7 // ProximityResult.prev_seq

	fieldTreasureID       = 1 // NearestTreasure.id
	fieldTreasureNode     = 2 // NearestTreasure.node
	fieldTreasureDistance = 3 // NearestTreasure.distance

	fieldPosStreamSeq = 1 // LogPosition.stream_seq
	fieldPosIndex     = 2 // LogPosition.index
)

// Proximity is a decoded ProximityResult, decoded without allocating:
// Player and TreasureID alias the batch given to Reader.Reset (copy them
// to keep them past the batch). HasTreasure and HasMove say whether the
// result holds a NearestTreasure and a LogPosition (the generated code's
// non-nil pointers), empty ones included.
type Proximity struct {
	Player          []byte
	Seq             uint64
	Node            uint32
	HasTreasure     bool
	TreasureID      []byte
	TreasureNode    uint32
	Distance        uint64
	HasMove         bool
	MoveStreamSeq   uint64
	MoveIndex       uint32
	IngestUnixNanos int64
	PrevSeq         uint64
}

// Proto copies p into dst.
func (p *Proximity) Proto(dst *eventpb.ProximityResult) {
	*dst = eventpb.ProximityResult{Player: string(p.Player), Seq: p.Seq, Node: p.Node,
		IngestUnixNanos: p.IngestUnixNanos, PrevSeq: p.PrevSeq}
	if p.HasTreasure {
		dst.Treasure = &eventpb.NearestTreasure{Id: string(p.TreasureID), Node: p.TreasureNode, Distance: p.Distance}
	}
	if p.HasMove {
		dst.Move = &eventpb.LogPosition{StreamSeq: p.MoveStreamSeq, Index: p.MoveIndex}
	}
}

// Proximity decodes the current event, which must be of KindProximity
// (else ErrKind), into dst without allocating. It accepts exactly what
// proto.Unmarshal accepts and yields the same values (as Move does).
func (r *Reader) Proximity(dst *Proximity) error {
	if r.kind != KindProximity {
		return ErrKind
	}
	*dst = Proximity{}
	if r.mixed {
		// Rare and never written by the pipeline: see Move.
		var ev eventpb.Event
		if err := r.Event(&ev); err != nil {
			return err
		}
		p := ev.GetProximity()
		dst.Player, dst.Seq, dst.Node = []byte(p.Player), p.Seq, p.Node
		dst.IngestUnixNanos, dst.PrevSeq = p.IngestUnixNanos, p.PrevSeq
		if t := p.Treasure; t != nil {
			dst.HasTreasure, dst.TreasureID, dst.TreasureNode, dst.Distance = true, []byte(t.Id), t.Node, t.Distance
		}
		if m := p.Move; m != nil {
			dst.HasMove, dst.MoveStreamSeq, dst.MoveIndex = true, m.StreamSeq, m.Index
		}
		return nil
	}
	// Every member is a proximity result: proto.Unmarshal merges them in
	// order.
	for b := r.raw; len(b) > 0; {
		num, typ, tn := consumeTag(b)
		vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
		if num == protowire.Number(KindProximity) && typ == protowire.BytesType {
			m, _ := protowire.ConsumeBytes(b[tn:])
			if err := mergeProximity(m, dst); err != nil {
				return fmt.Errorf("decode proximity event: %w", err)
			}
		}
		b = b[tn+vn:]
	}
	return nil
}

// mergeProximity decodes the fields of an encoded ProximityResult into dst
// with proto.Unmarshal's rules (see mergeMove); a message field that comes
// again merges into what came before.
func mergeProximity(b []byte, dst *Proximity) error {
	return scanFields(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		switch {
		case num == fieldProxPlayer && typ == protowire.BytesType:
			s, n := protowire.ConsumeBytes(v)
			if n >= 0 && !utf8.Valid(s) {
				return 0, errUTF8
			}
			dst.Player = s
			return n, nil
		case num == fieldProxSeq && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.Seq = x
			return n, nil
		case num == fieldProxNode && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.Node = uint32(x)
			return n, nil
		case num == fieldProxTreasure && typ == protowire.BytesType:
			m, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return n, nil
			}
			dst.HasTreasure = true
			return n, mergeTreasure(m, dst)
		case num == fieldProxMove && typ == protowire.BytesType:
			m, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return n, nil
			}
			dst.HasMove = true
			return n, mergePosition(m, dst)
		case num == fieldProxIngest && typ == protowire.Fixed64Type:
			x, n := protowire.ConsumeFixed64(v)
			dst.IngestUnixNanos = int64(x)
			return n, nil
		case num == fieldProxPrevSeq && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.PrevSeq = x
			return n, nil
		}
		return protowire.ConsumeFieldValue(num, typ, v), nil
	})
}

func mergeTreasure(b []byte, dst *Proximity) error {
	return scanFields(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		switch {
		case num == fieldTreasureID && typ == protowire.BytesType:
			s, n := protowire.ConsumeBytes(v)
			if n >= 0 && !utf8.Valid(s) {
				return 0, errUTF8
			}
			dst.TreasureID = s
			return n, nil
		case num == fieldTreasureNode && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.TreasureNode = uint32(x)
			return n, nil
		case num == fieldTreasureDistance && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.Distance = x
			return n, nil
		}
		return protowire.ConsumeFieldValue(num, typ, v), nil
	})
}

func mergePosition(b []byte, dst *Proximity) error {
	return scanFields(b, func(num protowire.Number, typ protowire.Type, v []byte) (int, error) {
		switch {
		case num == fieldPosStreamSeq && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.MoveStreamSeq = x
			return n, nil
		case num == fieldPosIndex && typ == protowire.VarintType:
			x, n := protowire.ConsumeVarint(v)
			dst.MoveIndex = uint32(x)
			return n, nil
		}
		return protowire.ConsumeFieldValue(num, typ, v), nil
	})
}

// scanFields calls field for each field of an encoded message, with the
// bytes after its tag; field returns the length of its value (negative:
// a protowire error code) or an error of its own.
func scanFields(b []byte, field func(num protowire.Number, typ protowire.Type, v []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return parseError(n)
		}
		b = b[n:]
		vn, err := field(num, typ, b)
		if err != nil {
			return err
		}
		if vn < 0 {
			return parseError(vn)
		}
		b = b[vn:]
	}
	return nil
}
