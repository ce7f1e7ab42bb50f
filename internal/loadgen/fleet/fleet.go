package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"treasure/internal/loadgen"
)

// PlayersPerWorker is the default share of one worker process: two
// sockets a player, well under the 20,000 open files a process may hold.
const PlayersPerWorker = 9_000

// WorkerArgs are the arguments that make the treasure binary a worker
// (the hidden subcommand registered in internal/cli).
var WorkerArgs = []string{"lg-worker"}

// Options configure a multi-process run.
type Options struct {
	// Open is the whole run as one process would run it: all the players
	// (FirstPlayer, Players), the URLs, the schedule, the hooks. Its
	// Graph is not used (workers load GraphPath); Connected and Progress
	// run in the coordinator; closing Stop ends every worker's schedule; Logger receives the coordinator's lines;
	// LocalAddr, when set, is used by every worker instead of SourceAddr.
	Open loadgen.OpenOptions
	// GraphPath is the graph file every worker loads: the services' graph.
	GraphPath string
	// Workers is the number of worker processes; 0 means as many as the
	// players need at PerWorker each.
	Workers int
	// PerWorker is the most players one worker runs; default
	// PlayersPerWorker, at most loadgen.MaxPlayers.
	PerWorker int
	// Command starts a worker (program and arguments); default this
	// executable with WorkerArgs. Env is added to the workers' environment.
	Command []string
	Env     []string
	// SourceAddr returns worker k's source IP; nil means 127.0.0.(2+k)
	// when every ingest and push URL is on a loopback address, so that
	// each worker has its own ≈28,000 ephemeral ports per listening port,
	// and "" (the kernel's choice) otherwise.
	SourceAddr func(k int) string
	// Stderr receives the workers' logs, each line prefixed with
	// "worker k: "; default os.Stderr. LogLevel is their slog level
	// ("debug", "info", "warn", "error"); default warn.
	Stderr   io.Writer
	LogLevel string
	// StartDelay is added to the t0 that Open.Connected returns, so that
	// the start message reaches every worker before the schedule begins;
	// default 100ms.
	StartDelay time.Duration
	// StopTimeout is how long workers have to send their results after
	// ctx ends; default 30s. Then they are killed.
	StopTimeout time.Duration
}

// Share is one worker's players.
type Share struct{ First, Players int }

// Shares splits players (ids first … first+players-1) over workers
// processes as evenly as possible, in order.
func Shares(first, players, workers int) []Share {
	s := make([]Share, workers)
	for k := range s {
		n := players / workers
		if k < players%workers {
			n++
		}
		s[k] = Share{First: first, Players: n}
		first += n
	}
	return s
}

// WorkersFor returns how many workers run players at perWorker each
// (PlayersPerWorker when perWorker ≤ 0).
func WorkersFor(players, perWorker int) int {
	if perWorker <= 0 {
		perWorker = PlayersPerWorker
	}
	return max(1, (players+perWorker-1)/perWorker)
}

// Run runs o.Open over worker processes and returns the merged result, as
// loadgen.RunOpen would have returned it for one process (see the package
// doc): report gets every second merged over the workers, in order, from
// one goroutine; Open.Progress gets the total of connected players;
// Open.Connected runs once, when every worker is connected.
//
// When ctx ends, the workers stop sending and send what they measured:
// Run returns that merged result with ctx's error, as RunOpen does. A
// worker's failure fails the run with an error that names it; Run returns
// only once every worker process has exited.
func Run(ctx context.Context, o Options, report func(loadgen.Second)) (*loadgen.Result, error) {
	cfgs, err := o.configs()
	if err != nil {
		return nil, fmt.Errorf("loadgen fleet: %w", err)
	}
	command := o.Command
	if len(command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("loadgen fleet: %w", err)
		}
		command = append([]string{exe}, WorkerArgs...)
	}
	stderr := o.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	if o.StartDelay <= 0 {
		o.StartDelay = 100 * time.Millisecond
	}
	if l := o.Open.Logger; l != nil {
		l.Info("loadgen fleet starting", "workers", len(cfgs), "players", o.Open.Players)
	}
	var rep func(int, *loadgen.Second)
	if report != nil {
		rep = func(_ int, s *loadgen.Second) { report(*s) }
	}
	res, err := coordinate(ctx, coordOptions{
		configs: cfgs,
		start: func(k int) (proc, error) {
			return startProcess(command, o.Env, stderr, "worker "+strconv.Itoa(k)+": ")
		},
		connected:   o.Open.Connected,
		end:         o.Open.Stop,
		startDelay:  o.StartDelay,
		progress:    o.Open.Progress,
		stopTimeout: o.StopTimeout,
	}, openCodec, rep)
	switch {
	case ctx.Err() != nil && err != nil:
		err = fmt.Errorf("loadgen fleet: stopped (%w) before every worker sent its result: %w", ctx.Err(), err)
	case ctx.Err() != nil:
		err = ctx.Err()
	case err != nil:
		err = fmt.Errorf("loadgen fleet: %w", err)
	}
	return res, err
}

// configs splits o into the workers' configs.
func (o Options) configs() ([]Config, error) {
	op := o.Open
	per := o.PerWorker
	if per <= 0 {
		per = PlayersPerWorker
	}
	switch {
	case op.Players < 1:
		return nil, fmt.Errorf("players must be at least 1, got %d", op.Players)
	case per > loadgen.MaxPlayers:
		return nil, fmt.Errorf("%d players per worker: one process holds at most %d", per, loadgen.MaxPlayers)
	case o.GraphPath == "":
		return nil, errors.New("no graph path: workers load the graph from the file")
	case len(op.Ingest) == 0 || len(op.Push) == 0:
		return nil, errors.New("no ingest or push URL")
	case op.Schedule.RateAt != nil && op.Schedule.Duration <= 0:
		return nil, errors.New("a schedule with RateAt needs a Duration to sample it over")
	}
	workers := o.Workers
	if workers <= 0 {
		workers = WorkersFor(op.Players, per)
	}
	if workers > op.Players {
		workers = op.Players
	}
	if (op.Players+workers-1)/workers > per {
		return nil, fmt.Errorf("%d players over %d workers is more than %d a worker", op.Players, workers, per)
	}
	source := o.SourceAddr
	if source == nil {
		source = func(int) string { return "" }
		if allLoopback(op.Ingest) && allLoopback(op.Push) {
			if workers > 253 {
				return nil, fmt.Errorf("%d workers: loopback source addresses run from 127.0.0.2 to 127.0.0.254", workers)
			}
			source = func(k int) string { return "127.0.0." + strconv.Itoa(2+k) }
		}
	}
	sched := wireSchedule(op.Schedule)
	// The services connect every worker's players at once: the default
	// timeout scales with all of them, not with one worker's share.
	connectTimeout := op.ConnectTimeout
	if connectTimeout <= 0 {
		connectTimeout = loadgen.ConnectTimeoutFor(op.Players)
	}
	var cfgs []Config
	for k, sh := range Shares(op.FirstPlayer, op.Players, workers) {
		local := source(k)
		if op.LocalAddr != "" {
			local = op.LocalAddr
		}
		cfgs = append(cfgs, Config{
			Worker: k,
			// Player j uses Ingest[j%n] whatever the split (RunOpen).
			Ingest: op.Ingest, Push: op.Push,
			GraphPath: o.GraphPath, Secret: op.Secret, PlayerPrefix: op.PlayerPrefix,
			FirstPlayer: sh.First, Players: sh.Players, Seed: op.Seed, LocalAddr: local,
			PushLeaderboard: op.PushLeaderboard, Drain: op.Drain, ConnectTimeout: connectTimeout,
			Schedule: sched, LogLevel: o.LogLevel,
		})
	}
	return cfgs, nil
}

// allLoopback reports whether every URL's host is a loopback address.
func allLoopback(urls []string) bool {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return false
		}
		ip := net.ParseIP(u.Hostname()) // "localhost" may be ::1: not bindable as 127.0.0.x

		if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
			return false
		}
	}
	return true
}

// Worker is the worker process's side (the hidden subcommand): it reads
// its config from stdin, runs its share with loadgen.RunOpen, and writes
// the protocol to stdout and its logs to stderr. It returns when the share
// is done, when the coordinator says stop or goes away (end of stdin), or
// when ctx ends; a non-nil error means the worker must exit non-zero.
func Worker(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	return serveWorker(ctx, stdin, stdout, openShare(stderr))
}

// RunOpen runs o.Open in this process with loadgen.RunOpen when one
// process holds its players (at most PerWorker) and o.Workers is 0, and
// over worker processes with Run otherwise: the one call a scenario needs.
// In this process o.Open.Graph is used and must be set; over workers it
// may be nil (they load GraphPath).
func RunOpen(ctx context.Context, o Options, report func(loadgen.Second)) (*loadgen.Result, error) {
	per := o.PerWorker
	if per <= 0 {
		per = PlayersPerWorker
	}
	if o.Workers == 0 && o.Open.Players <= per {
		return loadgen.RunOpen(ctx, o.Open, report)
	}
	return Run(ctx, o, report)
}
