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
// from o.StartSeq in log order, in batches, so that h sees what a replay of
// a never-trimmed log would show (archived messages have no headers; see
// Archive.Read). It reads from the archive everything it holds from
// o.StartSeq on without a break (and at least up to the stream's first
// sequence), and the rest from the stream. It fails with a *GapError
// naming the sequences that neither holds, before handing any of them
// over. dir "" means no archive: natsjs.Replay itself.
//
// The archive, not the stream's first sequence, decides where the stream
// takes over because retention purges each subject on its own (up to its
// own safe sequence, never past what is archived): a subject can be
// trimmed far past the stream's first sequence, and the stream then has
// holes in the middle of its range, which only the archive fills.
//
// The stream's head can be trimmed while ReplayAll reads: when it gets its
// first message from the stream it looks at the archive again, hands over
// from there what it has archived meanwhile (what retention may have
// removed in between), and skips those sequences in what the stream
// delivers. (A trim that coincides with the client library recreating the
// ordered consumer in the middle of a read is not seen: run replays
// against a retention that keeps a margin, docs/pipeline.md.)
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
	covered, err := archivedFrom(a, o.Stream, next)
	if err != nil {
		return err
	}
	if to := max(first-1, covered); next <= to {
		ro := ReadOptions{From: next, To: to, Subjects: o.Subjects, Batch: o.Batch, pendingAfter: msgs}
		if err := a.Read(ctx, o.Stream, ro, h); err != nil {
			return replayErr(o.Stream, first, err)
		}
		next = to + 1
	}
	checked := false
	skip := next - 1 // stream messages up to it were handed over from the archive
	so := o
	so.StartSeq = next
	return natsjs.Replay(ctx, js, so, func(ctx context.Context, ms []natsjs.Msg) error {
		if !checked && len(ms) > 0 {
			checked = true
			// What was archived (and so may have been trimmed) since
			// we looked.
			c, err := archivedFrom(a, o.Stream, next)
			if err != nil {
				return err
			}
			if c >= next {
				f, n, err := streamHead(ctx, js, o.Stream)
				if err != nil {
					return err
				}
				ro := ReadOptions{From: next, To: c, Subjects: o.Subjects, Batch: o.Batch, pendingAfter: n}
				if err := a.Read(ctx, o.Stream, ro, h); err != nil {
					return replayErr(o.Stream, f, err)
				}
				skip = c
			}
		}
		for len(ms) > 0 && ms[0].Seq <= skip {
			ms = ms[1:]
		}
		if len(ms) == 0 {
			return nil
		}
		return h(ctx, ms)
	})
}

// archivedFrom returns the last sequence S such that the archive holds
// every message of stream in [from, S] (its segments cover them without a
// break); from-1 when it holds nothing from from on.
func archivedFrom(a *Archive, stream string, from uint64) (uint64, error) {
	ms, err := a.Manifests(stream)
	if err != nil {
		return 0, fmt.Errorf("replay %s: archive: %w", stream, err)
	}
	c := from - 1
	for _, m := range ms {
		if m.LastSeq <= c {
			continue
		}
		if m.FirstSeq > c+1 {
			break
		}
		c = m.LastSeq
	}
	return c, nil
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
