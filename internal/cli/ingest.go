package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"treasure/internal/platform"
	"treasure/internal/ratelimit"
	"treasure/services/ingest"
)

// envIngestFlush sets ingest's batch wait (--flush).
const envIngestFlush = "TREASURE_INGEST_FLUSH"

const ingestSynopsis = `ingest [--partitions K] [--addr ADDR] [--rate R] [--burst B]

Runs the ingest service: players' moves over WebSocket (GET /v1/moves/ws)
and HTTP (POST /v1/moves), the admin's treasure drops (POST
/v1/admin/drops), and /healthz, /readyz, /metrics, all on
TREASURE_INGEST_ADDR. Moves are validated against TREASURE_GRAPH and
appended to the JetStream log (TREASURE_NATS_URL), routed by
graph.Partition into K partitions; player states live in Redis
(TREASURE_REDIS_URL). TREASURE_JWT_SECRET is required.`

// runIngest runs the ingest service until ctx ends.
func runIngest(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("ingest", ingestSynopsis, io.Stderr)
	partitions := fs.Int("partitions", 0, "graph partitions K; every service must use the same (default $TREASURE_PARTITIONS or 4)")
	addr := fs.String("addr", "", "listen address (default $TREASURE_INGEST_ADDR or "+platform.DefaultIngestAddr+")")
	rate := fs.Float64("rate", ratelimit.Default.Rate, "per-player moves per second")
	burst := fs.Int("burst", ratelimit.Default.Burst, "per-player burst of moves")
	flush := fs.Duration("flush", ingest.DefaultFlushInterval, "longest a move waits in its partition's batch before the batch is published (env TREASURE_INGEST_FLUSH): longer batches cost the log fewer messages per move, and the move that wait")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("ingest: unexpected argument %q", fs.Arg(0))}
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	tuneGC(env, log, streamingGOGC)
	if *partitions != 0 {
		if *partitions < 1 || *partitions > 4096 {
			return &UsageError{Msg: fmt.Sprintf("--partitions %d: want 1 to 4096", *partitions)}
		}
		cfg.Partitions = *partitions
	}
	if *addr != "" {
		cfg.IngestAddr = *addr
		if err := cfg.Validate(); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	if v := env(envIngestFlush); v != "" && !flagSet(fs, "flush") {
		d, err := time.ParseDuration(v)
		if err != nil {
			return &UsageError{Msg: fmt.Sprintf("TREASURE_INGEST_FLUSH=%q: %v", v, err)}
		}
		*flush = d
	}
	if *flush <= 0 || *flush > time.Second {
		return &UsageError{Msg: fmt.Sprintf("--flush %v: want more than 0 and at most 1s", *flush)}
	}
	limit := ratelimit.Limit{Rate: *rate, Burst: *burst}
	if err := limit.Validate(); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	if err := cfg.RequireJWTSecret(); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	limits, err := platform.LimitsFromEnv(env)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	g, part, err := loadPartitioned(cfg, log)
	if err != nil {
		return err
	}
	nc, js, topo, err := connectLog(ctx, cfg, cfg.NATSURL, "treasure-ingest@"+hostname(), g)
	if err != nil {
		return err
	}
	defer nc.Close()
	rdb, err := connectRedis(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()

	reg := platform.NewRegistry()
	in, err := ingest.New(ingest.Options{
		Graph: g, Part: part, Topology: topo, NC: nc, JS: js,
		Redis: rdb, RedisPrefix: cfg.StreamPrefix + ":",
		JWTSecret: cfg.JWTSecret, RateLimit: limit, Instance: "ingest@" + hostname(), FlushInterval: *flush,
		MaxConnsPerAddr: limits.MaxConnsPerAddr, MaxSocketsPerPlayer: limits.MaxSocketsPerPlayer,
		Log: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(platform.ReadyGauge("ingest", in.Ready))
	mux := platform.OpsMux(reg, in.Ready)
	mux.Handle("/v1/", in.Handler())
	hs := &platform.HTTPServer{
		Name: "ingest", Addr: cfg.IngestAddr, Handler: mux,
		// Warnings only: the start-up line below says where it listens.
		Log: platform.NewLogger(io.Stderr, platform.LogConfig{Format: cfg.Log.Format, Level: max(cfg.Log.Level, slog.LevelWarn)}),
	}
	limits.Apply(hs)
	bound, err := hs.Listen()
	if err != nil {
		return err
	}
	log.Info("ingest listening",
		"url", "http://"+bound.String(),
		"moves", "ws://"+bound.String()+"/v1/moves/ws",
		"nats", platform.MaskURL(cfg.NATSURL), "stream", topo.InStream(), "partitions", cfg.Partitions,
		"redis", platform.MaskURL(cfg.RedisURL), "rate_limit", limit.String(), "instance", in.Instance())
	return platform.RunGroup(ctx, hs, in)
}
