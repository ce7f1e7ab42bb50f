package ranker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
)

// batchClaim is one valid claim of the current batch.
type batchClaim struct {
	pgstore.Claim
	msgSeq uint64
	cause  *eventpb.LogPosition
}

// batch is what one handler call decoded.
type batch struct {
	claims  []batchClaim
	players []string // players seen for the first time in this process
	fresh   map[string]struct{}
	lastSeq uint64
}

// decode adds the claims and new players of message m to b. A message that
// is not an event batch is dead-lettered and skipped; an event that can
// never be applied is skipped.
func (r *Ranker) decode(ctx context.Context, m natsjs.Msg, b *batch) error {
	if m.Subject == r.rankSubject {
		return nil // our own output
	}
	if err := r.rd.Reset(m.Data); err != nil {
		r.m.invalid.Inc()
		if err := natsjs.DeadLetter(ctx, r.o.JS, r.o.Topology.DLQSubject(), r.o.Topology.OutStream(), r.Durable(), m, err); err != nil {
			return err
		}
		r.log.Warn("dead-lettered an input that is not an event batch", "seq", m.Seq, "subject", m.Subject, "reason", err)
		return nil
	}
	for r.rd.Next() {
		switch r.rd.Kind() {
		case event.KindClaim:
			if err := r.rd.Event(&r.ev); err != nil {
				r.skip(m, err)
				continue
			}
			c := r.ev.GetClaim()
			if err := checkClaim(c); err != nil {
				r.skip(m, err)
				continue
			}
			var cause *eventpb.LogPosition
			if c.Move != nil {
				cause = &eventpb.LogPosition{StreamSeq: c.Move.StreamSeq, Index: c.Move.Index}
			}
			b.claims = append(b.claims, batchClaim{
				Claim: pgstore.Claim{
					Treasure: c.Treasure, Player: c.Player, Points: int64(c.Points),
					Node: c.Node, Seq: c.Seq, Pos: position(m.Seq, r.rd.Index()),
				},
				msgSeq: m.Seq,
				cause:  cause,
			})
		case event.KindProximity:
			p, ok := proximityPlayer(r.rd.Raw())
			if !ok || !validID(p) {
				r.skip(m, errors.New("proximity result without a valid player"))
				continue
			}
			if _, known := r.seen[string(p)]; known {
				continue
			}
			if _, known := b.fresh[string(p)]; known {
				continue
			}
			if b.fresh == nil {
				b.fresh = map[string]struct{}{}
			}
			s := string(p)
			b.fresh[s] = struct{}{}
			b.players = append(b.players, s)
		}
	}
	return nil
}

func (r *Ranker) skip(m natsjs.Msg, err error) {
	r.m.invalid.Inc()
	r.log.Warn("skipped an input event that can never be applied", "seq", m.Seq, "index", r.rd.Index(), "err", err)
}

func validID(s []byte) bool {
	return len(s) > 0 && len(s) <= pgstore.MaxID && utf8.Valid(s) && !strings.ContainsRune(string(s), 0)
}

func checkClaim(c *eventpb.Claim) error {
	switch {
	case !validID([]byte(c.Treasure)):
		return fmt.Errorf("claim: bad treasure id %q", c.Treasure)
	case !validID([]byte(c.Player)):
		return fmt.Errorf("claim of %s: bad player id %q", c.Treasure, c.Player)
	case c.Points == 0 || c.Points > maxPoints:
		return fmt.Errorf("claim of %s: points %d outside 1..%d", c.Treasure, c.Points, maxPoints)
	case c.Seq > math.MaxInt64:
		return fmt.Errorf("claim of %s: seq %d beyond int64", c.Treasure, c.Seq)
	}
	return nil
}

// proximityPlayer returns the player of an encoded Event holding a
// ProximityResult without decoding the rest (the ranker reads nothing else
// of the busiest event), with proto's rules: the last player field of the
// last proximity member wins. It aliases raw.
func proximityPlayer(raw []byte) ([]byte, bool) {
	const fieldProximity, fieldPlayer = 4, 1
	var player []byte
	found := false
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == fieldProximity && typ == protowire.BytesType {
			msg, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			for f := msg; len(f) > 0; {
				fnum, ftyp, fn := protowire.ConsumeTag(f)
				if fn < 0 {
					return nil, false
				}
				f = f[fn:]
				vn := protowire.ConsumeFieldValue(fnum, ftyp, f)
				if vn < 0 {
					return nil, false
				}
				if fnum == fieldPlayer && ftyp == protowire.BytesType {
					player, _ = protowire.ConsumeBytes(f)
					found = true
				}
				f = f[vn:]
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return player, found
}
