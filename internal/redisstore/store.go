// Package redisstore keeps the live leaderboard in Redis sorted sets: the
// ranker applies absolute score changes (from pgstore.ApplyClaims) and the
// push service reads the top N and single players' ranks in one round trip
// each. PostgreSQL (pgstore) stays the source of truth: a flushed or
// restarted Redis is detected with Empty and refilled with Rebuild, and both
// stores give identical answers for the same data (one shared test suite).
//
// Semantics are pgstore's (SPEC "Game semantics"): rank = 1 + the number of
// players with a strictly higher score; equal scores share a rank and are
// listed by who reached that score first (the log position ReachedPos), then
// by player id in byte order; only players with a score (> 0) are listed and
// counted; a seen player without claims has score 0 and rank 1 + that count.
//
// # Key layout
//
// All keys start with the store's prefix and share the hash tag {lb}, so that
// they live in one Redis Cluster slot (scripts and MULTI touch several):
//
//	<prefix>{lb}:scores  sorted set: member = player id, score = the player's
//	                     score, for every known player (0 for a seen player
//	                     without claims).
//	                     rank of score s = 1 + ZCOUNT scores (s +inf   O(log n)
//	                     players with a score = ZCOUNT scores (0 +inf  O(log n)
//	<prefix>{lb}:board   sorted set of the players with a score > 0, in
//	                     listing order: score = -score, member = ReachedPos
//	                     as 16 lowercase hex digits followed by the player id.
//	                     Redis orders equal scores by member bytes, so
//	                     ZRANGE board 0 N-1 lists score descending, then
//	                     ReachedPos ascending, then player id: ties that
//	                     straddle the limit are cut at the right place.
//	<prefix>{lb}:pos     hash: player id -> the 16 hex digits of its board
//	                     member, to find and remove the old member when the
//	                     player's score changes.
//	<prefix>{lb}:built   string set by Rebuild. Its absence means this Redis
//	                     was never filled or has been flushed: readers get
//	                     ErrNotBuilt (the caller falls back to PostgreSQL)
//	                     and Empty reports true until Rebuild runs.
//
// Scores are stored as float64, exact up to 2^53; larger scores are refused.
//
// Changes are applied by a Lua script, one call per chunk of changes,
// pipelined: the swap of a player's board member (remove the old, add the
// new) must be atomic for readers, and the script makes Apply monotonic — a
// change is applied only if it is newer (higher score, or same score and
// later position) than what is stored — hence idempotent and safe against
// redelivered or reordered batches. The script does O(log n) work per
// change; it never scans a set.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"treasure/internal/game"
)

var (
	// ErrNotBuilt is returned by readers when the leaderboard has not been
	// built in this Redis (never filled, or flushed since): answer from
	// PostgreSQL and Rebuild.
	ErrNotBuilt = errors.New("redis leaderboard not built")

	// ErrInvalid is wrapped by the errors returned for input that can never
	// be stored (empty player id, negative score, score beyond 2^53).
	// Nothing of a call holding such input is written.
	ErrInvalid = errors.New("invalid input")
)

// MaxScore is the highest score stored exactly (float64 scores).
const MaxScore = 1 << 53

// chunk is the number of changes per script call: long enough to amortise
// the call, short enough that one call never blocks Redis for long (about
// 0.2 ms per chunk).
const chunk = 256

// ScoreChange is a player's score after a change, in absolute terms (the
// same shape as pgstore.ScoreChange; convert with ScoreChange(c)).
type ScoreChange struct {
	Player     string
	Score      int64
	ReachedPos uint64 // the log position of the claim that brought the player to Score
}

// Store is the live leaderboard under one key prefix. It is safe for
// concurrent use; it does not own the client. Apply and Seen may run
// concurrently with each other and with readers, but not with Rebuild (see
// there).
type Store struct {
	c                          redis.UniversalClient
	prefix                     string
	scores, board, pos, marker string
}

// New returns a Store keeping its keys under prefix (see the key layout).
func New(c redis.UniversalClient, prefix string) *Store {
	s := &Store{c: c, prefix: prefix}
	s.scores, s.board, s.pos = s.keys("")
	s.marker = prefix + "{lb}:built"
	return s
}

// keys returns the three data keys, under a temporary tag if tag != "".
func (s *Store) keys(tag string) (scores, board, pos string) {
	base := s.prefix + "{lb}:"
	if tag != "" {
		base += "tmp:" + tag + ":"
	}
	return base + "scores", base + "board", base + "pos"
}

// applyScript applies changes given as ARGV triplets (player, score, 16 hex
// digits of the position) to KEYS scores, board, pos; it returns how many
// changed anything. A change applies when the player is unknown, or its
// score is higher than the stored one, or equal and positive with a later
// position (pgstore keeps the greatest position too). Positions are compared
// as two 32-bit halves: Lua numbers are doubles.
var applyScript = redis.NewScript(`
local function later(a, b)
	local a1, b1 = tonumber(string.sub(a, 1, 8), 16), tonumber(string.sub(b, 1, 8), 16)
	if a1 ~= b1 then return a1 > b1 end
	return tonumber(string.sub(a, 9), 16) > tonumber(string.sub(b, 9), 16)
end
local applied = 0
for i = 1, #ARGV, 3 do
	local p, s, h = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
	local cur = redis.call('ZSCORE', KEYS[1], p)
	local old = redis.call('HGET', KEYS[3], p)
	local newer = not cur
	if cur then
		cur = tonumber(cur)
		newer = s > cur or (s == cur and s > 0 and (not old or later(h, old)))
	end
	if newer then
		redis.call('ZADD', KEYS[1], s, p)
		if s > 0 then
			if old then redis.call('ZREM', KEYS[2], old .. p) end
			redis.call('ZADD', KEYS[2], -s, h .. p)
			redis.call('HSET', KEYS[3], p, h)
		end
		applied = applied + 1
	end
end
return applied
`)

// playerScript returns {0} when the board is not built (KEYS[2] missing),
// {1} for an unknown player, else {2, score, number of players above}.
var playerScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return {0} end
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return {1} end
return {2, s, redis.call('ZCOUNT', KEYS[1], '(' .. s, '+inf')}
`)

// Apply stores absolute score changes, pipelined: one round trip for the
// whole slice, one script call per 256 changes, each atomic for readers.
// It is monotonic: a change older than what is stored (a lower score, or the
// same score reached earlier) is ignored, so applying a change twice, or
// batches out of order, changes nothing. Changes are validated first; a bad
// one fails the call (ErrInvalid) before anything is written.
func (s *Store) Apply(ctx context.Context, changes []ScoreChange) error {
	if len(changes) == 0 {
		return nil
	}
	for _, c := range changes {
		if err := checkChange(c); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	if err := s.applyTo(ctx, changes, s.scores, s.board, s.pos); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	return nil
}

func checkChange(c ScoreChange) error {
	switch {
	case c.Player == "":
		return fmt.Errorf("%w: empty player id", ErrInvalid)
	case c.Score < 0 || c.Score > MaxScore:
		return fmt.Errorf("%w: player %s: score %d outside [0, 2^53]", ErrInvalid, c.Player, c.Score)
	}
	return nil
}

// applyTo runs applyScript over changes against the given keys in one
// pipeline. A Redis that lost its script cache (restart, SCRIPT FLUSH)
// answers NOSCRIPT: the script is loaded and the whole pipeline sent again,
// which is harmless since applying is idempotent.
func (s *Store) applyTo(ctx context.Context, changes []ScoreChange, scores, board, pos string) error {
	keys := []string{scores, board, pos}
	args := make([]any, 0, 3*min(len(changes), chunk))
	for attempt := 0; ; attempt++ {
		pipe := s.c.Pipeline()
		for lo := 0; lo < len(changes); lo += chunk {
			args = args[:0]
			for _, c := range changes[lo:min(lo+chunk, len(changes))] {
				args = append(args, c.Player, c.Score, posHex(c.ReachedPos))
			}
			applyScript.EvalSha(ctx, pipe, keys, args...)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			return nil
		}
		if attempt > 0 || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return err
		}
		if err := applyScript.Load(ctx, s.c).Err(); err != nil {
			return fmt.Errorf("load script: %w", err)
		}
	}
}

// posHex is a position as 16 lowercase hex digits: byte order = numeric order.
func posHex(p uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[p&0xf]
		p >>= 4
	}
	return string(b[:])
}

// Seen records players as known (they have moved) with score 0, leaving
// players already known as they are (ZADD NX). One round trip.
func (s *Store) Seen(ctx context.Context, players []string) error {
	if len(players) == 0 {
		return nil
	}
	members := make([]redis.Z, len(players))
	for i, p := range players {
		if p == "" {
			return fmt.Errorf("seen: %w: empty player id", ErrInvalid)
		}
		members[i] = redis.Z{Member: p}
	}
	pipe := s.c.Pipeline()
	for lo := 0; lo < len(members); lo += 1024 {
		pipe.ZAddNX(ctx, s.scores, members[lo:min(lo+1024, len(members))]...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("seen: %w", err)
	}
	return nil
}

// Leaderboard returns the first limit players with a score (> 0) in
// leaderboard order with their ranks, and the number of players with a
// score, read atomically (MULTI) in one round trip: O(log n + limit).
// It returns ErrNotBuilt when the board has not been built. limit must be >= 0.
func (s *Store) Leaderboard(ctx context.Context, limit int) ([]game.Entry, int64, error) {
	if limit < 0 {
		return nil, 0, fmt.Errorf("leaderboard: %w: limit %d < 0", ErrInvalid, limit)
	}
	var (
		built *redis.IntCmd
		top   *redis.ZSliceCmd
		count *redis.IntCmd
	)
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		built = p.Exists(ctx, s.marker)
		if limit > 0 {
			top = p.ZRangeWithScores(ctx, s.board, 0, int64(limit)-1)
		}
		count = p.ZCount(ctx, s.scores, "(0", "+inf")
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("leaderboard: %w", err)
	}
	if built.Val() == 0 {
		return nil, 0, ErrNotBuilt
	}
	var entries []game.Entry
	if top != nil {
		zs := top.Val()
		entries = make([]game.Entry, 0, len(zs))
		for _, z := range zs {
			m, _ := z.Member.(string)
			if len(m) < 16 {
				return nil, 0, fmt.Errorf("leaderboard: malformed board member %q", m)
			}
			entries = append(entries, game.Entry{Player: m[16:], Score: -int64(z.Score)})
		}
		game.RankTop(entries)
	}
	return entries, count.Val(), nil
}

// Player returns a player's score and rank in one round trip (a read-only
// script: ZSCORE then ZCOUNT, O(log n)). found is false for a player never
// seen. It returns ErrNotBuilt when the board has not been built.
func (s *Store) Player(ctx context.Context, id string) (e game.Entry, found bool, err error) {
	v, err := playerScript.Run(ctx, s.c, []string{s.scores, s.marker}, id).Slice()
	if err != nil {
		return game.Entry{}, false, fmt.Errorf("player: %w", err)
	}
	code, _ := v[0].(int64)
	switch {
	case code == 0:
		return game.Entry{}, false, ErrNotBuilt
	case code == 1:
		return game.Entry{}, false, nil
	case len(v) != 3:
		return game.Entry{}, false, fmt.Errorf("player: unexpected reply %v", v)
	}
	str, _ := v[1].(string)
	score, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return game.Entry{}, false, fmt.Errorf("player: score %q: %w", str, err)
	}
	above, _ := v[2].(int64)
	return game.Entry{Player: id, Score: int64(score), Rank: above + 1}, true, nil
}

// Empty reports whether the board needs a Rebuild: this Redis was never
// filled, or has been flushed or restarted without its data since.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	n, err := s.c.Exists(ctx, s.marker).Result()
	if err != nil {
		return false, fmt.Errorf("empty: %w", err)
	}
	return n == 0, nil
}

// rebuildTTL bounds the life of a Rebuild's temporary keys should the
// process die before the swap; every flush renews it.
const rebuildTTL = 10 * time.Minute

// rebuildBatch is the number of scores sent per round trip by Rebuild.
const rebuildBatch = 4096

// Rebuild replaces the whole board with the scores src yields (typically
// pgstore.Store.AllScores: every known player once, zero scores included).
// It builds under temporary keys with plain variadic ZADD and HSET, pipelined
// (a few commands per 4,096 players), then swaps them in with RENAME inside
// MULTI/EXEC and sets the built marker, so readers see the old board (or
// ErrNotBuilt) until the new one is complete, never a half-built one. The
// temporary keys expire by themselves if the process dies midway; on error
// they are removed and the live board is left as it was.
//
// src calls yield for each score and returns the first error yield returns;
// Rebuild's memory does not grow with the number of players. src must yield
// each player at most once: a player yielded twice with different positions
// fails the rebuild before the swap.
//
// Changes applied with Apply while Rebuild runs are lost if src's snapshot
// predates them: pause Apply, or apply those changes again after Rebuild
// returns (Apply is idempotent, so re-applying is always safe). Two
// concurrent Rebuilds are safe: the last swap wins.
func (s *Store) Rebuild(ctx context.Context, src func(yield func(ScoreChange) error) error) (err error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	tScores, tBoard, tPos := s.keys(hex.EncodeToString(b[:]))
	defer func() {
		if err != nil {
			// Best effort: the keys expire anyway.
			s.c.Del(context.WithoutCancel(ctx), tScores, tBoard, tPos)
		}
	}()
	var (
		scores  = make([]redis.Z, 0, rebuildBatch)
		board   = make([]redis.Z, 0, rebuildBatch)
		pos     = make([]any, 0, 2*rebuildBatch)
		known   int // players yielded
		scoring int // players yielded with a score
	)
	flush := func() error {
		if len(scores) == 0 {
			return nil
		}
		pipe := s.c.Pipeline()
		pipe.ZAdd(ctx, tScores, scores...)
		if len(board) > 0 {
			pipe.ZAdd(ctx, tBoard, board...)
			pipe.HSet(ctx, tPos, pos...)
		}
		for _, k := range []string{tScores, tBoard, tPos} {
			pipe.Expire(ctx, k, rebuildTTL)
		}
		_, err := pipe.Exec(ctx)
		scores, board, pos = scores[:0], board[:0], pos[:0]
		return err
	}
	err = src(func(c ScoreChange) error {
		if err := checkChange(c); err != nil {
			return err
		}
		known++
		scores = append(scores, redis.Z{Score: float64(c.Score), Member: c.Player})
		if c.Score > 0 {
			scoring++
			h := posHex(c.ReachedPos)
			board = append(board, redis.Z{Score: -float64(c.Score), Member: h + c.Player})
			pos = append(pos, c.Player, h)
		}
		if len(scores) == rebuildBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	// A player yielded twice with different positions leaves two board
	// members for one pos entry: refuse it rather than list a player twice.
	if scoring > 0 {
		pipe := s.c.Pipeline()
		nBoard := pipe.ZCard(ctx, tBoard)
		nPos := pipe.HLen(ctx, tPos)
		if _, err = pipe.Exec(ctx); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		if nBoard.Val() != nPos.Val() {
			err = fmt.Errorf("%w: the source yielded a player twice (%d board members for %d players)", ErrInvalid, nBoard.Val(), nPos.Val())
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		swap := func(tmp, live string, exists bool) {
			if exists {
				p.Rename(ctx, tmp, live)
				p.Persist(ctx, live)
			} else {
				p.Del(ctx, live)
			}
		}
		swap(tScores, s.scores, known > 0)
		swap(tBoard, s.board, scoring > 0)
		swap(tPos, s.pos, scoring > 0)
		p.Set(ctx, s.marker, "1", 0)
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	return nil
}

// CountAbove returns, for each score, the number of players with a
// strictly higher score (rank - 1), with one ZCOUNT per distinct score in
// one pipelined round trip, O(log n) each. It returns ErrNotBuilt when the
// board has not been built.
func (s *Store) CountAbove(ctx context.Context, scores []int64) ([]int64, error) {
	if len(scores) == 0 {
		return nil, nil
	}
	pipe := s.c.Pipeline()
	built := pipe.Exists(ctx, s.marker)
	cmds := make(map[int64]*redis.IntCmd, len(scores))
	for _, v := range scores {
		if cmds[v] == nil {
			cmds[v] = pipe.ZCount(ctx, s.scores, "("+strconv.FormatInt(v, 10), "+inf")
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("count above: %w", err)
	}
	if built.Val() == 0 {
		return nil, ErrNotBuilt
	}
	out := make([]int64, len(scores))
	for i, v := range scores {
		out[i] = cmds[v].Val()
	}
	return out, nil
}
