package redisstore_test

// One suite for every store that answers the leaderboard (STYLE.md: one
// shared suite per interface), run against PostgreSQL alone, against Redis
// fed with pgstore's changes (the ranker's live path), and against Redis
// rebuilt from PostgreSQL before every read (the recovery path). The test
// imports both adapters; the adapters themselves never import each other.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"treasure/internal/game"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
	"treasure/internal/testenv"
)

// entry is a leaderboard line as both stores report it.
type entry struct {
	Player      string
	Score, Rank int64
}

// scoreboard is the leaderboard as the ranker writes it and push reads it.
type scoreboard interface {
	claim(tb testing.TB, batch ...pgstore.Claim)
	see(tb testing.TB, players ...string)
	top(tb testing.TB, limit int) ([]entry, int64)
	player(tb testing.TB, id string) (entry, bool)
	// above returns, for each score, the number of players with a
	// strictly higher score (what the ranker ranks its claims with).
	above(tb testing.TB, scores []int64) []int64
}

func newPG(tb testing.TB) *pgstore.Store {
	tb.Helper()
	pool, _ := testenv.Postgres(tb)
	if err := pgstore.Migrate(tb.Context(), pool); err != nil {
		tb.Fatal(err)
	}
	return pgstore.New(pool)
}

func newRedis(tb testing.TB) *redisstore.Store {
	tb.Helper()
	c, prefix := testenv.Redis(tb)
	return redisstore.New(c, prefix)
}

// pgBoard writes and reads PostgreSQL alone (push's fallback).
type pgBoard struct{ pg *pgstore.Store }

func (b pgBoard) claim(tb testing.TB, batch ...pgstore.Claim) {
	tb.Helper()
	if _, err := b.pg.ApplyClaims(tb.Context(), batch); err != nil {
		tb.Fatal(err)
	}
}

func (b pgBoard) see(tb testing.TB, players ...string) {
	tb.Helper()
	if err := b.pg.SeePlayers(tb.Context(), players); err != nil {
		tb.Fatal(err)
	}
}

func (b pgBoard) top(tb testing.TB, limit int) ([]entry, int64) {
	tb.Helper()
	top, n, err := b.pg.Leaderboard(tb.Context(), limit)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]entry, len(top))
	for i, e := range top {
		out[i] = entry(e)
	}
	return out, n
}

func (b pgBoard) player(tb testing.TB, id string) (entry, bool) {
	tb.Helper()
	e, ok, err := b.pg.Player(tb.Context(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return entry(e), ok
}

func (b pgBoard) above(tb testing.TB, scores []int64) []int64 {
	tb.Helper()
	ranks, err := b.pg.Ranks(tb.Context(), scores)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range ranks {
		ranks[i]--
	}
	return ranks
}

// redisBoard writes PostgreSQL, applies the returned changes to Redis (each
// twice: Apply must be idempotent) and reads Redis.
type redisBoard struct {
	pgBoard
	rs *redisstore.Store
}

func newRedisBoard(tb testing.TB) redisBoard {
	tb.Helper()
	b := redisBoard{pgBoard{newPG(tb)}, newRedis(tb)}
	rebuild(tb, b.rs, b.pg) // marks the empty board built
	return b
}

func (b redisBoard) claim(tb testing.TB, batch ...pgstore.Claim) {
	tb.Helper()
	changes, err := b.pg.ApplyClaims(tb.Context(), batch)
	if err != nil {
		tb.Fatal(err)
	}
	rc := make([]redisstore.ScoreChange, len(changes))
	for i, c := range changes {
		rc[i] = redisstore.ScoreChange(c)
	}
	for range 2 {
		if err := b.rs.Apply(tb.Context(), rc); err != nil {
			tb.Fatal(err)
		}
	}
}

func (b redisBoard) see(tb testing.TB, players ...string) {
	tb.Helper()
	b.pgBoard.see(tb, players...)
	if err := b.rs.Seen(tb.Context(), players); err != nil {
		tb.Fatal(err)
	}
}

func (b redisBoard) top(tb testing.TB, limit int) ([]entry, int64) {
	tb.Helper()
	top, n, err := b.rs.Leaderboard(tb.Context(), limit)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]entry, len(top))
	for i, e := range top {
		out[i] = entry(e)
	}
	return out, n
}

func (b redisBoard) player(tb testing.TB, id string) (entry, bool) {
	tb.Helper()
	e, ok, err := b.rs.Player(tb.Context(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return entry(e), ok
}

func (b redisBoard) above(tb testing.TB, scores []int64) []int64 {
	tb.Helper()
	n, err := b.rs.CountAbove(tb.Context(), scores)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// rebuiltBoard writes PostgreSQL only and rebuilds Redis from it before
// every read.
type rebuiltBoard struct{ redisBoard }

func (b rebuiltBoard) claim(tb testing.TB, batch ...pgstore.Claim) { b.pgBoard.claim(tb, batch...) }
func (b rebuiltBoard) see(tb testing.TB, players ...string)        { b.pgBoard.see(tb, players...) }

func (b rebuiltBoard) top(tb testing.TB, limit int) ([]entry, int64) {
	tb.Helper()
	rebuild(tb, b.rs, b.pg)
	return b.redisBoard.top(tb, limit)
}

func (b rebuiltBoard) player(tb testing.TB, id string) (entry, bool) {
	tb.Helper()
	rebuild(tb, b.rs, b.pg)
	return b.redisBoard.player(tb, id)
}

func (b rebuiltBoard) above(tb testing.TB, scores []int64) []int64 {
	tb.Helper()
	rebuild(tb, b.rs, b.pg)
	return b.redisBoard.above(tb, scores)
}

func rebuild(tb testing.TB, rs *redisstore.Store, pg *pgstore.Store) {
	tb.Helper()
	if err := rs.Rebuild(tb.Context(), fromPG(tb.Context(), pg)); err != nil {
		tb.Fatal(err)
	}
}

// fromPG is the ranker's wiring of a rebuild: PostgreSQL's scores as a
// Rebuild source.
func fromPG(ctx context.Context, pg *pgstore.Store) func(func(redisstore.ScoreChange) error) error {
	return func(yield func(redisstore.ScoreChange) error) error {
		return pg.AllScores(ctx, func(c pgstore.ScoreChange) error { return yield(redisstore.ScoreChange(c)) })
	}
}

var boards = []struct {
	name string
	new  func(testing.TB) scoreboard
}{
	{"postgres", func(tb testing.TB) scoreboard { return pgBoard{newPG(tb)} }},
	{"redis", func(tb testing.TB) scoreboard { return newRedisBoard(tb) }},
	{"redis-rebuilt", func(tb testing.TB) scoreboard { return rebuiltBoard{newRedisBoard(tb)} }},
}

func TestScoreboards(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		run  func(t *testing.T, b scoreboard)
	}{
		{"redelivered and overlapping claims count once", testIdempotent},
		{"equal scores share a rank, listed by who reached them first", testTies},
		{"limit cuts ties in listing order", testLimits},
		{"players counts only players with a score", testPlayersCount},
		{"unknown player is not found, seen player has score 0", testUnknownAndSeen},
		{"claims applied out of log order give the same board", testOutOfOrder},
		{"random game matches a reference model", testRandom},
	}
	for _, impl := range boards {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, impl.new(t))
				})
			}
		})
	}
}

func cl(treasure, player string, points int64, pos uint64) pgstore.Claim {
	return pgstore.Claim{Treasure: treasure, Player: player, Points: points, Node: 1, Seq: pos, Pos: pos}
}

func wantTop(tb testing.TB, b scoreboard, limit int, want []entry, wantPlayers int64) {
	tb.Helper()
	got, n := b.top(tb, limit)
	if !slices.Equal(got, want) || n != wantPlayers {
		tb.Fatalf("top(%d) = %v, players %d\nwant      %v, players %d", limit, got, n, want, wantPlayers)
	}
}

func wantPlayer(tb testing.TB, b scoreboard, id string, score, rank int64) {
	tb.Helper()
	got, found := b.player(tb, id)
	if want := (entry{id, score, rank}); !found || got != want {
		tb.Fatalf("player(%s) = %+v found=%v, want %+v", id, got, found, want)
	}
}

func testIdempotent(t *testing.T, b scoreboard) {
	batch := []pgstore.Claim{cl("t1", "ann", 5, 1), cl("t2", "bob", 3, 2), cl("t1", "ann", 5, 1)}
	b.claim(t, batch...)
	b.claim(t, batch...)
	b.claim(t, cl("t2", "bob", 3, 2), cl("t3", "bob", 4, 3), cl("t1", "cat", 5, 4))
	wantTop(t, b, 10, []entry{{"bob", 7, 1}, {"ann", 5, 2}}, 2)
	wantPlayer(t, b, "ann", 5, 2)
	if _, found := b.player(t, "cat"); found {
		t.Fatal("cat, whose only claim was an already claimed treasure, is known")
	}
}

func testTies(t *testing.T, b scoreboard) {
	// zed reaches 10 first, then amy; ids sort the other way.
	b.claim(t, cl("a", "zed", 4, 1), cl("b", "amy", 6, 2), cl("c", "top", 20, 3))
	b.claim(t, cl("d", "zed", 6, 4), cl("e", "amy", 4, 5), cl("f", "low", 1, 6))
	want := []entry{{"top", 20, 1}, {"zed", 10, 2}, {"amy", 10, 2}, {"low", 1, 4}}
	wantTop(t, b, 10, want, 4)
	wantPlayer(t, b, "amy", 10, 2)
	wantPlayer(t, b, "zed", 10, 2)
	wantPlayer(t, b, "low", 1, 4)
	// amy moves ahead; zed now alone at 10.
	b.claim(t, cl("g", "amy", 1, 7))
	wantTop(t, b, 10, []entry{{"top", 20, 1}, {"amy", 11, 2}, {"zed", 10, 3}, {"low", 1, 4}}, 4)
	// low catches up to 10 last: listed after zed, same rank.
	b.claim(t, cl("h", "low", 9, 8))
	wantTop(t, b, 10, []entry{{"top", 20, 1}, {"amy", 11, 2}, {"zed", 10, 3}, {"low", 10, 3}}, 4)
}

func testLimits(t *testing.T, b scoreboard) {
	b.claim(t, cl("a", "p1", 9, 1), cl("b", "p3", 5, 2), cl("c", "p2", 5, 3), cl("d", "p4", 5, 4), cl("e", "p5", 1, 5))
	all := []entry{{"p1", 9, 1}, {"p3", 5, 2}, {"p2", 5, 2}, {"p4", 5, 2}, {"p5", 1, 5}}
	for limit := 0; limit <= len(all)+2; limit++ {
		wantTop(t, b, limit, all[:min(limit, len(all))], 5)
	}
	wantTop(t, b, 1000, all, 5)
}

func testPlayersCount(t *testing.T, b scoreboard) {
	wantTop(t, b, 10, []entry{}, 0)
	b.see(t, "idle1", "idle2")
	wantTop(t, b, 10, []entry{}, 0)
	b.claim(t, cl("a", "idle1", 2, 1), cl("b", "fresh", 3, 2))
	wantTop(t, b, 10, []entry{{"fresh", 3, 1}, {"idle1", 2, 2}}, 2)
	b.claim(t, cl("c", "idle1", 2, 3)) // scores again: still one player
	wantTop(t, b, 1, []entry{{"idle1", 4, 1}}, 2)
}

func testUnknownAndSeen(t *testing.T, b scoreboard) {
	if e, found := b.player(t, "ghost"); found {
		t.Fatalf("never seen player found: %+v", e)
	}
	b.see(t, "walker")
	wantPlayer(t, b, "walker", 0, 1)
	b.claim(t, cl("a", "ann", 3, 1), cl("b", "bob", 3, 2), cl("c", "cat", 1, 3))
	wantPlayer(t, b, "walker", 0, 4)
	b.see(t, "ann", "walker") // seeing again never resets a score
	wantPlayer(t, b, "ann", 3, 1)
	wantPlayer(t, b, "cat", 1, 3)
	wantTop(t, b, 10, []entry{{"ann", 3, 1}, {"bob", 3, 1}, {"cat", 1, 3}}, 3)
}

func testOutOfOrder(t *testing.T, b scoreboard) {
	// In log order: bob reaches 5 at 2, ann reaches 5 at 4. Applied in
	// reverse batches, ann's later claim first.
	b.claim(t, cl("c", "ann", 3, 4))
	b.claim(t, cl("a", "ann", 2, 1), cl("b", "bob", 5, 2))
	wantTop(t, b, 10, []entry{{"bob", 5, 1}, {"ann", 5, 1}}, 2)
}

// model is the reference: SPEC's rules computed the obvious way.
type model struct {
	claimed map[string]bool
	score   map[string]int64
	reached map[string]uint64
}

func (m *model) apply(c pgstore.Claim) {
	if m.claimed[c.Treasure] {
		return
	}
	m.claimed[c.Treasure] = true
	m.score[c.Player] += c.Points
	m.reached[c.Player] = max(m.reached[c.Player], c.Pos)
}

func (m *model) board() []entry {
	var out []entry
	for p, s := range m.score {
		if s > 0 {
			out = append(out, entry{Player: p, Score: s})
		}
	}
	slices.SortFunc(out, func(a, b entry) int {
		if a.Score != b.Score {
			return int(b.Score - a.Score)
		}
		if m.reached[a.Player] != m.reached[b.Player] {
			return int(m.reached[a.Player]) - int(m.reached[b.Player])
		}
		return strings.Compare(a.Player, b.Player)
	})
	for i := range out {
		out[i].Rank = 1
		for _, o := range out {
			if o.Score > out[i].Score {
				out[i].Rank++
			}
		}
	}
	return out
}

func testRandom(t *testing.T, b scoreboard) {
	r := rand.New(rand.NewPCG(11, 12))
	m := &model{map[string]bool{}, map[string]int64{}, map[string]uint64{}}
	var log []pgstore.Claim
	for i := range 400 {
		log = append(log, cl(fmt.Sprintf("t%d", i), fmt.Sprintf("p%02d", r.IntN(40)), int64(r.IntN(3)+1), uint64(i+1)))
	}
	seen := []string{"idle-a", "idle-b", "p00", "p01"}
	b.see(t, seen...)
	for _, p := range seen {
		m.score[p] += 0
	}
	// Batches of random sizes, each redelivering a few earlier claims.
	for lo := 0; lo < len(log); {
		hi := min(lo+1+r.IntN(40), len(log))
		batch := slices.Clone(log[lo:hi])
		for range r.IntN(4) {
			batch = append(batch, log[r.IntN(hi)])
		}
		r.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		b.claim(t, batch...)
		for _, c := range batch {
			m.apply(c)
		}
		lo = hi
	}
	want := m.board()
	for _, limit := range []int{1, 2, 3, 7, 10, len(want) - 1, len(want), 100} {
		wantTop(t, b, limit, want[:min(limit, len(want))], int64(len(want)))
	}
	for p, s := range m.score {
		rank := int64(1)
		for _, e := range want {
			if e.Score > s {
				rank++
			}
		}
		wantPlayer(t, b, p, s, rank)
	}
	// Counts above any score, held or not, repeated, unsorted.
	scores := []int64{want[0].Score + 1, 0, want[len(want)-1].Score, 3, want[0].Score, 3, 1, 2, 1000}
	got := b.above(t, scores)
	for i, s := range scores {
		n := int64(0)
		for _, e := range want {
			if e.Score > s {
				n++
			}
		}
		if got[i] != n {
			t.Fatalf("above(%d) = %d, want %d (asked %v, got %v)", s, got[i], n, scores, got)
		}
	}
}

func TestRebuildAfterFlushAnswersAsBefore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, prefix := testenv.Redis(t)
	pg := newPG(t)
	rs := redisstore.New(c, prefix)
	b := redisBoard{pgBoard{pg}, rs}
	rebuild(t, rs, pg)
	r := rand.New(rand.NewPCG(5, 6))
	for lo := 0; lo < 300; lo += 20 {
		var batch []pgstore.Claim
		for i := lo; i < lo+20; i++ {
			batch = append(batch, cl(fmt.Sprintf("t%d", i), fmt.Sprintf("p%d", r.IntN(60)), int64(r.IntN(5)+1), uint64(i+1)))
		}
		b.claim(t, batch...)
	}
	b.see(t, "idle")
	players := []string{"idle", "ghost"}
	for i := range 60 {
		players = append(players, fmt.Sprintf("p%d", i))
	}
	type answer struct {
		e     entry
		found bool
	}
	snapshot := func() ([]entry, int64, []answer) {
		top, n := b.top(t, 1000)
		var as []answer
		for _, p := range players {
			e, found := b.player(t, p)
			as = append(as, answer{e, found})
		}
		return top, n, as
	}
	top, n, answers := snapshot()
	if empty, err := rs.Empty(ctx); err != nil || empty {
		t.Fatalf("Empty before the flush = %v, %v; want false", empty, err)
	}

	// Flush: remove every key under the prefix, as FLUSHALL would.
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys under %q: %v %v", prefix, keys, err)
	}
	if err := c.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if empty, err := rs.Empty(ctx); err != nil || !empty {
		t.Fatalf("Empty after the flush = %v, %v; want true", empty, err)
	}
	if _, _, err := rs.Leaderboard(ctx, 10); !errors.Is(err, redisstore.ErrNotBuilt) {
		t.Fatalf("Leaderboard after the flush: err = %v, want ErrNotBuilt", err)
	}
	if _, _, err := rs.Player(ctx, "p1"); !errors.Is(err, redisstore.ErrNotBuilt) {
		t.Fatalf("Player after the flush: err = %v, want ErrNotBuilt", err)
	}

	rebuild(t, rs, pg)
	if empty, err := rs.Empty(ctx); err != nil || empty {
		t.Fatalf("Empty after Rebuild = %v, %v; want false", empty, err)
	}
	top2, n2, answers2 := snapshot()
	if !slices.Equal(top, top2) || n != n2 || !slices.Equal(answers, answers2) {
		t.Fatalf("after rebuild:\ntop %v players %d\n%v\nbefore:\ntop %v players %d\n%v", top2, n2, answers2, top, n, answers)
	}
	left, err := c.Keys(ctx, prefix+"*tmp*").Result()
	if err != nil || len(left) != 0 {
		t.Fatalf("temporary keys left after Rebuild: %v %v", left, err)
	}
}

func TestRebuildSwapsAtomically(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, prefix := testenv.Redis(t)
	rs := redisstore.New(c, prefix)
	old := []redisstore.ScoreChange{sc("old1", 5, 1), sc("old2", 3, 2)}
	if err := rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
		for _, c := range old {
			if err := yield(c); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantOld := []game.Entry{rentry("old1", 5, 1), rentry("old2", 3, 2)}
	check := func(when string, want []game.Entry, wantN int64) {
		t.Helper()
		top, n, err := rs.Leaderboard(ctx, 10)
		if err != nil || !slices.Equal(top, want) || n != wantN {
			t.Fatalf("%s: top %v players %d err %v, want %v players %d", when, top, n, err, want, wantN)
		}
	}
	// A rebuild of 5,000 players (more than one flush) that fails midway
	// leaves the old board, untouched, visible throughout.
	boom := errors.New("source failed")
	err := rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
		for i := range 5000 {
			if err := yield(redisstore.ScoreChange{Player: fmt.Sprintf("n%d", i), Score: int64(i + 1), ReachedPos: uint64(i + 1)}); err != nil {
				return err
			}
			if i == 4500 {
				check("during rebuild", wantOld, 2)
			}
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed rebuild: err = %v, want the source's error", err)
	}
	check("after a failed rebuild", wantOld, 2)
	if left, err := c.Keys(ctx, prefix+"*tmp*").Result(); err != nil || len(left) != 0 {
		t.Fatalf("temporary keys left after a failed Rebuild: %v %v", left, err)
	}
	// A source that yields a player twice is refused, the old board kept.
	err = rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
		for _, c := range []redisstore.ScoreChange{sc("twice", 4, 1), sc("once", 2, 2), sc("twice", 5, 3)} {
			if err := yield(c); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, redisstore.ErrInvalid) {
		t.Fatalf("rebuild from a source yielding a player twice: err = %v, want ErrInvalid", err)
	}
	check("after a refused rebuild", wantOld, 2)
	// A successful one replaces everything, the old players included.
	err = rs.Rebuild(ctx, func(yield func(redisstore.ScoreChange) error) error {
		return yield(redisstore.ScoreChange{Player: "new", Score: 1, ReachedPos: 9})
	})
	if err != nil {
		t.Fatal(err)
	}
	check("after rebuild", []game.Entry{rentry("new", 1, 1)}, 1)
	if _, found, err := rs.Player(ctx, "old1"); err != nil || found {
		t.Fatalf("old1 after rebuild: found=%v err=%v, want gone", found, err)
	}
	// Rebuilding from nothing gives an empty, built board.
	if err := rs.Rebuild(ctx, func(func(redisstore.ScoreChange) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	check("after an empty rebuild", []game.Entry{}, 0)
}

func TestApplyIsMonotonic(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rs := newRedis(t)
	if err := rs.Rebuild(ctx, func(func(redisstore.ScoreChange) error) error { return nil }); err != nil {
		t.Fatal(err)
	}
	apply := func(cs ...redisstore.ScoreChange) {
		t.Helper()
		if err := rs.Apply(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	apply(sc("ann", 5, 10), sc("bob", 5, 20))
	// Stale changes (lower score; same score reached earlier) are ignored,
	// as is a change listed twice.
	apply(sc("ann", 3, 4), sc("bob", 5, 15), sc("bob", 5, 20))
	if err := rs.Seen(ctx, []string{"ann", "cat"}); err != nil {
		t.Fatal(err)
	}
	top, n, err := rs.Leaderboard(ctx, 10)
	want := []game.Entry{rentry("ann", 5, 1), rentry("bob", 5, 1)}
	if err != nil || !slices.Equal(top, want) || n != 2 {
		t.Fatalf("top %v players %d err %v, want %v players 2", top, n, err, want)
	}
	// Positions beyond 2^53 still order exactly (compared as hex halves).
	apply(sc("ann", 7, 1<<60+1), sc("bob", 7, 1<<60), sc("ann", 7, 1<<60))
	top, _, err = rs.Leaderboard(ctx, 10)
	want = []game.Entry{rentry("bob", 7, 1), rentry("ann", 7, 1)}
	if err != nil || !slices.Equal(top, want) {
		t.Fatalf("top %v err %v, want %v", top, err, want)
	}
	// The same score at a later position wins, as pgstore's greatest() does.
	apply(sc("ann", 8, 1<<60+3), sc("bob", 8, 1<<60+5), sc("ann", 8, 1<<60+9))
	top, _, err = rs.Leaderboard(ctx, 10)
	want = []game.Entry{rentry("bob", 8, 1), rentry("ann", 8, 1)}
	if err != nil || !slices.Equal(top, want) {
		t.Fatalf("top %v err %v, want %v", top, err, want)
	}
	for _, bad := range []redisstore.ScoreChange{sc("", 1, 1), sc("x", -1, 1), sc("x", redisstore.MaxScore+1, 1)} {
		if err := rs.Apply(ctx, []redisstore.ScoreChange{bad}); !errors.Is(err, redisstore.ErrInvalid) {
			t.Fatalf("Apply(%+v): err = %v, want ErrInvalid", bad, err)
		}
	}
}

func sc(player string, score int64, pos uint64) redisstore.ScoreChange {
	return redisstore.ScoreChange{Player: player, Score: score, ReachedPos: pos}
}

func rentry(player string, score, rank int64) game.Entry {
	return game.Entry{Player: player, Score: score, Rank: rank}
}
