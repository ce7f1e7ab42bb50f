package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"treasure/internal/graph"
	"treasure/internal/loadgen"
)

// The engine adapter: how a worker runs its share with loadgen.RunOpen and
// how the coordinator merges loadgen's Result and Second.

var openCodec = codec[loadgen.Result, loadgen.Second]{
	mergeResult: func(dst, src *loadgen.Result) { dst.Merge(src) },
	mergeSecond: func(dst, src *loadgen.Second) { dst.Merge(*src) },
}

// maxRateSamples bounds a sampled RateAt (a 10 ms step for up to about
// 17 minutes, coarser beyond).
const maxRateSamples = 100_000

// wireSchedule turns s into its wire form, sampling s.RateAt.
func wireSchedule(s loadgen.Schedule) Schedule {
	w := Schedule{Rate: s.Rate, Duration: s.Duration, Window: s.Window, Waves: s.Waves}
	if s.RateAt != nil && s.Duration > 0 {
		w.RateStep = max(10*time.Millisecond, s.Duration/maxRateSamples)
		for t := time.Duration(0); t < s.Duration; t += w.RateStep {
			w.RateSamples = append(w.RateSamples, s.RateAt(t))
		}
	}
	return w
}

// schedule is the inverse of wireSchedule (RateAt a step function).
func (w Schedule) schedule() loadgen.Schedule {
	s := loadgen.Schedule{Rate: w.Rate, Duration: w.Duration, Window: w.Window, Waves: w.Waves}
	if len(w.RateSamples) > 0 && w.RateStep > 0 {
		samples, step := w.RateSamples, w.RateStep
		s.RateAt = func(t time.Duration) float64 {
			i := int(t / step)
			return samples[min(max(i, 0), len(samples)-1)]
		}
	}
	return s
}

// openShare runs a worker's share with loadgen.RunOpen, loading the graph
// from the config's path. A stop from the coordinator ends RunOpen early;
// what it measured is then the worker's result.
func openShare(stderr io.Writer) runShare {
	return func(ctx context.Context, c Config, h hooks) (any, error) {
		var level slog.Level
		if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil || c.LogLevel == "" {
			level = slog.LevelWarn
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
		g, err := graph.Open(c.GraphPath)
		if err != nil {
			return nil, fmt.Errorf("worker %d: %w", c.Worker, err)
		}
		res, err := loadgen.RunOpen(ctx, loadgen.OpenOptions{
			Ingest: c.Ingest, Push: c.Push, Graph: g, Secret: c.Secret,
			PlayerPrefix: c.PlayerPrefix, FirstPlayer: c.FirstPlayer, Players: c.Players, Seed: c.Seed,
			LocalAddr: c.LocalAddr, PushLeaderboard: c.PushLeaderboard,
			Logger:    log.With("worker", c.Worker),
			Connected: h.connected, Progress: h.progress,
			Schedule: c.Schedule.schedule(), Drain: c.Drain, ConnectTimeout: c.ConnectTimeout,
			Stop: h.end,
		}, func(s loadgen.Second) { h.second(s.Index, s) })
		if err != nil && res != nil && errors.Is(context.Cause(ctx), errStopped) {
			err = nil // stopped early, as asked: what was measured stands
		}
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}
