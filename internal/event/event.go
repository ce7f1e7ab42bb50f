// Package event encodes and decodes the batches of events that travel on
// JetStream between treasure's services. The schema is
// schemas/proto/treasure/v1/events.proto; its generated Go types live in
// package eventpb, and this package adds what the pipeline needs around them:
//
//   - Builder appends events to one batch message, reusing its buffer, and
//     says when a size or count cap is reached so that the publisher flushes;
//   - Reader walks the events of a received batch without decoding the
//     whole batch into memory, decoding each event on demand;
//   - AppendBatch and Decode are the plain whole-batch encode and decode.
//
// MoveAccepted, the hottest event, has a hand-written encoder
// (Builder.AddMove) and decoder (Reader.Move) built on protowire that produce
// and accept exactly the bytes proto.Marshal and proto.Unmarshal do, without
// allocating; the tests hold them to that. Every other event goes through
// the generated code.
//
// Nothing here keeps global state. A Builder or a Reader is not safe for
// concurrent use; use one per goroutine.
package event

import (
	"errors"

	"treasure/internal/event/eventpb"
)

// SchemaVersion is the schema revision this package writes in
// Batch.schema_version. Bump it with every addition to events.proto (see
// schemas/README.md).
const SchemaVersion = 4

// Kind says which event an Event holds. Its values are the field numbers of
// the oneof in events.proto.
type Kind uint8

// The kinds of event. KindUnknown is an event with no kind this revision
// knows: one added by a newer writer, which readers skip.
const (
	KindUnknown     Kind = 0
	KindMove        Kind = 1
	KindDrop        Kind = 2
	KindClaim       Kind = 3
	KindProximity   Kind = 4
	KindScore       Kind = 5
	KindLeaderboard Kind = 6

	maxKind = KindLeaderboard
)

var kindNames = [...]string{"unknown", "move", "drop", "claim", "proximity", "score", "leaderboard"}

// String returns the kind's lowercase name.
func (k Kind) String() string {
	if k > maxKind {
		return "unknown"
	}
	return kindNames[k]
}

// KindOf returns the kind of ev, KindUnknown for nil or an unset kind.
func KindOf(ev *eventpb.Event) Kind {
	if ev == nil {
		return KindUnknown
	}
	switch ev.Kind.(type) {
	case *eventpb.Event_Move:
		return KindMove
	case *eventpb.Event_Drop:
		return KindDrop
	case *eventpb.Event_Claim:
		return KindClaim
	case *eventpb.Event_Proximity:
		return KindProximity
	case *eventpb.Event_Score:
		return KindScore
	case *eventpb.Event_Leaderboard:
		return KindLeaderboard
	}
	return KindUnknown
}

// Errors returned by the codec. Decoding errors other than these wrap the
// protobuf runtime's or protowire's error.
var (
	// ErrFull: the event would push the batch past its cap. The batch is
	// unchanged; publish it, Reset, and add the event again.
	ErrFull = errors.New("batch full")
	// ErrTooLarge: the event alone exceeds the batch's byte cap.
	ErrTooLarge = errors.New("event larger than batch cap")
	// ErrNoKind: the event to encode has no kind set.
	ErrNoKind = errors.New("event has no kind")
	// ErrNotBatch: the payload has no schema version, so it is not a batch.
	ErrNotBatch = errors.New("not an event batch: no schema version")
	// ErrKind: the current event is not of the kind asked for.
	ErrKind = errors.New("event of another kind")
)
