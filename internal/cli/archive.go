package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/archive"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
)

const archiveSynopsis = `archive [--dir DIR] [--segment D]

Runs the archiver: a durable consumer on each of the log's streams, IN and
OUT (<prefix>-archive-IN, -OUT), writes every message, flattened to one row
per event (schemas/archive.md), as Parquet files under DIR
(TREASURE_ARCHIVE_DIR, default ./archive):
  DIR/<stream>/part=<partition>/<first seq>-<last seq>.parquet
  DIR/<stream>/manifest/<first seq>-<last seq>.json
one file per subject and segment; a segment is a contiguous range of the
stream's sequences whose JetStream timestamps fall in one --segment window
(or fewer, when it reaches a million rows or 256 MiB), committed by its
manifest once its files are durable (docs/pipeline.md, "The archive").
After each segment it records in the JetStream KV bucket <prefix>-archive,
keys IN and OUT, the sequence up to which everything is archived; retention
trims the streams no further. A restart (or a crash) resumes from the last
manifest. Ops endpoints (/healthz, /readyz, /metrics) listen on
TREASURE_ARCHIVE_ADDR (default 127.0.0.1:8085). Run one archiver per
TREASURE_STREAM_PREFIX.`

// runArchive runs the archiver until ctx ends.
func runArchive(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("archive", archiveSynopsis, io.Stderr)
	dir := fs.String("dir", "", "archive directory (default TREASURE_ARCHIVE_DIR, else ./archive)")
	segment := fs.Duration("segment", archive.DefaultSegment, "time window of a segment (at least 1s)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("archive: unexpected argument %q", fs.Arg(0))}
	}
	if *segment < time.Second || *segment > 24*time.Hour {
		return &UsageError{Msg: fmt.Sprintf("archive: --segment %v: want 1s to 24h", *segment)}
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = cfg.ArchiveDir
	}
	nc, js, topo, err := connectLog(ctx, cfg, cfg.NATSURL, "treasure-archive@"+hostname(), nil)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := platform.NewRegistry()
	a, err := archive.New(js, archive.Options{Dir: *dir, Topology: topo, Segment: *segment, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	srv := &platform.HTTPServer{
		Name: "archive", Addr: cfg.ArchiveAddr, Handler: platform.OpsMux(reg, a.Ready),
		Log: platform.NewLogger(io.Stderr, platform.LogConfig{Format: cfg.Log.Format, Level: max(cfg.Log.Level, slog.LevelWarn)}),
	}
	if _, err := srv.Listen(); err != nil {
		return err
	}
	log.Info("archive starting", "ops", "http://"+srv.ListenAddr().String(), "dir", absPath(*dir), "segment", *segment,
		"nats", platform.MaskURL(cfg.NATSURL), "streams", []string{topo.InStream(), topo.OutStream()},
		"progress_bucket", archive.ProgressBucket(topo), "retention", cfg.Retention >= 0)
	// Retention runs beside the archiver: it trims nothing the archive
	// (or any other holder) has not passed; see internal/retention.
	defer startRetention(ctx, cfg, js, topo, log, reg)()
	return platform.RunGroup(ctx, a, srv)
}

// replayReader returns how replays read a stream: natsjs.Replay, or, with
// an archive directory, archive.ReplayAll over archive and stream.
func replayReader(dir string) func(ctx context.Context, js jetstream.JetStream, o natsjs.ReplayOptions, h natsjs.Handler) error {
	if dir == "" {
		return natsjs.Replay
	}
	return func(ctx context.Context, js jetstream.JetStream, o natsjs.ReplayOptions, h natsjs.Handler) error {
		return archive.ReplayAll(ctx, js, dir, o, h)
	}
}

// devArchiveDir picks a dev run's archive directory: flag when given ("off":
// none); else, for a temporary log, a temporary directory that cleanup
// removes; else def, or DIR/archive under --data DIR when def is empty.
func devArchiveDir(flag, dataDir, def string, temporaryLog bool) (dir string, cleanup func(), err error) {
	switch {
	case flag == "off":
		return "", func() {}, nil
	case flag != "":
		return flag, func() {}, nil
	case !temporaryLog && def != "":
		return def, func() {}, nil
	case !temporaryLog && dataDir != "":
		return filepath.Join(dataDir, "archive"), func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "treasure-dev-archive-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// startArchiver runs an archiver on ctx in the
// background, for `treasure dev`. ready reports the archiver's readiness;
// wait returns, once ctx is done, what they returned. An empty dir runs
// nothing.
func startArchiver(ctx context.Context, js jetstream.JetStream, topo natsjs.Topology, dir string, log *slog.Logger, reg prometheus.Registerer) (ready func() error, wait func() error, err error) {
	if dir == "" {
		return func() error { return nil }, func() error { return nil }, nil
	}
	a, err := archive.New(js, archive.Options{Dir: dir, Topology: topo, Logger: log.With("service", "archive"), Registerer: reg})
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- platform.RunGroup(ctx, a) }()
	return a.Ready, func() error { return <-done }, nil
}
