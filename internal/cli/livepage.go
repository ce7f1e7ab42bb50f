package cli

import (
	"fmt"
	"io"
	"time"

	"treasure/internal/auth"
	"treasure/services/push"
)

// livePageTokenTTL is how long the spectator token in the demo's live
// page URL stays valid.
const livePageTokenTTL = 24 * time.Hour

// printLivePage prints where the live page is (push serves it at /):
// with a read-only spectator token, signed with the run's secret, for the
// treasure view, and without it for the public view
// (docs/protocol.md, "Spectator feed").
func printLivePage(w io.Writer, pushHTTP, secret string) {
	tok, err := auth.Sign(secret, "dev-spectator", push.RoleSpectator, livePageTokenTTL)
	if err != nil {
		fmt.Fprintf(w, "live page: %s/ (public view; no spectator token: %v)\n", pushHTTP, err)
		return
	}
	fmt.Fprintf(w, "live page: %s/?token=%s (the treasure view; %s/ is the public one)\n", pushHTTP, tok, pushHTTP)
}
