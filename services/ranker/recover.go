package ranker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
)

// recover loads what lies beyond the consumer's ack floor: the claims a
// predecessor stored without getting its batch acked, and how far its
// published events reach (the last message on P.out.rank).
func (r *Ranker) recover(ctx context.Context, floor uint64) error {
	if err := r.reloadAhead(ctx, floor+1); err != nil {
		return err
	}

	r.published, r.lastVersion, r.haveTop, r.dirty = 0, 0, false, true
	return r.readPublished(ctx)
}

// readPublished reads the last message on P.out.rank and raises
// r.published and r.lastVersion to what its id says is stored (ids.go);
// a snapshot there also becomes the last top published.
func (r *Ranker) readPublished(ctx context.Context) error {
	st, err := r.o.JS.Stream(ctx, r.o.Topology.OutStream())
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.o.Topology.OutStream(), err)
	}
	last, err := st.GetLastMsgForSubject(ctx, r.rankSubject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		r.pubUnsure = false
		return nil
	case err != nil:
		return fmt.Errorf("last message on %s: %w", r.rankSubject, err)
	}
	r.pubUnsure = false
	published, lastVersion, board, ok := resumePoint(last.Header.Get(jetstream.MsgIDHeader))
	if !ok {
		return nil
	}
	r.published, r.lastVersion = max(r.published, published), max(r.lastVersion, lastVersion)
	if board {
		var b eventpb.Batch
		if event.Decode(last.Data, &b) == nil && len(b.Events) == 1 && b.Events[0].GetLeaderboard() != nil {
			s := b.Events[0].GetLeaderboard()
			top := make([]game.Entry, 0, len(s.Top))
			for _, e := range s.Top {
				top = append(top, game.Entry{Player: e.Player, Score: int64(e.Score), Rank: int64(e.Rank)})
			}
			r.lastTop, r.lastPlayers, r.haveTop = top, int64(s.Players), true
		}
	}
	return nil
}
