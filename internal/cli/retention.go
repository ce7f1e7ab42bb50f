package cli

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/retention"
)

// startRetention runs retention.Run for topo in the background, with
// TREASURE_RETENTION's age bound (nothing when it is "off"), and returns
// the function that stops it and waits for it. Retention trims a subject
// only up to what every holder is past, the archiver included: until an
// archiver writes its progress (`treasure archive`, KV bucket
// "<prefix>-archive"), it trims nothing and says so (docs/pipeline.md,
// "Retention").
func startRetention(ctx context.Context, cfg platform.Config, js jetstream.JetStream, topo natsjs.Topology, log *slog.Logger, reg prometheus.Registerer) (stop func()) {
	if cfg.Retention < 0 {
		log.Info("retention off (" + platform.EnvRetention + "=off): the streams keep everything up to their caps")
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := retention.Run(ctx, js, retention.Options{Topology: topo, MaxAge: cfg.Retention, Logger: log.With("service", "retention"), Registerer: reg})
		if err != nil {
			log.Error("retention not running", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
