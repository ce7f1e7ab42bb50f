// Package cli implements the treasure command's subcommands. Each
// subcommand is a function that reads its flags and the environment, does
// its work and returns an error; Run maps errors to exit statuses so that
// main stays a few lines and tests can drive every subcommand in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Env is how subcommands read the environment (os.Getenv in main).
type Env func(string) string

// IO bundles a subcommand's streams.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, args []string, env Env, io IO) error
}

// commands is the subcommand table; files register into it from their own
// init-free constructors in commandTable.
func commandTable() map[string]command {
	return map[string]command{
		"nearest":     {"answer the proximity rule for node ids read from stdin", runNearest},
		"graph":       {"generate, compile and partition road graphs (graph help)", runGraph},
		"bench-core":  {"measure the hot core: load, RSS, field build, move loop, GC", runBenchCore},
		"proximity":   {"run a proximity worker (graph partitions → proximity results, claims)", runProximity},
		"loadgen":     {"open-loop load over real WebSockets: steady, ramp, drop, http (POST /v1/moves through vegeta) and the closed-loop generator", runLoadgen},
		"lg-worker":   {"(internal) one worker process of a multi-process loadgen run", runLoadgenWorker},
		"healthcheck": {"GET a health URL once: exit 0 on 200 (container health checks)", runHealthcheck},
		"dev":         {"the whole pipeline in one process (embedded JetStream), with simulated players", runDev},
		"ingest":      {"run the ingest service (moves over WebSocket/HTTP, admin drops)", runIngest},
		"ranker":      {"run the ranker (claims → PostgreSQL scores, Redis ranks, score updates)", runRanker},
		"push":        {"run the push service (player updates over WebSocket, leaderboard HTTP)", runPush},
		"replay":      {"replay the log: its results and claims, --check, the state --until T|seq, --what-if, --verify against the stores", runReplay},
		"status":      {"streams, consumers and backlog of the pipeline's log", runStatus},
		"export":      {"write the log's moves, proximity results, claims and score changes as Parquet, CSV or NDJSON rows", runExport},
		"leaderboard": {"the leaderboard as it stood at a time or log position, rebuilt from the log", runLeaderboard},
		"sample":      {"sample the services' resident set, goroutines and open descriptors over time (a soak's record)", runSample},
		"edge-ref":    {"the bare socket edge: an ack and a null proximity update per move, nothing behind (the floor)", runEdgeRef},
		"archive":     {"archive the log (IN, OUT) as Parquet files for replays and analysts; records how far for retention", runArchive},
	}
}

// UsageError is a mistake in the command line: exit status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// InputError is bad input data (a file, stdin): exit status 2.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Run runs the subcommand named by args[0] and returns the exit status:
// 0 on success, 2 for a usage error or bad input, 1 for any other failure.
func Run(ctx context.Context, args []string, env Env, stdin io.Reader, stdout, stderr io.Writer) int {
	cmds := commandTable()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "treasure: unknown command %q\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	err := c.run(ctx, args[1:], env, IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "treasure %s: %v\n", args[0], err)
	var ue *UsageError
	var ie *InputError
	if errors.As(err, &ue) || errors.As(err, &ie) {
		return 2
	}
	return 1
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("treasure: a real-time, city-scale treasure-hunt backend\n\nUsage: treasure <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-12s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\n`treasure <command> -h` shows a command's flags.\n")
	io.WriteString(w, b.String())
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: treasure %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning a flag error into a UsageError.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{Msg: err.Error()}
	}
	return nil
}

// envOr returns env(key) or def when unset.
func envOr(env Env, key, def string) string {
	if v := env(key); v != "" {
		return v
	}
	return def
}
