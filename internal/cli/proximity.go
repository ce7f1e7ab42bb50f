package cli

import (
	"context"
	"fmt"
	"time"

	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/services/proximity"
)

// envLeaseTTL sets the partition leases' TTL (--lease-ttl).
const envLeaseTTL = "TREASURE_PROXIMITY_LEASE_TTL"

const proximitySynopsis = `proximity [--partitions LIST] [--lease-ttl D]

Runs a proximity worker: it owns graph partitions (LIST such as "0,1" or
"0-3" of TREASURE_PARTITIONS; default all), holds their subgraphs (own nodes +
halo) in flat arrays, consumes their log subjects and publishes proximity
results and claims. Ops endpoints (/healthz, /readyz, /metrics) listen on
TREASURE_PROXIMITY_ADDR.

A worker serves a partition only while it holds the partition's lease in
the key-value bucket <prefix>-leases: a second worker started for the same
partition waits (not ready) until the first releases it (at a clean stop)
or it expires, --lease-ttl (TREASURE_PROXIMITY_LEASE_TTL, default 10s)
after the holder's last renewal.`

func runProximity(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("proximity", proximitySynopsis, io.Stderr)
	partsFlag := fs.String("partitions", env("TREASURE_PROXIMITY_PARTITIONS"), "partitions to own, e.g. 0,1 or 0-3 (env TREASURE_PROXIMITY_PARTITIONS; default all)")
	leaseTTL := fs.Duration("lease-ttl", natsjs.DefaultLeaseTTL, "how long a partition's lease outlives its holder's last renewal: a dead worker's partitions are taken over that long after it stopped renewing (env "+envLeaseTTL+"; at least 1s)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if v := env(envLeaseTTL); v != "" && !flagSet(fs, "lease-ttl") {
		d, err := time.ParseDuration(v)
		if err != nil {
			return &UsageError{Msg: fmt.Sprintf("%s=%q: %v", envLeaseTTL, v, err)}
		}
		*leaseTTL = d
	}
	if *leaseTTL < natsjs.MinLeaseTTL {
		return &UsageError{Msg: fmt.Sprintf("--lease-ttl %v: want at least %v", *leaseTTL, natsjs.MinLeaseTTL)}
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
	w, err := proximity.New(proximity.Options{Graph: g, Part: part, Partitions: parts, Radius: cfg.Radius, Topology: topo, NC: nc, JS: js, Log: log, Registerer: reg, CheckpointEvery: cfg.CheckpointEvery, LeaseTTL: *leaseTTL})
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
		"streams", topo.InStream()+","+topo.OutStream(), "partitions", fmt.Sprint(w.Partitions()), "of", cfg.Partitions, "radius", cfg.Radius, "lease_holder", w.Holder(), "lease_ttl", *leaseTTL)
	return platform.RunGroup(ctx, w, srv)
}
