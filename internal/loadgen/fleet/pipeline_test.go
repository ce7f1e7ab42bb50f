package fleet

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testgraph"
)

const pipelineSecret = "fleet-secret"

// startPipeline runs the real pipeline (internal/stack: the four services
// over real JetStream, Redis and PostgreSQL) in this process on fresh
// streams, keys and schema, stopped on cleanup. It returns the graph's
// path and the ws:// base URLs of ingest and push.
func startPipeline(t *testing.T) (graphPath, ingest, push string) {
	t.Helper()
	graphPath = testgraph.Path(t, "amsterdam.gr.gz")
	g, err := graph.LoadDIMACS(graphPath)
	if err != nil {
		t.Fatal(err)
	}
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: pipelineSecret})
	return graphPath, sp.IngestURL, sp.PushURL
}

// testLog passes worker stderr lines to t.Log.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func TestTwoWorkerProcessesDropOnThePipeline(t *testing.T) {
	graphPath, ingest, push := startPipeline(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const players, waves = 30, 2
	var connected atomic.Int32
	var progress []int
	var seconds []loadgen.Second
	r, err := Run(context.Background(), Options{
		Open: loadgen.OpenOptions{
			Ingest: []string{ingest}, Push: []string{push}, Secret: pipelineSecret,
			PlayerPrefix: "fleet-", FirstPlayer: 100, Players: players, Seed: 7,
			Schedule: loadgen.Schedule{Window: 300 * time.Millisecond, Waves: waves},
			Drain:    20 * time.Second,
			Connected: func(context.Context) (time.Time, error) {
				connected.Add(1) // the drop scenario posts the admin drop here
				return time.Now(), nil
			},
			Progress: func(n int) { progress = append(progress, n) },
		},
		GraphPath: graphPath,
		Workers:   2,
		Command:   []string{exe, "-test.run=^$"},
		Env:       []string{"FLEET_TEST_WORKER=engine"},
		Stderr:    testLog{t},
		LogLevel:  "info",
	}, func(s loadgen.Second) { seconds = append(seconds, s) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("merged: players %d sent %d acked %d answered %d lost %d errors %v update p99 %d µs",
		r.Players, r.Sent, r.Acked, r.Answered, r.Lost, r.Errors, r.Update.ValueAtQuantile(99))
	if r.Players != players || r.Sent != players*waves || r.Acked != r.Sent || r.Answered != r.Acked ||
		r.Lost != 0 || r.Failed() || len(r.Errors) != 0 {
		t.Errorf("accounting: %+v, want %d sent, all acked and answered, nothing lost", *r, players*waves)
	}
	if n := r.Update.TotalCount(); n != int64(r.Answered) {
		t.Errorf("merged update histogram holds %d latencies, want one per answered move (%d)", n, r.Answered)
	}
	if n := r.Ack.TotalCount(); n != int64(r.Acked) {
		t.Errorf("merged ack histogram holds %d latencies, want one per acked move (%d)", n, r.Acked)
	}
	if c := connected.Load(); c != 1 {
		t.Errorf("Connected called %d times, want once", c)
	}
	if len(progress) == 0 || progress[len(progress)-1] != players {
		t.Errorf("progress %v, want it to end at %d", progress, players)
	}
	var sent uint64
	for i, s := range seconds {
		if s.Index != i {
			t.Errorf("report %d is second %d: want every second, in order", i, s.Index)
		}
		sent += s.Sent
	}
	if sent != r.Sent {
		t.Errorf("reported seconds sent %d, result %d", sent, r.Sent)
	}
}

// children returns the pids of this process's child processes (Linux).
func children(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	me := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …: comm may hold spaces, so split after ")"
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func fleetOptions(t *testing.T, graphPath, ingest, push string, players int, s loadgen.Schedule) Options {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Open: loadgen.OpenOptions{
			Ingest: []string{ingest}, Push: []string{push}, Secret: pipelineSecret,
			PlayerPrefix: "fleet-", Players: players, Seed: 3, Schedule: s, Drain: 20 * time.Second,
		},
		GraphPath: graphPath, Workers: 2,
		Command: []string{exe, "-test.run=^$"}, Env: []string{"FLEET_TEST_WORKER=engine"},
		Stderr: testLog{t},
	}
}

func TestCancelStopsEveryWorkerProcessOnThePipeline(t *testing.T) {
	graphPath, ingest, push := startPipeline(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := fleetOptions(t, graphPath, ingest, push, 20, loadgen.Schedule{Rate: 2, Duration: time.Hour})
	r, err := Run(ctx, o, func(s loadgen.Second) {
		if s.Index == 1 {
			cancel() // Ctrl-C
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want the cancellation", err)
	}
	if r == nil || r.Players != 20 || r.Sent == 0 {
		t.Errorf("result %+v: want what both workers measured before the stop", r)
	}
	if pids := children(t); len(pids) != 0 {
		t.Errorf("child processes left after the run: %v", pids)
	}
}

func TestAWorkerThatCannotRunFailsTheRun(t *testing.T) {
	_, ingest, push := startPipeline(t)
	o := fleetOptions(t, "/nonexistent/city.snap", ingest, push, 4, loadgen.Schedule{Rate: 1, Duration: time.Second})
	_, err := Run(context.Background(), o, nil)
	if err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), "worker ") {
		t.Fatalf("err %v: want the worker's failure to load the graph", err)
	}
	if pids := children(t); len(pids) != 0 {
		t.Errorf("child processes left after the run: %v", pids)
	}
}
