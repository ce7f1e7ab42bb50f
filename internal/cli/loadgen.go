package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/platform"
)

const loadgenSynopsis = `loadgen [--ingest URL] [--push URL] [--graph FILE] [--players N] [--rate R]
                [--duration D] [--secret S] [--prefix P] [--seed N] [--json]

Simulates N players walking the road graph over real WebSockets against
running ingest and push services: each opens a push socket and an ingest
socket, spawns on a random node and sends moves of 6-12 nodes at R moves/s,
one in flight at a time. Prints one line per second (moves accepted per
second, move->update latency p50/p99 over that second, errors so far, the
top 5 of the leaderboard) and a summary at the end; --json prints the same
as one JSON object per line instead. Exits with status 1 when a push
socket skipped an update id.

FILE must be the graph the services serve (TREASURE_GRAPH). The secret is
the services' TREASURE_JWT_SECRET. One process simulates at most 9,900
players (two sockets each, under the open-files limit of 20,000): for more,
run several processes, each with its own --prefix.`

func runLoadgen(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("loadgen", loadgenSynopsis, io.Stderr)
	ingest := fs.String("ingest", wsFromAddr(envOr(env, platform.EnvIngestAddr, platform.DefaultIngestAddr)), "ingest WebSocket base URL (default from TREASURE_INGEST_ADDR)")
	push := fs.String("push", wsFromAddr(envOr(env, platform.EnvPushAddr, platform.DefaultPushAddr)), "push WebSocket base URL (default from TREASURE_PUSH_ADDR)")
	graphPath := fs.String("graph", env("TREASURE_GRAPH"), "road graph the services serve: .gr, .gr.gz or .snap (env TREASURE_GRAPH)")
	players := fs.Int("players", 100, "simulated players, at most "+strconv.Itoa(loadgen.MaxPlayers)+" per process")
	rate := fs.Float64("rate", 1, "moves per second per player")
	duration := fs.Duration("duration", 30*time.Second, "how long to run; 0 runs until interrupted")
	secret := fs.String("secret", env("TREASURE_JWT_SECRET"), "JWT secret of the services (env TREASURE_JWT_SECRET)")
	prefix := fs.String("prefix", "", "player id prefix (default lg-<run id>-, new players every run)")
	seed := fs.Uint64("seed", 1, "seed of spawns and walks")
	asJSON := fs.Bool("json", false, "print one JSON object per second and one for the summary (\"final\":true)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *graphPath == "":
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required: the graph the services serve"}
	case *secret == "":
		return &UsageError{Msg: "--secret (or TREASURE_JWT_SECRET) is required: the services' JWT secret"}
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
