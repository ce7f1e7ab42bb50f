package cpustat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"go.uber.org/goleak"

	"treasure/internal/cpustat"
	"treasure/internal/platform"
	"treasure/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// ctxFor returns a context ended at cleanup or after d: the deadline only
// stops a wedged test.
func ctxFor(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

func newSampler(tb testing.TB, o cpustat.Options) *cpustat.Sampler {
	tb.Helper()
	s := cpustat.New(o)
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func sample(tb testing.TB, s *cpustat.Sampler) cpustat.Snapshot {
	tb.Helper()
	snap, err := s.Sample(ctxFor(tb, 30*time.Second))
	if err != nil {
		tb.Fatalf("Sample: %v", err)
	}
	return snap
}

// selfCPU is this process's CPU time so far (getrusage: microseconds, finer
// than /proc's clock ticks).
func selfCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// burn spins a goroutine, allocating as it goes, until this process has used
// at least d more CPU (not wall) time, with a GC forced on the way.
func burn(tb testing.TB, d time.Duration) {
	tb.Helper()
	start := selfCPU(tb)
	var wg sync.WaitGroup
	var sink [][]byte
	wg.Go(func() {
		for i := 0; selfCPU(tb)-start < d; i++ {
			sink = append(sink, make([]byte, 4096))
			if len(sink) > 1024 {
				sink = sink[:0]
			}
			if i%20000 == 0 {
				runtime.GC()
			}
		}
	})
	wg.Wait()
	runtime.GC()
}

func source(tb testing.TB, r cpustat.Report, name string) cpustat.SourceReport {
	tb.Helper()
	for _, s := range r.Sources {
		if s.Name == name {
			return s
		}
	}
	tb.Fatalf("no source %q in %+v (missing: %q)", name, r.Sources, r.Missing)
	return cpustat.SourceReport{}
}

func TestGoMetricsGiveCPURSSAndGC(t *testing.T) {
	reg := platform.NewRegistry()
	moves := prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_moves_total", Help: "test"})
	reg.MustRegister(moves)
	srv := httptest.NewServer(platform.OpsMux(reg, nil))
	t.Cleanup(srv.Close)
	s := newSampler(t, cpustat.Options{Metrics: []string{srv.URL + "/metrics"}})

	a := sample(t, s)
	burn(t, 50*time.Millisecond)
	b := sample(t, s)
	r := cpustat.Between(a, b)

	name := "ingest " + strings.TrimPrefix(srv.URL, "http://")
	got := source(t, r, name)
	if got.Kind != cpustat.KindMetrics {
		t.Errorf("kind %q", got.Kind)
	}
	if got.CPUSeconds <= 0 || r.CPUSeconds != got.CPUSeconds {
		t.Errorf("CPU %v s (total %v s), want > 0 and the total", got.CPUSeconds, r.CPUSeconds)
	}
	if got.RSSBytes == 0 || got.MaxRSSBytes < got.RSSBytes {
		t.Errorf("RSS %d, max %d", got.RSSBytes, got.MaxRSSBytes)
	}
	if got.Restarted {
		t.Error("restarted")
	}
	g := got.GC
	if g == nil {
		t.Fatal("no GC report")
	}
	if g.Cycles == 0 || !(g.CPUSeconds > 0) || !(g.Fraction > 0) {
		t.Errorf("GC: %d cycles, %v s CPU, fraction %v; want all > 0", g.Cycles, g.CPUSeconds, g.Fraction)
	}
	if !(g.PauseMaxRecent > 0) || !(g.PauseBound > 0) {
		t.Errorf("pauses: max recent %v, bound %v; want > 0", g.PauseMaxRecent, g.PauseBound)
	}
	if us := r.MicrosPerMove(1000); math.Abs(us-r.CPUSeconds*1000) > 1e-6 {
		t.Errorf("MicrosPerMove(1000) = %v for %v s", us, r.CPUSeconds)
	}
	// The registry exports the process id: the instance names this process.
	if want := cpustat.PIDMark + strconv.Itoa(os.Getpid()); !strings.HasSuffix(b.Sources[0].Instance, want) {
		t.Errorf("instance %q, want it to end in %q", b.Sources[0].Instance, want)
	}
}

// comm is this process's kernel command name ("cpustat.test").
func comm(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestThisProcessByNameAndByPID(t *testing.T) {
	name, pid := comm(t), os.Getpid()
	s := newSampler(t, cpustat.Options{Processes: []string{name}, PIDs: []int{pid}})

	a := sample(t, s)
	burn(t, 50*time.Millisecond)
	b := sample(t, s)
	r := cpustat.Between(a, b)

	for _, n := range []string{name, name + " " + strconv.Itoa(pid)} {
		got := source(t, r, n)
		if got.CPUSeconds <= 0 || got.Procs < 1 || got.RSSBytes == 0 || got.GC != nil {
			t.Errorf("%s: %+v; want CPU > 0, a process, RSS, no GC", n, got)
		}
	}
}

func TestRedisCPUFromINFO(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := newSampler(t, cpustat.Options{Redis: []string{testenv.RedisURL()}})
	ctx := ctxFor(t, time.Minute)

	a := sample(t, s)
	for i := range 20 {
		pipe := rdb.Pipeline()
		for j := range 500 {
			pipe.ZIncrBy(ctx, prefix+"z", 1, fmt.Sprint(i*500+j))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b := sample(t, s)
	r := cpustat.Between(a, b)

	got := source(t, r, "redis "+rdb.Options().Addr)
	if got.CPUSeconds <= 0 || got.RSSBytes == 0 || got.Restarted || got.Kind != cpustat.KindRedis {
		t.Errorf("%+v; want CPU > 0, RSS, not restarted", got)
	}
}

// procCPU is pid's own CPU seconds from /proc (utime + stime).
func procCPU(tb testing.TB, pid int) float64 {
	tb.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	return st.CPUTime()
}

func TestPostgresCountsABackendThatExited(t *testing.T) {
	s := newSampler(t, cpustat.Options{Processes: []string{"postgres"}})
	url := testenv.PostgresURL(t)
	ctx := ctxFor(t, 2*time.Minute)

	a := sample(t, s)
	// A backend born and gone between the samples: only the postmaster's
	// cutime/cstime still holds its CPU at b.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var backend float64
	for backend < 0.05 {
		var n int64
		if err := conn.QueryRow(ctx, "select count(*) from generate_series(1, 2000000)").Scan(&n); err != nil {
			t.Fatal(err)
		}
		backend = procCPU(t, pid)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until the postmaster has reaped it (a zombie stays in /proc).
	for _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil; _, err = os.Stat("/proc/" + strconv.Itoa(pid)) {
		if ctx.Err() != nil {
			t.Fatalf("backend %d still in /proc", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b := sample(t, s)
	r := cpustat.Between(a, b)

	got := source(t, r, "postgres")
	if got.CPUSeconds < backend {
		t.Errorf("postgres CPU %v s < %v s of the exited backend %d alone", got.CPUSeconds, backend, pid)
	}
	if got.Exited < 1 && got.Procs < 2 {
		t.Errorf("%+v: want the exited backend and a postmaster", got)
	}
	if got.Unaccounted != 0 {
		t.Errorf("%d exits unaccounted: the postmaster reaps every backend", got.Unaccounted)
	}
}

func TestUnreadableSourcesAreNamedAndLeftOut(t *testing.T) {
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "process_cpu_seconds_total{ 12")
	}))
	t.Cleanup(garbage.Close)
	partial := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "process_resident_memory_bytes 1e6")
	}))
	t.Cleanup(partial.Close)
	failing := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(failing.Close)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := gone.Process.Pid

	s := newSampler(t, cpustat.Options{
		Metrics: []string{garbage.URL + "/metrics", partial.URL + "/metrics", failing.URL + "/metrics"},
		Redis:   []string{"rediss//nonsense"},
		PIDs:    []int{dead, os.Getpid()},
	})
	a, err := s.Sample(ctxFor(t, 30*time.Second))
	for _, want := range []string{
		garbage.URL + "/metrics: parse: text format parsing error in line 1",
		partial.URL + "/metrics: process_cpu_seconds_total missing",
		failing.URL + "/metrics: status 404",
		"redis rediss//nonsense: ",
		"pid " + strconv.Itoa(dead) + ": no such process",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	r := cpustat.Between(a, a)
	if len(r.Sources) != 1 || len(r.Missing) != 5 {
		t.Errorf("sources %+v, missing %q: want only this process and 5 missing", r.Sources, r.Missing)
	}
}

func TestRestartedServiceCountsFromItsRestart(t *testing.T) {
	src := func(instance string, cpu float64) cpustat.Snapshot {
		return cpustat.Snapshot{Sources: []cpustat.Source{{Key: "k", Name: "svc", Kind: cpustat.KindRedis, Instance: instance, CPUSeconds: cpu}}}
	}
	for _, tc := range []struct {
		name      string
		a, b      cpustat.Snapshot
		cpu       float64
		restarted bool
	}{
		{"same instance: the difference", src("x", 2), src("x", 5), 3, false},
		{"new instance: all of b", src("x", 2), src("y", 5), 5, true},
		{"counter went back: all of b", src("x", 7), src("x", 5), 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cpustat.Between(tc.a, tc.b).Sources[0]
			if got.CPUSeconds != tc.cpu || got.Restarted != tc.restarted {
				t.Errorf("CPU %v restarted %v; want %v %v", got.CPUSeconds, got.Restarted, tc.cpu, tc.restarted)
			}
		})
	}
}

func TestReportJSONHasNullForNaN(t *testing.T) {
	r := cpustat.Report{Seconds: 2, CPUSeconds: 1, Sources: []cpustat.SourceReport{{
		Name: "push", Kind: cpustat.KindMetrics, CPUSeconds: 1,
		GC: &cpustat.GCReport{CPUSeconds: 0.01, Fraction: math.NaN(), Cycles: 3, PauseBound: math.Inf(1)},
	}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seconds":2,"cpu_seconds":1,"sources":[{"name":"push","kind":"metrics","cpu_seconds":1,"rss_bytes":0,"max_rss_bytes":0,` +
		`"gc":{"cpu_seconds":0.01,"fraction":null,"cycles":3,"pause_max_recent_seconds":0,"pause_bound_seconds":null}}]}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestMicrosPerMoveOfNoMovesIsNaN(t *testing.T) {
	r := cpustat.Report{CPUSeconds: 1, Seconds: 2}
	if !math.IsNaN(r.MicrosPerMove(0)) || r.MicrosPerMove(4) != 250000 || r.Cores() != 0.5 {
		t.Errorf("%v %v %v", r.MicrosPerMove(0), r.MicrosPerMove(4), r.Cores())
	}
}
