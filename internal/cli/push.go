package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/pgstore"
	"treasure/internal/platform"
	"treasure/services/push"
)

const pushSynopsis = `push [--ring N] [--queue N] [--write-delay D]

Runs push: it follows the whole P_OUT stream and sends every player their
updates (proximity, claim, score, with per-player ids; leaderboard
snapshots to everyone) over GET /v1/updates/ws?token=…[&after=I], and
serves GET /v1/leaderboard?limit=N and GET /v1/players/{id} from Redis
(TREASURE_REDIS_URL, keys under "<TREASURE_STREAM_PREFIX>:"), or from
PostgreSQL (TREASURE_DATABASE_URL) when Redis is down. GET / is the live
page (a map of the game fed by the spectator WebSocket GET /v1/spectate;
docs/protocol.md): it draws TREASURE_GRAPH when that is set (push loads
the graph for it; --map=false skips that). Everything, /healthz, /readyz
and /metrics included, listens on TREASURE_PUSH_ADDR.`

// runPush runs the push service until ctx ends.
func runPush(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("push", pushSynopsis, io.Stderr)
	ring := fs.Int("ring", push.DefaultRingSize, "recent updates kept per player for ?after= resume")
	queue := fs.Int("queue", push.DefaultQueueSize, "messages queued per socket before it is closed as slow")
	delay := fs.Duration("write-delay", 0, "how long a socket's writer waits to gather updates into one frame")
	withMap := fs.Bool("map", true, "load TREASURE_GRAPH (when set) for the live page's map")
	sndbuf := fs.Int("send-buffer", 0, "each socket's kernel send buffer in bytes (SO_SNDBUF); 0 leaves it to the kernel's autotuning, which lets a reader that stops hold up to net.ipv4.tcp_wmem's maximum before --queue counts")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("push: unexpected argument %q", fs.Arg(0))}
	}
	if *ring < 1 || *queue < 1 || *delay < 0 || *sndbuf < 0 {
		return &UsageError{Msg: "push: --ring and --queue must be positive, --write-delay and --send-buffer not negative"}
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	tuneGC(env, log, streamingGOGC)
	if err := cfg.RequireJWTSecret(); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	verifier, err := auth.NewVerifier(cfg.JWTSecret)
	if err != nil {
		return err
	}
	limits, err := platform.LimitsFromEnv(env)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	nc, js, topo, err := connectLog(ctx, cfg, cfg.NATSURL, "treasure-push@"+hostname(), nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	rdb, err := connectRedis(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// The pool connects lazily: push starts, and answers from Redis, while
	// PostgreSQL is down.
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return &UsageError{Msg: fmt.Sprintf("%s: %v", platform.EnvDatabaseURL, platform.MaskURL(err.Error()))}
	}
	defer pool.Close()
	// The ranker owns the scores; migrating here too (idempotent, safe
	// concurrently) lets the fallback answer when push starts first.
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := pgstore.Migrate(mctx, pool); err != nil {
		log.Warn("postgres not migrated: the leaderboard fallback answers 503 until the ranker has run", "err", err)
	}
	cancel()

	var g *graph.Graph
	if *withMap && cfg.Graph != "" {
		t0 := time.Now()
		if g, err = graph.Open(cfg.Graph); err != nil {
			return fmt.Errorf("push: live page map: %w", err)
		}
		log.Info("graph loaded for the live page", "graph", cfg.Graph, "nodes", g.NumNodes(), "coordinates", g.HasCoords(), "took", time.Since(t0).Round(time.Millisecond))
	}

	reg := platform.NewRegistry()
	srv, err := push.New(push.Options{
		Graph: g, Topology: topo, NC: nc, JS: js,
		Redis: rdb, RedisPrefix: cfg.StreamPrefix + ":",
		Postgres: pool, Verifier: verifier,
		RingSize: *ring, QueueSize: *queue, WriteDelay: *delay, SendBuffer: *sndbuf, CheckpointEvery: cfg.CheckpointEvery,
		MaxConnsPerAddr: limits.MaxConnsPerAddr, MaxSocketsPerPlayer: limits.MaxSocketsPerPlayer,
		LeaderboardRate: limits.LeaderboardRate,
		Log:             log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(platform.ReadyGauge("push", srv.Ready))
	mux := platform.OpsMux(reg, srv.Ready)
	mux.Handle("/", srv.Handler()) // the API under /v1/, the live page at /
	hs := &platform.HTTPServer{
		Name: "push", Addr: cfg.PushAddr, Handler: mux,
		// Warnings only: the start-up line below says where it listens.
		Log: platform.NewLogger(io.Stderr, platform.LogConfig{Format: cfg.Log.Format, Level: max(cfg.Log.Level, slog.LevelWarn)}),
	}
	limits.Apply(hs)
	bound, err := hs.Listen()
	if err != nil {
		return err
	}
	log.Info("push starting", "url", "http://"+bound.String(), "live_page", "http://"+bound.String()+"/", "updates", "ws://"+bound.String()+"/v1/updates/ws",
		"nats", platform.MaskURL(cfg.NATSURL), "stream", topo.OutStream(),
		"redis", platform.MaskURL(cfg.RedisURL), "redis_prefix", cfg.StreamPrefix+":", "postgres", platform.MaskURL(cfg.DatabaseURL),
		"ring", *ring, "queue", *queue)
	return platform.RunGroup(ctx, hs, srv)
}
