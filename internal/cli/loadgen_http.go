package cli

import (
	"context"
	"fmt"
	"time"

	"treasure/internal/loadgen"
)

const httpSynopsis = `loadgen http [--players P] [--rate R] [--duration D] [--timeout T] [common flags]

The moves as HTTP: every player opens its push socket, then vegeta's
attacker sends R requests a second in total for D, each a POST /v1/moves
of one move (Authorization: Bearer <the player's token>) from the next
free player (one request in flight per player, so that a player's moves
reach ingest in order), open loop: the ack (the HTTP answer) and the
proximity update are timed from the tick's scheduled time. The accounting
is the other scenarios': every move exactly one answer (202 ack, or an
error counted by code; rate_limited and unavailable are sent again after
retry_after_ms), every acked move exactly one proximity update. A request
without HTTP answer ends its player ("http" in errors; its moves lost).
Keep R/P under ingest's per-player limit (20 moves/s by default) and P
well above R × the answer time. The --ingest URLs' HTTP side gets the
requests (player i uses the (i mod n)th). One process only (at most 9,900
players; no --workers).`

func runLoadgenHTTP(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("loadgen http", httpSynopsis, io.Stderr)
	f := addOpenFlags(fs, env, 100, 10*time.Second)
	rate := fs.Int("rate", 100, "requests (moves) per second in total")
	duration := fs.Duration("duration", 30*time.Second, "how long vegeta attacks")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on one request, answer included")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *rate < 1:
		return &UsageError{Msg: fmt.Sprintf("--rate %d: requests per second must be at least 1", *rate)}
	case *duration <= 0:
		return &UsageError{Msg: "--duration must be positive"}
	case *timeout <= 0:
		return &UsageError{Msg: "--timeout must be positive"}
	case *f.workers != 0:
		return &UsageError{Msg: "--workers: the http scenario runs in this process only"}
	case *f.players > loadgen.MaxPlayers:
		return &UsageError{Msg: fmt.Sprintf("--players %d: the http scenario runs in this process, which holds at most %d players (a push socket each, plus the HTTP connections)", *f.players, loadgen.MaxPlayers)}
	}
	r, err := newOpenRun("http", f, io)
	if err != nil {
		return err
	}
	if per := float64(*rate) / float64(*f.players); per > 20 {
		fmt.Fprintf(io.Stderr, "loadgen http: warning: %.1f moves/s per player, above ingest's default limit of 20: add players\n", per)
	}
	var hres *loadgen.HTTPResult
	r.runner = func(ctx context.Context, o loadgen.OpenOptions, report func(loadgen.Second)) (*loadgen.Result, error) {
		res, err := loadgen.RunHTTP(ctx, loadgen.HTTPOptions{OpenOptions: o, Rate: *rate, Duration: *duration, Timeout: *timeout}, report)
		if res == nil {
			return nil, err
		}
		hres = res
		return res.Result, err
	}
	fmt.Fprintf(io.Stdout, "loadgen http: %d players, %d POST /v1/moves a second for %v through vegeta; ingest %s, push %s (players %s0…)\n",
		*f.players, *rate, *duration, *f.ingest, *f.push, *f.prefix)
	return r.run(ctx, loadgen.OpenOptions{}, func(s *loadgen.Summary, _ *loadgen.Result) {
		s.Extra["rate"] = *rate
		s.Extra["duration_s"] = duration.Seconds()
		for k, v := range hres.Extra() {
			s.Extra[k] = v
		}
	})
}
