// Package eventrow flattens the events of treasure's log into rows of typed
// columns, one row per event, and rebuilds the log's messages from them.
// It is the one flattening of the log: the archive (package archive) writes
// Rows as Parquet, and `treasure export` writes them as Parquet, CSV or
// NDJSON. The columns are documented in schemas/archive.md; that file and
// Row change together.
//
// A Row carries the message's place in the log (stream, subject,
// partition, stream sequence, index in the batch, the time JetStream stored
// it, the batch's schema version and hop timestamps) and the event's own
// fields, each in a column whose value is null (a nil pointer) when the
// event's kind has no such field. Every message of a stream yields at least
// one row, so the rows of a sequence range hold every message of it:
//
//   - a batch of n events yields n rows, Index 0..n-1, Kind the event's;
//   - an event of a kind this revision does not know yields a row of Kind
//     "unknown" with the encoded event in Raw;
//   - a batch without events yields one row of Kind "empty", Index -1;
//   - a payload that is not a batch (it was dead-lettered by its consumer)
//     yields one row of Kind "invalid", Index -1, the payload in Raw.
//
// Data (the reverse) rebuilds a message's payload from its rows; the batch
// it decodes to is proto.Equal to the original's (fields a newer schema
// revision added to a known event are not kept: the columns are this
// revision's).
//
// The functions keep no state and are safe for concurrent use; a Flattener
// (Flatten with its memory reused) belongs to one writer.
package eventrow

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// Kinds of row beyond event.Kind's names (move, drop, claim, proximity,
// score, leaderboard, unknown).
const (
	KindEmpty   = "empty"   // a batch without events
	KindInvalid = "invalid" // a payload that is not a batch
)

// Row is one event of the log flattened. The parquet tags name the columns
// (schemas/archive.md documents them); json tags use the same names for
// NDJSON. Pointer fields are null where the event's kind has no such field.
type Row struct {
	// Stream is the stream's role: "IN" or "OUT" (the stream name without
	// the deployment's prefix).
	Stream string `parquet:"stream,dict" json:"stream"`
	// Subject is the message's subject, e.g. treasure.in.3.
	Subject string `parquet:"subject,dict" json:"subject"`
	// Partition is the subject's partition (its last token), -1 for
	// p.out.rank and any subject whose last token is not a number.
	Partition int32 `parquet:"partition" json:"partition"`
	// StreamSeq is the message's stream sequence.
	StreamSeq uint64 `parquet:"stream_seq,delta" json:"stream_seq"`
	// Index is the event's index in its batch; -1 for the one row of an
	// empty batch or an invalid payload. (StreamSeq, Index) is the event's
	// LogPosition.
	Index int32 `parquet:"index" json:"index"`
	// Events is the number of events in the message's batch.
	Events int32 `parquet:"events" json:"events"`
	// Published is when JetStream stored the message, Unix nanoseconds.
	Published int64 `parquet:"published,timestamp(nanosecond)" json:"published"`
	// SchemaVersion is the batch's schema_version (0 for invalid).
	SchemaVersion uint32 `parquet:"schema_version" json:"schema_version"`
	// InputPublished and InputConsumed are the batch's hop timestamps,
	// null when absent (0).
	InputPublished *int64 `parquet:"input_published,optional,timestamp(nanosecond)" json:"input_published"`
	InputConsumed  *int64 `parquet:"input_consumed,optional,timestamp(nanosecond)" json:"input_consumed"`
	// Kind is the event's kind: move, drop, claim, proximity, score,
	// leaderboard, unknown, empty or invalid.
	Kind string `parquet:"kind,dict" json:"kind"`

	// Player: move, claim, proximity, score.
	Player *string `parquet:"player,optional,dict" json:"player"`
	// Seq is the player's move seq: move, claim, proximity.
	Seq *uint64 `parquet:"seq,optional" json:"seq"`
	// PrevSeq: move, claim, proximity.
	PrevSeq *uint64 `parquet:"prev_seq,optional" json:"prev_seq"`
	// Path is the move's path of wire ids (move only).
	Path []uint32 `parquet:"path,optional,list" json:"path"`
	// Node is where the event happens, a wire id: the move's last path
	// node (null for an empty path), the drop's, the claim's, the
	// proximity result's.
	Node *uint32 `parquet:"node,optional" json:"node"`
	// MovePartition is MoveAccepted.partition (move only).
	MovePartition *uint32 `parquet:"move_partition,optional" json:"move_partition"`
	// Ingest is when ingest accepted the move or drop (copied into the
	// proximity result), Unix nanoseconds: move, drop, proximity.
	Ingest *int64 `parquet:"ingest,optional,timestamp(nanosecond)" json:"ingest"`
	// Treasure is a treasure id: the drop's, the claim's, the proximity
	// result's nearest (null when none within the radius), the score
	// change's cause.
	Treasure *string `parquet:"treasure,optional,dict" json:"treasure"`
	// Points: drop, claim.
	Points *uint64 `parquet:"points,optional" json:"points"`
	// TreasureNode and Distance: the proximity result's nearest treasure
	// (null when none).
	TreasureNode *uint32 `parquet:"treasure_node,optional" json:"treasure_node"`
	Distance     *uint64 `parquet:"distance,optional" json:"distance"`
	// MoveStreamSeq and MoveIndex are the LogPosition of the deciding
	// move: claim.move, proximity.move, score.cause.move.
	MoveStreamSeq *uint64 `parquet:"move_stream_seq,optional" json:"move_stream_seq"`
	MoveIndex     *uint32 `parquet:"move_index,optional" json:"move_index"`
	// Score and Rank: score.
	Score *uint64 `parquet:"score,optional" json:"score"`
	Rank  *uint64 `parquet:"rank,optional" json:"rank"`
	// Top, Players and Version: leaderboard.
	Top     []Entry `parquet:"top,optional,list" json:"top"`
	Players *uint64 `parquet:"players,optional" json:"players"`
	Version *uint64 `parquet:"version,optional" json:"version"`
	// Raw is the encoded event of an unknown kind, or the payload of an
	// invalid message; null otherwise.
	Raw []byte `parquet:"raw,optional" json:"raw"`
}

// Entry is one leaderboard row.
type Entry struct {
	Player string `parquet:"player" json:"player"`
	Score  uint64 `parquet:"score" json:"score"`
	Rank   uint64 `parquet:"rank" json:"rank"`
}

// Message is what Flatten reads of one message of the log.
type Message struct {
	// Stream is the stream's name (treasure_IN) or role (IN); the row
	// keeps what follows the last '_'.
	Stream  string
	Subject string
	Seq     uint64
	// Time is when JetStream stored it.
	Time time.Time
	Data []byte
}

// StreamRole returns the part of a stream name after its last '_' (IN for
// treasure_IN); the whole name when it has none.
func StreamRole(stream string) string {
	if i := strings.LastIndexByte(stream, '_'); i >= 0 {
		return stream[i+1:]
	}
	return stream
}

// SubjectPartition returns a subject's partition: its last token as a
// number, -1 when that is not a number in int32's range (p.out.rank).
func SubjectPartition(subject string) int32 {
	tok := subject[strings.LastIndexByte(subject, '.')+1:]
	n, err := strconv.ParseInt(tok, 10, 32)
	if err != nil || n < 0 {
		return -1
	}
	return int32(n)
}

// Flatten appends the rows of one message to dst: one per event, or one
// "empty" or "invalid" row (see the package doc). It never fails on the
// payload's content; it returns an error only for an event it cannot
// decode inside a well-framed batch, with dst as it was. The rows own
// their memory (Flattener.Flatten is the one that reuses it).
func Flatten(dst []Row, m Message) ([]Row, error) {
	var f Flattener
	return f.Flatten(dst, m)
}

// Flattener is Flatten with its memory reused, for a writer that is done
// with the rows it was given before it flattens more (the archive's
// segment writer: parquet-go copies what it is given). A row's optional
// values, hop timestamps and path point into the Flattener's buffers,
// which the calls after a Reset overwrite; strings are the row's own.
// Moves are most of the log, and a pointer per column of each row was
// most of Flatten's allocations. The zero Flattener is ready to use; it
// is not safe for concurrent use.
type Flattener struct {
	r     event.Reader
	mv    event.Move
	px    event.Proximity
	ev    eventpb.Event
	vals  []rowVals
	paths []uint32
	hops  []int64
}

// rowVals holds the values a row's optional columns point to, one per row
// (a pointer per column would cost an allocation each).
type rowVals struct {
	player, treasure                   string
	seq, prev, points, distance        uint64
	moveSeq, score, rank, players, ver uint64
	ingest                             int64
	node, part, treasureNode, moveIdx  uint32
}

// Reset lets the Flattener overwrite the memory of the rows it returned
// so far: call it once they have been written.
func (f *Flattener) Reset() {
	f.vals, f.paths, f.hops = f.vals[:0], f.paths[:0], f.hops[:0]
}

// Flatten appends the rows of one message to dst, as the package's
// Flatten does; they are valid until the next Reset. (The buffers only
// grow between Resets: a buffer that moves leaves the earlier rows
// pointing into the old one, which stays theirs.)
func (f *Flattener) Flatten(dst []Row, m Message) ([]Row, error) {
	head := Row{
		Stream:    StreamRole(m.Stream),
		Subject:   m.Subject,
		Partition: SubjectPartition(m.Subject),
		StreamSeq: m.Seq,
		Index:     -1,
		Published: m.Time.UnixNano(),
	}
	r := &f.r
	if err := r.Reset(m.Data); err != nil {
		row := head
		row.Kind = KindInvalid
		row.Raw = append([]byte{}, m.Data...)
		return append(dst, row), nil
	}
	head.SchemaVersion = r.Version()
	head.Events = int32(r.Len())
	if h := r.Hops(); h.InputPublished != 0 || h.InputConsumed != 0 {
		at := len(f.hops)
		f.hops = append(f.hops, h.InputPublished, h.InputConsumed)
		if h.InputPublished != 0 {
			head.InputPublished = &f.hops[at]
		}
		if h.InputConsumed != 0 {
			head.InputConsumed = &f.hops[at+1]
		}
	}
	if r.Len() == 0 {
		row := head
		row.Kind = KindEmpty
		return append(dst, row), nil
	}
	// Room for this message's values first: they are pointed to as they
	// are filled, so the buffer must not move during the call.
	at := len(f.vals)
	f.vals = slices.Grow(f.vals, r.Len())[:at+r.Len()]
	vals := f.vals[at:]
	n := len(dst)
	for r.Next() {
		row := head
		row.Index = int32(r.Index())
		row.Kind = r.Kind().String()
		v := &vals[r.Index()]
		var err error
		switch r.Kind() {
		case event.KindMove:
			if err = r.Move(&f.mv); err == nil {
				f.flattenMove(&row, v)
			}
		case event.KindProximity:
			// Half the log (one per move, on OUT): decoded by hand too.
			if err = r.Proximity(&f.px); err == nil {
				f.flattenProximity(&row, v)
			}
		case event.KindUnknown:
			row.Raw = append([]byte{}, r.Raw()...)
		default:
			if err = r.Event(&f.ev); err == nil {
				flattenEvent(&row, &f.ev, v)
			}
		}
		if err != nil {
			clear(dst[n:])
			f.vals = f.vals[:at]
			return dst[:n], fmt.Errorf("%s seq %d event %d: %w", m.Subject, m.Seq, r.Index(), err)
		}
		dst = append(dst, row)
	}
	return dst, nil
}

func (f *Flattener) flattenMove(row *Row, v *rowVals) {
	m := &f.mv
	*v = rowVals{player: string(m.Player), seq: m.Seq, prev: m.PrevSeq, ingest: m.IngestUnixNanos, part: m.Partition}
	row.Player, row.Seq, row.PrevSeq, row.Ingest, row.MovePartition = &v.player, &v.seq, &v.prev, &v.ingest, &v.part
	// One buffer holds the paths of the moves since the last Reset; each
	// row's is capped at its own length, so that an append to it cannot
	// reach the next row's.
	from := len(f.paths)
	f.paths = append(f.paths, m.Path...)
	row.Path = f.paths[from:len(f.paths):len(f.paths)]
	if row.Path == nil {
		row.Path = []uint32{} // an empty path is an empty list, not null
	}
	if len(m.Path) > 0 {
		v.node = m.Path[len(m.Path)-1]
		row.Node = &v.node
	}
}

func (f *Flattener) flattenProximity(row *Row, v *rowVals) {
	p := &f.px
	*v = rowVals{player: string(p.Player), seq: p.Seq, prev: p.PrevSeq, node: p.Node, ingest: p.IngestUnixNanos}
	row.Player, row.Seq, row.PrevSeq = &v.player, &v.seq, &v.prev
	row.Node, row.Ingest = &v.node, &v.ingest
	if p.HasTreasure {
		v.treasure, v.treasureNode, v.distance = string(p.TreasureID), p.TreasureNode, p.Distance
		row.Treasure, row.TreasureNode, row.Distance = &v.treasure, &v.treasureNode, &v.distance
	}
	if p.HasMove {
		v.moveSeq, v.moveIdx = p.MoveStreamSeq, p.MoveIndex
		row.MoveStreamSeq, row.MoveIndex = &v.moveSeq, &v.moveIdx
	}
}

func flattenPos(row *Row, p *eventpb.LogPosition, v *rowVals) {
	if p != nil {
		v.moveSeq, v.moveIdx = p.StreamSeq, p.Index
		row.MoveStreamSeq, row.MoveIndex = &v.moveSeq, &v.moveIdx
	}
}

func flattenEvent(row *Row, ev *eventpb.Event, v *rowVals) {
	*v = rowVals{}
	switch k := ev.Kind.(type) {
	case *eventpb.Event_Drop:
		d := k.Drop
		v.treasure, v.node, v.points, v.ingest = d.Id, d.Node, d.Points, d.IngestUnixNanos
		row.Treasure, row.Node, row.Points, row.Ingest = &v.treasure, &v.node, &v.points, &v.ingest
	case *eventpb.Event_Claim:
		c := k.Claim
		v.player, v.seq, v.prev = c.Player, c.Seq, c.PrevSeq
		v.treasure, v.points, v.node = c.Treasure, c.Points, c.Node
		row.Player, row.Seq, row.PrevSeq = &v.player, &v.seq, &v.prev
		row.Treasure, row.Points, row.Node = &v.treasure, &v.points, &v.node
		flattenPos(row, c.Move, v)
	case *eventpb.Event_Score:
		s := k.Score
		v.player, v.score, v.rank = s.Player, s.Score, s.Rank
		row.Player, row.Score, row.Rank = &v.player, &v.score, &v.rank
		if c := s.Cause; c != nil {
			v.treasure = c.Treasure
			row.Treasure = &v.treasure
			flattenPos(row, c.Move, v)
		}
	case *eventpb.Event_Leaderboard:
		l := k.Leaderboard
		row.Top = make([]Entry, len(l.Top))
		for i, e := range l.Top {
			row.Top[i] = Entry{Player: e.GetPlayer(), Score: e.GetScore(), Rank: e.GetRank()}
		}
		v.players, v.ver = l.Players, l.Version
		row.Players, row.Version = &v.players, &v.ver
	}
}

// Errors of Data and Batch.
var (
	// ErrRows: the rows given are not those of exactly one message.
	ErrRows = errors.New("rows do not make one message")
)

// Data rebuilds the payload of the message whose rows (all of them, in
// index order) are given: the original bytes of an invalid message, else
// the batch encoded as proto.Marshal does (which is what the pipeline's
// writers produce).
func Data(rows []Row) ([]byte, error) {
	if len(rows) == 1 && rows[0].Kind == KindInvalid {
		return append([]byte{}, rows[0].Raw...), nil
	}
	b, err := Batch(rows)
	if err != nil {
		return nil, err
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("seq %d: encode batch: %w", rows[0].StreamSeq, err)
	}
	return data, nil
}

// Batch rebuilds the batch of the message whose rows (all of them, in
// index order) are given. The result is proto.Equal to the batch Flatten
// read. An invalid message has no batch: ErrRows.
func Batch(rows []Row) (*eventpb.Batch, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: no rows", ErrRows)
	}
	h := &rows[0]
	b := &eventpb.Batch{SchemaVersion: h.SchemaVersion}
	if h.InputPublished != nil {
		b.InputPublishedUnixNanos = *h.InputPublished
	}
	if h.InputConsumed != nil {
		b.InputConsumedUnixNanos = *h.InputConsumed
	}
	switch {
	case h.Kind == KindInvalid:
		return nil, fmt.Errorf("%w: seq %d is not a batch", ErrRows, h.StreamSeq)
	case h.Kind == KindEmpty:
		if len(rows) != 1 {
			return nil, fmt.Errorf("%w: seq %d: an empty batch with %d rows", ErrRows, h.StreamSeq, len(rows))
		}
		return b, nil
	case int(h.Events) != len(rows):
		return nil, fmt.Errorf("%w: seq %d: %d rows of a batch of %d events", ErrRows, h.StreamSeq, len(rows), h.Events)
	}
	b.Events = make([]*eventpb.Event, len(rows))
	for i := range rows {
		r := &rows[i]
		if r.StreamSeq != h.StreamSeq || int(r.Index) != i {
			return nil, fmt.Errorf("%w: row %d is seq %d index %d, want seq %d index %d", ErrRows, i, r.StreamSeq, r.Index, h.StreamSeq, i)
		}
		ev, err := rowEvent(r)
		if err != nil {
			return nil, fmt.Errorf("seq %d index %d: %w", r.StreamSeq, r.Index, err)
		}
		b.Events[i] = ev
	}
	return b, nil
}

func val[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func rowPos(r *Row) *eventpb.LogPosition {
	if r.MoveStreamSeq == nil && r.MoveIndex == nil {
		return nil
	}
	return &eventpb.LogPosition{StreamSeq: val(r.MoveStreamSeq), Index: val(r.MoveIndex)}
}

// rowEvent rebuilds one event from its row.
func rowEvent(r *Row) (*eventpb.Event, error) {
	switch r.Kind {
	case "move":
		return &eventpb.Event{Kind: &eventpb.Event_Move{Move: &eventpb.MoveAccepted{
			Player: val(r.Player), Seq: val(r.Seq), Path: r.Path, IngestUnixNanos: val(r.Ingest),
			Partition: val(r.MovePartition), PrevSeq: val(r.PrevSeq),
		}}}, nil
	case "drop":
		return &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{
			Id: val(r.Treasure), Node: val(r.Node), Points: val(r.Points), IngestUnixNanos: val(r.Ingest),
		}}}, nil
	case "claim":
		return &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{
			Player: val(r.Player), Seq: val(r.Seq), Treasure: val(r.Treasure), Points: val(r.Points),
			Node: val(r.Node), Move: rowPos(r), PrevSeq: val(r.PrevSeq),
		}}}, nil
	case "proximity":
		p := &eventpb.ProximityResult{
			Player: val(r.Player), Seq: val(r.Seq), Node: val(r.Node), Move: rowPos(r),
			IngestUnixNanos: val(r.Ingest), PrevSeq: val(r.PrevSeq),
		}
		if r.Treasure != nil || r.TreasureNode != nil || r.Distance != nil {
			p.Treasure = &eventpb.NearestTreasure{Id: val(r.Treasure), Node: val(r.TreasureNode), Distance: val(r.Distance)}
		}
		return &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: p}}, nil
	case "score":
		s := &eventpb.ScoreChanged{Player: val(r.Player), Score: val(r.Score), Rank: val(r.Rank)}
		if r.Treasure != nil || r.MoveStreamSeq != nil || r.MoveIndex != nil {
			s.Cause = &eventpb.ClaimRef{Treasure: val(r.Treasure), Move: rowPos(r)}
		}
		return &eventpb.Event{Kind: &eventpb.Event_Score{Score: s}}, nil
	case "leaderboard":
		l := &eventpb.LeaderboardSnapshot{Players: val(r.Players), Version: val(r.Version)}
		if len(r.Top) > 0 {
			l.Top = make([]*eventpb.LeaderboardEntry, len(r.Top))
			for i, e := range r.Top {
				l.Top[i] = &eventpb.LeaderboardEntry{Player: e.Player, Score: e.Score, Rank: e.Rank}
			}
		}
		return &eventpb.Event{Kind: &eventpb.Event_Leaderboard{Leaderboard: l}}, nil
	case "unknown":
		var ev eventpb.Event
		if err := proto.Unmarshal(r.Raw, &ev); err != nil {
			return nil, fmt.Errorf("unknown event: %w", err)
		}
		return &ev, nil
	}
	return nil, fmt.Errorf("%w: kind %q", ErrRows, r.Kind)
}
