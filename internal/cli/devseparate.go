package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
)

// runDevSeparate is `treasure dev` with the services as child processes
// (see devSynopsis): dev keeps the JetStream server (embedded unless
// TREASURE_NATS_URL is set), prepares the run's schema, prefix and streams,
// starts and supervises the children, drops the treasures and prints the
// status every second; on the way out it stops the children before it
// removes what the run created.
func runDevSeparate(ctx context.Context, f devFlags, cfg platform.Config, env Env, log *slog.Logger, io IO) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dev --separate: find this binary: %w", err)
	}
	if strings.HasSuffix(exe, ".test") {
		return &UsageError{Msg: "dev --separate starts the services as processes of the treasure binary, and " + exe + " is a test binary: build cmd/treasure and run that"}
	}
	t0 := time.Now()
	g, err := graph.Open(cfg.Graph)
	if err != nil {
		return &InputError{Err: err}
	}
	log.Info("graph loaded", "graph", cfg.Graph, "nodes", g.NumNodes(), "took", time.Since(t0).Round(time.Millisecond))
	// This process only picks treasure nodes from the graph: its pages,
	// all touched by the load's checks, can leave the resident set.
	if err := g.EvictPages(); err != nil {
		log.Warn("graph pages stay resident", "err", err)
	}

	natsURL := cfg.NATSURL
	if !cfg.NATSURLSet {
		stopNATS, url, err := embeddedNATS(cfg.DevNATSAddr, f.dataDir)
		if err != nil {
			return err
		}
		defer stopNATS()
		natsURL = url
	}

	// A temporary run (no --data, or a NATS server that is not dev's own)
	// gets its own stream prefix, which the children also use for their
	// Redis keys ("<prefix>:"), and its own PostgreSQL schema, all
	// removed on exit.
	temporary := f.dataDir == "" || cfg.NATSURLSet
	schema := ""
	if temporary {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		cfg.StreamPrefix = runPrefix(cfg.StreamPrefix, run)
		schema = "dev_" + run
	}
	redisPrefix := cfg.StreamPrefix + ":"
	nc, js, topo, err := connectLog(ctx, cfg, natsURL, "treasure-dev", nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	if temporary && cfg.NATSURLSet {
		defer deleteRunStreams(js, topo, log)
	}
	rdb, err := connectRedis(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer rdb.Close()
	pool, dropSchema, err := devPostgres(ctx, cfg.DatabaseURL, schema)
	if err != nil {
		return err
	}
	pool.Close() // dev itself stores nothing; dropSchema still drops the schema
	defer dropSchema()
	defer cleanRedis(rdb, redisPrefix, temporary)

	childEnv := devChildEnv(env, map[string]string{
		platform.EnvNATSURL:      natsURL,
		platform.EnvStreamPrefix: cfg.StreamPrefix,
		platform.EnvRedisURL:     cfg.RedisURL,
		platform.EnvDatabaseURL:  withSearchPath(cfg.DatabaseURL, schema),
		platform.EnvGraph:        absPath(cfg.Graph),
		platform.EnvJWTSecret:    cfg.JWTSecret,
		platform.EnvPartitions:   strconv.Itoa(cfg.Partitions),
		platform.EnvRadius:       strconv.FormatUint(uint64(cfg.Radius), 10),
	})
	// The archive: temporary when the run's log is.
	archiveDefault := cfg.ArchiveDir
	if f.dataDir != "" {
		archiveDefault = ""
	}
	archiveDir, removeArchive, err := devArchiveDir(f.archiveDir, f.dataDir, archiveDefault, temporary)
	if err != nil {
		return err
	}
	defer removeArchive() // after stopAll (deferred below)
	total := 3 + f.proximities + f.pushes + f.ingests
	sup := newDevChildren(exe, childEnv, io.Stderr, total)
	stopped := false
	stopAll := func() {
		if stopped {
			return
		}
		stopped = true
		for _, problem := range sup.stop(devStopTimeout) {
			log.Warn("service process did not stop cleanly", "problem", problem)
		}
	}
	defer stopAll() // before the cleanups above: they run after it

	var ingests, pushes, others []*devChild
	start := func(list *[]*devChild, service, addrVar, base string, n int, args func(i int) []string) error {
		for i := 1; i <= n; i++ {
			addr, err := instanceAddr(base, i)
			if err != nil {
				return &UsageError{Msg: fmt.Sprintf("%s: %v", addrVar, err)}
			}
			c, err := sup.start(service+"-"+strconv.Itoa(i), service, addrVar, addr, args(i)...)
			if err != nil {
				return err
			}
			*list = append(*list, c)
		}
		return nil
	}
	none := func(int) []string { return nil }
	if err := start(&others, "ranker", platform.EnvRankerAddr, cfg.RankerAddr, 1, none); err != nil {
		return err
	}
	if err := start(&others, "proximity", platform.EnvProximityAddr, cfg.ProximityAddr, f.proximities, func(i int) []string {
		return []string{"--partitions", proximityParts(i-1, f.proximities, cfg.Partitions)}
	}); err != nil {
		return err
	}
	var archivers []*devChild
	if archiveDir != "" {
		if err := start(&archivers, "archive", platform.EnvArchiveAddr, cfg.ArchiveAddr, 1, func(int) []string {
			return []string{"--dir", absPath(archiveDir)}
		}); err != nil {
			return err
		}
	}
	if err := start(&pushes, "push", platform.EnvPushAddr, cfg.PushAddr, f.pushes, none); err != nil {
		return err
	}
	if err := start(&ingests, "ingest", platform.EnvIngestAddr, cfg.IngestAddr, f.ingests, none); err != nil {
		return err
	}
	for _, c := range sup.list {
		fmt.Fprintf(io.Stdout, "treasure dev: started %-12s pid %-7d http://%s\n", c.Name, c.Pid(), c.Addr)
	}

	// From here a child exiting on its own ends the run.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case c := <-sup.died:
			cancel(fmt.Errorf("%w: %s (pid %d, treasure %s) exited: %v; its output is above, prefixed [%s]",
				errChildDied, c.Name, c.Pid(), strings.Join(append([]string{c.Service}, c.Args...), " "), c.err, c.Name))
		case <-runCtx.Done():
		}
	}()
	failure := func(err error) error {
		if cause := context.Cause(runCtx); errors.Is(cause, errChildDied) {
			return cause
		}
		if ctx.Err() != nil { // interrupted or --duration: not a failure
			return nil
		}
		return err
	}
	if err := sup.waitReady(runCtx, devReadyTimeout, func(waiting []string, elapsed time.Duration) {
		fmt.Fprintf(io.Stdout, "treasure dev: waiting for %s to be ready (%v)\n", strings.Join(waiting, ", "), elapsed.Round(time.Second))
	}); err != nil {
		return failure(err)
	}

	urls := func(list []*devChild, scheme, path string) []string {
		var out []string
		for _, c := range list {
			out = append(out, scheme+"://"+c.Addr+path)
		}
		return out
	}
	ingestWS, pushWS := urls(ingests, "ws", ""), urls(pushes, "ws", "")
	fmt.Fprintf(io.Stdout, "treasure dev: ingest %s (ws /v1/moves/ws), push %s (ws /v1/updates/ws, GET /v1/leaderboard), proximity %s, ranker %s, nats %s (streams %s_*), redis %s (prefix %s), postgres %s%s, graph %s (%d nodes, %d partitions)\n",
		strings.Join(ingestWS, ","), strings.Join(pushWS, ","), strings.Join(urls(others[1:], "http", ""), ","), urls(others[:1], "http", "")[0],
		natsURL, cfg.StreamPrefix, platform.MaskURL(cfg.RedisURL), redisPrefix, platform.MaskURL(cfg.DatabaseURL), schemaNote(schema), cfg.Graph, g.NumNodes(), cfg.Partitions)
	fmt.Fprintf(io.Stdout, "all %d service processes ready\n", len(sup.list))
	printLivePage(io.Stdout, urls(pushes, "http", "")[0], cfg.JWTSecret)
	if f.endpoints != "" {
		e := devEndpoints{
			Ingest: ingestWS, Push: pushWS, Metrics: urls(sup.list, "http", "/metrics"),
			NATS: natsURL, StreamPrefix: cfg.StreamPrefix, Redis: cfg.RedisURL, RedisPrefix: redisPrefix,
			Secret: cfg.JWTSecret, Graph: absPath(cfg.Graph),
		}
		for _, c := range sup.list {
			e.Processes = append(e.Processes, devProcess{Name: c.Name, Pid: c.Pid(), Addr: c.Addr})
		}
		if err := writeEndpoints(f.endpoints, e); err != nil {
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
	drops := startDrops(runCtx, "http://"+ingests[0].Addr, admin, g, f.treasures, f.dropEvery, log)
	// Retention runs in the archive child (treasure archive), beside the
	// archiver that is one of its holders.
	backlog := func() int64 { return pipelineBacklog(runCtx, topo, js) }

	var runErr error
	if f.players > 0 {
		// The simulated players use the first ingest and push instances.
		runErr = loadgen.Run(runCtx, loadgen.Options{
			IngestURL: ingestWS[0], PushURL: pushWS[0],
			Graph: g, Players: f.players, MovesPerSecond: f.rate, Secret: cfg.JWTSecret, PlayerPrefix: "dev-", Logger: log,
		}, func(s loadgen.Stats) {
			if s.Final {
				fmt.Fprintln(io.Stdout, s.Summary())
				return
			}
			fmt.Fprintf(io.Stdout, "%s | backlog %d | treasures dropped %d\n", s.Line(), backlog(), drops.Load())
		})
	}
	if f.players == 0 {
		devStatus(runCtx, io, urls(ingests, "http", "/metrics"), backlog, drops)
	} else if f.duration == 0 && runErr == nil {
		<-runCtx.Done()
	}
	cancel(nil)
	stopAll()
	if err := failure(runErr); err != nil {
		return err
	}
	return nil
}

// devStatus prints one line a second until ctx ends: the ingest
// instances' open move sockets, moves accepted per second and in all, the
// pipeline's backlog and the treasures dropped.
func devStatus(ctx context.Context, io IO, ingestMetrics []string, backlog func() int64, drops *atomic.Int64) {
	client := &http.Client{Timeout: 900 * time.Millisecond}
	defer client.CloseIdleConnections()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	t0, prevT, prev := time.Now(), time.Now(), -1.0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			const accepted, sockets = "treasure_ingest_moves_accepted_total", "treasure_ingest_connections"
			sums, ok := scrapeSums(ctx, client, ingestMetrics, accepted, sockets)
			rate := "?"
			if ok && prev >= 0 {
				rate = strconv.FormatFloat((sums[accepted]-prev)/now.Sub(prevT).Seconds(), 'f', 0, 64)
			}
			if ok {
				prev, prevT = sums[accepted], now
			}
			note := ""
			if !ok {
				note = " (an ingest /metrics did not answer)"
			}
			fmt.Fprintf(io.Stdout, "%5.0fs | ingest sockets %.0f | moves/s %s | accepted %.0f | backlog %d | treasures dropped %d%s\n",
				now.Sub(t0).Seconds(), sums[sockets], rate, sums[accepted], backlog(), drops.Load(), note)
		}
	}
}

// startDrops drops n treasures through ingestURL now and again every
// every (0: once), until ctx ends; the count of those accepted is returned.
func startDrops(ctx context.Context, ingestURL string, admin *auth.Minter, g *graph.Graph, n int, every time.Duration, log *slog.Logger) *atomic.Int64 {
	var drops atomic.Int64
	round := func(r int) {
		tok, err := admin.Token("dev-admin", "admin")
		k := 0
		if err == nil {
			k, err = dropTreasures(ctx, ingestURL, tok, g, n, r)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("treasure drop failed", "err", err)
			}
			return
		}
		drops.Add(int64(k))
	}
	round(0)
	if every > 0 && n > 0 {
		go func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for r := 1; ; r++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					round(r)
				}
			}
		}()
	}
	return &drops
}

// deleteRunStreams deletes a temporary run's four streams, and its config
// and lease buckets, from a NATS server that is not dev's own.
func deleteRunStreams(js jetstream.JetStream, topo natsjs.Topology, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{topo.InStream(), topo.OutStream(), topo.UpdStream(), topo.DLQStream(), "KV_" + topo.ConfigBucket(), "KV_" + topo.LeaseBucket()} {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			log.Warn("delete the run's stream", "stream", name, "err", err)
		}
	}
}
