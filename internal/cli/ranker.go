package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"treasure/internal/platform"
	"treasure/services/ranker"
)

const rankerSynopsis = `ranker [--top N]

Runs the ranker: it consumes the claims and proximity results of P_OUT,
stores scores in PostgreSQL (TREASURE_DATABASE_URL, the database is created
when missing) in one statement per batch, keeps live ranks in Redis
(TREASURE_REDIS_URL, keys under "<TREASURE_STREAM_PREFIX>:"), and publishes
score changes and leaderboard snapshots on <prefix>.out.rank. Ops endpoints
(/healthz, /readyz, /metrics) listen on TREASURE_RANKER_ADDR.`

// runRanker runs the ranker service until ctx ends.
func runRanker(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("ranker", rankerSynopsis, io.Stderr)
	top := fs.Int("top", ranker.DefaultTopN, "players in each leaderboard snapshot")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("ranker: unexpected argument %q", fs.Arg(0))}
	}
	if *top < 1 || *top > 1000 {
		return &UsageError{Msg: fmt.Sprintf("ranker: --top %d: want 1 to 1000", *top)}
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	tuneGC(env, log, streamingGOGC)
	nc, js, topo, err := connectLog(ctx, cfg, cfg.NATSURL, "treasure-ranker@"+hostname(), nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	rdb, err := connectRedis(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer rdb.Close()
	pool, err := rankerPostgres(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	reg := platform.NewRegistry()
	rk, err := ranker.New(ranker.Options{
		Topology: topo, NC: nc, JS: js, Pool: pool,
		Redis: rdb, RedisPrefix: cfg.StreamPrefix + ":",
		TopN: *top, Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(platform.ReadyGauge("ranker", rk.Ready))
	srv := &platform.HTTPServer{
		Name: "ranker", Addr: cfg.RankerAddr, Handler: platform.OpsMux(reg, rk.Ready),
		// Warnings only: the start-up line below says where it listens.
		Log: platform.NewLogger(io.Stderr, platform.LogConfig{Format: cfg.Log.Format, Level: max(cfg.Log.Level, slog.LevelWarn)}),
	}
	if _, err := srv.Listen(); err != nil {
		return err
	}
	log.Info("ranker starting", "ops", "http://"+srv.ListenAddr().String(),
		"nats", platform.MaskURL(cfg.NATSURL), "stream", topo.OutStream(), "consumer", rk.Durable(), "publishes", topo.RankSubject(),
		"postgres", platform.MaskURL(cfg.DatabaseURL), "redis", platform.MaskURL(cfg.RedisURL), "redis_prefix", cfg.StreamPrefix+":", "top", *top)
	return platform.RunGroup(ctx, rk, srv)
}

// rankerPostgres opens a pool on url, creating the database first when it
// does not exist (SPEC: "create the database if missing"), through the
// server's "postgres" maintenance database.
func rankerPostgres(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, &UsageError{Msg: fmt.Sprintf("%s: %v", platform.EnvDatabaseURL, platform.MaskURL(err.Error()))}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(pctx, cfg.ConnConfig.Copy())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
		admin := cfg.ConnConfig.Copy()
		admin.Database = "postgres"
		ac, aerr := pgx.ConnectConfig(pctx, admin)
		if aerr != nil {
			return nil, fmt.Errorf("create database %s: %w", cfg.ConnConfig.Database, aerr)
		}
		_, aerr = ac.Exec(pctx, "CREATE DATABASE "+pgx.Identifier{cfg.ConnConfig.Database}.Sanitize())
		ac.Close(pctx)
		if aerr != nil && !(errors.As(aerr, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505")) { // exists: a concurrent start made it
			return nil, fmt.Errorf("create database %s: %w", cfg.ConnConfig.Database, aerr)
		}
		conn, err = pgx.ConnectConfig(pctx, cfg.ConnConfig.Copy())
	}
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w (is postgres running? scripts/services.sh ensure starts one)", platform.MaskURL(url), err)
	}
	conn.Close(pctx)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	return pool, nil
}
