package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	"github.com/redis/go-redis/v9"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/eventrow"
	"treasure/internal/graph"
	"treasure/internal/history"
	"treasure/internal/natsjs"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

const analystSecret = "analyst-secret"

// smallGame is a hand-made game played on the real pipeline (the four
// services in-process on amsterdam, 2 partitions, radius 2000):
//
//	drop gold (5) on b1, silver (3) on b2, ruby (5) on b3, spare (1) on c
//	ann, bob, cat spawn on a1, a3, a2 (neighbours of b1, b3, b2)
//	ann a1→b1: claims gold      ann 5
//	bob a3→b3: claims ruby      ann 5, bob 5 (ann reached 5 first)
//	cat a2→b2: claims silver    ann 5, bob 5, cat 3
//	bob b3→a3
type smallGame struct {
	g          *graph.Graph
	grPath     string
	sp         stacktest.Pipeline
	env        map[string]string
	a, b       [3]uint32 // indices
	c          uint32
	seqOf      map[string]uint64 // "ann/2" → IN stream seq of that move
	timeOf     map[uint64]time.Time
	httpIngest string
	httpPush   string
}

func playSmallGame(t *testing.T) *smallGame {
	t.Helper()
	grPath := testgraph.Path(t, "amsterdam.gr.gz")
	g, err := graph.LoadDIMACS(grPath)
	if err != nil {
		t.Fatal(err)
	}
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: analystSecret})
	s := &smallGame{g: g, grPath: grPath, sp: sp, seqOf: map[string]uint64{}, timeOf: map[uint64]time.Time{},
		httpIngest: "http" + strings.TrimPrefix(sp.IngestURL, "ws"), httpPush: "http" + strings.TrimPrefix(sp.PushURL, "ws")}
	s.env = map[string]string{"TREASURE_NATS_URL": sp.NATSURL, "TREASURE_STREAM_PREFIX": sp.StreamPrefix,
		"TREASURE_PARTITIONS": "2", "TREASURE_GRAPH": grPath, "TREASURE_RADIUS": "2000", "TREASURE_LOG_LEVEL": "warn",
		"TREASURE_REDIS_URL": testenv.RedisURL(), "TREASURE_DATABASE_URL": testenv.DatabaseURL()}
	for i, v := range []uint32{500, 30_000, 60_000} {
		s.b[i] = v
		s.a[i] = g.Neighbors(v)[0].To
	}
	s.c = 45_000
	post := func(path, sub, role, body string) {
		t.Helper()
		tok, err := auth.Sign(analystSecret, sub, role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, s.httpIngest+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %s %s: %d %s", path, body, resp.StatusCode, b.String())
		}
	}
	id := graph.ID
	post("/v1/admin/drops", "admin", "admin", fmt.Sprintf(`{"treasures":[{"id":"gold","node":%d,"points":5},{"id":"silver","node":%d,"points":3},{"id":"ruby","node":%d,"points":5},{"id":"spare","node":%d,"points":1}]}`,
		id(s.b[0]), id(s.b[1]), id(s.b[2]), id(s.c)))
	move := func(player string, seq uint64, path ...uint32) {
		t.Helper()
		ids := make([]string, len(path))
		for i, v := range path {
			ids[i] = fmt.Sprint(id(v))
		}
		post("/v1/moves", player, "", fmt.Sprintf(`{"type":"move","seq":%d,"path":[%s]}`, seq, strings.Join(ids, ",")))
	}
	score := func(player string, want int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var e struct{ Score int64 }
			resp, err := http.Get(s.httpPush + "/v1/players/" + player)
			if err == nil {
				if resp.StatusCode == 200 {
					json.NewDecoder(resp.Body).Decode(&e)
				}
				resp.Body.Close()
				if e.Score == want {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("player %s: score %d, want %d, not within 30 s", player, e.Score, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	move("ann", 1, s.a[0])
	move("bob", 1, s.a[2])
	move("cat", 1, s.a[1])
	move("ann", 2, s.a[0], s.b[0])
	score("ann", 5)
	move("bob", 2, s.a[2], s.b[2])
	score("bob", 5)
	move("cat", 2, s.a[1], s.b[1])
	score("cat", 3)
	move("bob", 3, s.b[2], s.a[2])

	// Quiet: every move's result on P_OUT and the ranker caught up.
	nc := testenv.ConnectNATS(t, sp.NATSURL)
	jsc, err := natsjsNew(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := history.ReadOut(ctx, nil, jsc, sp.Topology, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := out.Results[history.MoveKey{Player: "bob", Seq: 3}]; ok && len(out.Results) == 7 && len(out.Scores) == 3 && lastSnapshot(t, jsc, sp.Topology) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline not quiet within 30 s: %d results, %d score changes on P_OUT", len(out.Results), len(out.Scores))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The IN sequence (and time) of every move.
	var rd event.Reader
	var mv event.Move
	err = natsjs.Replay(ctx, jsc, natsjs.ReplayOptions{Stream: sp.Topology.InStream()}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			s.timeOf[m.Seq] = m.Time
			if rd.Reset(m.Data) != nil {
				continue
			}
			for rd.Next() {
				if rd.Kind() == event.KindMove && rd.Move(&mv) == nil {
					s.seqOf[fmt.Sprintf("%s/%d", mv.Player, mv.Seq)] = m.Seq
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.seqOf) != 7 {
		t.Fatalf("moves on IN: %v", s.seqOf)
	}
	return s
}

type boardJSON struct {
	At  history.Point `json:"at"`
	Top []struct {
		Player string
		Score  int64
		Rank   int64
	} `json:"top"`
	Players int64                `json:"players"`
	Player  *history.PlayerState `json:"player"`
}

func (b boardJSON) lines() string {
	var s []string
	for _, e := range b.Top {
		s = append(s, fmt.Sprintf("%s %d %d", e.Player, e.Score, e.Rank))
	}
	return strings.Join(s, ", ")
}

// TestPointInTimeOnSmallGame: leaderboard --at and replay --until against
// the hand-computed states of smallGame, by sequence and by time; then
// replay --verify passes, and catches a score corrupted in PostgreSQL and
// a rank missing from Redis.
func TestPointInTimeOnSmallGame(t *testing.T) {
	t.Parallel()
	s := playSmallGame(t)
	seq := func(k string) string { return fmt.Sprint(s.seqOf[k]) }
	cases := []struct {
		at      string
		want    string // leaderboard lines
		players int64
		ann     string // ann's "score rank node"
	}{
		{fmt.Sprint(s.seqOf["ann/2"] - 1), "", 0, fmt.Sprintf("0 1 %d", graph.ID(s.a[0]))},
		{seq("ann/2"), "ann 5 1", 1, fmt.Sprintf("5 1 %d", graph.ID(s.b[0]))},
		{seq("bob/2"), "ann 5 1, bob 5 1", 2, fmt.Sprintf("5 1 %d", graph.ID(s.b[0]))},
		{seq("cat/2"), "ann 5 1, bob 5 1, cat 3 3", 3, fmt.Sprintf("5 1 %d", graph.ID(s.b[0]))},
		// By time: the stream time of bob's claiming move.
		{s.timeOf[s.seqOf["bob/2"]].UTC().Format(time.RFC3339Nano), "ann 5 1, bob 5 1", 2, fmt.Sprintf("5 1 %d", graph.ID(s.b[0]))},
	}
	for _, c := range cases {
		code, out, errs := runCLI(t, "", s.env, "leaderboard", "--at", c.at, "--player", "ann", "--json", "--quiet")
		if code != 0 {
			t.Fatalf("leaderboard --at %s: exit %d: %s", c.at, code, errs)
		}
		var b boardJSON
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		ann := fmt.Sprintf("%d %d %d", b.Player.Score, b.Player.Rank, b.Player.Node)
		if b.lines() != c.want || b.Players != c.players || ann != c.ann {
			t.Errorf("leaderboard --at %s: top %q players %d ann %q; want %q, %d, %q", c.at, b.lines(), b.Players, ann, c.want, c.players, c.ann)
		}
		if errs != "" {
			t.Errorf("--quiet, yet stderr: %q", errs)
		}
	}

	// replay --until: the whole state after bob's claim.
	code, out, errs := runCLI(t, "", s.env, "replay", "--until", seq("bob/2"), "--json", "--quiet", "--player", "cat")
	if code != 0 {
		t.Fatalf("replay --until: exit %d: %s", code, errs)
	}
	var st struct {
		At     history.Point        `json:"at"`
		Claims []history.Claim      `json:"claims"`
		Active []history.Treasure   `json:"active_treasures"`
		Player *history.PlayerState `json:"player"`
		Board  struct {
			Players int64 `json:"players"`
		} `json:"leaderboard"`
		Players []history.PlayerState `json:"players"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var active []string
	for _, a := range st.Active {
		active = append(active, fmt.Sprintf("%s@%d", a.ID, a.Node))
	}
	if want := []string{fmt.Sprintf("silver@%d", graph.ID(s.b[1])), fmt.Sprintf("spare@%d", graph.ID(s.c))}; !slices.Equal(active, want) {
		t.Errorf("active treasures %v, want %v", active, want)
	}
	if st.At.InSeq != s.seqOf["bob/2"] || len(st.Claims) != 2 || st.Board.Players != 2 || len(st.Players) != 3 {
		t.Errorf("state: at %d claims %d scoring %d players %d; want %d, 2, 2, 3", st.At.InSeq, len(st.Claims), st.Board.Players, len(st.Players), s.seqOf["bob/2"])
	}
	// cat, not yet on silver: score 0, rank 3, on a2; nearest as the
	// reference Dijkstra says over silver and spare.
	ref := graph.Reference(s.g, []graph.RefTreasure{{ID: "silver", Node: s.b[1]}, {ID: "spare", Node: s.c}}, 2000, s.a[1])
	p := st.Player
	if p == nil || p.Score != 0 || p.Rank != 3 || p.Node != graph.ID(s.a[1]) || p.Seq != 1 || p.Nearest == nil ||
		p.Nearest.Treasure != ref.ID || p.Nearest.Distance != uint64(ref.Dist) {
		t.Errorf("cat %+v (nearest %+v), want score 0 rank 3 node %d seq 1, nearest %+v", p, p.Nearest, graph.ID(s.a[1]), ref)
	}

	// Text output, for people.
	code, out, _ = runCLI(t, "", s.env, "leaderboard", "--quiet")
	if code != 0 || !strings.Contains(out, "3 players with a score") || !strings.Contains(out, "cat") {
		t.Errorf("leaderboard text: exit %d\n%s", code, out)
	}

	// verify: identical, then corrupted.
	verify := func() (int, string) {
		code, out, errs := runCLI(t, "", s.env, "replay", "--verify", "--quiet", "--schema", s.sp.Schema, "--redis-prefix", s.sp.RedisPrefix)
		t.Logf("verify: exit %d\n%s%s", code, out, errs)
		return code, out
	}
	if code, out := verify(); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("verify of a sound run: exit %d\n%s", code, out)
	}
	pool, err := pgxpool.New(context.Background(), testenv.SchemaURL(t, s.sp.Schema))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `UPDATE players SET score = 99 WHERE player = 'bob'`); err != nil {
		t.Fatal(err)
	}
	code, out = verify()
	if code != 1 || !regexpMatch(`postgres\s+score\s+bob\s+log: 5\s+live: 99`, out) {
		t.Fatalf("verify with bob's score corrupted in PostgreSQL: exit %d\n%s", code, out)
	}
	if _, err := pool.Exec(ctx, `UPDATE players SET score = 5 WHERE player = 'bob'`); err != nil {
		t.Fatal(err)
	}
	ropts, _ := redis.ParseURL(testenv.RedisURL())
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if n, err := rdb.ZRem(ctx, s.sp.RedisPrefix+"{lb}:scores", "cat").Result(); err != nil || n != 1 {
		t.Fatalf("ZREM cat: %d %v", n, err)
	}
	code, out = verify()
	if code != 1 || !regexpMatch(`redis\s+rank\s+cat\s+log: score 3 rank 3\s+live: \(missing\)`, out) || strings.Contains(out, "postgres") && regexpMatch(`\n\s+postgres`, out) {
		t.Fatalf("verify with cat's rank gone from Redis: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "", s.env, "replay", "--verify", "--quiet", "--json", "--schema", s.sp.Schema, "--redis-prefix", s.sp.RedisPrefix)
	var rep struct {
		OK          bool
		Differences []history.Difference
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || rep.OK || len(rep.Differences) == 0 || rep.Differences[0].Key != "cat" {
		t.Fatalf("verify --json: exit %d, %v\n%s", code, err, out)
	}
}

// TestWhatIfWritesNothing runs a what-if with another radius, treasure set
// and scoring on smallGame: its answer is the hand-computed one, its
// outputs go to the file asked for, and the log, Redis and PostgreSQL are
// exactly as before.
func TestWhatIfWritesNothing(t *testing.T) {
	t.Parallel()
	s := playSmallGame(t)
	ctx := context.Background()
	nc := testenv.ConnectNATS(t, s.sp.NATSURL)
	js, err := natsjsNew(nc)
	if err != nil {
		t.Fatal(err)
	}
	ropts, _ := redis.ParseURL(testenv.RedisURL())
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	pool, err := pgxpool.New(ctx, testenv.SchemaURL(t, s.sp.Schema))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	snapshot := func() string {
		var b strings.Builder
		for _, name := range []string{s.sp.Topology.InStream(), s.sp.Topology.OutStream(), s.sp.Topology.DLQStream()} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %d %d\n", name, info.State.Msgs, info.State.LastSeq)
		}
		keys, err := rdb.Keys(ctx, s.sp.RedisPrefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if k == s.sp.RedisPrefix+"ingests" {
				// The running ingest's liveness registration, rewritten
				// every second: not game state.
				continue
			}
			v, err := rdb.Dump(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %x\n", k, v)
		}
		for _, q := range []string{`SELECT coalesce(string_agg(player||':'||score||':'||reached_pos, ',' ORDER BY player), '') FROM players`,
			`SELECT coalesce(string_agg(treasure_id||':'||player||':'||pos, ',' ORDER BY treasure_id), '') FROM claims`,
			`SELECT scoring::text FROM board`} {
			var v string
			if err := pool.QueryRow(ctx, q).Scan(&v); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s\n", v)
		}
		return b.String()
	}
	before := snapshot()
	if !strings.Contains(before, "bob:5") {
		t.Fatalf("snapshot without the game's scores:\n%s", before)
	}
	dir := t.TempDir()
	csv := filepath.Join(dir, "t.csv")
	// x on b2 (cat's claiming node), y on a1 (ann's spawn).
	if err := os.WriteFile(csv, fmt.Appendf(nil, "id,node,points\nx,%d,7\ny,%d,2\n", graph.ID(s.b[1]), graph.ID(s.a[0])), 0o644); err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(dir, "what-if.jsonl")
	code, out, errs := runCLI(t, "", s.env, "replay", "--what-if", "--radius", "5000", "--treasures", csv, "--scoring", "count", "--out", outFile, "--json", "--quiet")
	if code != 0 {
		t.Fatalf("what-if: exit %d: %s", code, errs)
	}
	var d whatIfDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var changes []string
	for _, c := range d.Leaderboard.Changes {
		changes = append(changes, fmt.Sprintf("%s %d/%d→%d/%d", c.Player, c.RealScore, c.RealRank, c.WhatIfScore, c.WhatIfRank))
	}
	// Real: ann 5/1, bob 5/1, cat 3/3. What-if (count): ann claims y on
	// her spawn, cat claims x: ann 1/1, cat 1/1 (ann first), bob 0/3.
	if want := []string{"ann 5/1→1/1", "cat 3/3→1/1", "bob 5/1→0/3"}; !slices.Equal(changes, want) {
		t.Errorf("leaderboard changes %q, want %q", changes, want)
	}
	var top []string
	for _, e := range d.Leaderboard.WhatIf.Top {
		top = append(top, fmt.Sprintf("%s %d %d", e.Player, e.Score, e.Rank))
	}
	if want := []string{"ann 1 1", "cat 1 1"}; !slices.Equal(top, want) {
		t.Errorf("what-if top %q, want %q", top, want)
	}
	var claims []string
	for _, c := range d.Claims.Changes {
		claims = append(claims, fmt.Sprintf("%s %s→%s", c.Treasure, claimString(c.Real), claimString(c.WhatIf)))
	}
	if want := []string{"gold ann (move seq 2, 5 points)→unclaimed", "ruby bob (move seq 2, 5 points)→unclaimed",
		"silver cat (move seq 2, 3 points)→unclaimed", "x unclaimed→cat (move seq 2, 7 points)", "y unclaimed→ann (move seq 1, 2 points)"}; !slices.Equal(claims, want) {
		t.Errorf("claim changes %q, want %q", claims, want)
	}
	if d.Answers.Compared != 7 || d.WhatIf.Radius != 5000 || d.WhatIf.Scoring != "count" {
		t.Errorf("what-if doc: %+v", d)
	}
	lines, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.Split(strings.TrimSpace(string(lines)), "\n")
	if len(ls) != 7+2+1 || !strings.Contains(ls[len(ls)-1], `"type":"leaderboard"`) {
		t.Errorf("what-if outputs: %d lines, want 7 results, 2 claims, a leaderboard:\n%s", len(ls), lines)
	}
	if after := snapshot(); after != before {
		t.Fatalf("the what-if changed live state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestAnalystUsageErrors: flags of one mode refused with another, bad
// points in time and scorings; -h works.
func TestAnalystUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	for _, args := range [][]string{
		{"replay", "--verify", "--what-if"},
		{"replay", "--radius", "3000"},
		{"replay", "--until", "5", "--schema", "x"},
		{"replay", "--verify", "--until", "5"},
		{"replay", "--json"},
		{"replay", "--until", "yesterday"},
		{"replay", "--until", "0"},
		{"replay", "--what-if", "--scoring", "double"},
		{"replay", "--check", "--until", "4"},
		{"leaderboard", "--at", "noon"},
		{"leaderboard", "extra"},
	} {
		code, _, errs := runCLI(t, "", env, args...)
		if code != 2 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errs)
		}
	}
	for _, cmd := range []string{"replay", "leaderboard", "export"} {
		code, _, errs := runCLI(t, "", env, cmd, "-h")
		if code != 0 || !strings.Contains(errs, "Usage: treasure "+cmd) {
			t.Errorf("%s -h: exit %d\n%s", cmd, code, errs)
		}
	}
}

func natsjsNew(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// lastSnapshot returns the number of players of the ranker's last
// leaderboard snapshot (-1 when the rank subject's last message is none).
func lastSnapshot(t *testing.T, js jetstream.JetStream, topo natsjs.Topology) int64 {
	t.Helper()
	st, err := js.Stream(context.Background(), topo.OutStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), topo.RankSubject())
	if err != nil {
		return -1
	}
	var rd event.Reader
	if rd.Reset(m.Data) != nil {
		return -1
	}
	var ev eventpb.Event
	for rd.Next() {
		if rd.Kind() == event.KindLeaderboard && rd.Event(&ev) == nil {
			return int64(ev.GetLeaderboard().GetPlayers())
		}
	}
	return -1
}

// TestExportReadsBack exports smallGame as CSV, NDJSON and Parquet, reads
// the files back (encoding/csv, encoding/json, parquet-go's reader) and
// compares every row field by field with the events on the streams; a
// --from/--to window keeps exactly the messages stored in it.
func TestExportReadsBack(t *testing.T) {
	t.Parallel()
	s := playSmallGame(t)
	ctx := context.Background()
	nc := testenv.ConnectNATS(t, s.sp.NATSURL)
	js, err := natsjsNew(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The events as published: (stream, seq, index) → event, and times.
	type at struct {
		stream string // role: IN, OUT
		seq    uint64
		index  int
	}
	events := map[at]*eventpb.Event{}
	subjects := map[at]string{}
	times := map[at]time.Time{}
	var order []at
	for _, name := range []string{s.sp.Topology.InStream(), s.sp.Topology.OutStream()} {
		err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: name}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				var b eventpb.Batch
				if err := event.Decode(m.Data, &b); err != nil {
					return err
				}
				for i, ev := range b.Events {
					k := at{strings.TrimPrefix(name, s.sp.StreamPrefix+"_"), m.Seq, i}
					if k.stream == "IN" && ev.GetClaim() != nil {
						continue // notices are not exported
					}
					events[k], subjects[k], times[k] = ev, m.Subject, m.Time
					order = append(order, k)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	u32 := func(v uint32) string { return u(uint64(v)) }
	// check compares one row, as column → CSV text, with its event.
	check := func(r map[string]string) at {
		t.Helper()
		seq, _ := strconv.ParseUint(r["stream_seq"], 10, 64)
		idx, _ := strconv.Atoi(r["index"])
		k := at{r["stream"], seq, idx}
		ev := events[k]
		if ev == nil {
			t.Fatalf("row %v: no such event", r)
		}
		want := map[string]string{"kind": event.KindOf(ev).String(), "subject": subjects[k],
			"published": strconv.FormatInt(times[k].UnixNano(), 10), "partition": strconv.Itoa(int(eventrowPartition(subjects[k])))}
		switch {
		case ev.GetMove() != nil:
			m := ev.GetMove()
			path, _ := json.Marshal(m.Path)
			want["player"], want["seq"], want["prev_seq"], want["path"], want["node"] = m.Player, u(m.Seq), u(m.PrevSeq), string(path), u32(m.Path[len(m.Path)-1])
			want["ingest"], want["move_partition"], want["treasure"], want["score"] = strconv.FormatInt(m.IngestUnixNanos, 10), u32(m.Partition), "", ""
		case ev.GetDrop() != nil:
			d := ev.GetDrop()
			want["treasure"], want["node"], want["points"], want["player"] = d.Id, u32(d.Node), u(d.Points), ""
		case ev.GetProximity() != nil:
			p := ev.GetProximity()
			want["player"], want["seq"], want["prev_seq"], want["node"] = p.Player, u(p.Seq), u(p.PrevSeq), u32(p.Node)
			want["move_stream_seq"], want["move_index"], want["ingest"] = u(p.Move.StreamSeq), u32(p.Move.Index), strconv.FormatInt(p.IngestUnixNanos, 10)
			want["treasure"], want["treasure_node"], want["distance"] = "", "", ""
			if p.Treasure != nil {
				want["treasure"], want["treasure_node"], want["distance"] = p.Treasure.Id, u32(p.Treasure.Node), u(p.Treasure.Distance)
			}
		case ev.GetClaim() != nil:
			c := ev.GetClaim()
			want["player"], want["seq"], want["treasure"], want["points"], want["node"] = c.Player, u(c.Seq), c.Treasure, u(c.Points), u32(c.Node)
			want["move_stream_seq"], want["move_index"], want["score"] = u(c.Move.StreamSeq), u32(c.Move.Index), ""
		case ev.GetScore() != nil:
			sc := ev.GetScore()
			want["player"], want["score"], want["rank"], want["treasure"], want["move_stream_seq"] = sc.Player, u(sc.Score), u(sc.Rank), sc.Cause.Treasure, u(sc.Cause.Move.StreamSeq)
			want["seq"], want["points"] = "", ""
		case ev.GetLeaderboard() != nil:
			l := ev.GetLeaderboard()
			want["players"], want["version"], want["player"] = u(l.Players), u(l.Version), ""
		}
		for col, v := range want {
			if r[col] != v {
				t.Fatalf("row %s/%d/%d column %s: %q, the event says %q (%v)", k.stream, k.seq, k.index, col, r[col], v, ev)
			}
		}
		return k
	}
	fromRow := func(row *eventrow.Row) map[string]string {
		rec := row.Record(nil)
		r := map[string]string{}
		for i, c := range eventrow.Columns {
			r[c] = rec[i]
		}
		return r
	}
	dir := t.TempDir()
	all := "move,drop,proximity,claim,score,leaderboard"
	export := func(format string, extra ...string) string {
		t.Helper()
		path := filepath.Join(dir, "x."+format)
		args := append([]string{"export", "--format", format, "--out", path, "--quiet"}, extra...)
		if code, _, errs := runCLI(t, "", s.env, args...); code != 0 {
			t.Fatalf("export %v: exit %d: %s", args, code, errs)
		}
		return path
	}

	// CSV, every kind: one row per event, in order.
	f, err := os.Open(export("csv", "--kinds", all))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(recs[0], eventrow.Columns) {
		t.Fatalf("header %v", recs[0])
	}
	var got []at
	for _, rec := range recs[1:] {
		r := map[string]string{}
		for i, c := range recs[0] {
			r[c] = rec[i]
		}
		got = append(got, check(r))
	}
	if !slices.Equal(got, order) {
		t.Fatalf("csv rows: %d, events: %d (or out of order)", len(got), len(order))
	}

	// Parquet, every kind, through parquet-go's reader.
	pq, err := os.Open(export("parquet", "--kinds", all))
	if err != nil {
		t.Fatal(err)
	}
	defer pq.Close()
	pr := parquet.NewGenericReader[eventrow.Row](pq)
	rows := make([]eventrow.Row, pr.NumRows())
	if n, err := pr.Read(rows); n != len(rows) || err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("parquet: read %d of %d rows: %v", n, len(rows), err)
	}
	got = got[:0]
	for i := range rows {
		got = append(got, check(fromRow(&rows[i])))
	}
	if !slices.Equal(got, order) {
		t.Fatalf("parquet rows: %d, events: %d (or out of order)", len(got), len(order))
	}

	// NDJSON, the default kinds, a time window: from the first claim's
	// move to the message before the last one of IN.
	from := s.timeOf[s.seqOf["ann/2"]]
	to := s.timeOf[s.seqOf["bob/3"]]
	path := filepath.Join(dir, "window.ndjson")
	code, out, errs := runCLI(t, "", s.env, "export", "--format", "ndjson", "--out", path, "--quiet", "--json",
		"--from", from.Format(time.RFC3339Nano), "--to", to.Format(time.RFC3339Nano))
	if code != 0 {
		t.Fatalf("export ndjson: exit %d: %s", code, errs)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []at
	for _, k := range order {
		kind := event.KindOf(events[k])
		if !times[k].Before(from) && times[k].Before(to) && kind != event.KindDrop && kind != event.KindLeaderboard {
			want = append(want, k)
		}
	}
	got = got[:0]
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var row eventrow.Row
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		got = append(got, check(fromRow(&row)))
	}
	if !slices.Equal(got, want) || len(want) < 8 {
		t.Fatalf("ndjson window: %d rows, want %d", len(got), len(want))
	}
	var sum struct {
		Rows int `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Rows != len(want) {
		t.Fatalf("summary %s (%v), want %d rows", out, err, len(want))
	}
}

// eventrowPartition is the partition column's rule: the subject's last
// token as a number, -1 otherwise.
func eventrowPartition(subject string) int32 {
	n, err := strconv.Atoi(subject[strings.LastIndexByte(subject, '.')+1:])
	if err != nil {
		return -1
	}
	return int32(n)
}
