package cli

import (
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"treasure/internal/cpustat"
	"treasure/internal/testenv"
)

// metricsURLs are the in-process stack's /metrics URLs: ingest's and
// push's ports serve the same process's registry.
func (p lgPipeline) metricsURLs() string {
	return "http://" + strings.TrimPrefix(p.ingest, "ws://") + "/metrics,http://" + strings.TrimPrefix(p.push, "ws://") + "/metrics"
}

func object(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("summary lacks object %q: %v", key, m)
	}
	return v
}

// parseXML reads the file at path to its end as XML.
func parseXML(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	n := 0
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", path, err)
		}
		n++
	}
	if n == 0 {
		t.Fatalf("%s is empty", path)
	}
}

func TestLoadgenMeasuresServerCPUBrokerAndCharts(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	dir := filepath.Join(t.TempDir(), "charts")
	code, out, errs := runCLI(t, "", nil, "loadgen", "steady", "--ingest", p.ingest, "--push", p.push,
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "40", "--rate", "4", "--duration", "2s",
		"--nats", p.nats, "--stream-prefix", p.prefix, "--json",
		"--metrics", p.metricsURLs(), "--redis", testenv.RedisURL(), "--cpu-every", "500ms",
		"--charts", dir, "--broker-ref", "1s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	checkClean(t, m, out)
	for _, k := range []string{"server_cpu_s", "server_cpu_us_per_move", "server_cores", "moves_per_s_per_server_core",
		"cores_at_47000_moves_per_s", "rss_total_mb", "broker_msgs_per_s", "broker_msg_bytes"} {
		if num(t, m, k) <= 0 {
			t.Fatalf("%s = %v\n%s", k, m[k], out)
		}
	}
	src := object(t, m, "server_cpu_sources")
	ingestHost := strings.TrimPrefix(p.ingest, "ws://")
	var named, redis bool
	for name, v := range src {
		named = named || strings.Contains(name, ingestHost)
		redis = redis || strings.HasPrefix(name, "redis ")
		if o, _ := v.(map[string]any); o == nil || o["cpu_s"] == nil || o["rss_mb"] == nil {
			t.Fatalf("source %q: %v", name, v)
		}
	}
	if !named || !redis || len(src) != 2 {
		t.Fatalf("sources must be the stack (once: its two URLs are one process) and Redis: %v\n%s", src, out)
	}
	missing, _ := m["server_cpu_missing"].([]any)
	if len(missing) != 1 || !strings.Contains(missing[0].(string), "same process") {
		t.Fatalf("the duplicate URL must be reported: %v", m["server_cpu_missing"])
	}
	vs := object(t, m, "pipeline_vs_broker")
	if f, _ := vs["moves_per_s"].(float64); f <= 0 {
		t.Fatalf("pipeline_vs_broker: %v", vs)
	}
	files, _ := m["charts"].([]any)
	if len(files) != 4 {
		t.Fatalf("charts: %v (not written: %v)", m["charts"], m["charts_not_written"])
	}
	for _, name := range []string{chartLatency, chartThroughput, chartBacklog, chartCPU} {
		parseXML(t, filepath.Join(dir, name))
	}
	for _, want := range []string{"  server    CPU ", "µs per move answered", "  broker    JetStream alone: ", "  charts    " + dir} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestLoadgenReferenceRunsTheFloorFirst(t *testing.T) {
	t.Parallel()
	bin := buildTreasure(t)
	p := startLoadgenPipeline(t)
	dir := filepath.Join(t.TempDir(), "charts")
	code, out, errs := runCLI(t, "", nil, "loadgen", "steady", "--ingest", p.ingest, "--push", p.push,
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "40", "--rate", "4", "--duration", "2s",
		"--metrics", p.metricsURLs(), "--json", "--charts", dir, "--reference", "--reference-bin", bin)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	checkClean(t, m, out)
	ref := object(t, m, "reference")
	if ref["sent"] != m["sent"] || ref["scenario"] != "steady" || ref["failed"] != false {
		t.Fatalf("the reference run must be the same scenario, clean: %v", ref)
	}
	if num(t, ref, "server_cpu_us_per_move") <= 0 {
		t.Fatalf("edge-ref's CPU: %v", ref)
	}
	vs := object(t, m, "vs_reference")
	for _, k := range []string{"update_p50_ms", "update_p99_ms", "server_cpu_us_per_move", "moves_per_s"} {
		if num(t, vs, k) <= 0 {
			t.Fatalf("vs_reference.%s = %v", k, vs[k])
		}
	}
	if _, ok := vs["server_cpu_target_met"].(bool); !ok {
		t.Fatalf("vs_reference lacks the CPU target: %v", vs)
	}
	parseXML(t, filepath.Join(dir, "reference", chartLatency))
	if !strings.Contains(out, "edge-ref | loadgen steady summary") || !strings.Contains(out, "  vs floor  pipeline ÷ edge-ref: ") {
		t.Fatalf("output lacks the reference run or the ratios:\n%s", out)
	}
	// edge-ref was stopped: its process is gone and its ports are closed.
	edge := object(t, m, "reference_edge")
	if err := syscall.Kill(int(num(t, edge, "pid")), 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("edge-ref (pid %v) still exists: %v", edge["pid"], err)
	}
	for _, k := range []string{"ingest", "push"} {
		if c, err := net.Dial("tcp", strings.TrimPrefix(edge[k].(string), "ws://")); err == nil {
			c.Close()
			t.Fatalf("edge-ref's %s port %v still accepts connections", k, edge[k])
		}
	}
}

func TestDedupMetricsDropsOnlyTheSameProcess(t *testing.T) {
	src := func(name, inst string, cpu float64, rss uint64) cpustat.Source {
		return cpustat.Source{Name: name, Kind: cpustat.KindMetrics, Instance: inst, CPUSeconds: cpu, RSSBytes: rss}
	}
	snap := cpustat.Snapshot{Sources: []cpustat.Source{
		src("ingest+push 127.0.0.1:1", "100.5", 3.0, 100e6),  // a
		src("ingest+push 127.0.0.1:2", "100.5", 3.1, 101e6),  // b: a's process on another port
		src("ingest+push 127.0.0.1:3", "100.5", 9.0, 100e6),  // c: same start, other CPU: another process
		src("ingest+push 127.0.0.1:4", "200.1", 3.0, 100e6),  // d
		{Kind: cpustat.KindMetrics, Err: errors.New("down")}, // e: unreadable, kept (reported missing later)
		src("push 127.0.0.1:5", "200.1", 3.0, 100e6),         // f: like d, but another service: another process
	}}
	// With process ids: equal ids are one process whatever else differs,
	// different ids two processes however alike.
	snap.Sources = append(snap.Sources,
		src("ingest 127.0.0.1:7", "300.1 pid 7", 3.0, 100e6), // g
		src("ingest 127.0.0.1:8", "300.1 pid 8", 3.0, 100e6), // h: another process, alike
		src("ingest 127.0.0.1:9", "300.1 pid 7", 5.0, 300e6), // i: g's process (a later scrape)
	)
	got := dedupMetrics([]string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, snap)
	if strings.Join(got, ",") != "a,c,d,e,f,g,h" {
		t.Fatalf("kept %v, want a,c,d,e,f,g,h", got)
	}
}

func TestPrefixWriterKeepsTheJSONLine(t *testing.T) {
	var b strings.Builder
	w := &prefixWriter{w: &b, prefix: "edge-ref | "}
	io.WriteString(w, "one\ntw")
	io.WriteString(w, "o\n{\"sent\":1}\nthree")
	w.flush()
	if b.String() != "edge-ref | one\nedge-ref | two\nedge-ref | three\n" || string(w.json) != `{"sent":1}` {
		t.Fatalf("wrote %q, kept %q", b.String(), w.json)
	}
}
