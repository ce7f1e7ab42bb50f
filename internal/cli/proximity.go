package cli

import (
	"context"
	"fmt"

	"treasure/internal/platform"
	"treasure/services/proximity"
)

const proximitySynopsis = `proximity [--partitions LIST]

Runs a proximity worker: it owns graph partitions (LIST such as "0,1" or
"0-3" of TREASURE_PARTITIONS; default all), holds their subgraphs (own nodes +
halo) in flat arrays, consumes their log subjects and publishes proximity
results and claims. Ops endpoints (/healthz, /readyz, /metrics) listen on
TREASURE_PROXIMITY_ADDR.`

func runProximity(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("proximity", proximitySynopsis, io.Stderr)
	partsFlag := fs.String("partitions", env("TREASURE_PROXIMITY_PARTITIONS"), "partitions to own, e.g. 0,1 or 0-3 (env TREASURE_PROXIMITY_PARTITIONS; default all)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	parts, err := parseParts(*partsFlag, cfg.Partitions)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	g, part, err := loadPartitioned(cfg, log)
	if err != nil {
		return err
	}
	nc, js, topo, err := connectLog(ctx, cfg, cfg.NATSURL, "treasure-proximity@"+hostname(), g)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := platform.NewRegistry()
	w, err := proximity.New(proximity.Options{Graph: g, Part: part, Partitions: parts, Radius: cfg.Radius, Topology: topo, NC: nc, JS: js, Log: log, Registerer: reg, CheckpointEvery: cfg.CheckpointEvery})
	if err != nil {
		return err
	}
	// The worker serves its partitions from their own subgraphs, built
	// above: the whole graph's mapped pages can leave its resident set.
	if err := g.EvictPages(); err != nil {
		log.Warn("graph pages stay resident", "err", err)
	}
	reg.MustRegister(platform.ReadyGauge("proximity", w.Ready))
	mux := platform.OpsMux(reg, w.Ready)
	platform.RegisterPprof(mux)
	srv := &platform.HTTPServer{Name: "proximity", Addr: cfg.ProximityAddr, Handler: mux, Log: log}
	if _, err := srv.Listen(); err != nil {
		return err
	}
	log.Info("proximity worker starting", "ops", "http://"+srv.ListenAddr().String(), "nats", platform.MaskURL(cfg.NATSURL),
		"streams", topo.InStream()+","+topo.OutStream(), "partitions", fmt.Sprint(w.Partitions()), "of", cfg.Partitions, "radius", cfg.Radius)
	return platform.RunGroup(ctx, w, srv)
}
