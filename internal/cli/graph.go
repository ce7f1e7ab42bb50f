package cli

import (
	"context"
	"fmt"
)

func runGraph(ctx context.Context, args []string, env Env, io IO) error {
	return &UsageError{Msg: fmt.Sprintf("graph subcommands are not wired yet (%v)", args)}
}
