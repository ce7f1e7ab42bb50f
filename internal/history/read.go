package history

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
)

// Cutoff is a point of the IN stream: the messages at or before it are
// applied. Seq 0 and a zero Time mean no bound; with both set, both bound.
type Cutoff struct {
	Seq  uint64
	Time time.Time
}

// ParseCutoff reads "T|seq": a positive integer is an IN stream sequence,
// anything else must be an RFC 3339 time ("2026-12-05T16:20:00Z", with
// fractional seconds or an offset if wanted).
func ParseCutoff(s string) (Cutoff, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Cutoff{}, errors.New("empty point in time: want an IN stream sequence or an RFC 3339 time")
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n == 0 {
			return Cutoff{}, errors.New("sequence 0: IN stream sequences start at 1")
		}
		return Cutoff{Seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Cutoff{}, fmt.Errorf("%q is neither an IN stream sequence nor an RFC 3339 time (like 2026-12-05T16:20:00Z)", s)
	}
	return Cutoff{Time: t}, nil
}

// String describes the cutoff for people.
func (c Cutoff) String() string {
	switch {
	case c.Seq == 0 && c.Time.IsZero():
		return "the end of the log"
	case c.Time.IsZero():
		return "IN seq " + strconv.FormatUint(c.Seq, 10)
	case c.Seq == 0:
		return c.Time.UTC().Format(time.RFC3339Nano)
	}
	return "IN seq " + strconv.FormatUint(c.Seq, 10) + " and " + c.Time.UTC().Format(time.RFC3339Nano)
}

// after reports whether message m lies beyond the cutoff.
func (c Cutoff) after(m natsjs.Msg) bool {
	return c.Seq != 0 && m.Seq > c.Seq || !c.Time.IsZero() && m.Time.After(c.Time)
}

// ReplayFunc reads a stream in order and hands its messages to h, with
// natsjs.Replay's semantics (nil means natsjs.Replay). The archive's
// ReplayAll, bound to its directory, also reads what the stream no longer
// holds.
type ReplayFunc func(ctx context.Context, js jetstream.JetStream, o natsjs.ReplayOptions, h natsjs.Handler) error

func (f ReplayFunc) orDefault() ReplayFunc {
	if f == nil {
		return natsjs.Replay
	}
	return f
}

// Progress is told how far a read has come: the last stream sequence
// read, and the stream's last sequence when the read started.
type Progress func(seq, last uint64)

var errCutoff = errors.New("cutoff reached")

// ReadIn reads the IN stream (through replay) from its first message up to the cutoff (or
// its end), in stream order, applying every message to each rebuild, and
// returns the last sequence applied (0 when none).
func ReadIn(ctx context.Context, replay ReplayFunc, js jetstream.JetStream, t natsjs.Topology, until Cutoff, progress Progress, rebuilds ...*Rebuild) (uint64, error) {
	last, err := lastSeq(ctx, js, t.InStream())
	if err != nil {
		return 0, err
	}
	if until.Seq != 0 {
		last = min(last, until.Seq)
	}
	var applied uint64
	err = replay.orDefault()(ctx, js, natsjs.ReplayOptions{Stream: t.InStream()}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			if until.after(m) {
				if progress != nil {
					progress(applied, applied) // the cutoff is the end of this read
				}
				return errCutoff
			}
			for _, r := range rebuilds {
				if err := r.Apply(m); err != nil {
					return err
				}
			}
			applied = m.Seq
		}
		if progress != nil && len(msgs) > 0 {
			progress(msgs[len(msgs)-1].Seq, last)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errCutoff) {
		return applied, fmt.Errorf("read %s: %w", t.InStream(), err)
	}
	return applied, nil
}

func lastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// MoveKey names a move: its player and seq.
type MoveKey struct {
	Player string
	Seq    uint64
}

// OutClaim is a claim as the live workers published it on P_OUT, with its
// position there (what the ranker stores as the claim's pos).
type OutClaim struct {
	Claim
	Out Pos
}

// Out is what the live pipeline wrote to P_OUT that a rebuild compares
// with or orders by.
type Out struct {
	// Results holds the P_OUT position of the proximity result of every
	// move asked for (Wanted), or of every move when Wanted was nil.
	Results map[MoveKey]Pos
	// Claims holds each treasure's first claim on P_OUT, by treasure.
	Claims map[string]OutClaim
	// Duplicates counts claims of a treasure already claimed earlier on
	// P_OUT (never, in a sound run).
	Duplicates int
	// Scores holds the ranker's ScoreChanged events, in log order.
	Scores []*eventpb.ScoreChanged
	// Seen is every player with a proximity result on P_OUT.
	Seen map[string]bool
	// LastSeq is the last P_OUT sequence read.
	LastSeq uint64
}

// ReadOut reads the whole OUT stream. wanted, when not nil, limits
// Results to those moves (a rebuild orders claims only).
func ReadOut(ctx context.Context, replay ReplayFunc, js jetstream.JetStream, t natsjs.Topology, wanted map[MoveKey]bool, progress Progress) (*Out, error) {
	last, err := lastSeq(ctx, js, t.OutStream())
	if err != nil {
		return nil, err
	}
	o := &Out{Results: map[MoveKey]Pos{}, Claims: map[string]OutClaim{}, Seen: map[string]bool{}}
	rank := t.RankSubject()
	var rd event.Reader
	var ev eventpb.Event
	err = replay.orDefault()(ctx, js, natsjs.ReplayOptions{Stream: t.OutStream()}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			o.LastSeq = m.Seq
			if err := rd.Reset(m.Data); err != nil {
				continue
			}
			isRank := m.Subject == rank
			part := -1
			if s, ok := strings.CutPrefix(m.Subject, t.Prefix+".out."); ok && !isRank {
				part, _ = strconv.Atoi(s)
			}
			for rd.Next() {
				k := rd.Kind()
				if k != event.KindProximity && k != event.KindClaim && k != event.KindScore {
					continue
				}
				if err := rd.Event(&ev); err != nil {
					continue
				}
				pos := Pos{Seq: m.Seq, Index: uint32(rd.Index())}
				switch {
				case isRank && k == event.KindScore:
					o.Scores = append(o.Scores, ev.GetScore())
				case !isRank && k == event.KindProximity:
					r := ev.GetProximity()
					o.Seen[r.Player] = true
					key := MoveKey{r.Player, r.Seq}
					if wanted == nil || wanted[key] {
						if _, dup := o.Results[key]; !dup {
							o.Results[key] = pos
						}
					}
				case !isRank && k == event.KindClaim:
					c := ev.GetClaim()
					if _, dup := o.Claims[c.Treasure]; dup {
						o.Duplicates++
						continue
					}
					cl := Claim{Treasure: c.Treasure, Player: c.Player, Seq: c.Seq, Points: c.Points, Node: c.Node, Partition: part}
					if c.Move != nil {
						cl.Move = Pos{Seq: c.Move.StreamSeq, Index: c.Move.Index}
					}
					o.Claims[c.Treasure] = OutClaim{Claim: cl, Out: pos}
				}
			}
		}
		if progress != nil && len(msgs) > 0 {
			progress(msgs[len(msgs)-1].Seq, last)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.OutStream(), err)
	}
	return o, nil
}

// ClaimMoves returns the moves that made the claims of the rebuilds, the
// moves whose P_OUT positions order a leaderboard.
func ClaimMoves(rebuilds ...*Rebuild) map[MoveKey]bool {
	w := map[MoveKey]bool{}
	for _, r := range rebuilds {
		for _, c := range r.claims {
			w[MoveKey{c.Player, c.Seq}] = true
		}
	}
	return w
}
