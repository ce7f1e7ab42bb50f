package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Player states and Redis (docs/pipeline.md, "Ingest: player state").
//
// The log, not Redis, decides what a player's last accepted move is: once
// a move's batch is stored in JetStream the move is acked, whether or not
// its new state reaches Redis. Redis is the copy other instances (and this
// one after a restart) read. When a write fails, or Redis is known to be
// down, the state goes to the dirty set and writeBackLoop writes it when
// Redis answers again, with a script that never moves a player's stored
// seq backwards. When Redis comes back after a failure, is a different
// server process (restarted, perhaps empty) or has lost the states' hash,
// every state this instance holds in memory is written back the same way.

// DefaultRememberPlayers is Options.RememberPlayers' default.
const DefaultRememberPlayers = 1 << 20

// errRedisDown marks a skipped write while Redis is known to be down.
var errRedisDown = errors.New("redis is down")

// writeBackChunk is how many states one write-back script call carries.
const writeBackChunk = 512

// monotoneHSet sets each field of KEYS[1] named by ARGV[2i-1] to
// ARGV[2i] unless the stored value's seq (its first word) is at least the
// new one's: seqs are compared as decimal strings (length, then bytes), so
// any uint64 compares exactly. It returns how many fields it set.
var monotoneHSet = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  local new = ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local write = true
  if cur then
    local a = string.match(new, '^%d+') or ''
    local b = string.match(cur, '^%d+') or ''
    if #a < #b or (#a == #b and a <= b) then write = false end
  end
  if write then
    redis.call('HSET', KEYS[1], ARGV[i], new)
    n = n + 1
  end
end
return n
`)

// redisFailed records a failed Redis call: Redis is down until
// writeBackLoop finds it answering and has written the dirty states.
func (in *Ingest) redisFailed(err error) {
	if in.redisDown.CompareAndSwap(false, true) {
		in.m.redisUp.Set(0)
		in.o.Log.Warn("redis is down: moves go on from the player states in memory; players new to this instance get unavailable until it returns", "err", err)
	}
	in.redisErr.Store(&err)
}

// markDirtyLocked records st as id's state to write back, unless a later
// one is recorded already. in.dirtyMu must be held.
func (in *Ingest) markDirtyLocked(id string, st state) {
	if cur, ok := in.dirty[id]; ok && cur.Seq >= st.Seq {
		return
	}
	in.dirty[id] = st
	in.m.dirty.Set(float64(len(in.dirty)))
}

// writeState writes one player's state to Redis now, or leaves it to the
// write-back when Redis is down or the write fails.
func (in *Ingest) writeState(id string, st state) {
	if !in.redisDown.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), in.o.StoreTimeout)
		err := in.o.Redis.HSet(ctx, in.stateKey, id, string(appendState(nil, st))).Err()
		cancel()
		if err == nil {
			return
		}
		in.redisFailed(err)
	}
	in.dirtyMu.Lock()
	in.markDirtyLocked(id, st)
	in.dirtyMu.Unlock()
}

// writeBackLoop checks Redis every interval until stop closes: while it
// does not answer, Redis is down (redisFailed); once it answers, the
// dirty states are written back (all states in memory when Redis was down,
// is a new server process, or has lost the states' hash) and Redis is up
// again.
func (in *Ingest) writeBackLoop(stop <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var runID string
	for {
		in.checkRedis(&runID)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// checkRedis is one round of writeBackLoop; runID is the server's run_id
// seen last ("" before the first answer).
func (in *Ingest) checkRedis(runID *string) {
	ctx, cancel := context.WithTimeout(context.Background(), in.o.StoreTimeout)
	pipe := in.o.Redis.Pipeline()
	info := pipe.Info(ctx, "server")
	exists := pipe.Exists(ctx, in.stateKey)
	_, err := pipe.Exec(ctx)
	cancel()
	if err != nil {
		in.redisFailed(err)
		return
	}
	id := infoField(info.Val(), "run_id")
	restarted := *runID != "" && id != *runID
	*runID = id
	lost := exists.Val() == 0
	if in.redisDown.Load() || restarted || lost {
		// Collected first: states takes player.mu, which comes before
		// dirtyMu in the lock order.
		type idState struct {
			id string
			st state
		}
		var all []idState
		in.players.states(func(pid string, st state) { all = append(all, idState{pid, st}) })
		n := len(all)
		in.dirtyMu.Lock()
		for _, x := range all {
			in.markDirtyLocked(x.id, x.st)
		}
		in.dirtyMu.Unlock()
		if n > 0 && (restarted || lost) {
			in.o.Log.Warn("redis lost the player states (restarted or flushed); writing back the states in memory", "players", n, "restarted", restarted)
		}
	}
	// Write the dirty states; Redis is up again once none is left.
	for {
		in.dirtyMu.Lock()
		if len(in.dirty) == 0 {
			if in.redisDown.CompareAndSwap(true, false) {
				in.m.redisUp.Set(1)
				in.o.Log.Info("redis answers again; player states written back")
			}
			in.redisErr.Store(nil)
			in.dirtyMu.Unlock()
			return
		}
		ids := make([]string, 0, writeBackChunk)
		args := make([]any, 0, 2*writeBackChunk)
		for id, st := range in.dirty {
			ids = append(ids, id)
			args = append(args, id, string(appendState(nil, st)))
			if len(ids) == writeBackChunk {
				break
			}
		}
		sent := make([]state, len(ids))
		for i, id := range ids {
			sent[i] = in.dirty[id]
		}
		in.dirtyMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), in.o.StoreTimeout)
		err := monotoneHSet.Run(ctx, in.o.Redis, []string{in.stateKey}, args...).Err()
		cancel()
		if err != nil {
			in.redisFailed(fmt.Errorf("write back player states: %w", err))
			return
		}
		in.m.writtenBack.Add(float64(len(ids)))
		in.dirtyMu.Lock()
		for i, id := range ids {
			if cur, ok := in.dirty[id]; ok && cur.Seq == sent[i].Seq {
				delete(in.dirty, id)
			}
		}
		in.m.dirty.Set(float64(len(in.dirty)))
		in.dirtyMu.Unlock()
	}
}

// infoField returns the value of name in the text of Redis's INFO.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
