package ranker

import (
	"context"
	"errors"
	"slices"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
)

// maintain takes the snapshots and watches Redis until ctx ends.
func (r *Ranker) maintain(ctx context.Context) {
	// The ticker only samples; snapshot itself keeps SnapshotEvery between
	// two publishes, measured from the last one's ack.
	snap := time.NewTicker(max(r.o.SnapshotEvery/4, time.Millisecond))
	defer snap.Stop()
	check := time.NewTicker(r.o.RedisCheck)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-snap.C:
			r.snapshot(ctx)
		case <-check.C:
			r.checkRedis(ctx)
		}
	}
}

// redisDown records that Redis no longer holds every change (mu held): the
// batches go on with PostgreSQL alone until a rebuild.
func (r *Ranker) redisDown(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // stopping: the error is ours, not Redis's
	}
	if r.redisOK {
		r.log.Warn("redis failed; ranking from PostgreSQL until it is rebuilt", "err", err)
	}
	r.redisOK = false
	r.m.redisUp.Set(0)
}

// checkRedis rebuilds the board when Redis has lost it (flushed,
// restarted) or when Redis answers again after a failure. The probe runs
// without the lock, so a Redis that hangs never stalls the batches; the
// rebuild holds it.
func (r *Ranker) checkRedis(ctx context.Context) {
	r.mu.Lock()
	ok := r.redisOK
	r.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if ok {
		empty, err := r.rs.Empty(pctx)
		if err == nil && !empty {
			return
		}
		if err != nil {
			r.mu.Lock()
			r.redisDown(ctx, err)
			r.mu.Unlock()
			return
		}
		r.log.Warn("redis lost the board (flushed or restarted); rebuilding from PostgreSQL")
	} else if err := r.o.Redis.Ping(pctx).Err(); err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rebuild(ctx, false)
}

// rebuild refills Redis from PostgreSQL (mu held, so no batch runs
// meanwhile) and records the outcome; quiet leaves the success to the
// caller's log line.
func (r *Ranker) rebuild(ctx context.Context, quiet bool) {
	t0 := time.Now()
	players := 0
	err := r.rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
		return r.pg.AllScores(ctx, func(c pgstore.ScoreChange) error {
			players++
			return yield(redisstore.ScoreChange(c))
		})
	})
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("redis rebuild failed; ranking from PostgreSQL, retrying later", "err", err)
		}
		r.redisOK = false
		r.m.redisUp.Set(0)
		return
	}
	r.redisOK = true
	r.m.redisUp.Set(1)
	r.m.rebuilds.Inc()
	if !quiet {
		r.log.Info("redis board rebuilt from PostgreSQL", "players", players, "took", time.Since(t0).Round(time.Millisecond))
	}
}

// leaderboard reads the top and the number of scoring players: Redis when
// it is in step, else PostgreSQL (mu held).
func (r *Ranker) leaderboard(ctx context.Context) ([]game.Entry, int64, error) {
	if r.redisOK {
		top, n, err := r.rs.Leaderboard(ctx, r.o.TopN)
		if err == nil {
			return top, n, nil
		}
		if !errors.Is(err, context.Canceled) {
			r.redisDown(ctx, err)
		}
	}
	return r.pg.Leaderboard(ctx, r.o.TopN)
}

// snapshot publishes a LeaderboardSnapshot when claims were applied since
// the last one and the top or the number of players changed. Called once
// per SnapshotEvery at most: the next one is published at least
// SnapshotEvery after the last one was stored.
func (r *Ranker) snapshot(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.dirty {
		return
	}
	if r.clock().Sub(r.lastSnap) < r.o.SnapshotEvery {
		_ = r.callHook("snapshot-throttled")
		return
	}
	if r.pubUnsure {
		// A snapshot now would hide from the next batch whether its failed
		// publish was stored (readPublished reads the last message only).
		return
	}
	top, players, err := r.leaderboard(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("leaderboard snapshot: read failed", "err", err)
		}
		return
	}
	if r.haveTop && players == r.lastPlayers && slices.Equal(top, r.lastTop) {
		r.dirty = false
		_ = r.callHook("snapshot-same")
		return
	}
	v, ok := nextVersion(r.published, r.lastVersion)
	if !ok {
		return // after a restart, until new input is covered
	}
	s := &eventpb.LeaderboardSnapshot{Players: uint64(players), Version: v, Top: make([]*eventpb.LeaderboardEntry, len(top))}
	for i, e := range top {
		s.Top[i] = &eventpb.LeaderboardEntry{Player: e.Player, Score: uint64(e.Score), Rank: uint64(e.Rank)}
	}
	data, err := event.AppendBatch(nil, []*eventpb.Event{{Kind: &eventpb.Event_Leaderboard{Leaderboard: s}}})
	if err != nil {
		r.log.Error("leaderboard snapshot: encode", "err", err)
		return
	}
	f, err := r.pub.Publish(ctx, r.rankSubject, data, boardID(v))
	if err == nil {
		_, err = f.Wait(ctx)
	}
	if err != nil {
		// It may be stored all the same (a lost ack): never reuse v, whose
		// id JetStream would take for a duplicate.
		r.lastVersion = v
		if ctx.Err() == nil {
			r.log.Warn("leaderboard snapshot: publish failed; retrying at the next tick", "err", err)
		}
		return
	}
	r.lastVersion, r.lastTop, r.lastPlayers, r.haveTop, r.dirty = v, top, players, true, false
	r.lastSnap = r.clock()
	r.m.snapshots.Inc()
	_ = r.callHook("snapshot-published")
}
