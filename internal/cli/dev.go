package cli

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/stack"
	"treasure/services/proximity"
)

const devSynopsis = `dev [--players N] [--rate R] [--treasures T] [--data DIR] [--duration D]
    [--separate] [--ingest N] [--push M] [--proximity P] [--endpoints FILE]
    [--archive-dir DIR|off]

Runs the whole pipeline in one process: the four services (ingest, proximity,
ranker, push) against Redis and PostgreSQL from the environment, and — with
TREASURE_NATS_URL unset — an embedded JetStream server on
TREASURE_DEV_NATS_ADDR (default 127.0.0.1:4223; store in a temporary folder
unless --data DIR). It drops T treasures on the graph through the admin API,
and again every --drop-every, and with --players N adds N simulated players
walking the graph over real WebSockets, printing every second: moves/s,
p50/p99 move→update latency, backlog, top 5.

With --separate, or N > 1 ingest or M > 1 push instances, or P > 1
proximity workers, the services run instead as child processes of this
binary (treasure ingest|push|proximity|ranker; one process holds at most
about 19,900 sockets, so 35,000 players need 2 ingest and 2 push): instance
i (from 1) of a service listens on its TREASURE_*_ADDR port + 100·i (ingest
8181, 8281, …; push 8182, 8282, …; proximity 8183, …; ranker 8184), or on
free ports when that port is 0. dev keeps the JetStream server, the drops
and a status line every second; the children's output goes to stderr behind
[name]. A child that exits on its own stops the run with exit status 1;
Ctrl-C, SIGTERM or --duration stop every child (SIGTERM, then SIGKILL of its
process group after 20 s). --endpoints FILE writes the run's addresses,
secret and stream prefix as JSON once every service is ready (removed on
exit).

The archiver (treasure archive) runs too, in the process or as a child with
--separate, writing the log's Parquet archive to --archive-dir (default:
DIR/archive with --data DIR, else a temporary folder removed on exit; "off"
runs no archiver).

TREASURE_GRAPH defaults to data/amsterdam.gr.gz (© OpenStreetMap
contributors). Without TREASURE_JWT_SECRET a secret is generated and printed.
Without --data, the run keeps its scores in a fresh PostgreSQL schema and
Redis key prefix that are removed on exit (with --separate also its own
stream prefix "<TREASURE_STREAM_PREFIX>-<run>", streams deleted on exit).`

const maxDevPlayers = 4800

// devFlags are `treasure dev`'s flags.
type devFlags struct {
	players, treasures           int
	rate                         float64
	dropEvery, duration          time.Duration
	dataDir, endpoints           string
	separate                     bool
	ingests, pushes, proximities int
	archiveDir                   string
}

func runDev(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("dev", devSynopsis, io.Stderr)
	var f devFlags
	fs.IntVar(&f.players, "players", 0, "simulated players (0: none; at most 4,800 in one process, 9,900 with --separate)")
	fs.Float64Var(&f.rate, "rate", 1, "moves per second per simulated player")
	fs.IntVar(&f.treasures, "treasures", 300, "treasures dropped at start")
	fs.DurationVar(&f.dropEvery, "drop-every", 30*time.Second, "drop as many again this often (0: never)")
	fs.StringVar(&f.dataDir, "data", "", "keep the embedded JetStream store here (default: a temporary folder)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long (0: until interrupted)")
	fs.BoolVar(&f.separate, "separate", false, "run the services as separate processes of this binary")
	fs.IntVar(&f.ingests, "ingest", 1, "ingest processes (more than 1 implies --separate)")
	fs.IntVar(&f.pushes, "push", 1, "push processes (more than 1 implies --separate)")
	fs.IntVar(&f.proximities, "proximity", 1, "proximity processes, partitions dealt round-robin (more than 1 implies --separate)")
	fs.StringVar(&f.endpoints, "endpoints", "", "write the run's addresses as JSON to this file once every service is ready")
	fs.StringVar(&f.archiveDir, "archive-dir", "", `archive the log here ("off": no archiver; default DIR/archive with --data DIR, else a temporary folder)`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("dev: unexpected argument %q", fs.Arg(0))}
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"--ingest", f.ingests}, {"--push", f.pushes}, {"--proximity", f.proximities}} {
		if n.v < 1 || n.v > devMaxInstances {
			return &UsageError{Msg: fmt.Sprintf("%s %d: want 1 to %d processes", n.flag, n.v, devMaxInstances)}
		}
	}
	separate := f.separate || f.ingests > 1 || f.pushes > 1 || f.proximities > 1
	players, rate, treasures, dropEvery, dataDir, duration := &f.players, &f.rate, &f.treasures, &f.dropEvery, &f.dataDir, &f.duration
	// Both ends of every simulated player's two sockets live in this
	// process: four descriptors each, under the 20,000 per process.
	if !separate && *players > maxDevPlayers {
		return &UsageError{Msg: fmt.Sprintf("--players %d: one dev process holds both ends of each player's two sockets, so at most %d; for more, run `treasure loadgen` processes against it (or dev --separate)", *players, maxDevPlayers)}
	}
	if separate && *players > loadgen.MaxPlayers {
		return &UsageError{Msg: fmt.Sprintf("--players %d: dev --separate holds the client end of each player's two sockets, so at most %d; for more, run `treasure loadgen` against it", *players, loadgen.MaxPlayers)}
	}
	if env(platform.EnvGraph) == "" {
		prev := env
		env = func(k string) string {
			if k == platform.EnvGraph {
				return "data/amsterdam.gr.gz"
			}
			return prev(k)
		}
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	if separate && f.proximities > cfg.Partitions {
		return &UsageError{Msg: fmt.Sprintf("--proximity %d: more workers than the %d partitions (TREASURE_PARTITIONS)", f.proximities, cfg.Partitions)}
	}
	if cfg.JWTSecret == "" {
		var b [16]byte
		_, _ = crand.Read(b[:])
		cfg.JWTSecret = hex.EncodeToString(b[:])
		fmt.Fprintf(io.Stdout, "TREASURE_JWT_SECRET=%s (generated for this run)\n", cfg.JWTSecret)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if separate {
		return runDevSeparate(ctx, f, cfg, env, log, io)
	}

	g, part, err := loadPartitioned(cfg, log)
	if err != nil {
		return err
	}

	// NATS: the environment's, or an embedded JetStream server.
	natsURL := cfg.NATSURL
	if !cfg.NATSURLSet {
		stopNATS, url, err := embeddedNATS(cfg.DevNATSAddr, *dataDir)
		if err != nil {
			return err
		}
		defer stopNATS()
		natsURL = url
	}
	nc, js, topo, err := connectLog(ctx, cfg, natsURL, "treasure-dev", g)
	if err != nil {
		return err
	}
	defer nc.Close()

	// Redis and PostgreSQL: a run without --data gets its own key prefix
	// and schema, dropped on exit, so that its fresh log and its scores
	// agree (treasure ids repeat across runs).
	rdb, err := connectRedis(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	redisPrefix, schema := cfg.StreamPrefix+":", ""
	if *dataDir == "" || cfg.NATSURLSet {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		redisPrefix, schema = "dev-"+run+":", "dev_"+run
	}
	pool, dropSchema, err := devPostgres(ctx, cfg.DatabaseURL, schema)
	if err != nil {
		return err
	}
	defer pool.Close()
	defer dropSchema()
	defer cleanRedis(rdb, redisPrefix, schema != "")

	limits, err := platform.LimitsFromEnv(env)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	st, err := stack.New(stack.Options{
		Graph: g, Part: part, Radius: cfg.Radius, Topology: topo, NC: nc, JS: js,
		Redis: rdb, RedisPrefix: redisPrefix, Postgres: pool, JWTSecret: cfg.JWTSecret,
		IngestAddr: cfg.IngestAddr, PushAddr: cfg.PushAddr, ProximityAddr: cfg.ProximityAddr, RankerAddr: cfg.RankerAddr,
		Limits: limits, Log: log, CheckpointEvery: cfg.CheckpointEvery,
	})
	if err != nil {
		return err
	}
	ingestURL, pushURL := "http://"+st.IngestAddr().String(), "http://"+st.PushAddr().String()
	fmt.Fprintf(io.Stdout, "treasure dev: ingest %s (ws /v1/moves/ws), push %s (ws /v1/updates/ws, GET /v1/leaderboard), nats %s, redis %s (prefix %s), postgres %s%s, graph %s (%d nodes, %d partitions)\n",
		ingestURL, pushURL, natsURL, platform.MaskURL(cfg.RedisURL), redisPrefix, platform.MaskURL(cfg.DatabaseURL), schemaNote(schema), cfg.Graph, g.NumNodes(), cfg.Partitions)

	// The stack runs on its own context, stopped only after the simulated
	// players have stopped, so that an interrupt ends the players' run
	// cleanly before the services close their sockets.
	outer := ctx
	stackCtx, stopStack := context.WithCancelCause(context.Background())
	defer stopStack(nil)
	ctx, cancel := context.WithCancelCause(outer)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- st.Run(stackCtx) }()
	defer startRetention(stackCtx, cfg, js, topo, log, st.Registry)()
	if err := waitReady(ctx, st.Ready, 60*time.Second); err != nil {
		stopStack(err)
		<-done
		return err
	}
	archiveDefault := "" // a temporary folder, or DIR/archive with --data
	if cfg.NATSURLSet && *dataDir == "" {
		archiveDefault = cfg.ArchiveDir // the log outlives the run
	}
	archiveDir, removeArchive, err := devArchiveDir(f.archiveDir, *dataDir, archiveDefault, !cfg.NATSURLSet && *dataDir == "")
	if err != nil {
		stopStack(err)
		<-done
		return err
	}
	defer removeArchive()
	archiveReady, archiveDone, err := startArchiver(stackCtx, js, topo, archiveDir, log, st.Registry)
	if err != nil {
		stopStack(err)
		<-done
		return err
	}
	defer func() { // the archiver stops with the stack, committing its open segments
		stopStack(nil)
		_ = archiveDone()
	}()
	if err := waitReady(ctx, archiveReady, 60*time.Second); err != nil {
		stopStack(err)
		<-done
		return err
	}
	if archiveDir != "" {
		fmt.Fprintf(io.Stdout, "archive: %s\n", absPath(archiveDir))
	}
	fmt.Fprintln(io.Stdout, "all four services ready")
	printLivePage(io.Stdout, pushURL, cfg.JWTSecret)
	if f.endpoints != "" {
		// The four services share one process and one registry: one
		// /metrics URL covers them (listing four would count it 4 times).
		if err := writeEndpoints(f.endpoints, devEndpoints{
			Ingest: []string{"ws://" + st.IngestAddr().String()}, Push: []string{"ws://" + st.PushAddr().String()},
			Metrics: []string{ingestURL + "/metrics"}, NATS: natsURL, StreamPrefix: cfg.StreamPrefix,
			Redis: cfg.RedisURL, RedisPrefix: redisPrefix, Secret: cfg.JWTSecret, Graph: absPath(cfg.Graph),
			Processes: []devProcess{{Name: "dev", Pid: os.Getpid(), Addr: st.IngestAddr().String()}},
		}); err != nil {
			stopStack(err)
			<-done
			return err
		}
		defer os.Remove(f.endpoints)
	}

	// The admin token of the drops is short-lived and renewed: every
	// round asks the minter.
	admin, err := auth.NewMinter(cfg.JWTSecret, auth.DefaultTTL)
	if err != nil {
		return err
	}
	drops := startDrops(ctx, ingestURL, admin, g, *treasures, *dropEvery, log)

	if *players > 0 {
		backlog := func() int64 { return pipelineBacklog(ctx, topo, js) }

		err := loadgen.Run(ctx, loadgen.Options{
			IngestURL: "ws://" + st.IngestAddr().String(), PushURL: "ws://" + st.PushAddr().String(),
			Graph: g, Players: *players, MovesPerSecond: *rate, Secret: cfg.JWTSecret, PlayerPrefix: "dev-", Logger: log,
		}, func(s loadgen.Stats) {
			if s.Final {
				fmt.Fprintln(io.Stdout, s.Summary())
				return
			}
			fmt.Fprintf(io.Stdout, "%s | backlog %d | treasures dropped %d\n", s.Line(), backlog(), drops.Load())
		})
		if err != nil && ctx.Err() == nil {
			cancel(err)
		}
	}
	if *players == 0 || *duration == 0 {
		select { // run until interrupted (or the duration ends)
		case <-ctx.Done():
		case err := <-done:
			done <- err
		}
	}
	stopStack(nil)
	err = <-done
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		return cause
	}
	return err
}

func schemaNote(schema string) string {
	if schema == "" {
		return ""
	}
	return " (schema " + schema + ", dropped on exit)"
}

// embeddedNATS starts an in-process JetStream server on addr, storing in
// dir or, when dir is empty, in a temporary folder. stop shuts it down and
// removes the temporary folder.
func embeddedNATS(addr, dir string) (stop func(), url string, err error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", &UsageError{Msg: fmt.Sprintf("%s: %v", platform.EnvDevNATSAddr, err)}
	}
	temp := ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "treasure-dev-js-"); err != nil {
			return nil, "", err
		}
		temp = dir
	}
	removeTemp := func() {
		if temp != "" {
			os.RemoveAll(temp)
		}
	}
	port, _ := strconv.Atoi(portStr)
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	ns, err := server.NewServer(&server.Options{Host: host, Port: port, JetStream: true, StoreDir: dir, NoSigs: true, ServerName: "treasure-dev"})
	if err != nil {
		removeTemp()
		return nil, "", fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		removeTemp()
		return nil, "", fmt.Errorf("embedded nats on %s did not start (port taken? set TREASURE_DEV_NATS_ADDR)", addr)
	}
	stop = func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		removeTemp()
	}
	return stop, ns.ClientURL(), nil
}

// absPath is p made absolute (p itself when that fails).
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// devPostgres connects (creating the database if missing) and, for a
// non-empty schema, creates it and points the pool's search_path at it.
func devPostgres(ctx context.Context, url, schema string) (*pgxpool.Pool, func(), error) {
	base, err := rankerPostgres(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	if schema == "" {
		return base, func() {}, nil
	}
	if _, err := base.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
		base.Close()
		return nil, nil, fmt.Errorf("create schema %s: %w", schema, err)
	}
	pcfg := base.Config()
	pcfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		base.Close()
		return nil, nil, err
	}
	drop := func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		pool.Close()
		_, _ = base.Exec(c, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		base.Close()
	}
	return pool, drop, nil
}

// cleanRedis removes a temporary run's keys.
func cleanRedis(rdb *redis.Client, prefix string, temporary bool) {
	if !temporary {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
}

// waitReady polls ready until it returns nil.
func waitReady(ctx context.Context, ready func() error, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dropTreasures drops n random treasures through the admin API.
func dropTreasures(ctx context.Context, ingestURL, token string, g *graph.Graph, n, round int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	r := rand.New(rand.NewPCG(uint64(round), 42))
	type treasure struct {
		ID     string `json:"id"`
		Node   uint32 `json:"node"`
		Points int    `json:"points"`
	}
	body := struct {
		Treasures []treasure `json:"treasures"`
	}{}
	for i := 0; i < n; i++ {
		body.Treasures = append(body.Treasures, treasure{ID: fmt.Sprintf("r%d-t%d", round, i), Node: graph.ID(uint32(r.IntN(g.NumNodes()))), Points: 10 * (1 + r.IntN(10))})
	}
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ingestURL+"/v1/admin/drops", bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Accepted int `json:"accepted"`
	}
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("POST /v1/admin/drops: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	return out.Accepted, nil
}

// pipelineBacklog sums the messages waiting for the proximity workers:
// the queue absorbing a burst. -1 when it cannot be read.
func pipelineBacklog(ctx context.Context, topo natsjs.Topology, js jetstream.JetStream) int64 {
	var n int64
	for k := 0; k < topo.Partitions; k++ {
		c, err := js.Consumer(ctx, topo.InStream(), proximity.Durable(topo, k))
		if err != nil {
			return -1
		}
		info, err := c.Info(ctx)
		if err != nil {
			return -1
		}
		n += int64(info.NumPending) + int64(info.NumAckPending)
	}
	return n
}
