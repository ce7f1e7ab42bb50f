// Package export writes the events of the pipeline's log — moves and
// drops from P_IN; proximity results, claims, score changes and
// leaderboard snapshots from P_OUT — as rows of typed columns, one per
// event (eventrow.Row, the archive's flattening; columns in
// schemas/archive.md), in Parquet, CSV or NDJSON, for analysts' tools
// (DuckDB, pandas, Spark).
package export

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"

	"treasure/internal/eventrow"
	"treasure/internal/natsjs"
)

// Writer writes rows in one format. Close flushes (and, for Parquet,
// writes the footer); the caller closes the underlying file.
type Writer interface {
	Write(rows []eventrow.Row) error
	Close() error
}

// Formats lists the formats NewWriter knows.
var Formats = []string{"parquet", "csv", "ndjson"}

// NewWriter returns a writer of format to w: Parquet through
// parquet-go with eventrow.Row's schema (the archive's files' schema),
// CSV with eventrow.Columns as header and Row.Record's fields, NDJSON
// with Row's json tags.
func NewWriter(format string, w io.Writer) (Writer, error) {
	switch format {
	case "parquet":
		return &parquetWriter{w: parquet.NewGenericWriter[eventrow.Row](w, parquet.Compression(&parquet.Snappy))}, nil
	case "ndjson":
		b := bufio.NewWriterSize(w, 64<<10)
		return &ndjsonWriter{b: b, enc: json.NewEncoder(b)}, nil
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(eventrow.Columns); err != nil {
			return nil, err
		}
		return &csvWriter{w: cw}, nil
	}
	return nil, fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
}

type parquetWriter struct {
	w *parquet.GenericWriter[eventrow.Row]
}

func (w *parquetWriter) Write(rows []eventrow.Row) error {
	_, err := w.w.Write(rows)
	return err
}
func (w *parquetWriter) Close() error { return w.w.Close() }

type ndjsonWriter struct {
	b   *bufio.Writer
	enc *json.Encoder
}

func (w *ndjsonWriter) Write(rows []eventrow.Row) error {
	for i := range rows {
		if err := w.enc.Encode(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}
func (w *ndjsonWriter) Close() error { return w.b.Flush() }

type csvWriter struct {
	w   *csv.Writer
	rec []string
}

func (w *csvWriter) Write(rows []eventrow.Row) error {
	for i := range rows {
		w.rec = rows[i].Record(w.rec[:0])
		if err := w.w.Write(w.rec); err != nil {
			return err
		}
	}
	return nil
}

func (w *csvWriter) Close() error {
	w.w.Flush()
	return w.w.Error()
}

// Kinds are the row kinds (eventrow), in help order; DefaultKinds those
// exported without --kinds.
var (
	Kinds        = []string{"move", "drop", "proximity", "claim", "score", "leaderboard", "unknown", "empty", "invalid"}
	DefaultKinds = []string{"move", "proximity", "claim", "score"}
)

// ParseKinds reads a comma-separated list of kind names.
func ParseKinds(s string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		found := false
		for _, k := range Kinds {
			if k == f {
				out[k], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("kind %q: want some of %s", f, strings.Join(Kinds, ","))
		}
	}
	return out, nil
}

// Options says what to export.
type Options struct {
	Topology natsjs.Topology
	// From and To bound the messages' stream times: From <= time < To;
	// zero means unbounded.
	From, To time.Time
	// Kinds to export; nil means DefaultKinds.
	Kinds map[string]bool
	// Replay reads a stream (nil: natsjs.Replay; the archive's ReplayAll
	// reads what the stream no longer holds).
	Replay func(ctx context.Context, js jetstream.JetStream, o natsjs.ReplayOptions, h natsjs.Handler) error
	// Progress, when set, is told the messages read so far out of the
	// total of both streams.
	Progress func(done, total int64)
}

// Summary counts what an export wrote.
type Summary struct {
	Rows     int64            `json:"rows"`
	ByKind   map[string]int64 `json:"by_kind"`
	Messages int64            `json:"messages"`
	// The stream ranges read, per stream: first and last sequence.
	Ranges map[string][2]uint64 `json:"ranges"`
}

var errPastTo = errors.New("past --to")

// Run reads P_IN (moves, drops) and then P_OUT (proximity results, claims
// on the workers' subjects; score changes and leaderboard snapshots on the
// ranker's), each in stream order, from the first message stored at or
// after From up to the last before To, and writes a row per event of the
// kinds asked for. Claim notices on P_IN (copies of P_OUT's claims) are
// not exported.
func Run(ctx context.Context, js jetstream.JetStream, o Options, w Writer) (*Summary, error) {
	kinds := o.Kinds
	if kinds == nil {
		kinds = map[string]bool{}
		for _, k := range DefaultKinds {
			kinds[k] = true
		}
	}
	t := o.Topology
	sum := &Summary{ByKind: map[string]int64{}, Ranges: map[string][2]uint64{}}
	type plan struct {
		stream      string
		start, last uint64
	}
	var plans []plan
	var total int64
	for _, name := range []string{t.InStream(), t.OutStream()} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		state := st.CachedInfo().State
		// From the log's first sequence: what the stream no longer holds
		// comes from the archive when Replay reads it (natsjs.Replay skips
		// to the stream's first message).
		start := uint64(1)
		if !o.From.IsZero() {
			if start, err = SeqAtTime(ctx, st, o.From); err != nil {
				return nil, err
			}
		}
		if state.LastSeq == 0 || start > state.LastSeq {
			continue
		}
		plans = append(plans, plan{name, start, state.LastSeq})
		total += int64(state.LastSeq - max(start, state.FirstSeq) + 1)
	}
	replay := o.Replay
	if replay == nil {
		replay = natsjs.Replay
	}
	var done int64
	var rows, keep []eventrow.Row
	for _, p := range plans {
		inStream := p.stream == t.InStream()
		first, last := uint64(0), uint64(0)
		err := replay(ctx, js, natsjs.ReplayOptions{Stream: p.stream, StartSeq: p.start}, func(ctx context.Context, msgs []natsjs.Msg) error {
			keep = keep[:0]
			var stop error
			for _, m := range msgs {
				if !o.To.IsZero() && !m.Time.Before(o.To) {
					done += int64(p.last - m.Seq + 1) // the rest of the stream is past --to
					stop = errPastTo
					break
				}
				done++
				if first == 0 {
					first = m.Seq
				}
				last = m.Seq
				sum.Messages++
				var err error
				rows, err = eventrow.Flatten(rows[:0], eventrow.Message{Stream: p.stream, Subject: m.Subject, Seq: m.Seq, Time: m.Time, Data: m.Data})
				if err != nil {
					return fmt.Errorf("%s seq %d: %w", p.stream, m.Seq, err)
				}
				for _, r := range rows {
					if !kinds[r.Kind] || inStream && r.Kind == "claim" {
						continue
					}
					keep = append(keep, r)
					sum.ByKind[r.Kind]++
				}
			}
			if len(keep) > 0 {
				if err := w.Write(keep); err != nil {
					return err
				}
				sum.Rows += int64(len(keep))
			}
			if o.Progress != nil {
				o.Progress(done, total)
			}
			return stop
		})
		if err != nil && !errors.Is(err, errPastTo) {
			return nil, fmt.Errorf("export %s: %w", p.stream, err)
		}
		if first != 0 {
			sum.Ranges[p.stream] = [2]uint64{first, last}
		}
	}
	return sum, w.Close()
}

// SeqAtTime returns the sequence of the first message of st stored at or
// after t (the stream's last sequence + 1 when there is none), by binary
// search over the stream's message times (which JetStream assigns in
// sequence order), a few lookups whatever the stream's length. A message
// missing inside the range (deleted) is stepped over.
func SeqAtTime(ctx context.Context, st jetstream.Stream, t time.Time) (uint64, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	lo, hi := info.State.FirstSeq, info.State.LastSeq+1 // answer in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, seq, err := firstAtOrAfter(ctx, st, mid, hi)
		if err != nil {
			return 0, err
		}
		switch {
		case m == nil: // nothing stored in [mid, hi)
			hi = mid
		case !m.Time.Before(t):
			hi = seq
		default:
			lo = seq + 1
		}
	}
	return lo, nil
}

// firstAtOrAfter returns the first message at sequence >= from and < to,
// or nil.
func firstAtOrAfter(ctx context.Context, st jetstream.Stream, from, to uint64) (*jetstream.RawStreamMsg, uint64, error) {
	for seq := from; seq < to; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("message %d: %w", seq, err)
		}
		return m, seq, nil
	}
	return nil, 0, nil
}
