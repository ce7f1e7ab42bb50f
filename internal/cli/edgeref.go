package cli

import (
	"context"
	"fmt"
	"log/slog"

	"treasure/internal/auth"
	"treasure/internal/edgeref"
	"treasure/internal/platform"
)

const edgeRefSynopsis = `edge-ref [--ingest ADDR] [--push ADDR] [--secret-file FILE]

Runs the bare socket edge (internal/edgeref): SPEC's two player sockets
with nothing behind them, the floor of what one move costs at the edge.
GET /v1/moves/ws?token=… on --ingest answers every move with
{"type":"ack","seq":S}; GET /v1/updates/ws?token=… on --push gets
{"type":"proximity","id":I,"seq":S,"node":V,"treasure":null} for each,
ids from 1 per player. POST /v1/admin/drops (202, nothing stored) and
GET /v1/leaderboard ({"top":[],"players":0}) answer so that the load
generator's scenarios run unchanged. /healthz, /readyz and /metrics are
on both addresses and describe the same process: give the load generator
one of them. Tokens are checked with TREASURE_JWT_SECRET or the first line of
--secret-file.`

// runEdgeRef runs the bare edge until ctx ends.
func runEdgeRef(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("edge-ref", edgeRefSynopsis, io.Stderr)
	ingestAddr := fs.String("ingest", "127.0.0.1:9081", "listen address of the move socket and the drop endpoint")
	pushAddr := fs.String("push", "127.0.0.1:9082", "listen address of the update socket and the leaderboard")
	secretF := addSecretFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("edge-ref: unexpected argument %q", fs.Arg(0))}
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	secret, err := secretF.value(func(k string) string {
		if k == platform.EnvJWTSecret {
			return cfg.JWTSecret
		}
		return env(k)
	})
	if err != nil {
		return err
	}
	verifier, err := auth.NewVerifier(secret)
	if err != nil {
		return err
	}
	reg := platform.NewRegistry()
	srv, err := edgeref.New(edgeref.Options{Verifier: verifier, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	quiet := platform.NewLogger(io.Stderr, platform.LogConfig{Format: cfg.Log.Format, Level: max(cfg.Log.Level, slog.LevelWarn)})
	ingestMux := platform.OpsMux(reg, nil)
	ingestMux.Handle("/v1/", srv.IngestHandler())
	pushMux := platform.OpsMux(reg, nil)
	pushMux.Handle("/v1/", srv.PushHandler())
	in := &platform.HTTPServer{Name: "edge-ref ingest", Addr: *ingestAddr, Handler: ingestMux, Log: quiet, OnShutdown: srv.Close}
	out := &platform.HTTPServer{Name: "edge-ref push", Addr: *pushAddr, Handler: pushMux, Log: quiet, OnShutdown: srv.Close}
	inAddr, err := in.Listen()
	if err != nil {
		return err
	}
	outAddr, err := out.Listen()
	if err != nil {
		return err
	}
	log.Info("edge-ref starting (bare socket edge: nothing behind the sockets)",
		"moves", "ws://"+inAddr.String()+"/v1/moves/ws", "drops", "http://"+inAddr.String()+"/v1/admin/drops",
		"updates", "ws://"+outAddr.String()+"/v1/updates/ws", "leaderboard", "http://"+outAddr.String()+"/v1/leaderboard",
		"metrics", "http://"+inAddr.String()+"/metrics")
	return platform.RunGroup(ctx, in, out)
}
