package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
)

// serviceEnv reads the configuration and builds the logger every service
// subcommand starts with.
func serviceEnv(env Env, io IO) (platform.Config, *slog.Logger, error) {
	cfg, err := platform.FromEnv(env)
	if err != nil {
		return cfg, nil, &UsageError{Msg: err.Error()}
	}
	return cfg, platform.NewLogger(io.Stderr, cfg.Log), nil
}

// streamingGOGC is the collector's target (GOGC) of the services whose
// collector work follows their allocation rate, not a large live heap:
// ingest, push and the ranker. At 10,000 moves/s their GC took 1.5–9 % of
// their CPU at the default 100 and 0.6–1.2 % at 400, for 30–80 MB more RSS
// each (BENCHMARKS.md, "Collector settings"). Proximity keeps the default:
// its heap is the graph and its GC is already under 0.2 %.
const streamingGOGC = 400

// tuneGC sets the collector's target to percent unless the environment
// sets GOGC (which then wins, as for any Go program), and logs the choice.
func tuneGC(env Env, log *slog.Logger, percent int) {
	if v := env("GOGC"); v != "" {
		log.Info("collector target from the environment", "GOGC", v)
		return
	}
	debug.SetGCPercent(percent)
	log.Info("collector target", "GOGC", percent, "override", "GOGC in the environment")
}

// connectJetStream connects to cfg's NATS and returns the JetStream
// context. The connection retries forever in the background once made.
func connectJetStream(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w (is nats-server -js running? scripts/services.sh ensure starts one)", platform.MaskURL(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// connectLog connects to the NATS at url, declares the pipeline's streams
// (idempotent) and checks this service's graph (g; nil for a service that
// does not load it), partition count and radius against the configuration
// recorded with the streams, recording it when it is the first
// (natsjs.CheckConfig): a mismatch is refused with an error naming each
// value that differs. The caller closes the connection.
func connectLog(ctx context.Context, cfg platform.Config, url, name string, g *graph.Graph) (*nats.Conn, jetstream.JetStream, natsjs.Topology, error) {
	topo := topology(cfg)
	nc, js, err := connectJetStream(url, name)
	if err != nil {
		return nil, nil, topo, err
	}
	if err := topo.Ensure(ctx, js); err != nil {
		nc.Close()
		return nil, nil, topo, err
	}
	ours := natsjs.PipelineConfig{Partitions: cfg.Partitions, Radius: cfg.Radius, RecordedBy: name}
	if g != nil {
		ours.GraphDigest, ours.GraphNodes, ours.Graph = graph.Digest(g), g.NumNodes(), cfg.Graph
	}
	if _, err := natsjs.CheckConfig(ctx, js, topo, ours); err != nil {
		nc.Close()
		return nil, nil, topo, err
	}
	return nc, js, topo, nil
}

// connectRedis returns a client for cfg's Redis; with ping it also checks
// within 10 s that the server answers. The caller closes the client.
func connectRedis(ctx context.Context, cfg platform.Config, ping bool) (*redis.Client, error) {
	ropts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, &UsageError{Msg: fmt.Sprintf("%s: %v", platform.EnvRedisURL, err)}
	}
	rdb := redis.NewClient(ropts)
	if !ping {
		return rdb, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("connect to Redis at %s: %w (is redis-server running? scripts/services.sh ensure starts one)", platform.MaskURL(cfg.RedisURL), err)
	}
	return rdb, nil
}

// topology is the pipeline's streams for cfg. TREASURE_STREAM_MAX_BYTES and
// TREASURE_STREAM_MAX_MSGS, when set, cap all four streams alike.
func topology(cfg platform.Config) natsjs.Topology {
	l := natsjs.Limits{MaxBytes: cfg.StreamMaxBytes, MaxMsgs: cfg.StreamMaxMsgs}
	return natsjs.Topology{Prefix: cfg.StreamPrefix, Partitions: cfg.Partitions, Replicas: cfg.StreamReplicas, In: l, Out: l, Upd: l, DLQ: l}
}

// loadPartitioned loads cfg's graph and its partition assignment, logging
// what it loaded.
func loadPartitioned(cfg platform.Config, log *slog.Logger) (*graph.Graph, []uint32, error) {
	if cfg.Graph == "" {
		return nil, nil, &UsageError{Msg: "TREASURE_GRAPH is not set: name a .gr, .gr.gz or .snap (data/amsterdam.gr.gz is in the repository)"}
	}
	t0 := time.Now()
	g, err := graph.Open(cfg.Graph)
	if err != nil {
		return nil, nil, &InputError{Err: err}
	}
	part, err := graph.Partition(g, cfg.Partitions)
	if err != nil {
		return nil, nil, fmt.Errorf("partition %s into %d: %w", cfg.Graph, cfg.Partitions, err)
	}
	log.Info("graph loaded", "graph", cfg.Graph, "nodes", g.NumNodes(), "arcs", g.NumArcs(), "partitions", cfg.Partitions, "took", time.Since(t0).Round(time.Millisecond))
	return g, part, nil
}

// parseParts parses "0,2,5" or "1-3" lists of partitions below k.
func parseParts(s string, k int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("partition %q is not a number", f)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("partition range %q is not a-b with a <= b", f)
			}
		}
		for p := a; p <= b; p++ {
			if p < 0 || p >= k {
				return nil, fmt.Errorf("partition %d is outside 0..%d (TREASURE_PARTITIONS=%d)", p, k-1, k)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// hostname names this process in NATS connection names.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "treasure"
	}
	return h
}

// flagSet reports whether the flag name was given on fs's command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
