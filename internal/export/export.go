package export

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
)

// Writer writes rows in one format. Close flushes; the caller closes the
// underlying file.
type Writer interface {
	Write(r *Row) error
	Close() error
}

// Formats lists the formats NewWriter knows.
var Formats = []string{"ndjson", "csv"}

// NewWriter returns a writer of format to w.
func NewWriter(format string, w io.Writer) (Writer, error) {
	switch format {
	case "ndjson":
		b := bufio.NewWriterSize(w, 64<<10)
		return &ndjsonWriter{b: b, enc: json.NewEncoder(b)}, nil
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(Columns); err != nil {
			return nil, err
		}
		return &csvWriter{w: cw}, nil
	}
	return nil, fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
}

type ndjsonWriter struct {
	b   *bufio.Writer
	enc *json.Encoder
}

func (w *ndjsonWriter) Write(r *Row) error { return w.enc.Encode(r) }
func (w *ndjsonWriter) Close() error       { return w.b.Flush() }

type csvWriter struct {
	w   *csv.Writer
	rec []string
}

func (w *csvWriter) Write(r *Row) error {
	w.rec = r.record(w.rec)
	return w.w.Write(w.rec)
}

func (w *csvWriter) Close() error {
	w.w.Flush()
	return w.w.Error()
}

// Kinds are the exportable event kinds, in help order; DefaultKinds those
// exported without --kinds.
var (
	Kinds        = []event.Kind{event.KindMove, event.KindDrop, event.KindProximity, event.KindClaim, event.KindScore, event.KindLeaderboard}
	DefaultKinds = []event.Kind{event.KindMove, event.KindProximity, event.KindClaim, event.KindScore}
)

// ParseKinds reads a comma-separated list of kind names.
func ParseKinds(s string) (map[event.Kind]bool, error) {
	out := map[event.Kind]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		found := false
		for _, k := range Kinds {
			if k.String() == f {
				out[k], found = true, true
			}
		}
		if !found {
			names := make([]string, len(Kinds))
			for i, k := range Kinds {
				names[i] = k.String()
			}
			return nil, fmt.Errorf("kind %q: want some of %s", f, strings.Join(names, ","))
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
	Kinds map[event.Kind]bool
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
		kinds = map[event.Kind]bool{}
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
		start := state.FirstSeq
		if !o.From.IsZero() {
			if start, err = SeqAtTime(ctx, st, o.From); err != nil {
				return nil, err
			}
		}
		if state.Msgs == 0 || start > state.LastSeq {
			continue
		}
		plans = append(plans, plan{name, start, state.LastSeq})
		total += int64(state.LastSeq - start + 1)
	}
	var done int64
	var rd event.Reader
	var ev eventpb.Event
	for _, p := range plans {
		inStream := p.stream == t.InStream()
		first, last := uint64(0), uint64(0)
		err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: p.stream, StartSeq: p.start}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if !o.To.IsZero() && !m.Time.Before(o.To) {
					done += int64(p.last - m.Seq + 1) // the rest of the stream is past --to
					if o.Progress != nil {
						o.Progress(done, total)
					}
					return errPastTo
				}
				done++
				if first == 0 {
					first = m.Seq
				}
				last = m.Seq
				sum.Messages++
				if rd.Reset(m.Data) != nil {
					continue
				}
				part := subjectPartition(t, m.Subject)
				for rd.Next() {
					k := rd.Kind()
					if !kinds[k] || inStream && k == event.KindClaim {
						continue
					}
					if err := rd.Event(&ev); err != nil {
						return fmt.Errorf("%s seq %d event %d: %w", p.stream, m.Seq, rd.Index(), err)
					}
					r := Row{Stream: p.stream, Subject: m.Subject, Partition: part, Seq: m.Seq, Index: rd.Index(), Time: m.Time}
					if !Flatten(&ev, &r) {
						continue
					}
					if err := w.Write(&r); err != nil {
						return err
					}
					sum.Rows++
					sum.ByKind[r.Kind]++
				}
			}
			if o.Progress != nil {
				o.Progress(done, total)
			}
			return nil
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

func subjectPartition(t natsjs.Topology, subject string) int {
	for _, pfx := range []string{t.Prefix + ".in.", t.Prefix + ".out."} {
		if s, ok := strings.CutPrefix(subject, pfx); ok {
			if k, err := strconv.Atoi(s); err == nil {
				return k
			}
		}
	}
	return -1
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
