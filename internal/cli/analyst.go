package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/history"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/platform"
	"treasure/internal/progress"
	"treasure/internal/redisstore"
)

// analyst holds the flags of replay's analyst modes (and leaderboard's).
type analyst struct {
	until, at   *string
	player      *string
	top         *int
	jsonOut     *bool
	quiet       *bool
	whatIf      *bool
	radius      *uint
	treasures   *string
	scoring     *string
	out         *string
	verify      *bool
	schema      *string
	redisPrefix *string
}

func analystFlags(fs *flag.FlagSet) *analyst {
	return &analyst{
		until:       fs.String("until", "", "rebuild the game up to this IN stream sequence or RFC 3339 time and print its state"),
		player:      fs.String("player", "", "with --until: print this player's score, rank and position"),
		top:         fs.Int("top", 10, "leaderboard lines to print (text; --json prints every player)"),
		jsonOut:     fs.Bool("json", false, "print the result as one JSON document"),
		quiet:       fs.Bool("quiet", false, "no progress line on stderr"),
		whatIf:      fs.Bool("what-if", false, "replay the same moves with --radius, --treasures or --scoring and compare with the real game"),
		radius:      fs.Uint("radius", 0, "what-if: the proximity radius (default TREASURE_RADIUS)"),
		treasures:   fs.String("treasures", "", "what-if: CSV id,node,points of the treasures, replacing the log's drops"),
		scoring:     fs.String("scoring", "points", "what-if: "+history.ScoringNames),
		out:         fs.String("out", "", `what-if: write its outputs (JSON lines) to this file, "-" for stdout`),
		verify:      fs.Bool("verify", false, "compare claims, scores and ranks rebuilt from the log with PostgreSQL and Redis; exit 1 on a difference"),
		schema:      fs.String("schema", "", "verify: PostgreSQL schema of the ranker's tables (default: the URL's search_path)"),
		redisPrefix: fs.String("redis-prefix", "", `verify: Redis key prefix of the board (default "<TREASURE_STREAM_PREFIX>:")`),
	}
}

// mode returns which analyst mode the flags ask for ("" for none) and
// refuses flags that belong to another.
func (a *analyst) mode(fs *flag.FlagSet) (string, error) {
	modes := 0
	mode := ""
	if *a.whatIf {
		modes++
		mode = "what-if"
	}
	if *a.verify {
		modes++
		mode = "verify"
	}
	if mode == "" && flagSet(fs, "until") {
		mode = "until"
	}
	if modes > 1 {
		return "", &UsageError{Msg: "replay: --what-if and --verify exclude each other"}
	}
	only := map[string][]string{
		"what-if": {"radius", "treasures", "scoring", "out"},
		"verify":  {"schema", "redis-prefix"},
		"until":   {"player"},
	}
	for m, names := range only {
		for _, n := range names {
			if flagSet(fs, n) && mode != m {
				return "", &UsageError{Msg: fmt.Sprintf("replay: --%s goes with --%s", n, m)}
			}
		}
	}
	if mode == "verify" && flagSet(fs, "until") {
		return "", &UsageError{Msg: "replay: --verify compares the whole log with the live stores; --until does not apply"}
	}
	if mode == "" {
		for _, n := range []string{"json", "top", "quiet"} {
			if flagSet(fs, n) {
				return "", &UsageError{Msg: fmt.Sprintf("replay: --%s goes with --until, --what-if or --verify", n)}
			}
		}
	}
	if *a.top < 0 {
		return "", &UsageError{Msg: fmt.Sprintf("replay: --top %d: want 0 or more", *a.top)}
	}
	return mode, nil
}

// logSource is the log and graph every analyst command reads.
type logSource struct {
	cfg  platform.Config
	log  *slog.Logger
	g    *graph.Graph
	part []uint32
	nc   *nats.Conn
	js   jetstream.JetStream
	topo natsjs.Topology
	// replay reads the streams, and the archive (TREASURE_ARCHIVE_DIR)
	// for what they no longer hold: archive.ReplayAll.
	replay history.ReplayFunc
}

func openLogSource(env Env, io IO, name string) (*logSource, error) {
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return nil, err
	}
	g, part, err := loadPartitioned(cfg, log)
	if err != nil {
		return nil, err
	}
	nc, js, err := connectJetStream(cfg.NATSURL, "treasure-"+name+"@"+hostname())
	if err != nil {
		return nil, err
	}
	return &logSource{cfg: cfg, log: log, g: g, part: part, nc: nc, js: js, topo: topology(cfg), replay: replayReader(cfg.ArchiveDir)}, nil
}

func (s *logSource) close() { s.nc.Close() }

// warnTruncated says when a stream no longer holds its first messages
// (limits, retention): the read takes them from the archive
// (TREASURE_ARCHIVE_DIR), and fails naming the gap when the archive does
// not hold them either.
func (s *logSource) warnTruncated(ctx context.Context) {
	for _, name := range []string{s.topo.InStream(), s.topo.OutStream()} {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			continue // the read reports it
		}
		if first := st.CachedInfo().State.FirstSeq; first > 1 {
			s.log.Info("the stream no longer holds the start of the log: what comes before its first message is read from the archive", "stream", name, "first_seq", first, "archive", s.cfg.ArchiveDir)
		}
	}
}

// rebuild opens a rebuild of the live run (its radius, the log's drops).
func (s *logSource) rebuild(o history.Options) (*history.Rebuild, error) {
	o.Graph, o.Part, o.Topology = s.g, s.part, s.topo
	if o.Radius == 0 {
		o.Radius = s.cfg.Radius
	}
	return history.New(o)
}

// bar returns a progress bar on stderr for reading a stream, as a
// history.Progress.
func bar(io IO, label string, quiet bool) (*progress.Bar, history.Progress) {
	b := progress.New(io.Stderr, progress.Options{Label: label, Unit: "msgs", Disabled: quiet})
	return b, func(seq, last uint64) {
		b.SetTotal(int64(last))
		b.Set(int64(seq))
	}
}

// readGame rebuilds the game up to until (and any what-ifs beside it) and
// reads P_OUT's positions for the claims' moves.
func (s *logSource) readGame(ctx context.Context, io IO, until history.Cutoff, quiet bool, rebuilds ...*history.Rebuild) (*history.Out, error) {
	s.warnTruncated(ctx)
	b, p := bar(io, "IN ", quiet)
	if _, err := history.ReadIn(ctx, s.replay, s.js, s.topo, until, p, rebuilds...); err != nil {
		return nil, err
	}
	b.Finish()
	b, p = bar(io, "OUT", quiet)
	out, err := history.ReadOut(ctx, s.replay, s.js, s.topo, history.ClaimMoves(rebuilds...), p)
	if err != nil {
		return nil, err
	}
	b.Finish()
	return out, nil
}

func runReplayAnalyst(ctx context.Context, mode string, a *analyst, env Env, io IO) error {
	var until history.Cutoff
	if *a.until != "" {
		var err error
		if until, err = history.ParseCutoff(*a.until); err != nil {
			return &UsageError{Msg: "replay: --until: " + err.Error()}
		}
	}
	src, err := openLogSource(env, io, "replay")
	if err != nil {
		return err
	}
	defer src.close()
	switch mode {
	case "what-if":
		return runWhatIf(ctx, src, a, until, io)
	case "verify":
		return runVerify(ctx, src, a, io)
	}
	r, err := src.rebuild(history.Options{})
	if err != nil {
		return err
	}
	out, err := src.readGame(ctx, io, until, *a.quiet, r)
	if err != nil {
		return err
	}
	st := gameState(r, r.Board(out, history.Points), *a.player)
	if *a.player != "" && st.Player == nil {
		return &UsageError{Msg: fmt.Sprintf("replay: player %q has no move at or before %s", *a.player, until)}
	}
	if *a.jsonOut {
		return writeJSON(io.Stdout, st)
	}
	printState(io.Stdout, st, *a.top)
	return nil
}

// stateDoc is the --json document of replay --until.
type stateDoc struct {
	At          history.Point         `json:"at"`
	Moves       int                   `json:"moves"`
	Drops       int                   `json:"drops"`
	Claims      []history.Claim       `json:"claims"`
	Leaderboard leaderboardDoc        `json:"leaderboard"`
	Active      []history.Treasure    `json:"active_treasures"`
	Players     []history.PlayerState `json:"players"`
	Player      *history.PlayerState  `json:"player,omitempty"`
}

// leaderboardDoc is a leaderboard in GET /v1/leaderboard's shape, with
// the point it stands at.
type leaderboardDoc struct {
	At      *history.Point       `json:"at,omitempty"`
	Top     []boardEntry         `json:"top"`
	Players int64                `json:"players"`
	Scoring string               `json:"scoring,omitempty"`
	Player  *history.PlayerState `json:"player,omitempty"`
}

type boardEntry struct {
	Player string `json:"player"`
	Score  int64  `json:"score"`
	Rank   int64  `json:"rank"`
}

func boardDoc(b *history.Board, limit int) leaderboardDoc {
	d := leaderboardDoc{Top: []boardEntry{}, Players: b.Scoring}
	for i, st := range b.Top {
		if limit >= 0 && i == limit {
			break
		}
		d.Top = append(d.Top, boardEntry{Player: st.Player, Score: st.Score, Rank: st.Rank})
	}
	return d
}

func gameState(r *history.Rebuild, b *history.Board, player string) stateDoc {
	st := stateDoc{At: r.At(), Moves: r.Moves, Drops: r.Drops, Claims: r.Claims(), Leaderboard: boardDoc(b, -1), Active: r.ActiveList()}
	if st.Claims == nil {
		st.Claims = []history.Claim{}
	}
	for _, id := range r.PlayerIDs() {
		ps, _ := r.PlayerState(b, id)
		st.Players = append(st.Players, ps)
		if id == player {
			st.Player = &ps
		}
	}
	if st.Players == nil {
		st.Players = []history.PlayerState{}
	}
	return st
}

func pointString(p history.Point) string {
	if p.InSeq == 0 {
		return "the start of the log (nothing applied)"
	}
	return fmt.Sprintf("IN seq %d (%s)", p.InSeq, p.Time.UTC().Format(time.RFC3339Nano))
}

func printState(w io.Writer, st stateDoc, top int) {
	fmt.Fprintf(w, "state at %s: %d moves, %d drops, %d claims, %d players, %d active treasures\n",
		pointString(st.At), st.Moves, st.Drops, len(st.Claims), len(st.Players), len(st.Active))
	printBoard(w, st.Leaderboard, top)
	fmt.Fprintf(w, "\nactive treasures (%d):\n", len(st.Active))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  id\tnode\tpoints\tdropped at IN seq")
	for i, t := range st.Active {
		if i == top {
			fmt.Fprintf(tw, "  … and %d more\t\t\t\n", len(st.Active)-i)
			break
		}
		at := "(start)"
		if t.Dropped.Seq > 0 {
			at = fmt.Sprint(t.Dropped.Seq)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\n", t.ID, t.Node, t.Points, at)
	}
	tw.Flush()
	if st.Player != nil {
		fmt.Fprintln(w)
		printPlayer(w, *st.Player)
	}
}

func printBoard(w io.Writer, d leaderboardDoc, top int) {
	fmt.Fprintf(w, "\nleaderboard (%d players with a score", d.Players)
	if d.Scoring != "" && d.Scoring != history.Points.Name {
		fmt.Fprintf(w, ", scoring %s", d.Scoring)
	}
	fmt.Fprintln(w, "):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rank\tplayer\tscore\t")
	for i, e := range d.Top {
		if i == top {
			fmt.Fprintf(tw, "…\t%d more\t\t\n", len(d.Top)-i)
			break
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t\n", e.Rank, e.Player, e.Score)
	}
	tw.Flush()
}

func printPlayer(w io.Writer, p history.PlayerState) {
	fmt.Fprintf(w, "player %s: score %d, rank %d, %d claims; at node %d after move seq %d (%d moves); nearest: ",
		p.Player, p.Score, p.Rank, p.Claims, p.Node, p.Seq, p.Moves)
	if p.Nearest == nil {
		fmt.Fprintln(w, "none within the radius")
	} else {
		fmt.Fprintf(w, "%s at node %d, %d away\n", p.Nearest.Treasure, p.Nearest.Node, p.Nearest.Distance)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// whatIfDoc is the --json document of replay --what-if.
type whatIfDoc struct {
	At     history.Point `json:"at"`
	Real   whatIfSide    `json:"real"`
	WhatIf whatIfSide    `json:"what_if"`
	// Answers compares the proximity answer of every move.
	Answers struct {
		Compared int                    `json:"compared"`
		Changed  int                    `json:"changed"`
		Examples []history.AnswerChange `json:"examples"`
	} `json:"answers"`
	Claims struct {
		Real    int                   `json:"real"`
		WhatIf  int                   `json:"what_if"`
		Changes []history.ClaimChange `json:"changes"`
	} `json:"claims"`
	Leaderboard struct {
		Changes []history.StandingChange `json:"changes"`
		Real    leaderboardDoc           `json:"real"`
		WhatIf  leaderboardDoc           `json:"what_if"`
	} `json:"leaderboard"`
}

type whatIfSide struct {
	Radius    uint32 `json:"radius"`
	Treasures string `json:"treasures"` // "log" or the file
	Scoring   string `json:"scoring"`
}

func runWhatIf(ctx context.Context, src *logSource, a *analyst, until history.Cutoff, io IO) error {
	scoring, err := history.ParseScoring(*a.scoring)
	if err != nil {
		return &UsageError{Msg: "replay: --scoring: " + err.Error()}
	}
	radius := src.cfg.Radius
	if *a.radius != 0 {
		if *a.radius > 1<<31 {
			return &UsageError{Msg: fmt.Sprintf("replay: --radius %d is too large", *a.radius)}
		}
		radius = uint32(*a.radius)
	}
	var treasures []game.Treasure
	if *a.treasures != "" {
		if treasures, err = readTreasureFile(*a.treasures, src.g); err != nil {
			return err
		}
	}
	if radius == src.cfg.Radius && *a.treasures == "" && scoring.Name == history.Points.Name {
		src.log.Warn("what-if with the live radius, treasures and scoring: expect no difference")
	}
	// Where the what-if's own outputs go, and where the comparison goes.
	report := io.Stdout
	var lines *bufio.Writer
	switch *a.out {
	case "":
	case "-":
		lines = bufio.NewWriterSize(io.Stdout, 64<<10)
		report = io.Stderr
	default:
		f, err := os.Create(*a.out)
		if err != nil {
			return &UsageError{Msg: "replay: --out: " + err.Error()}
		}
		defer f.Close()
		lines = bufio.NewWriterSize(f, 64<<10)
	}
	var enc *json.Encoder
	if lines != nil {
		enc = json.NewEncoder(lines)
	}
	var ans history.Answers
	real, err := src.rebuild(history.Options{Emit: ans.RealEmit})
	if err != nil {
		return err
	}
	wo := history.Options{Radius: radius, WhatIf: true, Treasures: treasures, ReplaceDrops: *a.treasures != "",
		Emit: func(k int, ev *eventpb.Event) error {
			if err := ans.WhatIfEmit(k, ev); err != nil {
				return err
			}
			if enc != nil {
				if l := replayLine(k, ev); l != nil {
					return enc.Encode(l)
				}
			}
			return nil
		}}
	whatIf, err := src.rebuild(wo)
	if err != nil {
		return err
	}
	out, err := src.readGame(ctx, io, until, *a.quiet, real, whatIf)
	if err != nil {
		return err
	}
	ans.Finish()
	realBoard, whatIfBoard := real.Board(out, history.Points), whatIf.Board(out, scoring)

	var d whatIfDoc
	d.At = real.At()
	d.Real = whatIfSide{Radius: src.cfg.Radius, Treasures: "log", Scoring: history.Points.Name}
	d.WhatIf = whatIfSide{Radius: radius, Treasures: "log", Scoring: scoring.Name}
	if *a.treasures != "" {
		d.WhatIf.Treasures = *a.treasures
	}
	d.Answers.Compared, d.Answers.Changed, d.Answers.Examples = ans.Compared, ans.Changed, ans.Examples
	if d.Answers.Examples == nil {
		d.Answers.Examples = []history.AnswerChange{}
	}
	d.Claims.Real, d.Claims.WhatIf = len(real.Claims()), len(whatIf.Claims())
	d.Claims.Changes = history.DiffClaims(real.Claims(), whatIf.Claims())
	if d.Claims.Changes == nil {
		d.Claims.Changes = []history.ClaimChange{}
	}
	d.Leaderboard.Changes = history.DiffBoards(realBoard, whatIfBoard)
	if d.Leaderboard.Changes == nil {
		d.Leaderboard.Changes = []history.StandingChange{}
	}
	d.Leaderboard.Real, d.Leaderboard.WhatIf = boardDoc(realBoard, -1), boardDoc(whatIfBoard, -1)
	d.Leaderboard.WhatIf.Scoring = scoring.Name

	if enc != nil {
		if err := enc.Encode(map[string]any{"type": "leaderboard", "at": d.At, "top": d.Leaderboard.WhatIf.Top, "players": d.Leaderboard.WhatIf.Players, "scoring": scoring.Name}); err != nil {
			return err
		}
		if err := lines.Flush(); err != nil {
			return fmt.Errorf("replay: --out: %w", err)
		}
	}
	if *a.jsonOut {
		return writeJSON(report, d)
	}
	printWhatIf(report, d, *a.top)
	return nil
}

func sideString(s whatIfSide) string {
	return fmt.Sprintf("radius %d, treasures from %s, scoring %s", s.Radius, s.Treasures, s.Scoring)
}

func answerString(a history.Answer) string {
	if a.None {
		return "none"
	}
	return fmt.Sprintf("%s (node %d) at %d", a.Treasure, a.Node, a.Distance)
}

func claimString(c *history.Claim) string {
	if c == nil {
		return "unclaimed"
	}
	return fmt.Sprintf("%s (move seq %d, %d points)", c.Player, c.Seq, c.Points)
}

func printWhatIf(w io.Writer, d whatIfDoc, top int) {
	fmt.Fprintf(w, "what-if up to %s\n  real:    %s\n  what-if: %s\n", pointString(d.At), sideString(d.Real), sideString(d.WhatIf))
	fmt.Fprintf(w, "\nproximity answers: %d moves compared, %d changed\n", d.Answers.Compared, d.Answers.Changed)
	for i, c := range d.Answers.Examples {
		if i == top {
			break
		}
		fmt.Fprintf(w, "  %s seq %d at node %d: %s → %s\n", c.Player, c.Seq, c.Node, answerString(c.Real), answerString(c.WhatIf))
	}
	if n := d.Answers.Changed - min(len(d.Answers.Examples), top); n > 0 {
		fmt.Fprintf(w, "  … and %d more\n", n)
	}
	fmt.Fprintf(w, "\nclaims: %d real, %d what-if, %d treasures claimed differently\n", d.Claims.Real, d.Claims.WhatIf, len(d.Claims.Changes))
	for i, c := range d.Claims.Changes {
		if i == top {
			fmt.Fprintf(w, "  … and %d more\n", len(d.Claims.Changes)-i)
			break
		}
		fmt.Fprintf(w, "  %s: %s → %s\n", c.Treasure, claimString(c.Real), claimString(c.WhatIf))
	}
	fmt.Fprintf(w, "\nleaderboard: %d players changed score or rank\n", len(d.Leaderboard.Changes))
	if len(d.Leaderboard.Changes) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "player\treal score\treal rank\twhat-if score\twhat-if rank\t")
		for i, c := range d.Leaderboard.Changes {
			if i == top {
				fmt.Fprintf(tw, "… %d more\t\t\t\t\t\n", len(d.Leaderboard.Changes)-i)
				break
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", c.Player, c.RealScore, c.RealRank, c.WhatIfScore, c.WhatIfRank)
		}
		tw.Flush()
	}
}

// readTreasureFile reads a what-if's treasure CSV against the graph.
func readTreasureFile(path string, g *graph.Graph) ([]game.Treasure, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &UsageError{Msg: "replay: --treasures: " + err.Error()}
	}
	defer f.Close()
	rows, err := game.ReadTreasureCSV(f)
	if err != nil {
		return nil, &InputError{Err: fmt.Errorf("%s: %w", path, err)}
	}
	ts := make([]game.Treasure, 0, len(rows))
	for _, r := range rows {
		v, ok := graph.Index(r.NodeID, g.NumNodes())
		if !ok {
			return nil, &InputError{Err: fmt.Errorf("%s: line %d: node %d is not in the graph (%d nodes)", path, r.Line, r.NodeID, g.NumNodes())}
		}
		ts = append(ts, game.Treasure{ID: r.ID, Node: v, Points: r.Points})
	}
	return ts, nil
}

func runVerify(ctx context.Context, src *logSource, a *analyst, io IO) error {
	cfg := src.cfg
	prefix := *a.redisPrefix
	if prefix == "" {
		prefix = cfg.StreamPrefix + ":"
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return &UsageError{Msg: fmt.Sprintf("%s: %v", platform.EnvDatabaseURL, platform.MaskURL(err.Error()))}
	}
	if *a.schema != "" {
		pcfg.ConnConfig.RuntimeParams["search_path"] = *a.schema
	}
	pcfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pool.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = pool.Ping(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w", platform.MaskURL(cfg.DatabaseURL), err)
	}
	rdb, err := connectRedis(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()

	r, err := src.rebuild(history.Options{})
	if err != nil {
		return err
	}
	src.warnTruncated(ctx)
	b, p := bar(io, "IN ", *a.quiet)
	if _, err := history.ReadIn(ctx, src.replay, src.js, src.topo, history.Cutoff{}, p, r); err != nil {
		return err
	}
	b.Finish()
	b, p = bar(io, "OUT", *a.quiet)
	out, err := history.ReadOut(ctx, src.replay, src.js, src.topo, history.ClaimMoves(r), p)
	if err != nil {
		return err
	}
	b.Finish()
	rep, err := history.Verify(ctx, r, out, history.Stores{Postgres: pgstore.New(pool), Redis: redisstore.New(rdb, prefix)})
	if err != nil {
		return err
	}
	schema := *a.schema
	if schema == "" {
		schema = "search_path of the URL"
	}
	if *a.jsonOut {
		doc := struct {
			OK          bool          `json:"ok"`
			At          history.Point `json:"at"`
			Postgres    string        `json:"postgres"`
			Schema      string        `json:"schema"`
			Redis       string        `json:"redis"`
			RedisPrefix string        `json:"redis_prefix"`
			*history.Report
		}{rep.OK(), r.At(), platform.MaskURL(cfg.DatabaseURL), schema, platform.MaskURL(cfg.RedisURL), prefix, rep}
		if doc.Differences == nil {
			doc.Differences = []history.Difference{}
		}
		if err := writeJSON(io.Stdout, doc); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(io.Stdout, "log up to %s: %d claims, %d players (%d with a score)\nchecked against: P_OUT's claims and score changes, PostgreSQL %s (%s), Redis %s (prefix %q)\n",
			pointString(r.At()), rep.Claims, rep.Players, rep.Scoring, platform.MaskURL(cfg.DatabaseURL), schema, platform.MaskURL(cfg.RedisURL), prefix)
		if rep.OK() {
			fmt.Fprintln(io.Stdout, "identical: every claim, score change, score, rank and leaderboard line")
		} else {
			fmt.Fprintf(io.Stdout, "%d differences:\n", len(rep.Differences))
			for i, d := range rep.Differences {
				if i == 50 {
					fmt.Fprintf(io.Stdout, "  … and %d more (--json lists them all)\n", len(rep.Differences)-i)
					break
				}
				fmt.Fprintf(io.Stdout, "  %s\n", d)
			}
		}
	}
	if !rep.OK() {
		return fmt.Errorf("the live stores differ from the log in %d places", len(rep.Differences))
	}
	return nil
}

// leaderboard --at.

const leaderboardSynopsis = `leaderboard [--at T|seq] [--player ID] [--top N] [--json] [--quiet]

Prints the leaderboard as it stood at an IN stream sequence or an RFC 3339
time (default: the end of the log), rebuilt from the log exactly as the
ranker computes it: score descending, equal scores sharing a rank (1 + the
number of players with a strictly higher score) and listed by who reached
the score first. --player adds that player's score, rank and position
(the last node of their last move) and the nearest treasure there. --json
prints {"at":{"in_seq","time"},"top":[{"player","score","rank"},…],
"players":N,"player":{…}} (the shape of GET /v1/leaderboard). Needs
TREASURE_GRAPH, TREASURE_PARTITIONS and TREASURE_RADIUS as the workers had
them; reads TREASURE_NATS_URL. Reads the log only.`

func runLeaderboard(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("leaderboard", leaderboardSynopsis, io.Stderr)
	at := fs.String("at", "", "the point in time: an IN stream sequence or an RFC 3339 time (default: the end of the log)")
	player := fs.String("player", "", "also print this player's score, rank and position")
	top := fs.Int("top", 10, "leaderboard lines to print")
	jsonOut := fs.Bool("json", false, "print one JSON document")
	quiet := fs.Bool("quiet", false, "no progress line on stderr")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("leaderboard: unexpected argument %q", fs.Arg(0))}
	}
	if *top < 0 {
		return &UsageError{Msg: fmt.Sprintf("leaderboard: --top %d: want 0 or more", *top)}
	}
	var until history.Cutoff
	if *at != "" {
		var err error
		if until, err = history.ParseCutoff(*at); err != nil {
			return &UsageError{Msg: "leaderboard: --at: " + err.Error()}
		}
	}
	src, err := openLogSource(env, io, "leaderboard")
	if err != nil {
		return err
	}
	defer src.close()
	r, err := src.rebuild(history.Options{})
	if err != nil {
		return err
	}
	out, err := src.readGame(ctx, io, until, *quiet, r)
	if err != nil {
		return err
	}
	b := r.Board(out, history.Points)
	d := boardDoc(b, *top)
	p := r.At()
	d.At = &p
	if *player != "" {
		ps, ok := r.PlayerState(b, *player)
		if !ok {
			return &UsageError{Msg: fmt.Sprintf("leaderboard: player %q has no move at or before %s", *player, until)}
		}
		d.Player = &ps
	}
	if *jsonOut {
		return writeJSON(io.Stdout, d)
	}
	fmt.Fprintf(io.Stdout, "leaderboard at %s\n", pointString(p))
	printBoard(io.Stdout, d, *top)
	if d.Player != nil {
		fmt.Fprintln(io.Stdout)
		printPlayer(io.Stdout, *d.Player)
	}
	return nil
}
