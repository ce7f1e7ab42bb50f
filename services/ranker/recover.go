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
// published events reach.
//
// The ack floor is where that starts: the consumer acks an input only once
// its events are stored, so every input up to floor is published, and
// every snapshot taken so far was taken with at most floor inputs covered
// (one taken later would sit on P.out.rank after the floor). The last
// message on P.out.rank, when retention has left it, may say more (inputs
// beyond the floor published by a predecessor killed before its ack) and
// raises both. Retention must not purge P.out.rank beyond the ranker's ack
// floor (the ranker consumes P.out.*, so its durable holds the subject
// back); without its messages a restart goes on from the floor, never from
// 0: no event published again for acked inputs, no snapshot version reused
// or going back.
func (r *Ranker) recover(ctx context.Context, floor uint64) error {
	if err := r.reloadAhead(ctx, floor+1); err != nil {
		return err
	}
	r.published, r.lastVersion = floorPoint(floor)
	r.haveTop, r.dirty = false, true
	return r.readPublished(ctx)
}

// floorPoint is resumePoint for a floor: every input up to floor has its
// events stored, and every snapshot so far a version below floor's.
func floorPoint(floor uint64) (published, lastVersion uint64) {
	if floor == 0 {
		return 0, 0
	}
	if floor >= 1<<(64-versionShift) {
		return floor, ^uint64(0) // no version is free: no snapshot
	}
	return floor, floor<<versionShift - 1
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
