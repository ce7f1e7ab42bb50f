package cli

// The measurements around an open-loop run (issue 6, items 6–8 and 10),
// hooked into openRun.run (loadgen.go):
//
//   - Server CPU per move (--metrics, --redis, --procs, --pids; internal/cpustat):
//     one sample at t0 (after every player connected and the scenario's
//     Connected step, so connection set-up is not charged to moves), one
//     every --cpu-every during the run (for cpu.svg and the RSS peak) and
//     one after the drain. JSON: server_cpu_s, server_cpu_us_per_move (CPU
//     of every source ÷ moves answered), server_cores,
//     moves_per_s_per_server_core, cores_at_47000_moves_per_s, rss_total_mb
//     (sum of the sources' maxima), server_cpu_sources (name → cpu_s,
//     us_per_move, rss_mb, gc_cpu_fraction, gc_pause_max_ms) and
//     server_cpu_missing (sources that could not be read: never dropped
//     silently). Two --metrics URLs of one process (treasure dev serves
//     the same /metrics on every port) are counted once.
//   - The broker alone (--broker-ref D, with --nats; natsjs.PublishRate):
//     after the run, D of asynchronous publishing on the same JetStream
//     server, messages of the IN stream's stored bytes per message over
//     the run (payload, subject and headers) or --broker-ref-size. JSON:
//     broker_msgs_per_s, broker_msg_bytes, in_msgs_per_s,
//     pipeline_vs_broker {moves_per_s, in_msgs_per_s} (fractions).
//   - Charts (--charts DIR; internal/charts), one SVG per file:
//     DIR/latency.svg (ack and update p50/p99/p99.9 per second, log Y),
//     DIR/throughput.svg (offered, sent, acked, answered per second),
//     DIR/backlog.svg (client-side outstanding and, with --nats, the
//     JetStream backlog, per second), DIR/cpu.svg (cores per source between
//     consecutive CPU samples). With --reference the floor's charts go to
//     DIR/reference/. JSON: charts (the files written).
//   - The floor (--reference): treasure edge-ref is started as a child
//     process on free loopback ports, the same scenario (same flags,
//     players, seed) runs against it first with its CPU read from its
//     /metrics, edge-ref is stopped, then the run against the pipeline
//     follows. JSON: reference (edge-ref's summary object), vs_reference
//     (pipeline ÷ edge-ref for every figure both have, plus the issue's
//     targets: held_rate ≥ 0.8× and server CPU per move ≤ 1.5×).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/charts"
	"treasure/internal/cpustat"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
)

// The chart files --charts writes.
const (
	chartLatency    = "latency.svg"
	chartThroughput = "throughput.svg"
	chartBacklog    = "backlog.svg"
	chartCPU        = "cpu.svg"
)

// targetMovesPerS is the peak (the Rust rewrite's 47,000 moves/s):
// the summary says how many server cores it would take at the measured cost.
const targetMovesPerS = 47000

// measureFlags are the measurement flags of every open-loop scenario.
type measureFlags struct {
	redis, procs, pids, charts, refBin *string
	cpuEvery, brokerRef                *time.Duration
	brokerRefSize                      *int
	reference                          *bool
}

func addMeasureFlags(fs *flag.FlagSet) *measureFlags {
	return &measureFlags{
		redis:         fs.String("redis", "", "Redis URLs (redis://host:port), comma-separated: their CPU (INFO) counts as server CPU"),
		procs:         fs.String("procs", "", "process names as in /proc/PID/comm (e.g. postgres,nats-server), comma-separated: every process of each name counts as server CPU"),
		pids:          fs.String("pids", "", "process ids, comma-separated, counted as server CPU"),
		cpuEvery:      fs.Duration("cpu-every", 2*time.Second, "interval of the server CPU samples during the run (cpu.svg, RSS peak); a scrape costs the server a few ms"),
		charts:        fs.String("charts", "", "write SVG charts into this directory: latency.svg, throughput.svg, backlog.svg, cpu.svg"),
		brokerRef:     fs.Duration("broker-ref", 5*time.Second, "with --nats: after the run, publish to JetStream alone for this long and report the pipeline as a fraction of it (0: off)"),
		brokerRefSize: fs.Int("broker-ref-size", 0, "message size of --broker-ref in bytes (0: the IN stream's stored bytes per message over the run)"),
		reference:     fs.Bool("reference", false, "first run the same scenario against treasure edge-ref (the bare socket floor, started on free loopback ports) and report the pipeline's figures also as ratios to it"),
		refBin:        fs.String("reference-bin", "", "the treasure binary that runs edge-ref for --reference (default: this one)"),
	}
}

// measurement is one run's measuring: made by startMeasure, fed by wrap,
// useJetStream and second, ended by stop and report. Its methods are
// called from openRun.run's goroutine, except what Connected and the
// sampling goroutine do, which takes mu.
type measurement struct {
	r       *openRun
	mf      *measureFlags
	ctx     context.Context // the run's, for the sampling goroutine
	sampler *cpustat.Sampler
	dups    []string // --metrics URLs left out: the same process as another
	ref     map[string]any
	refEdge map[string]any

	js     jetstream.JetStream
	nc     *nats.Conn
	stream string

	backlog []float64 // JetStream backlog per second (NaN: no reading)

	mu        sync.Mutex
	started   bool
	t0        time.Time
	snaps     []cpustat.Snapshot
	sampleErr []string
	inA, inB  *streamPoint
	stopTick  context.CancelFunc
	ticking   sync.WaitGroup
}

// streamPoint is the IN stream's state at one instant.
type streamPoint struct {
	at    time.Time
	state jetstream.StreamState
}

// startMeasure checks the measurement flags, runs the --reference run and
// opens the CPU sampler. The caller closes the measurement.
func (r *openRun) startMeasure(ctx context.Context) (*measurement, error) {
	mf := r.f.m
	m := &measurement{r: r, mf: mf, ctx: ctx}
	var pids []int
	for _, p := range splitList(*mf.pids) {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, &UsageError{Msg: fmt.Sprintf("--pids: %q is not a process id", p)}
		}
		pids = append(pids, n)
	}
	switch {
	case *mf.cpuEvery <= 0:
		return nil, &UsageError{Msg: "--cpu-every must be positive"}
	case *mf.brokerRef < 0:
		return nil, &UsageError{Msg: "--broker-ref must not be negative (0: off)"}
	case *mf.brokerRefSize < 0:
		return nil, &UsageError{Msg: "--broker-ref-size must not be negative"}
	}
	if *mf.charts != "" {
		if err := os.MkdirAll(*mf.charts, 0o755); err != nil {
			return nil, fmt.Errorf("--charts: %w", err)
		}
	}
	if *mf.reference {
		if err := m.runReference(ctx); err != nil {
			return nil, err
		}
	}
	o := cpustat.Options{Metrics: r.f.mURLs, Redis: splitList(*mf.redis), Processes: splitList(*mf.procs), PIDs: pids}
	if len(o.Metrics)+len(o.Redis)+len(o.Processes)+len(o.PIDs) == 0 {
		return m, nil
	}
	m.sampler = cpustat.New(o)
	// A probe: reports unreadable sources before the run, and finds
	// --metrics URLs that are the same process (treasure dev serves one
	// registry on every port), which would count its CPU twice.
	snap, err := m.sampler.Sample(ctx)
	if err != nil {
		fmt.Fprintf(r.io.Stderr, "loadgen: server CPU: %v\n", err)
	}
	keep := dedupMetrics(o.Metrics, snap)
	if len(keep) < len(o.Metrics) {
		for _, u := range o.Metrics {
			if !contains(keep, u) {
				m.dups = append(m.dups, u)
			}
		}
		fmt.Fprintf(r.io.Stderr, "loadgen: server CPU: %s serve the same process as another --metrics URL: counted once\n", strings.Join(m.dups, ", "))
		m.sampler.Close()
		o.Metrics = keep
		m.sampler = cpustat.New(o)
	}
	return m, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dedupMetrics returns urls without those whose source in snap (the
// Metrics sources come first, in order) is the same process as an earlier
// one: same start time, CPU within 0.5 s and RSS within 10 %.
func dedupMetrics(urls []string, snap cpustat.Snapshot) []string {
	var keep []string
	var kept []cpustat.Source
	for i, u := range urls {
		if i >= len(snap.Sources) {
			keep = append(keep, u)
			continue
		}
		s := snap.Sources[i]
		dup := false
		for _, k := range kept {
			if s.Err == nil && k.Err == nil && strings.Contains(s.Instance, cpustat.PIDMark) {
				// Both name their process id (treasure's services do).
				if s.Instance == k.Instance {
					dup = true
					break
				}
				continue
			}
			if s.Err == nil && k.Err == nil && s.Instance != "" && s.Instance == k.Instance &&
				serviceOf(s.Name) == serviceOf(k.Name) &&
				math.Abs(s.CPUSeconds-k.CPUSeconds) < 0.5 &&
				math.Abs(float64(s.RSSBytes)-float64(k.RSSBytes)) <= 0.1*float64(max(s.RSSBytes, k.RSSBytes)) {
				dup = true
				break
			}
		}
		if !dup {
			keep = append(keep, u)
			kept = append(kept, s)
		}
	}
	return keep
}

// serviceOf is the service part of a metrics source's name ("push
// 127.0.0.1:8182" → "push"): processes of different services started in
// the same second, with little CPU and the same graph loaded, look alike
// by start time, CPU and RSS alone.
func serviceOf(name string) string {
	if i := strings.LastIndexByte(name, ' '); i >= 0 {
		return name[:i]
	}
	return ""
}

// close releases the sampler.
func (m *measurement) close() {
	if m.sampler != nil {
		m.sampler.Close()
	}
}

// useJetStream gives the measurement the pipeline's JetStream (--nats):
// the IN stream's growth sizes the broker reference.
func (m *measurement) useJetStream(nc *nats.Conn, js jetstream.JetStream) {
	m.nc, m.js = nc, js
	m.stream = natsjs.Topology{Prefix: *m.r.f.streamPrefix}.InStream()
}

// wrap makes o.Connected take the start sample once the scenario's own
// Connected step returned; the schedule starts after the sample (t0 is
// the later of the two), so that the scrape delays no move.
func (m *measurement) wrap(o *loadgen.OpenOptions) {
	orig := o.Connected
	o.Connected = func(ctx context.Context) (time.Time, error) {
		t0 := time.Now()
		if orig != nil {
			var err error
			if t0, err = orig(ctx); err != nil {
				return t0, err
			}
		}
		m.atStart(ctx)
		if now := time.Now(); now.After(t0) {
			t0 = now
		}
		m.mu.Lock()
		m.t0 = t0
		m.mu.Unlock()
		return t0, nil
	}
}

func (m *measurement) atStart(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.started = true
	if m.js != nil {
		m.inA = m.readStream(ctx)
	}
	if m.sampler == nil {
		return
	}
	m.sampleLocked(ctx)
	tctx, cancel := context.WithCancel(m.ctx)
	m.stopTick = cancel
	m.ticking.Add(1)
	go func() {
		defer m.ticking.Done()
		t := time.NewTicker(*m.mf.cpuEvery)
		defer t.Stop()
		for {
			select {
			case <-tctx.Done():
				return
			case <-t.C:
			}
			m.mu.Lock()
			m.sampleLocked(tctx)
			m.mu.Unlock()
		}
	}()
}

// sampleLocked takes a sample; m.mu is held.
func (m *measurement) sampleLocked(ctx context.Context) {
	snap, err := m.sampler.Sample(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil && len(m.sampleErr) < 10 {
		m.sampleErr = append(m.sampleErr, err.Error())
	}
	m.snaps = append(m.snaps, snap)
}

func (m *measurement) readStream(ctx context.Context) *streamPoint {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := m.js.Stream(c, m.stream)
	if err != nil {
		return nil
	}
	info, err := s.Info(c)
	if err != nil {
		return nil
	}
	return &streamPoint{at: time.Now(), state: info.State}
}

// second records the JetStream backlog at the end of second s.
func (m *measurement) second(s loadgen.Second, backlog *loadgen.BacklogMonitor) {
	for len(m.backlog) <= s.Index {
		m.backlog = append(m.backlog, math.NaN())
	}
	if backlog != nil {
		if v := backlog.Last(); v >= 0 {
			m.backlog[s.Index] = float64(v)
		}
	}
}

// stop ends the sampling after the drain: the last CPU sample and IN
// stream reading.
func (m *measurement) stop(ctx context.Context) {
	m.mu.Lock()
	cancel := m.stopTick
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.ticking.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return
	}
	if m.sampler != nil {
		m.sampleLocked(ctx)
	}
	if m.js != nil {
		m.inB = m.readStream(ctx)
	}
}

// fin is f for JSON, nil (null) when NaN or infinite.
func fin(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

// report adds the measurements to sum.Extra and prints their lines.
func (m *measurement) report(ctx context.Context, sum *loadgen.Summary, res *loadgen.Result, out io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reportCPU(sum, res, out)
	m.reportBroker(ctx, sum, out)
	if *m.mf.charts != "" {
		m.reportCharts(sum, res, out)
	}
	if m.ref != nil {
		m.reportReference(sum, out)
	}
}

func (m *measurement) reportCPU(sum *loadgen.Summary, res *loadgen.Result, out io.Writer) {
	if m.sampler == nil {
		return
	}
	missing := []string{}
	for _, u := range m.dups {
		missing = append(missing, u+": the same process as another --metrics URL (counted once)")
	}
	if len(m.snaps) < 2 {
		missing = append(missing, "every source: the run did not reach t0, nothing was sampled")
		sum.Extra["server_cpu_missing"] = missing
		fmt.Fprintf(out, "  server    CPU not measured: %s\n", missing[len(missing)-1])
		return
	}
	rep := cpustat.Over(m.snaps)
	missing = append(missing, rep.Missing...)
	moves := int64(res.Answered)
	us := rep.MicrosPerMove(moves)
	perCore := math.NaN()
	if rep.CPUSeconds > 0 {
		perCore = float64(moves) / rep.CPUSeconds
	}
	sources := map[string]any{}
	var rssTotal float64
	for _, s := range rep.Sources {
		rss := float64(s.MaxRSSBytes) / 1e6
		rssTotal += rss
		src := map[string]any{"kind": s.Kind, "cpu_s": s.CPUSeconds, "us_per_move": fin(s.MicrosPerMove(moves)), "rss_mb": rss,
			"gc_cpu_fraction": nil, "gc_pause_max_ms": nil}
		if s.GC != nil {
			src["gc_cpu_fraction"] = fin(s.GC.Fraction)
			src["gc_pause_max_ms"] = fin(s.GC.PauseMaxRecent * 1000)
			src["gc_pause_bound_ms"] = fin(s.GC.PauseBound * 1000)
			src["gc_cycles"] = s.GC.Cycles
		}
		if s.Kind == cpustat.KindProcess {
			src["procs"] = s.Procs
			if s.Unaccounted > 0 {
				src["unaccounted_exits"] = s.Unaccounted
			}
		}
		if s.Restarted {
			src["restarted"] = true
		}
		sources[s.Name] = src
	}
	sum.Extra["server_cpu_s"] = rep.CPUSeconds
	sum.Extra["server_cpu_over_s"] = rep.Seconds
	sum.Extra["server_cpu_us_per_move"] = fin(us)
	sum.Extra["server_cores"] = fin(rep.Cores())
	sum.Extra["moves_per_s_per_server_core"] = fin(perCore)
	sum.Extra["cores_at_47000_moves_per_s"] = fin(targetMovesPerS * us / 1e6)
	sum.Extra["rss_total_mb"] = rssTotal
	sum.Extra["server_cpu_sources"] = sources
	sum.Extra["server_cpu_samples"] = len(m.snaps)
	if len(missing) > 0 {
		sum.Extra["server_cpu_missing"] = missing
	}
	fmt.Fprintf(out, "  server    CPU %.2f s over %.1f s (%.2f cores), %.1f µs per move answered, %.0f moves/s per server core; %d moves/s would take %.1f cores\n",
		rep.CPUSeconds, rep.Seconds, rep.Cores(), us, perCore, targetMovesPerS, targetMovesPerS*us/1e6)
	for _, s := range rep.Sources {
		gc := ""
		if s.GC != nil {
			gc = fmt.Sprintf(", GC %.2f %% of its CPU, longest GC pause %.3f ms", 100*s.GC.Fraction, 1000*s.GC.PauseMaxRecent)
		}
		fmt.Fprintf(out, "  source    %s: %.2f s CPU, %.1f µs per move, RSS max %.0f MB%s\n", s.Name, s.CPUSeconds, s.MicrosPerMove(moves), float64(s.MaxRSSBytes)/1e6, gc)
	}
	fmt.Fprintf(out, "  rss       %.0f MB in total (sum of the sources' maxima)\n", rssTotal)
	for _, x := range missing {
		fmt.Fprintf(out, "  missing   %s\n", x)
	}
}

func (m *measurement) reportBroker(ctx context.Context, sum *loadgen.Summary, out io.Writer) {
	if m.js == nil || *m.mf.brokerRef == 0 || !m.started {
		return
	}
	fail := func(why string) {
		sum.Extra["broker_ref_error"] = why
		fmt.Fprintf(out, "  broker    not measured: %s\n", why)
	}
	var inMsgs uint64
	inRate := math.NaN()
	size := *m.mf.brokerRefSize
	if m.inA != nil && m.inB != nil && m.inB.state.LastSeq >= m.inA.state.LastSeq {
		a, b := m.inA.state, m.inB.state
		inMsgs = b.LastSeq - a.LastSeq
		if secs := m.inB.at.Sub(m.inA.at).Seconds(); secs > 0 {
			inRate = float64(inMsgs) / secs
		}
		if size == 0 && inMsgs > 0 {
			if b.Msgs-a.Msgs == inMsgs && b.Bytes >= a.Bytes {
				size = int((b.Bytes - a.Bytes) / inMsgs)
			} else if b.Msgs > 0 { // messages were removed: the stream's average
				size = int(b.Bytes / b.Msgs)
			}
		}
	} else if size == 0 {
		fail("the IN stream " + m.stream + " could not be read (and no --broker-ref-size)")
		return
	}
	if size == 0 {
		fail("no message reached the IN stream " + m.stream + " during the run (and no --broker-ref-size)")
		return
	}
	c, cancel := context.WithTimeout(ctx, *m.mf.brokerRef+time.Minute)
	defer cancel()
	pr, err := natsjs.PublishRate(c, m.nc, natsjs.PublishRateOptions{Size: size, Duration: *m.mf.brokerRef})
	if err != nil {
		fail(err.Error())
		return
	}
	sum.Extra["broker_msgs_per_s"] = pr.MsgsPerSec
	sum.Extra["broker_msg_bytes"] = size
	sum.Extra["in_msgs"] = inMsgs
	sum.Extra["in_msgs_per_s"] = fin(inRate)
	vs := map[string]any{"moves_per_s": nil, "in_msgs_per_s": nil}
	if pr.MsgsPerSec > 0 {
		vs["moves_per_s"] = fin(sum.MovesPerS / pr.MsgsPerSec)
		vs["in_msgs_per_s"] = fin(inRate / pr.MsgsPerSec)
	}
	sum.Extra["pipeline_vs_broker"] = vs
	fmt.Fprintf(out, "  broker    JetStream alone: %.0f msgs/s of %d B (%v, async); the pipeline: %.0f moves/s = %.3f of it, %.0f IN msgs/s = %.3f of it\n",
		pr.MsgsPerSec, size, *m.mf.brokerRef, sum.MovesPerS, sum.MovesPerS/pr.MsgsPerSec, inRate, inRate/pr.MsgsPerSec)
}

func (m *measurement) reportCharts(sum *loadgen.Summary, res *loadgen.Result, out io.Writer) {
	written, notes := writeRunCharts(*m.mf.charts, res, m.backlog, m.snaps, m.t0)
	sum.Extra["charts"] = written
	if len(notes) > 0 {
		sum.Extra["charts_not_written"] = notes
	}
	fmt.Fprintf(out, "  charts    %s\n", strings.Join(written, " "))
	for _, n := range notes {
		fmt.Fprintf(out, "  charts    not written: %s\n", n)
	}
}

// quantileMs is h's q-th percentile in ms, NaN without values.
func quantileMs(h *hdr.Histogram, q float64) float64 {
	if h == nil || h.TotalCount() == 0 {
		return math.NaN()
	}
	return float64(h.ValueAtQuantile(q)) / 1000
}

// writeRunCharts writes the run's charts into dir (see the constants):
// the files written, and why the others were not.
func writeRunCharts(dir string, res *loadgen.Result, backlog []float64, snaps []cpustat.Snapshot, t0 time.Time) (written, notes []string) {
	n := len(res.Seconds)
	x := make([]float64, n)
	col := func(f func(loadgen.Second) float64) []float64 {
		y := make([]float64, n)
		for i, s := range res.Seconds {
			y[i] = f(s)
		}
		return y
	}
	for i, s := range res.Seconds {
		x[i] = float64(s.Index + 1)
	}
	lat := charts.Chart{Title: "latency from the scheduled send time, per second", XLabel: "seconds since t0", YLabel: "ms", LogY: true}
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 50}, {"p99", 99}, {"p99.9", 99.9}} {
		lat.Series = append(lat.Series,
			charts.Series{Name: "ack " + q.name, X: x, Y: col(func(s loadgen.Second) float64 { return quantileMs(s.Ack, q.q) })},
			charts.Series{Name: "update " + q.name, X: x, Y: col(func(s loadgen.Second) float64 { return quantileMs(s.Update, q.q) })})
	}
	thr := charts.Chart{Title: "moves per second", XLabel: "seconds since t0", YLabel: "moves/s", Series: []charts.Series{
		{Name: "offered", X: x, Y: col(func(s loadgen.Second) float64 { return float64(s.Offered) })},
		{Name: "sent", X: x, Y: col(func(s loadgen.Second) float64 { return float64(s.Sent) })},
		{Name: "acked", X: x, Y: col(func(s loadgen.Second) float64 { return float64(s.Acked) })},
		{Name: "answered", X: x, Y: col(func(s loadgen.Second) float64 { return float64(s.Answered) })},
	}}
	bl := charts.Chart{Title: "backlog at each second's end", XLabel: "seconds since t0", YLabel: "moves", Series: []charts.Series{
		{Name: "client: acked, update due", X: x, Y: col(func(s loadgen.Second) float64 { return float64(s.Outstanding) })},
	}}
	if len(backlog) > 0 {
		y := make([]float64, n)
		for i, s := range res.Seconds {
			y[i] = math.NaN()
			if s.Index < len(backlog) {
				y[i] = backlog[s.Index]
			}
		}
		bl.Series = append(bl.Series, charts.Series{Name: "JetStream: pending + ack pending", X: x, Y: y})
	}
	all := []struct {
		file string
		c    charts.Chart
	}{{chartLatency, lat}, {chartThroughput, thr}, {chartBacklog, bl}}
	if len(snaps) >= 2 {
		all = append(all, struct {
			file string
			c    charts.Chart
		}{chartCPU, cpuChart(snaps, t0)})
	} else {
		notes = append(notes, chartCPU+": no CPU samples (give --metrics, --redis, --procs or --pids)")
	}
	for _, c := range all {
		p := filepath.Join(dir, c.file)
		if err := charts.WriteSVG(p, c.c); err != nil {
			notes = append(notes, c.file+": "+err.Error())
			continue
		}
		written = append(written, p)
	}
	return written, notes
}

// cpuChart is the cores each source used between consecutive samples.
func cpuChart(snaps []cpustat.Snapshot, t0 time.Time) charts.Chart {
	c := charts.Chart{Title: "server CPU between samples", XLabel: "seconds since t0", YLabel: "cores"}
	idx := map[string]int{}
	add := func(name string, x, y float64) {
		i, ok := idx[name]
		if !ok {
			i = len(c.Series)
			idx[name] = i
			c.Series = append(c.Series, charts.Series{Name: name})
		}
		c.Series[i].X = append(c.Series[i].X, x)
		c.Series[i].Y = append(c.Series[i].Y, y)
	}
	for i := 1; i < len(snaps); i++ {
		rep := cpustat.Between(snaps[i-1], snaps[i])
		if rep.Seconds <= 0 {
			continue
		}
		x := snaps[i].At.Sub(t0).Seconds()
		add("total", x, rep.Cores())
		for _, s := range rep.Sources {
			add(s.Name, x, s.CPUSeconds/rep.Seconds)
		}
	}
	return c
}

// refRatioKeys are the figures reported as pipeline ÷ edge-ref.
var refRatioKeys = []string{"moves_per_s", "ack_p50_ms", "ack_p99_ms", "ack_p999_ms", "update_p50_ms", "update_p99_ms",
	"update_p999_ms", "update_max_ms", "drain_s", "server_cpu_us_per_move", "server_cores", "rss_total_mb", "held_rate"}

func (m *measurement) reportReference(sum *loadgen.Summary, out io.Writer) {
	b, err := json.Marshal(sum)
	pipe := map[string]any{}
	if err == nil {
		err = json.Unmarshal(b, &pipe)
	}
	if err != nil {
		sum.Extra["reference_error"] = err.Error()
		return
	}
	vs := map[string]any{}
	var parts []string
	for _, k := range refRatioKeys {
		p, ok1 := pipe[k].(float64)
		e, ok2 := m.ref[k].(float64)
		if !ok1 || !ok2 || e <= 0 {
			continue
		}
		vs[k] = p / e
		parts = append(parts, fmt.Sprintf("%s %.2f×", k, p/e))
	}
	if r, ok := vs["held_rate"].(float64); ok {
		vs["held_rate_target_met"] = r >= 0.8
	}
	if r, ok := vs["server_cpu_us_per_move"].(float64); ok {
		vs["server_cpu_target_met"] = r <= 1.5
	}
	sum.Extra["reference"] = m.ref
	sum.Extra["reference_edge"] = m.refEdge
	sum.Extra["vs_reference"] = vs
	num := func(k string) string {
		if v, ok := m.ref[k].(float64); ok {
			return strconv.FormatFloat(v, 'f', 2, 64)
		}
		return "-"
	}
	fmt.Fprintf(out, "  floor     edge-ref: %s moves/s, update p50 %s p99 %s ms, server CPU %s µs per move, held rate %s\n",
		num("moves_per_s"), num("update_p50_ms"), num("update_p99_ms"), num("server_cpu_us_per_move"), num("held_rate"))
	fmt.Fprintf(out, "  vs floor  pipeline ÷ edge-ref: %s\n", strings.Join(parts, ", "))
}

// loadgenScenario is the function of an open-loop scenario, for the
// --reference run.
func loadgenScenario(name string) func(context.Context, []string, Env, IO) error {
	switch name {
	case "steady":
		return runLoadgenSteady
	case "ramp":
		return runLoadgenRamp
	case "drop":
		return runLoadgenDrop
	}
	return nil
}

// runReference runs this scenario with the same flags against a
// treasure edge-ref child process, which it starts on free loopback ports
// and stops afterwards, and keeps the run's summary in m.ref.
func (m *measurement) runReference(ctx context.Context) error {
	r := m.r
	scenario := loadgenScenario(r.name)
	if scenario == nil {
		return &UsageError{Msg: "--reference: scenario " + r.name + " has no reference run"}
	}
	exe := *m.mf.refBin
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("--reference: find this binary: %w", err)
		}
		if strings.HasSuffix(exe, ".test") {
			return &UsageError{Msg: "--reference starts edge-ref from the treasure binary, and " + exe + " is a test binary: give --reference-bin"}
		}
	}
	edge, err := startEdgeRef(ctx, exe, *r.f.secret, r.io.Stderr)
	if err != nil {
		return err
	}
	m.refEdge = map[string]any{"ingest": edge.ingest, "push": edge.push, "pid": edge.cmd.Process.Pid}
	fmt.Fprintf(r.io.Stdout, "reference: edge-ref (pid %d) on %s and %s; the same %s run against it first\n", edge.cmd.Process.Pid, edge.ingest, edge.push, r.name)

	set := map[string]string{}
	r.f.fs.VisitAll(func(fl *flag.Flag) { set[fl.Name] = fl.Value.String() })
	set["ingest"], set["push"] = edge.ingest, edge.push
	set["metrics"] = "http://" + strings.TrimPrefix(edge.ingest, "ws://") + "/metrics"
	set["redis"], set["procs"], set["pids"], set["nats"] = "", "", "", ""
	set["reference"], set["json"], set["broker-ref"] = "false", "true", "0"
	if set["charts"] != "" {
		set["charts"] = filepath.Join(set["charts"], "reference")
	}
	names := make([]string, 0, len(set))
	for k := range set {
		names = append(names, k)
	}
	sort.Strings(names)
	args := make([]string, 0, len(names))
	for _, k := range names {
		args = append(args, "--"+k+"="+set[k])
	}
	pw := &prefixWriter{w: r.io.Stdout, prefix: "edge-ref | "}
	runErr := scenario(ctx, args, func(string) string { return "" }, IO{Stdin: r.io.Stdin, Stdout: pw, Stderr: r.io.Stderr})
	pw.flush()
	stopErr := edge.stop()
	if pw.json == nil {
		if runErr == nil {
			runErr = errors.New("no summary")
		}
		return fmt.Errorf("reference run against edge-ref: %w", runErr)
	}
	if err := json.Unmarshal(pw.json, &m.ref); err != nil {
		return fmt.Errorf("reference run against edge-ref: its summary: %w", err)
	}
	if runErr != nil {
		fmt.Fprintf(r.io.Stderr, "loadgen: the reference run against edge-ref failed: %v\n", runErr)
		m.ref["error"] = runErr.Error()
	}
	if stopErr != nil {
		fmt.Fprintf(r.io.Stderr, "loadgen: edge-ref: %v\n", stopErr)
	}
	fmt.Fprintf(r.io.Stdout, "reference: edge-ref stopped; now the %s run against the pipeline\n", r.name)
	return ctx.Err()
}

// prefixWriter writes lines to w with a prefix, except a line holding a
// JSON object, which it keeps (the last one) instead.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    bytes.Buffer
	json   []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadBytes('\n')
		if err != nil { // incomplete: keep it
			rest := append([]byte(nil), line...)
			p.buf.Reset()
			p.buf.Write(rest)
			return len(b), nil
		}
		p.line(line)
	}
}

func (p *prefixWriter) line(line []byte) {
	if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '{' {
		p.json = append([]byte(nil), t...)
		return
	}
	fmt.Fprintf(p.w, "%s%s", p.prefix, line)
}

func (p *prefixWriter) flush() {
	if p.buf.Len() > 0 {
		p.line(append(p.buf.Bytes(), '\n'))
		p.buf.Reset()
	}
}

// edgeRef is a running treasure edge-ref child process.
type edgeRef struct {
	cmd          *exec.Cmd
	stopFn       func() error
	ingest, push string // ws:// base URLs
}

// startEdgeRef starts `exe edge-ref` on two free loopback ports and waits
// until both answer /readyz. It is stopped (SIGTERM, SIGKILL after 10 s)
// by stop, or when ctx ends.
func startEdgeRef(ctx context.Context, exe, secret string, stderr io.Writer) (*edgeRef, error) {
	var addrs [2]string
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("--reference: a free port: %w", err)
		}
		addrs[i] = l.Addr().String()
		l.Close()
	}
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, exe, "edge-ref", "--ingest", addrs[0], "--push", addrs[1])
	cmd.Env = append(os.Environ(), platform.EnvJWTSecret+"="+secret, platform.EnvLogLevel+"=warn")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = childProcAttr() // SIGTERM should this process die without stopping it
	cmd.Cancel = func() error { terminate(cmd.Process); return nil }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("--reference: start %s edge-ref: %w", exe, err)
	}
	e := &edgeRef{cmd: cmd, ingest: "ws://" + addrs[0], push: "ws://" + addrs[1]}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitErr := func() error {
		client := &http.Client{Timeout: time.Second}
		deadline := time.Now().Add(20 * time.Second)
		for _, a := range addrs {
			for {
				resp, err := client.Get("http://" + a + "/readyz")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				select {
				case err := <-exited:
					exited <- err
					return fmt.Errorf("--reference: edge-ref exited before it was ready: %v", err)
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("--reference: edge-ref not ready on %s within 20 s", a)
				}
			}
		}
		return nil
	}()
	e.stopFn = func() error {
		cancel()
		err := <-exited
		if errors.Is(err, context.Canceled) { // exited with status 0 after the SIGTERM
			return nil
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ProcessState != nil {
			if ws, ok := ee.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				return nil
			}
		}
		return err
	}
	if waitErr != nil {
		e.stop()
		return nil, waitErr
	}
	return e, nil
}

// stop stops edge-ref and waits for it to exit.
func (e *edgeRef) stop() error { return e.stopFn() }
