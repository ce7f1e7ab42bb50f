package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"treasure/internal/export"
	"treasure/internal/platform"
	"treasure/internal/progress"
)

const exportSynopsis = `export [--from T] [--to T] --format parquet|csv|ndjson --out PATH [--kinds LIST] [--json] [--quiet]

Writes the events of the log stored between --from (inclusive) and --to
(exclusive), RFC 3339 times (default: the whole log), as rows of typed
columns, one per event: moves (and drops) from P_IN; proximity results and
claims from the workers' P_OUT subjects, score changes and leaderboard
snapshots from the ranker's; P_IN first, then P_OUT, each in log order.
The rows and columns are the archive's (internal/eventrow), documented in
schemas/archive.md: Parquet (snappy) as DuckDB, pandas and Spark read it,
CSV with a header line (null = empty field, lists as JSON arrays), NDJSON
one object per line (null = null). LIST is a comma-separated subset of
move,drop,proximity,claim,score,leaderboard,unknown,empty,invalid (default
move,proximity,claim,score). Claim notices on P_IN (copies of P_OUT's
claims) are left out. --out - writes to stdout; a file is written under a
temporary name and renamed into place once complete. A summary (rows per
kind, stream ranges) goes to stderr, or to stdout as JSON with --json.
Reads TREASURE_NATS_URL and TREASURE_STREAM_PREFIX; reads the log only.`

func runExport(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("export", exportSynopsis, io.Stderr)
	from := fs.String("from", "", "first stream time to export (RFC 3339; default: the start of the log)")
	to := fs.String("to", "", "stream time to stop before (RFC 3339; default: the end of the log)")
	format := fs.String("format", "", "parquet, csv or ndjson")
	outPath := fs.String("out", "", `file to write, "-" for stdout`)
	kindsFlag := fs.String("kinds", "", "kinds to export (default move,proximity,claim,score)")
	jsonOut := fs.Bool("json", false, "print the summary as JSON on stdout")
	quiet := fs.Bool("quiet", false, "no progress line on stderr")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("export: unexpected argument %q", fs.Arg(0))}
	}
	if *format == "" || *outPath == "" {
		return &UsageError{Msg: "export: --format and --out are required"}
	}
	if *outPath == "-" && *jsonOut {
		return &UsageError{Msg: "export: --json prints the summary on stdout; write the rows to a file (--out PATH)"}
	}
	o := export.Options{}
	for _, b := range []struct {
		flag string
		v    string
		dst  *time.Time
	}{{"--from", *from, &o.From}, {"--to", *to, &o.To}} {
		if b.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, b.v)
		if err != nil {
			return &UsageError{Msg: fmt.Sprintf("export: %s %q is not an RFC 3339 time (like 2026-12-05T16:20:00Z)", b.flag, b.v)}
		}
		*b.dst = t
	}
	if !o.From.IsZero() && !o.To.IsZero() && !o.To.After(o.From) {
		return &UsageError{Msg: "export: --to must be after --from"}
	}
	if *kindsFlag != "" {
		k, err := export.ParseKinds(*kindsFlag)
		if err != nil {
			return &UsageError{Msg: "export: --kinds: " + err.Error()}
		}
		o.Kinds = k
	}
	cfg, err := platform.FromEnv(env)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	o.Topology = topology(cfg)
	o.Replay = replayReader(cfg.ArchiveDir)

	// Rows go to a temporary file renamed into place at the end, so a
	// failed export leaves no half file under the name asked for.
	var (
		dst  = io.Stdout
		file *os.File
	)
	if *outPath != "-" {
		file, err = os.CreateTemp(filepath.Dir(*outPath), "."+filepath.Base(*outPath)+".tmp-*")
		if err != nil {
			return &UsageError{Msg: "export: --out: " + err.Error()}
		}
		defer func() {
			if file != nil {
				file.Close()
				os.Remove(file.Name())
			}
		}()
		dst = file
	}
	w, err := export.NewWriter(*format, dst)
	if err != nil {
		return &UsageError{Msg: "export: --format: " + err.Error()}
	}
	nc, js, err := connectJetStream(cfg.NATSURL, "treasure-export@"+hostname())
	if err != nil {
		return err
	}
	defer nc.Close()
	bar := progress.New(io.Stderr, progress.Options{Label: "export", Unit: "msgs", Disabled: *quiet})
	o.Progress = func(done, total int64) {
		bar.SetTotal(total)
		bar.Set(done)
	}
	sum, err := export.Run(ctx, js, o, w)
	if err != nil {
		return err
	}
	bar.Finish()
	if file != nil {
		if err := file.Chmod(0o644); err != nil { // CreateTemp makes it 0600
			return fmt.Errorf("export: %w", err)
		}
		if err := file.Sync(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := file.Close(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := os.Rename(file.Name(), *outPath); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		file = nil
	}
	if *jsonOut {
		return writeJSON(io.Stdout, struct {
			Out    string `json:"out"`
			Format string `json:"format"`
			*export.Summary
		}{*outPath, *format, sum})
	}
	var kinds []string
	for _, k := range export.Kinds {
		if n := sum.ByKind[k]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
		}
	}
	var ranges []string
	for _, s := range []string{o.Topology.InStream(), o.Topology.OutStream()} {
		if r, ok := sum.Ranges[s]; ok {
			ranges = append(ranges, fmt.Sprintf("%s %d–%d", s, r[0], r[1]))
		}
	}
	fmt.Fprintf(io.Stderr, "export: %d rows (%s) from %d messages (%s) to %s\n", sum.Rows, strings.Join(kinds, ", "), sum.Messages, strings.Join(ranges, ", "), *outPath)
	return nil
}
