// Package export writes the events of the pipeline's log — moves and
// drops from P_IN; proximity results, claims, score changes and
// leaderboard snapshots from P_OUT — as flat rows, one per event, in
// NDJSON or CSV, for analysts' tools (DuckDB, pandas, Spark).
//
// Row is a stand-in for the archive's shared flattening (package
// eventrow, schemas/archive.md) until that lands; the columns are listed
// in the README's "For analysts" section.
package export

import (
	"strconv"
	"strings"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// Row is one event flattened: where it sits in the log, and every field
// of every kind (zero where the kind has none).
type Row struct {
	Stream    string    `json:"stream"`
	Subject   string    `json:"subject"`
	Partition int       `json:"partition"` // of the subject; -1 for the ranker's subject
	Seq       uint64    `json:"seq"`
	Index     int       `json:"index"` // in the message's batch
	Time      time.Time `json:"time"`  // when the stream stored the message
	Kind      string    `json:"kind"`  // move, drop, proximity, claim, score, leaderboard

	Player          string `json:"player,omitempty"`
	MoveSeq         uint64 `json:"move_seq,omitempty"`
	PrevSeq         uint64 `json:"prev_seq,omitempty"`
	Path            string `json:"path,omitempty"` // node ids separated by spaces
	Node            uint32 `json:"node,omitempty"`
	Treasure        string `json:"treasure,omitempty"`
	TreasureNode    uint32 `json:"treasure_node,omitempty"`
	Points          uint64 `json:"points,omitempty"`
	Distance        uint64 `json:"distance,omitempty"`
	Found           bool   `json:"found,omitempty"` // proximity: a treasure within the radius
	Score           uint64 `json:"score,omitempty"`
	Rank            uint64 `json:"rank,omitempty"`
	MoveStreamSeq   uint64 `json:"move_stream_seq,omitempty"`
	MoveIndex       uint32 `json:"move_index,omitempty"`
	IngestUnixNanos int64  `json:"ingest_unix_nanos,omitempty"`
	Version         uint64 `json:"version,omitempty"` // leaderboard
	Players         uint64 `json:"players,omitempty"` // leaderboard
	Top             string `json:"top,omitempty"`     // leaderboard: "player:score:rank" separated by spaces
}

// Columns names Row's columns, in CSV order.
var Columns = []string{"stream", "subject", "partition", "seq", "index", "time", "kind",
	"player", "move_seq", "prev_seq", "path", "node", "treasure", "treasure_node", "points", "distance", "found",
	"score", "rank", "move_stream_seq", "move_index", "ingest_unix_nanos", "version", "players", "top"}

// record returns r's CSV fields in Columns order.
func (r *Row) record(dst []string) []string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	return append(dst[:0], r.Stream, r.Subject, strconv.Itoa(r.Partition), u(r.Seq), strconv.Itoa(r.Index), r.Time.UTC().Format(time.RFC3339Nano), r.Kind,
		r.Player, u(r.MoveSeq), u(r.PrevSeq), r.Path, u(uint64(r.Node)), r.Treasure, u(uint64(r.TreasureNode)), u(r.Points), u(r.Distance), strconv.FormatBool(r.Found),
		u(r.Score), u(r.Rank), u(r.MoveStreamSeq), u(uint64(r.MoveIndex)), strconv.FormatInt(r.IngestUnixNanos, 10), u(r.Version), u(r.Players), r.Top)
}

// Flatten fills r from ev (the position fields are the caller's) and
// reports false for an event of no kind it exports.
func Flatten(ev *eventpb.Event, r *Row) bool {
	r.Kind = event.KindOf(ev).String()
	switch k := ev.Kind.(type) {
	case *eventpb.Event_Move:
		m := k.Move
		r.Player, r.MoveSeq, r.PrevSeq, r.IngestUnixNanos = m.Player, m.Seq, m.PrevSeq, m.IngestUnixNanos
		ids := make([]string, len(m.Path))
		for i, v := range m.Path {
			ids[i] = strconv.FormatUint(uint64(v), 10)
		}
		r.Path = strings.Join(ids, " ")
		if len(m.Path) > 0 {
			r.Node = m.Path[len(m.Path)-1]
		}
	case *eventpb.Event_Drop:
		d := k.Drop
		r.Treasure, r.TreasureNode, r.Points, r.IngestUnixNanos = d.Id, d.Node, d.Points, d.IngestUnixNanos
	case *eventpb.Event_Claim:
		c := k.Claim
		r.Player, r.MoveSeq, r.PrevSeq, r.Treasure, r.Points, r.Node, r.TreasureNode = c.Player, c.Seq, c.PrevSeq, c.Treasure, c.Points, c.Node, c.Node
		if c.Move != nil {
			r.MoveStreamSeq, r.MoveIndex = c.Move.StreamSeq, c.Move.Index
		}
	case *eventpb.Event_Proximity:
		p := k.Proximity
		r.Player, r.MoveSeq, r.PrevSeq, r.Node, r.IngestUnixNanos = p.Player, p.Seq, p.PrevSeq, p.Node, p.IngestUnixNanos
		if p.Move != nil {
			r.MoveStreamSeq, r.MoveIndex = p.Move.StreamSeq, p.Move.Index
		}
		if t := p.Treasure; t != nil {
			r.Found, r.Treasure, r.TreasureNode, r.Distance = true, t.Id, t.Node, t.Distance
		}
	case *eventpb.Event_Score:
		s := k.Score
		r.Player, r.Score, r.Rank = s.Player, s.Score, s.Rank
		if c := s.Cause; c != nil {
			r.Treasure = c.Treasure
			if c.Move != nil {
				r.MoveStreamSeq, r.MoveIndex = c.Move.StreamSeq, c.Move.Index
			}
		}
	case *eventpb.Event_Leaderboard:
		l := k.Leaderboard
		r.Version, r.Players = l.Version, l.Players
		top := make([]string, len(l.Top))
		for i, e := range l.Top {
			top[i] = e.Player + ":" + strconv.FormatUint(e.Score, 10) + ":" + strconv.FormatUint(e.Rank, 10)
		}
		r.Top = strings.Join(top, " ")
	default:
		return false
	}
	return true
}
