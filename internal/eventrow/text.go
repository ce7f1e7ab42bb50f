package eventrow

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
)

// Columns are the columns of a Row in schema order, as CSV's header and
// as the Parquet schema names them.
var Columns = []string{
	"stream", "subject", "partition", "stream_seq", "index", "events", "published",
	"schema_version", "input_published", "input_consumed", "kind",
	"player", "seq", "prev_seq", "path", "node", "move_partition", "ingest",
	"treasure", "points", "treasure_node", "distance", "move_stream_seq", "move_index",
	"score", "rank", "top", "players", "version", "raw",
}

// Record appends r's values to dst as CSV fields, in Columns' order: null
// is the empty field, integers and timestamps (Unix nanoseconds) in
// decimal, path and top as JSON arrays, raw in standard base64.
func (r *Row) Record(dst []string) []string {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	dst = append(dst,
		r.Stream, r.Subject, i(int64(r.Partition)), u(r.StreamSeq), i(int64(r.Index)), i(int64(r.Events)),
		i(r.Published), u(uint64(r.SchemaVersion)), opt(r.InputPublished, i), opt(r.InputConsumed, i), r.Kind,
		opt(r.Player, str), opt(r.Seq, u), opt(r.PrevSeq, u), jsonList(r.Path), opt(r.Node, u32),
		opt(r.MovePartition, u32), opt(r.Ingest, i),
		opt(r.Treasure, str), opt(r.Points, u), opt(r.TreasureNode, u32), opt(r.Distance, u),
		opt(r.MoveStreamSeq, u), opt(r.MoveIndex, u32),
		opt(r.Score, u), opt(r.Rank, u), jsonList(r.Top), opt(r.Players, u), opt(r.Version, u),
	)
	if r.Raw == nil {
		return append(dst, "")
	}
	return append(dst, base64.StdEncoding.EncodeToString(r.Raw))
}

func str(s string) string { return s }
func u32(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
func opt[T any](p *T, f func(T) string) string {
	if p == nil {
		return ""
	}
	return f(*p)
}

func jsonList[T any](l []T) string {
	if l == nil {
		return ""
	}
	b, _ := json.Marshal(l) // slices of numbers and Entry: cannot fail
	return string(b)
}
