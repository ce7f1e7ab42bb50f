package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"treasure/internal/charts"
)

const sampleSynopsis = `sample --metrics URL[,URL...] [--every D] [--duration D] [--csv FILE] [--charts DIR] [--json]

Samples the services' resources over time, for a soak (make soak): every
--every it reads each /metrics URL and records, per process, the resident
set (process_resident_memory_bytes), goroutines (go_goroutines), open file
descriptors (process_open_fds) and the Go heap in use
(go_memstats_heap_inuse_bytes). URLs served by one process (treasure dev
serves one registry on every port) are sampled once, by treasure_process_id;
a process is named by the services it runs (treasure_service_ready). Runs
until --duration has passed (0: until interrupted), then prints per process
the first, last and largest values and the change over the second half of
the run (a leak grows there; a warm-up does not), writes every sample to
--csv (time_s,process,pid,rss_bytes,goroutines,open_fds,heap_bytes) and
SVG charts to --charts (rss.svg, goroutines.svg, fds.svg). --json prints
the summary as one JSON object instead. A URL that fails is retried at the
next sample and counted.`

// sampleMetrics are the families read, by column.
var sampleMetrics = []string{"process_resident_memory_bytes", "go_goroutines", "process_open_fds", "go_memstats_heap_inuse_bytes"}

// sampleRow is one process at one sample.
type sampleRow struct {
	T      float64 // seconds since the first sample
	Source string
	PID    int
	Values [4]float64 // sampleMetrics' order
}

// SampleSummary is one process's figures over the run.
type SampleSummary struct {
	Source  string `json:"process"`
	PID     int    `json:"pid"`
	Samples int    `json:"samples"`
	// First, Last, Max and SecondHalfChange per figure: rss_mb,
	// goroutines, open_fds, heap_mb.
	First            map[string]float64 `json:"first"`
	Last             map[string]float64 `json:"last"`
	Max              map[string]float64 `json:"max"`
	SecondHalfChange map[string]float64 `json:"second_half_change"`
}

func runSample(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("sample", sampleSynopsis, io.Stderr)
	metrics := fs.String("metrics", "", "the /metrics URLs, comma-separated (required)")
	every := fs.Duration("every", 10*time.Second, "time between samples")
	duration := fs.Duration("duration", 0, "how long to sample; 0 until interrupted")
	csvPath := fs.String("csv", "", "write every sample to this CSV file")
	chartDir := fs.String("charts", "", "write rss.svg, goroutines.svg and fds.svg into this directory")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	var urls []string
	for _, u := range strings.Split(*metrics, ",") {
		if u = strings.TrimSpace(u); u != "" {
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				return &UsageError{Msg: fmt.Sprintf("--metrics %q: want http:// URLs", u)}
			}
			urls = append(urls, u)
		}
	}
	switch {
	case len(urls) == 0:
		return &UsageError{Msg: "--metrics is required: the services' /metrics URLs, comma-separated"}
	case *every < 100*time.Millisecond:
		return &UsageError{Msg: fmt.Sprintf("--every %v: at least 100ms", *every)}
	case *duration < 0:
		return &UsageError{Msg: fmt.Sprintf("--duration %v: must not be negative", *duration)}
	}
	var csvw *csv.Writer
	if *csvPath != "" {
		f, err := os.Create(*csvPath)
		if err != nil {
			return err
		}
		defer f.Close()
		csvw = csv.NewWriter(f)
		csvw.Write([]string{"time_s", "process", "pid", "rss_bytes", "goroutines", "open_fds", "heap_bytes"})
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var rows []sampleRow
	failures := map[string]int{}
	t0 := time.Now()
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		now := time.Since(t0).Seconds()
		seen := map[int]bool{}
		for _, u := range urls {
			r, err := scrapeSample(ctx, client, u)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				failures[u]++
				continue
			}
			if r.PID != 0 && seen[r.PID] {
				continue
			}
			seen[r.PID] = true
			r.T = now
			rows = append(rows, r)
			if csvw != nil {
				csvw.Write([]string{strconv.FormatFloat(now, 'f', 1, 64), r.Source, strconv.Itoa(r.PID),
					fmtNum(r.Values[0]), fmtNum(r.Values[1]), fmtNum(r.Values[2]), fmtNum(r.Values[3])})
				csvw.Flush()
			}
		}
		select {
		case <-ctx.Done():
			return finishSample(rows, failures, *chartDir, *asJSON, io.Stdout, csvw)
		case <-tick.C:
		}
	}
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// scrapeSample reads one /metrics URL.
func scrapeSample(ctx context.Context, client *http.Client, u string) (sampleRow, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return sampleRow{}, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return sampleRow{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sampleRow{}, fmt.Errorf("%s: %s", u, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return sampleRow{}, fmt.Errorf("%s: %w", u, err)
	}
	r := sampleRow{Source: strings.TrimPrefix(strings.TrimPrefix(strings.TrimSuffix(u, "/metrics"), "http://"), "https://")}
	value := func(name string) (float64, bool) {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			return 0, false
		}
		m := f.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
		return 0, false
	}
	for i, name := range sampleMetrics {
		v, ok := value(name)
		if !ok {
			return sampleRow{}, fmt.Errorf("%s has no %s", u, name)
		}
		r.Values[i] = v
	}
	if v, ok := value("treasure_process_id"); ok {
		r.PID = int(v)
	}
	if f := fams["treasure_service_ready"]; f != nil {
		var names []string
		for _, m := range f.GetMetric() {
			names = append(names, labelValue(m, "service"))
		}
		slices.Sort(names)
		if len(names) > 0 {
			r.Source = strings.Join(names, "+")
		}
	}
	return r, nil
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sampleFigures are the summary's names of sampleMetrics, and their scale.
var sampleFigures = []struct {
	name  string
	scale float64
}{{"rss_mb", 1 << 20}, {"goroutines", 1}, {"open_fds", 1}, {"heap_mb", 1 << 20}}

func finishSample(rows []sampleRow, failures map[string]int, chartDir string, asJSON bool, w io.Writer, csvw *csv.Writer) error {
	if csvw != nil {
		csvw.Flush()
		if err := csvw.Error(); err != nil {
			return err
		}
	}
	type key struct {
		source string
		pid    int
	}
	var order []key
	by := map[key][]sampleRow{}
	for _, r := range rows {
		k := key{r.Source, r.PID}
		if by[k] == nil {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
	}
	var sums []SampleSummary
	for _, k := range order {
		rs := by[k]
		s := SampleSummary{Source: k.source, PID: k.pid, Samples: len(rs),
			First: map[string]float64{}, Last: map[string]float64{}, Max: map[string]float64{}, SecondHalfChange: map[string]float64{}}
		mid := rs[len(rs)/2]
		for i, f := range sampleFigures {
			s.First[f.name] = round1(rs[0].Values[i] / f.scale)
			s.Last[f.name] = round1(rs[len(rs)-1].Values[i] / f.scale)
			s.SecondHalfChange[f.name] = round1((rs[len(rs)-1].Values[i] - mid.Values[i]) / f.scale)
			for _, r := range rs {
				s.Max[f.name] = max(s.Max[f.name], round1(r.Values[i]/f.scale))
			}
		}
		sums = append(sums, s)
	}
	if chartDir != "" {
		if err := os.MkdirAll(chartDir, 0o755); err != nil {
			return err
		}
		for i, c := range []struct{ file, title, y string }{
			{"rss.svg", "Resident set per process", "MiB"},
			{"goroutines.svg", "Goroutines per process", "goroutines"},
			{"fds.svg", "Open file descriptors per process", "descriptors"},
		} {
			ch := charts.Chart{Title: c.title, XLabel: "seconds", YLabel: c.y}
			for _, k := range order {
				var s charts.Series
				s.Name = fmt.Sprintf("%s (%d)", k.source, k.pid)
				for _, r := range by[k] {
					s.X = append(s.X, r.T)
					s.Y = append(s.Y, r.Values[i]/sampleFigures[i].scale)
				}
				ch.Series = append(ch.Series, s)
			}
			if err := charts.WriteSVG(filepath.Join(chartDir, c.file), ch); err != nil {
				return err
			}
		}
	}
	if asJSON {
		doc := struct {
			Processes []SampleSummary `json:"processes"`
			Failures  map[string]int  `json:"failed_scrapes"`
		}{sums, failures}
		if doc.Processes == nil {
			doc.Processes = []SampleSummary{}
		}
		return json.NewEncoder(w).Encode(doc)
	}
	fmt.Fprintf(w, "%-28s %7s  %-22s %-22s %-22s %-22s\n", "process (pid)", "samples", "rss MiB first/last/max/Δ2nd", "goroutines", "open fds", "heap MiB")
	for _, s := range sums {
		fmt.Fprintf(w, "%-28s %7d", fmt.Sprintf("%s (%d)", s.Source, s.PID), s.Samples)
		for _, f := range sampleFigures {
			fmt.Fprintf(w, "  %-22s", fmt.Sprintf("%g/%g/%g/%+g", s.First[f.name], s.Last[f.name], s.Max[f.name], s.SecondHalfChange[f.name]))
		}
		fmt.Fprintln(w)
	}
	for u, n := range failures {
		fmt.Fprintf(w, "%s: %d failed scrapes\n", u, n)
	}
	if len(sums) == 0 {
		return errors.New("no sample was read")
	}
	return nil
}

func round1(v float64) float64 { return float64(int64(v*10+0.5*sign(v))) / 10 }

func sign(v float64) float64 {
	if v < 0 {
		return -1
	}
	return 1
}
