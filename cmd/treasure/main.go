// Command treasure is the single binary of the treasure backend: the four
// services, the all-in-one dev mode, and the tools for graphs and players.
// `treasure help` lists the subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"treasure/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
