package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// Moves a dead instance stored but never acked (docs/pipeline.md, "Ingest
// killed with moves stored but not acked").
//
// An instance writes a player's new state to Redis only after JetStream
// has acked the batch holding the move. Killed between the two — or while
// JetStream's ack was on its way — it leaves moves in the log that Redis
// does not know and whose players got no answer. Those moves are applied
// (they are in the log), so each is its player's last accepted move: the
// player's next move starts where it ended (SPEC), and a resend of it is
// the same move again. So every instance
//
//   - registers in the Redis hash <prefix>ingests (field = instance,
//     value = a watermark in Unix nanoseconds: no move of a batch first
//     published before it is still waiting for its Redis write), written
//     at start and every RedisCheckInterval, removed at a clean shutdown
//     that left nothing unresolved;
//   - answers on the core NATS subject <topology prefix>.ingest.live.<instance>
//     while it runs: the NATS server drops the subscription when the
//     instance's connection goes, so a request then gets "no responders"
//     at once — a dead instance is told apart from a slow one without a
//     lease to wait out;
//   - at start (before it serves) and every RedisCheckInterval, looks at
//     every other registered instance; one that does not answer ("no
//     responders") is dead: the moves of its batches (Nats-Msg-Id
//     "<instance>-<k>-<n>") stored in the IN stream since its watermark
//     (less a minute for the server's clock) are read, each player's
//     highest seq among them is written to Redis with monotoneHSet (never
//     moving a stored seq back) and into this instance's memory, and the
//     registration is removed.

// recoverMargin is how far before a dead instance's watermark the IN
// stream is read: the server stamps messages with its own clock, which
// may be behind the instance's (as in partition.republish's search).
const recoverMargin = time.Minute

// liveSubject is the subject instance answers on while it runs.
func (in *Ingest) liveSubject(instance string) string {
	b := []byte(instance)
	for i, c := range b {
		// A subject token may not hold '.', '*', '>' or white space.
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '@') {
			b[i] = '_'
		}
	}
	return in.o.Topology.Prefix + ".ingest.live." + string(b)
}

// openBatch records b, about to be published, as open: its moves' states
// are not in Redis yet.
func (in *Ingest) openBatch(b *batch) {
	in.openMu.Lock()
	in.open[b] = struct{}{}
	in.openMu.Unlock()
}

// closeBatches forgets the batches of a completer round, whose moves'
// states are now written (or failed, or in the write-back set). A batch
// whose outcome stayed unknown at shutdown stays open: it may be stored,
// and its moves' states are not in Redis, so the next instance must look.
func (in *Ingest) closeBatches(round []completion) {
	in.openMu.Lock()
	for _, c := range round {
		if c.open != nil && !errors.Is(c.err, errOutcomeUnknown) {
			delete(in.open, c.open)
		}
	}
	in.openMu.Unlock()
}

// watermark returns the first publish of the oldest open batch, or now
// when none is open. A stored move never waits behind an earlier move of
// its player in flight: it is published only once those are stored, or
// with them in one batch (Ingest.send).
func (in *Ingest) watermark(now time.Time) time.Time {
	in.openMu.Lock()
	defer in.openMu.Unlock()
	w := now
	for b := range in.open {
		if b.t0.Before(w) {
			w = b.t0
		}
	}
	return w
}

// heartbeat writes this instance's registration with its watermark.
func (in *Ingest) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, in.o.StoreTimeout)
	defer cancel()
	w := in.watermark(time.Now())
	if err := in.o.Redis.HSet(ctx, in.instancesKey, in.instance, strconv.FormatInt(w.UnixNano(), 10)).Err(); err != nil {
		return fmt.Errorf("register ingest instance: %w", err)
	}
	return nil
}

// unregister removes this instance's registration at a clean shutdown,
// unless a batch's outcome stayed unknown: then the registration keeps
// its watermark, and the next instance recovers what may be stored.
func (in *Ingest) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), in.o.StoreTimeout)
	defer cancel()
	in.openMu.Lock()
	open := len(in.open)
	in.openMu.Unlock()
	var err error
	if open > 0 {
		err = in.heartbeat(ctx)
	} else {
		err = in.o.Redis.HDel(ctx, in.instancesKey, in.instance).Err()
	}
	if err != nil {
		in.o.Log.Warn("could not update this instance's registration at shutdown", "err", err, "batches_unresolved", open)
	}
}

// orphanLoop writes the heartbeat and recovers dead instances every
// interval until stop closes. Redis down skips a round.
func (in *Ingest) orphanLoop(stop <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if in.redisDown.Load() {
			continue
		}
		ctx, cancel := context.WithTimeout(in.retryCtx, 10*in.o.StoreTimeout)
		if err := in.heartbeat(ctx); err != nil {
			in.logFailure("ingest heartbeat failed", err, 0)
		} else if err := in.recoverDead(ctx); err != nil {
			in.logFailure("recovering a dead ingest instance's moves failed; trying again", err, 0)
		}
		cancel()
	}
}

// recheckEvery is the least time between two looks for dead instances
// made on behalf of discontinuous moves (recheckDead).
const recheckEvery = 250 * time.Millisecond

// recheckDead looks for dead instances now, unless a look on behalf of a
// move finished less than recheckEvery ago; callers arriving meanwhile
// wait for the look in progress. It closes most of the window in which a
// player of a dead instance, reconnected here before orphanLoop's next
// round, would get discontinuous for a move continuing from their stored,
// unacked move. It runs on a socket's or request's goroutine, holding no
// player lock; a discontinuous move waits for it (one Redis read and a
// NATS request per other registered instance, up to 2 s for one that
// does not answer).
func (in *Ingest) recheckDead() {
	in.recheckMu.Lock()
	defer in.recheckMu.Unlock()
	if time.Since(in.lastRecheck) < recheckEvery {
		return
	}
	ctx, cancel := context.WithTimeout(in.retryCtx, 10*in.o.StoreTimeout)
	defer cancel()
	if !in.redisDown.Load() {
		if err := in.recoverDead(ctx); err != nil {
			in.logFailure("recovering a dead ingest instance's moves failed; trying again", err, 0)
		}
	}
	in.lastRecheck = time.Now()
}

// recoverDead recovers every registered instance found dead (see the top
// of this file). Instances that answer, or whose liveness is unknown (the
// request timed out), are left alone.
func (in *Ingest) recoverDead(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, in.o.StoreTimeout)
	reg, err := in.o.Redis.HGetAll(rctx, in.instancesKey).Result()
	cancel()
	if err != nil {
		return fmt.Errorf("read ingest instances: %w", err)
	}
	var errs []error
	for inst, v := range reg {
		if inst == in.instance {
			continue
		}
		nctx, cancel := context.WithTimeout(ctx, min(in.o.StoreTimeout, 2*time.Second))
		_, err := in.o.NC.RequestWithContext(nctx, in.liveSubject(inst), nil)
		cancel()
		if !errors.Is(err, nats.ErrNoResponders) {
			continue // alive, or not known to be dead
		}
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("ingest instance %s: watermark %q: %w", inst, v, err))
			continue
		}
		if err := in.recoverInstance(ctx, inst, time.Unix(0, ns)); err != nil {
			errs = append(errs, err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, in.o.StoreTimeout)
		err = in.o.Redis.HDel(rctx, in.instancesKey, inst).Err()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("unregister dead ingest instance %s: %w", inst, err))
		}
	}
	return errors.Join(errs...)
}

// recoverInstance reads the moves of the dead instance inst stored since
// its watermark and moves each of their players on to the highest seq
// among them, in Redis (never back) and in this instance's memory.
func (in *Ingest) recoverInstance(ctx context.Context, inst string, watermark time.Time) error {
	if in.o.JS == nil {
		return fmt.Errorf("ingest instance %s is dead: its stored moves cannot be read without Options.JS", inst)
	}
	prefix := inst + "-"
	n := in.o.Graph.NumNodes()
	last := map[string]state{}
	var rd event.Reader
	var mv event.Move
	var path [game.MaxPath]uint64
	batches, moves := 0, 0
	err := natsjs.ScanSince(ctx, in.o.JS, in.o.Topology.InStream(), in.o.Topology.Prefix+".in.*", watermark.Add(-recoverMargin), func(m jetstream.Msg) error {
		id, ok := strings.CutPrefix(m.Headers().Get(jetstream.MsgIDHeader), prefix)
		if !ok || !batchSuffix(id) {
			return nil
		}
		if err := rd.Reset(m.Data()); err != nil {
			return fmt.Errorf("batch %s%s: %w", prefix, id, err)
		}
		batches++
		for rd.Next() {
			if rd.Kind() != event.KindMove {
				continue
			}
			if err := rd.Move(&mv); err != nil {
				return fmt.Errorf("batch %s%s: %w", prefix, id, err)
			}
			if len(mv.Path) == 0 || len(mv.Path) > len(path) {
				continue
			}
			moves++
			if cur, ok := last[string(mv.Player)]; ok && cur.Seq >= mv.Seq {
				continue
			}
			end, ok := graph.Index(uint64(mv.Path[len(mv.Path)-1]), n)
			if !ok {
				return fmt.Errorf("batch %s%s: move of %s ends on node %d, not in the graph", prefix, id, mv.Player, mv.Path[len(mv.Path)-1])
			}
			for i, v := range mv.Path {
				path[i] = uint64(v)
			}
			last[string(mv.Player)] = state{Player: game.Player{Seq: mv.Seq, Node: end, Moved: true}, Hash: hashPath(path[:len(mv.Path)])}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the moves of dead ingest instance %s: %w", inst, err)
	}
	args := make([]any, 0, 2*min(len(last), writeBackChunk))
	written := 0
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		rctx, cancel := context.WithTimeout(ctx, in.o.StoreTimeout)
		k, err := monotoneHSet.Run(rctx, in.o.Redis, []string{in.stateKey}, args...).Int()
		cancel()
		written += k
		args = args[:0]
		return err
	}
	for id, st := range last {
		args = append(args, id, string(appendState(nil, st)))
		if len(args) == 2*writeBackChunk {
			if err := flush(); err != nil {
				return fmt.Errorf("write the states of dead ingest instance %s's moves: %w", inst, err)
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("write the states of dead ingest instance %s's moves: %w", inst, err)
	}
	for id, st := range last {
		in.players.advance(id, st)
	}
	in.m.recovered.Add(float64(written))
	in.o.Log.Info("recovered the moves a dead ingest instance stored", "instance", inst, "watermark", watermark,
		"batches", batches, "moves", moves, "players", len(last), "states_moved_on", written)
	return nil
}

// batchSuffix reports whether s is "<partition>-<batch number>", what
// follows "<instance>-" in a batch's Nats-Msg-Id.
func batchSuffix(s string) bool {
	k, no, ok := strings.Cut(s, "-")
	if !ok || k == "" || no == "" {
		return false
	}
	for _, c := range k + no {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// advance moves a player this instance holds in memory on to st, a move
// stored by a dead instance, unless the player is at st's seq or beyond
// or has moves in flight here (validated on what it knew; their own
// states follow).
func (r *registry) advance(id string, st state) {
	s := r.shardOf(id)
	s.mu.Lock()
	p := s.m[id]
	if p == nil {
		if cur, ok := s.known[id]; ok && cur.Seq < st.Seq {
			s.known[id] = st
		}
		s.mu.Unlock()
		return
	}
	p.refs++ // keep p in the registry while its lock is taken
	s.mu.Unlock()
	p.mu.Lock()
	if p.loaded && len(p.queue) == 0 && p.acked.Seq < st.Seq {
		p.acked, p.head = st, st
	}
	p.mu.Unlock()
	r.release(p)
}
