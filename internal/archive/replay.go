package archive

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
)

// ReplayAll is natsjs.Replay over the archive in dir and the stream
// together: it hands h the messages of o.Stream (filtered by o.Subjects)
// from o.StartSeq in log order, in batches, taking those below the
// stream's first sequence from the archive and the rest from the stream,
// so that h sees what a replay of a never-trimmed log would show (archived
// messages have no headers; see Archive.Read). It fails with a *GapError
// naming the sequences that neither holds, before handing any of them
// over. dir "" means no archive: natsjs.Replay itself.
//
// The stream's head can be trimmed while ReplayAll reads: each time it
// starts reading the stream it checks, at the first message it gets,
// whether messages it has not read were trimmed meanwhile, and reads those
// from the archive first. (A trim that coincides with the client library
// recreating the ordered consumer in the middle of a read is not seen: run
// replays against a retention that keeps a margin, docs/pipeline.md.)
func ReplayAll(ctx context.Context, js jetstream.JetStream, dir string, o natsjs.ReplayOptions, h natsjs.Handler) error {
	if dir == "" {
		return natsjs.Replay(ctx, js, o, h)
	}
	if o.Stream == "" {
		return errors.New("replay: no stream")
	}
	a := Open(dir)
	next := max(o.StartSeq, 1)
	first, msgs, err := streamHead(ctx, js, o.Stream)
	if err != nil {
		return err
	}
	if next < first {
		ro := ReadOptions{From: next, To: first - 1, Subjects: o.Subjects, Batch: o.Batch, pendingAfter: msgs}
		if err := a.Read(ctx, o.Stream, ro, h); err != nil {
			return replayErr(o.Stream, first, err)
		}
		next = first
	}
	checked := false
	so := o
	so.StartSeq = next
	return natsjs.Replay(ctx, js, so, func(ctx context.Context, ms []natsjs.Msg) error {
		if !checked && len(ms) > 0 && ms[0].Seq > next {
			// Were the sequences in between trimmed after we looked?
			f, n, err := streamHead(ctx, js, o.Stream)
			if err != nil {
				return err
			}
			if f > next {
				ro := ReadOptions{From: next, To: min(f, ms[0].Seq) - 1, Subjects: o.Subjects, Batch: o.Batch, pendingAfter: n}
				if err := a.Read(ctx, o.Stream, ro, h); err != nil {
					return replayErr(o.Stream, f, err)
				}
			}
		}
		checked = true
		return h(ctx, ms)
	})
}

// streamHead returns a stream's first sequence (its last + 1 when it is
// empty) and its message count.
func streamHead(ctx context.Context, js jetstream.JetStream, stream string) (first, msgs uint64, err error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, fmt.Errorf("replay %s: %w", stream, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return st.LastSeq + 1, 0, nil
	}
	return st.FirstSeq, st.Msgs, nil
}

func replayErr(stream string, first uint64, err error) error {
	var gap *GapError
	if errors.As(err, &gap) {
		gap.Why = fmt.Sprintf("the stream starts at %d, and %s", first, gap.Why)
		return gap
	}
	return err
}
