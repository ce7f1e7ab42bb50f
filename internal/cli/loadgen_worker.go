package cli

import (
	"context"

	"treasure/internal/loadgen/fleet"
)

// runLoadgenWorker is one worker process of a multi-process loadgen run
// (internal/loadgen/fleet): its coordinator, `treasure loadgen` itself,
// starts it and talks to it over stdin and stdout. Not for people.
func runLoadgenWorker(ctx context.Context, args []string, env Env, io IO) error {
	if len(args) > 0 {
		return &UsageError{Msg: "lg-worker takes no arguments: its coordinator sends the config on stdin"}
	}
	return fleet.Worker(ctx, io.Stdin, io.Stdout, io.Stderr)
}
