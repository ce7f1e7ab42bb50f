package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/loadgen/fleet"
	"treasure/internal/platform"
)

const loadgenClosedSynopsis = `loadgen closed [--ingest URL] [--push URL] [--graph FILE] [--players N] [--rate R]
                [--duration D] [--secret-file FILE] [--prefix P] [--seed N] [--json]

The closed-loop load generator (not for figures: a player waits for each
answer, so slow answers lower the offered load and hide queueing; use
steady, ramp or drop). Simulates N players walking the road graph over
real WebSockets against running ingest and push services: each opens a push socket and an ingest
socket, spawns on a random node and sends moves of 6-12 nodes at R moves/s,
one in flight at a time. Prints one line per second (moves accepted per
second, move->update latency p50/p99 over that second, errors so far, the
top 5 of the leaderboard) and a summary at the end; --json prints the same
as one JSON object per line instead. Exits with status 1 when a push
socket skipped an update id.

FILE must be the graph the services serve (TREASURE_GRAPH). The secret is
the services' TREASURE_JWT_SECRET, read from that variable or from
--secret-file (never from the command line). Tokens live 15 minutes and
are renewed at half-life; every reconnect uses a fresh one. One process simulates at most 9,900
players (two sockets each, under the open-files limit of 20,000): for more,
run several processes, each with its own --prefix.`

func runLoadgenClosed(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("loadgen closed", loadgenClosedSynopsis, io.Stderr)
	ingest := fs.String("ingest", wsFromAddr(envOr(env, platform.EnvIngestAddr, platform.DefaultIngestAddr)), "ingest WebSocket base URL (default from TREASURE_INGEST_ADDR)")
	push := fs.String("push", wsFromAddr(envOr(env, platform.EnvPushAddr, platform.DefaultPushAddr)), "push WebSocket base URL (default from TREASURE_PUSH_ADDR)")
	graphPath := fs.String("graph", env("TREASURE_GRAPH"), "road graph the services serve: .gr, .gr.gz or .snap (env TREASURE_GRAPH)")
	players := fs.Int("players", 100, "simulated players, at most "+strconv.Itoa(loadgen.MaxPlayers)+" per process")
	rate := fs.Float64("rate", 1, "moves per second per player")
	duration := fs.Duration("duration", 30*time.Second, "how long to run; 0 runs until interrupted")
	secretF := addSecretFlags(fs)
	prefix := fs.String("prefix", "", "player id prefix (default lg-<run id>-, new players every run)")
	seed := fs.Uint64("seed", 1, "seed of spawns and walks")
	asJSON := fs.Bool("json", false, "print one JSON object per second and one for the summary (\"final\":true)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *graphPath == "" {
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required: the graph the services serve"}
	}
	secretV, err := secretF.value(env)
	if err != nil {
		return err
	}
	secret := &secretV
	switch {
	case *players < 1 || *players > loadgen.MaxPlayers:
		return &UsageError{Msg: fmt.Sprintf("--players %d: one process simulates 1 to %d players (two sockets each, under the open-files limit of 20,000); for more, run several loadgen processes, each with its own --prefix", *players, loadgen.MaxPlayers)}
	case !(*rate >= loadgen.MinRate && *rate <= loadgen.MaxRate):
		return &UsageError{Msg: fmt.Sprintf("--rate %v: moves per second per player must be from %v to %v", *rate, loadgen.MinRate, loadgen.MaxRate)}
	case *duration < 0:
		return &UsageError{Msg: fmt.Sprintf("--duration %v: must not be negative", *duration)}
	}
	if *prefix == "" {
		*prefix = "lg-" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "-"
	}
	g, err := graph.Open(*graphPath)
	if err != nil {
		return &InputError{Err: err}
	}
	out := io.Stdout
	if !*asJSON {
		fmt.Fprintf(out, "loadgen: %d players × %v moves/s against %s and %s for %v (players %s0…)\n",
			*players, *rate, *ingest, *push, durationText(*duration), *prefix)
	}
	var last loadgen.Stats
	enc := json.NewEncoder(out)
	report := func(s loadgen.Stats) {
		last = s
		switch {
		case *asJSON:
			enc.Encode(s)
		case s.Final:
			fmt.Fprint(out, s.Summary())
		default:
			fmt.Fprintln(out, s.Line())
		}
	}
	err = loadgen.Run(ctx, loadgen.Options{
		IngestURL:      *ingest,
		PushURL:        *push,
		Graph:          g,
		Players:        *players,
		MovesPerSecond: *rate,
		Secret:         *secret,
		PlayerPrefix:   *prefix,
		Seed:           *seed,
		Duration:       *duration,
		Logger:         slog.New(slog.NewTextHandler(io.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, report)
	if err != nil {
		return err
	}
	if last.Gaps > 0 {
		return fmt.Errorf("push skipped %d update ids: updates were lost", last.Gaps)
	}
	return nil
}

// wsFromAddr turns a listen address (host:port, ":port", "0.0.0.0:port")
// into the ws:// URL a local client dials.
func wsFromAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "ws://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "ws://" + net.JoinHostPort(host, port)
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "until interrupted"
	}
	return d.String()
}

const loadgenSynopsis = `loadgen steady|ramp|drop|http|closed [flags]

Open-loop load against running ingest and push services, over real
WebSockets: every simulated player opens a push and an ingest socket and
then sends moves on its own fixed schedule whether or not its earlier moves
were answered (several in flight; each path continues from the end of the
previous one sent), and every latency — the move's ack and its proximity
update — is measured from the move's scheduled send time (as wrk2 and
vegeta do), so queueing shows in the figures.

Scenarios:
  steady   --players P --rate R --duration D
           every player sends R moves/s (P×R offered in total) for D.
  ramp     --players P --from R0 --step S --every D [--max R] [--p99 14ms]
           total offered moves/s R0, R0+S, … each for D, until the p99
           move→update over a step passes --p99 or the backlog keeps
           growing; reports the highest rate that held both (held_rate).
  drop     --players N --within 1s [--waves W] [--treasures T]
           every player connects and idles; T random treasures are dropped
           (POST /v1/admin/drops, admin token signed with the secret); then
           every player sends one move at a seeded uniform time inside the
           window (W windows back to back). Polls GET /v1/leaderboard every
           100 ms throughout; reports moves sent in the window, latencies,
           the backlog's peak and how long it took to drain.
  http     --players P --rate R --duration D: the moves as POST /v1/moves
           through vegeta at R requests/s in total (` + "`treasure loadgen http -h`" + `).
  closed   the former closed-loop generator (one move in flight per
           player); not for figures. ` + "`treasure loadgen closed -h`" + `.

Output: one line per second (offered/sent/acked/answered per second, ack
and update p50/p99 over that second, backlog, errors), a summary, and with
--json a last line of stdout holding one JSON summary object. Exit status 1
when any move was lost, duplicated, answered out of order or unexpected
(the accounting: every move sent gets exactly one ack or error, every acked
move exactly one proximity update).

Several --ingest/--push URLs spread the players: player i uses ingest[i%n]
and push[i%m]; the HTTP side (drops, leaderboard) is the same host:port.
One process holds at most 9,900 players (two sockets each, open-files
limit 20,000). ` + "`treasure loadgen <scenario> -h`" + ` lists the flags.`

func runLoadgen(ctx context.Context, args []string, env Env, io IO) error {
	if len(args) == 0 {
		return &UsageError{Msg: "loadgen needs a scenario: steady, ramp, drop, http or closed (treasure loadgen -h)"}
	}
	switch args[0] {
	case "steady":
		return runLoadgenSteady(ctx, args[1:], env, io)
	case "ramp":
		return runLoadgenRamp(ctx, args[1:], env, io)
	case "drop":
		return runLoadgenDrop(ctx, args[1:], env, io)
	case "closed":
		return runLoadgenClosed(ctx, args[1:], env, io)
	case "http":
		return runLoadgenHTTP(ctx, args[1:], env, io)
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(io.Stderr, "Usage: treasure %s\n", loadgenSynopsis)
		return nil
	}
	return &UsageError{Msg: fmt.Sprintf("loadgen: unknown scenario %q: choose steady, ramp, drop, http or closed (the former default, closed loop)", args[0])}
}

// openFlags are the flags every open-loop scenario takes.
type openFlags struct {
	ingest, push, metrics       *string
	graph, secret, prefix       *string
	secretF                     *secretFlags
	env                         Env
	nats, streamPrefix, local   *string
	players, workers            *int
	seed                        *uint64
	asJSON, pushLeaderboard     *bool
	drain, connectTimeout       *time.Duration
	ingestURLs, pushURLs, mURLs []string
	m                           *measureFlags // loadgen_measure.go
	fs                          *flag.FlagSet
}

func addOpenFlags(fs *flag.FlagSet, env Env, players int, drain time.Duration) *openFlags {
	return &openFlags{
		ingest:          fs.String("ingest", wsFromAddr(envOr(env, platform.EnvIngestAddr, platform.DefaultIngestAddr)), "ingest WebSocket base URLs, comma-separated; player i uses the (i mod n)th (env TREASURE_INGEST_ADDR)"),
		push:            fs.String("push", wsFromAddr(envOr(env, platform.EnvPushAddr, platform.DefaultPushAddr)), "push WebSocket base URLs, comma-separated; player i uses the (i mod m)th (env TREASURE_PUSH_ADDR)"),
		metrics:         fs.String("metrics", "", "every server process's /metrics URL, comma-separated (server CPU per move, RSS, GC)"),
		graph:           fs.String("graph", env("TREASURE_GRAPH"), "road graph the services serve: .gr, .gr.gz or .snap (env TREASURE_GRAPH)"),
		secretF:         addSecretFlags(fs),
		env:             env,
		prefix:          fs.String("prefix", "", "player id prefix (default ol-<run id>-: new players every run)"),
		nats:            fs.String("nats", "", "NATS URL of the pipeline's JetStream, to read its backlog (optional)"),
		streamPrefix:    fs.String("stream-prefix", envOr(env, "TREASURE_STREAM_PREFIX", "treasure"), "stream prefix of the pipeline (with --nats)"),
		local:           fs.String("local-addr", "", "source IP to dial from (e.g. 127.0.0.3), to spread loopback ephemeral ports"),
		players:         fs.Int("players", players, "simulated players (beyond "+strconv.Itoa(fleet.PlayersPerWorker)+", worker processes of this binary hold them: see --workers)"),
		workers:         fs.Int("workers", 0, "load-generator worker processes (0: this process up to "+strconv.Itoa(fleet.PlayersPerWorker)+" players, else one per "+strconv.Itoa(fleet.PlayersPerWorker)+")"),
		seed:            fs.Uint64("seed", 1, "seed of spawns, walks and schedules"),
		asJSON:          fs.Bool("json", false, "print one JSON summary object as the last line of stdout"),
		pushLeaderboard: fs.Bool("push-leaderboard", false, "keep the push sockets' leaderboard broadcasts (default: ?leaderboard=off)"),
		drain:           fs.Duration("drain", drain, "after the schedule, wait at most this long for answers and updates still due"),
		connectTimeout:  fs.Duration("connect-timeout", 0, "how long connecting every player may take (0: 1m + 10ms a player); failed dials are retried within it"),
		m:               addMeasureFlags(fs),
		fs:              fs,
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// check validates the common flags and fills the lists.
func (f *openFlags) check() error {
	f.ingestURLs, f.pushURLs, f.mURLs = splitList(*f.ingest), splitList(*f.push), splitList(*f.metrics)
	switch {
	case *f.graph == "":
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required: the graph the services serve"}
	case *f.players < 1:
		return &UsageError{Msg: fmt.Sprintf("--players %d: at least 1", *f.players)}
	case *f.workers < 0:
		return &UsageError{Msg: fmt.Sprintf("--workers %d: must not be negative", *f.workers)}
	case len(f.ingestURLs) == 0 || len(f.pushURLs) == 0:
		return &UsageError{Msg: "--ingest and --push need at least one URL each"}
	case *f.drain < 0:
		return &UsageError{Msg: "--drain must not be negative"}
	case *f.connectTimeout < 0:
		return &UsageError{Msg: "--connect-timeout must not be negative"}
	}
	secret, err := f.secretF.value(f.env)
	if err != nil {
		return err
	}
	f.secret = &secret
	if *f.prefix == "" {
		*f.prefix = "ol-" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "-"
	}
	return nil
}

// openRunner runs an open-loop run with RunOpen's contract (the same
// options, per-second reports and Result) for any number of players.
type openRunner func(ctx context.Context, o loadgen.OpenOptions, report func(loadgen.Second)) (*loadgen.Result, error)

// runnerFor picks the runner for the flags: RunOpen in this process up to
// fleet.PlayersPerWorker players (and --workers 0); beyond, or with
// --workers N, worker processes of this binary (internal/loadgen/fleet),
// each holding its share of the players' sockets under the open-files limit.
func runnerFor(f *openFlags) openRunner {
	graphPath, workers := *f.graph, *f.workers
	return func(ctx context.Context, o loadgen.OpenOptions, report func(loadgen.Second)) (*loadgen.Result, error) {
		return fleet.RunOpen(ctx, fleet.Options{Open: o, GraphPath: graphPath, Workers: workers}, report)
	}
}

// openRun is one open-loop scenario's run, with its monitors.
type openRun struct {
	runner   openRunner
	f        *openFlags
	io       IO
	name     string
	g        *graph.Graph
	backlog  *loadgen.BacklogMonitor // nil without --nats
	board    *loadgen.LeaderboardPoller
	onSecond func(loadgen.Second)
}

// run runs o (its URLs, graph and identity filled in from the flags) with
// the monitors, prints the lines and the summary, and returns the result
// and its summary; extra adds the scenario's fields to the summary.
func (r *openRun) run(ctx context.Context, o loadgen.OpenOptions, extra func(*loadgen.Summary, *loadgen.Result)) error {
	f, out := r.f, r.io.Stdout
	m, err := r.startMeasure(ctx) // --reference runs here, before the pipeline
	if err != nil {
		return err
	}
	defer m.close()
	o.Ingest, o.Push, o.Graph, o.Secret = f.ingestURLs, f.pushURLs, r.g, *f.secret
	o.PlayerPrefix, o.Players, o.Seed, o.LocalAddr = *f.prefix, *f.players, *f.seed, *f.local
	o.PushLeaderboard, o.Drain, o.ConnectTimeout = *f.pushLeaderboard, *f.drain, *f.connectTimeout
	o.Logger = slog.New(slog.NewTextHandler(r.io.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m.wrap(&o) // samples at t0
	start := time.Now()
	lastProgress := time.Time{}
	o.Progress = func(n int) {
		if n == o.Players || time.Since(lastProgress) >= time.Second {
			lastProgress = time.Now()
			fmt.Fprintf(out, "connecting: %d/%d players (%.1f s)\n", n, o.Players, time.Since(start).Seconds())
		}
	}

	monCtx, stopMon := context.WithCancel(ctx)
	defer stopMon()
	var mons sync.WaitGroup
	if *f.nats != "" {
		nc, js, err := connectJetStream(*f.nats, "treasure-loadgen")
		if err != nil {
			return err
		}
		defer nc.Close()
		m.useJetStream(nc, js)
		r.backlog = &loadgen.BacklogMonitor{Read: loadgen.JetStreamBacklog(js, *f.streamPrefix), Every: 250 * time.Millisecond}
		if _, err := r.backlog.Read(ctx); err != nil {
			return err
		}
		mons.Add(1)
		go func() { defer mons.Done(); r.backlog.Run(monCtx) }()
	}
	if r.board != nil {
		mons.Add(1)
		go func() { defer mons.Done(); r.board.Run(monCtx) }()
	}
	res, err := r.runner(ctx, o, func(s loadgen.Second) {
		bl := "-"
		if r.backlog != nil {
			bl = strconv.FormatInt(r.backlog.Last(), 10)
		}
		fmt.Fprintln(out, s.Line(bl))
		m.second(s, r.backlog)
		if r.onSecond != nil {
			r.onSecond(s)
		}
	})
	stopMon()
	mons.Wait()
	m.stop(ctx)
	if res == nil {
		return err
	}
	sum := loadgen.NewSummary(r.name, res)
	if r.backlog != nil {
		sum.Extra["backlog_peak"] = r.backlog.Peak()
		sum.Extra["backlog_end"] = r.backlog.Last()
		if n, e := r.backlog.Failures(); n > 0 {
			sum.Extra["backlog_read_failures"] = n
			fmt.Fprintf(r.io.Stderr, "loadgen: %d backlog readings failed, the last: %v\n", n, e)
		}
	}
	if r.board != nil {
		st := r.board.Stats()
		sum.Extra["leaderboard_polls"] = st.Polls
		sum.Extra["leaderboard_failures"] = st.Failures
		sum.Extra["leaderboard_slowest_ms"] = st.SlowestMs()
		if st.Failures > 0 {
			fmt.Fprintf(r.io.Stderr, "loadgen: %d leaderboard polls failed, the last: %s\n", st.Failures, st.LastError)
		}
	}
	if extra != nil {
		extra(&sum, res)
	}
	fmt.Fprint(out, sum.Text())
	m.report(ctx, &sum, res, out)
	if *f.asJSON {
		b, jerr := json.Marshal(sum)
		if jerr != nil {
			return jerr
		}
		fmt.Fprintf(out, "%s\n", b)
	}
	if err != nil {
		return err
	}
	if res.Failed() {
		return fmt.Errorf("accounting failed: lost %d, duplicated %d, out of order %d, unexpected %d", res.Lost, res.Duplicated, res.OutOfOrder, res.Unexpected)
	}
	return nil
}

// newOpenRun loads the graph once the flags are checked.
func newOpenRun(name string, f *openFlags, io IO) (*openRun, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	runner := runnerFor(f)
	g, err := graph.Open(*f.graph)
	if err != nil {
		return nil, &InputError{Err: err}
	}
	return &openRun{runner: runner, f: f, io: io, name: name, g: g}, nil
}

const steadySynopsis = `loadgen steady [--players P] [--rate R] [--duration D] [common flags]

Open loop: every player sends R moves a second (P×R offered in total) for
D, each at its own seeded phase, whether or not earlier moves were answered.`

func runLoadgenSteady(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("loadgen steady", steadySynopsis, io.Stderr)
	f := addOpenFlags(fs, env, 100, 10*time.Second)
	rate := fs.Float64("rate", 1, "moves per second per player (the total offered is players × rate)")
	duration := fs.Duration("duration", 30*time.Second, "how long to send")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case !(*rate >= loadgen.MinRate && *rate <= loadgen.MaxRate):
		return &UsageError{Msg: fmt.Sprintf("--rate %v: moves per second per player must be from %v to %v", *rate, loadgen.MinRate, loadgen.MaxRate)}
	case *duration <= 0:
		return &UsageError{Msg: "--duration must be positive"}
	}
	r, err := newOpenRun("steady", f, io)
	if err != nil {
		return err
	}
	fmt.Fprintf(io.Stdout, "loadgen steady: %d players × %v moves/s = %.0f moves/s offered for %v; ingest %s, push %s (players %s0…)\n",
		*f.players, *rate, float64(*f.players)**rate, *duration, *f.ingest, *f.push, *f.prefix)
	return r.run(ctx, loadgen.OpenOptions{Schedule: loadgen.Schedule{Rate: *rate, Duration: *duration}}, func(s *loadgen.Summary, _ *loadgen.Result) {
		s.Extra["rate_per_player"] = *rate
		s.Extra["offered_per_s"] = float64(*f.players) * *rate
		s.Extra["duration_s"] = duration.Seconds()
	})
}

const rampSynopsis = `loadgen ramp [--players P] --from R0 --step S --every D [--max R] [--p99 14ms] [--warmup 10s] [common flags]

Open loop, rising: after an unjudged warm-up at R0 (--warmup), the total
offered rate is R0 moves/s for D, then R0+S,
R0+2S, … (spread evenly over the P players), until a step fails — its p99
move→update (over the updates that arrived during the step) passes --p99,
or the backlog keeps growing (the moves in flight at the step's end exceed
half a second of its offered moves and more than at its first second's
end) — or --max is passed. Reports held_rate: the highest step rate that
held both. Keep rate/players under ingest's per-player limit (default 20
moves/s): add players rather than rate.`

func runLoadgenRamp(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("loadgen ramp", rampSynopsis, io.Stderr)
	f := addOpenFlags(fs, env, 1000, 10*time.Second)
	from := fs.Float64("from", 1000, "first step's total offered moves/s")
	step := fs.Float64("step", 1000, "increase of the total offered moves/s per step")
	every := fs.Duration("every", 10*time.Second, "length of each step (whole seconds)")
	maxRate := fs.Float64("max", 0, "last step's total rate at most this (0: 50 steps at most)")
	p99 := fs.Duration("p99", 14*time.Millisecond, "a step holds while its p99 move→update is at most this")
	warmup := fs.Duration("warmup", 10*time.Second, "run at --from this long before the first step, unjudged (cold caches, first page faults; whole seconds, 0: none)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *warmup < 0 || *warmup%time.Second != 0:
		return &UsageError{Msg: "--warmup must be a whole number of seconds, 0 or more"}
	case !(*from > 0) || !(*step > 0):
		return &UsageError{Msg: "--from and --step must be positive"}
	case *every < time.Second || *every%time.Second != 0:
		return &UsageError{Msg: "--every must be a whole number of seconds, at least 1s"}
	case *maxRate != 0 && *maxRate < *from:
		return &UsageError{Msg: "--max must be at least --from"}
	}
	steps := 50
	if *maxRate > 0 {
		steps = int((*maxRate-*from) / *step) + 1
	}
	r, err := newOpenRun("ramp", f, io)
	if err != nil {
		return err
	}
	players := float64(*f.players)
	rateOf := func(k int) float64 { return *from + float64(k)**step }
	if top := rateOf(steps-1) / players; top > 20 {
		fmt.Fprintf(io.Stderr, "loadgen ramp: warning: the last step asks %.1f moves/s per player, above ingest's default limit of 20: add players\n", top)
	}
	everyS, warmS := int(*every/time.Second), int(*warmup/time.Second)
	stop := make(chan struct{})
	var (
		secs    []loadgen.Second
		held    float64
		stepLog []map[string]any
		stopped bool
	)
	r.onSecond = func(s loadgen.Second) {
		secs = append(secs, s)
		i := s.Index - warmS // the warm-up's seconds are no step, nor the drain's
		if i < 0 || (i+1)%everyS != 0 || stopped || i >= steps*everyS {
			return
		}
		k := i / everyS
		part := secs[len(secs)-min(everyS, len(secs)):]
		var agg loadgen.Second
		for _, x := range part {
			agg.Merge(x)
		}
		p := 0.0
		if agg.Update != nil && agg.Update.TotalCount() > 0 {
			p = float64(agg.Update.ValueAtQuantile(99)) / 1000
		}
		first, last := part[0].InFlight, part[len(part)-1].InFlight
		growing := float64(last) > rateOf(k)/2 && last > first
		ok := p <= float64(p99.Microseconds())/1000 && !growing && agg.Update != nil && agg.Update.TotalCount() > 0
		stepLog = append(stepLog, map[string]any{"rate": rateOf(k), "update_p99_ms": p, "in_flight": last, "held": ok})
		verdict := "held"
		if !ok {
			verdict = "FAILED"
			if growing {
				verdict += " (backlog growing)"
			}
		}
		fmt.Fprintf(io.Stdout, "ramp step %d: %.0f moves/s offered, update p99 %.2f ms, in flight %d: %s\n", k+1, rateOf(k), p, last, verdict)
		if ok {
			held = rateOf(k)
		} else {
			stopped = true
			close(stop)
		}
	}
	fmt.Fprintf(io.Stdout, "loadgen ramp: %d players, %.0f moves/s + %.0f every %v (at most %d steps) after a warm-up of %v, p99 bound %v; ingest %s, push %s\n",
		*f.players, *from, *step, *every, steps, *warmup, *p99, *f.ingest, *f.push)
	o := loadgen.OpenOptions{
		Schedule: loadgen.Schedule{
			Duration: *warmup + time.Duration(steps)**every,
			RateAt: func(el time.Duration) float64 {
				if el < *warmup {
					return rateOf(0) / players
				}
				return rateOf(min(int((el-*warmup) / *every), steps-1)) / players
			},
		},
		Stop: stop,
	}
	return r.run(ctx, o, func(s *loadgen.Summary, _ *loadgen.Result) {
		s.Extra["held_rate"] = held
		s.Extra["steps"] = stepLog
	})
}

const dropSynopsis = `loadgen drop [--players N] [--within 1s] [--waves W] [--treasures T] [common flags]

The city-wide drop: every player connects first and idles (progress is
printed); T random treasures are dropped through POST /v1/admin/drops on
the first ingest's HTTP side; then every player sends one move at a seeded
uniform time inside the window, W windows back to back. The leaderboard
(GET /v1/leaderboard on the push services' HTTP side, round-robin) is
polled every 100 ms from the start to the end: a failed poll (an error or
a status other than 200) is the original's "Leaderboard n/a". Reports the
moves sent in the window, latencies, the backlog's peak (JetStream's with
--nats, else the client's: moves acked and not yet answered) and drain_s,
the seconds after the window until every move was answered.`

func runLoadgenDrop(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("loadgen drop", dropSynopsis, io.Stderr)
	f := addOpenFlags(fs, env, 1000, 60*time.Second)
	within := fs.Duration("within", time.Second, "the window every player sends its move in")
	waves := fs.Int("waves", 1, "windows back to back, one move per player in each")
	treasures := fs.Int("treasures", 100, "treasures dropped before the window (0: none)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *within <= 0:
		return &UsageError{Msg: "--within must be positive"}
	case *waves < 1:
		return &UsageError{Msg: "--waves must be at least 1"}
	case *treasures < 0:
		return &UsageError{Msg: "--treasures must not be negative"}
	}
	r, err := newOpenRun("drop", f, io)
	if err != nil {
		return err
	}
	pushHTTP := make([]string, len(f.pushURLs))
	for i, u := range f.pushURLs {
		pushHTTP[i] = loadgen.HTTPBase(u)
	}
	r.board = &loadgen.LeaderboardPoller{URLs: pushHTTP, Every: 100 * time.Millisecond}
	fmt.Fprintf(io.Stdout, "loadgen drop: %d players, one move each within %v × %d; %d treasures; ingest %s, push %s (players %s0…)\n",
		*f.players, *within, *waves, *treasures, *f.ingest, *f.push, *f.prefix)
	start := time.Now()
	var connectS float64
	dropped := 0
	o := loadgen.OpenOptions{
		Schedule: loadgen.Schedule{Window: *within, Waves: *waves},
		Connected: func(ctx context.Context) (time.Time, error) {
			connectS = time.Since(start).Seconds()
			fmt.Fprintf(io.Stdout, "all %d players connected in %.1f s\n", *f.players, connectS)
			if *treasures > 0 {
				admin, err := auth.Sign(*f.secret, "loadgen-admin", "admin", time.Minute)
				if err != nil {
					return time.Time{}, err
				}
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				n, err := loadgen.PostDrop(dctx, nil, loadgen.HTTPBase(f.ingestURLs[0]), admin, loadgen.RandomTreasures(r.g, *treasures, *f.seed, *f.prefix+"t"))
				if err != nil {
					return time.Time{}, err
				}
				dropped = n
				fmt.Fprintf(io.Stdout, "dropped %d treasures; the window opens\n", n)
			}
			return time.Now(), nil
		},
	}
	return r.run(ctx, o, func(s *loadgen.Summary, res *loadgen.Result) {
		s.Extra["window_s"] = (time.Duration(*waves) * *within).Seconds()
		s.Extra["waves"] = *waves
		s.Extra["sent_in_window"] = res.SentInWindow
		s.Extra["treasures_dropped"] = dropped
		s.Extra["connect_s"] = connectS
		if r.backlog == nil {
			s.Extra["backlog_peak"] = res.OutstandingPeak
			s.Extra["backlog_source"] = "client"
		} else {
			s.Extra["backlog_source"] = "jetstream"
			if d, ok := r.backlog.ZeroAfter(res.Start.Add(time.Duration(*waves) * *within)); ok {
				s.Extra["backlog_drain_s"] = d.Seconds()
			}
		}
	})
}
