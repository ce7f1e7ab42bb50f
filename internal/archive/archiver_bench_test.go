//go:build unix

package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// The archiver's benchmarks run the whole Archiver (its two durable
// consumers on the shared NATS server, Flatten, Parquet, the commit at
// stop) over the log of benchLog: 4 partitions, 7 moves per message (the
// issue7-cost run's ingest put 400,000 moves in 60,724 IN messages), and
// on OUT one proximity result per move. They report, per move, the CPU of
// this process (user + system; the NATS server is another process and not
// counted, as in issue7-cost's per-process figure), its allocations, and
// the wall time.
const (
	benchArchBatch = 7
	// benchLiveMoves are published per op of BenchmarkArchiverLive, at
	// benchLiveRate moves/s (4 s).
	benchLiveMoves = 40_000
	benchLiveRate  = 10_000
	// benchBacklogMoves are in the streams before BenchmarkArchiverBacklog
	// starts an archiver on them.
	benchBacklogMoves = 100_000
)

// benchPublishEnv, when set in the environment of this test binary, makes
// it the publisher of BenchmarkArchiverLive instead of running tests (see
// TestMain): "url prefix moves batch rate".
const benchPublishEnv = "TREASURE_ARCHIVE_BENCH_PUBLISH"

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchPublishEnv); spec != "" {
		if err := benchPublish(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench publisher:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchPublish publishes makeLog's messages, IN and OUT alternately, paced
// at the log's rate of moves, and returns once JetStream has stored them
// all. It runs in a child process, so that its CPU is not the archiver's.
func benchPublish(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 5 {
		return fmt.Errorf("spec %q: want url prefix moves batch rate", spec)
	}
	moves, err1 := strconv.Atoi(f[2])
	batch, err2 := strconv.Atoi(f[3])
	rate, err3 := strconv.ParseFloat(f[4], 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	in, out, err := makeLog(f[1], moves, batch, rate)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(f[0], nats.Name("archive bench publisher"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	perMsg := time.Duration(float64(batch) / rate * float64(time.Second))
	start := time.Now()
	for i := range in {
		if d := time.Until(start.Add(time.Duration(i) * perMsg)); d > 0 {
			time.Sleep(d)
		}
		for _, m := range []natsjs.Msg{in[i], out[i]} {
			if _, err := js.PublishAsync(m.Subject, m.Data, jetstream.WithStallWait(10*time.Second)); err != nil {
				return err
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return errors.New("publish acks not in within a minute")
	}
	if n := js.PublishAsyncPending(); n > 0 {
		return fmt.Errorf("%d publishes unacknowledged", n)
	}
	return nil
}

// benchEnv is a private pair of streams with room for the benchmarks' logs.
func benchEnv(b *testing.B) env {
	b.Helper()
	_, js, prefix := testenv.JetStream(b)
	// Room for a few ops of either benchmark (about 25 MB per 100,000
	// moves); the file store reserves MaxBytes of the shared server.
	big := natsjs.Limits{MaxBytes: 256 << 20, MaxMsgs: 1_000_000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: 4, In: big, Out: big, Upd: natsjs.Limits{MaxBytes: 8 << 20}, DLQ: natsjs.Limits{MaxBytes: 8 << 20}}
	if err := topo.Ensure(ctxFor(b, 30*time.Second), js); err != nil {
		b.Fatal(err)
	}
	return env{js: js, topo: topo}
}

// benchArchiver is one run of an Archiver on dir: start returns once it
// is ready; finish waits until it has taken in both streams up to their
// last sequences, stops it (committing the open segments) and checks that
// they are committed.
type benchArchiver struct {
	b      *testing.B
	e      env
	a      *Archiver
	cancel context.CancelFunc
	done   chan error
}

func startBenchArchiver(b *testing.B, e env, dir string) *benchArchiver {
	b.Helper()
	// Warnings and errors show in the benchmark's output: a failure the
	// archiver retries would otherwise only show as a slow op.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := New(e.js, Options{Dir: dir, Topology: e.topo, Registerer: prometheus.NewRegistry(), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &benchArchiver{b: b, e: e, a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	b.Cleanup(cancel)
	testenv.WaitUntil(b, time.Minute, "archiver not ready", func() bool { return a.Ready() == nil })
	return r
}

func (r *benchArchiver) finish() {
	b, e := r.b, r.e
	in, out := lastSeq(b, e, e.topo.InStream()), lastSeq(b, e, e.topo.OutStream())
	testenv.WaitUntil(b, 5*time.Minute, fmt.Sprintf("archiver has not taken in IN %d and OUT %d", in, out),
		func() bool { return consumed(r.a, in, out) })
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(time.Minute):
		b.Fatal("archiver did not stop within a minute")
	}
	if got := r.a.Archived(e.topo.InStream()); got != in {
		b.Fatalf("IN archived up to %d at stop, want %d", got, in)
	}
	if got := r.a.Archived(e.topo.OutStream()); got != out {
		b.Fatalf("OUT archived up to %d at stop, want %d", got, out)
	}
}

// usage is what the process has used: CPU, allocations, wall time.
type usage struct {
	cpu, wall      time.Duration
	allocs, nbytes uint64
}

// snapshot is usage so far, and when.
type snapshot struct {
	u  usage
	at time.Time
}

func readUsage(b *testing.B) snapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return snapshot{u: usage{cpu: cpuTime(b), allocs: ms.Mallocs, nbytes: ms.TotalAlloc}, at: time.Now()}
}

// add adds what the process used since s0 to u.
func (u *usage) add(b *testing.B, s0 snapshot) {
	s1 := readUsage(b)
	u.cpu += s1.u.cpu - s0.u.cpu
	u.wall += s1.at.Sub(s0.at)
	u.allocs += s1.u.allocs - s0.u.allocs
	u.nbytes += s1.u.nbytes - s0.u.nbytes
}

func (u usage) report(b *testing.B, moves int) {
	n := float64(moves)
	b.ReportMetric(float64(u.cpu.Nanoseconds())/n, "cpu-ns/move")
	b.ReportMetric(float64(u.wall.Nanoseconds())/n, "wall-ns/move")
	b.ReportMetric(float64(u.allocs)/n, "allocs/move")
	b.ReportMetric(float64(u.nbytes)/n, "B/move")
}

// publishAll publishes msgs to JetStream and waits until it has stored
// them, a thousand at a time (an async publisher stalls with more
// outstanding).
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []natsjs.Msg) error {
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		for _, m := range msgs[:n] {
			if _, err := js.PublishAsync(m.Subject, m.Data); err != nil {
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
		msgs = msgs[n:]
	}
	return nil
}

// BenchmarkArchiverLive measures the archiver as the pipeline runs it:
// a child process (this binary, see TestMain) publishes benchLiveMoves
// moves at benchLiveRate moves/s to IN and their results to OUT while an
// Archiver, started before, takes them in as they come; the op ends when
// the archiver has taken in the last message and has been stopped (its
// segments committed). Only this process's CPU is counted, from the
// publisher's start to the commit. Each op continues the same archive
// directory (a restarted archiver resumes from its last manifest).
//
//	go test -run '^$' -bench ArchiverLive -count 10 ./internal/archive
func BenchmarkArchiverLive(b *testing.B) {
	e := benchEnv(b)
	dir := b.TempDir()
	spec := strings.Join([]string{testenv.NATSURL(), e.topo.Prefix, strconv.Itoa(benchLiveMoves), strconv.Itoa(benchArchBatch),
		strconv.Itoa(benchLiveRate)}, " ")
	var u usage
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r := startBenchArchiver(b, e, dir)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchPublishEnv+"="+spec)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		b.StartTimer()
		u0 := readUsage(b)
		if err := cmd.Run(); err != nil {
			b.Fatalf("publisher: %v", err)
		}
		r.finish()
		u.add(b, u0)
	}
	u.report(b, b.N*benchLiveMoves)
}

// BenchmarkArchiverBacklog measures the archiver taking in a backlog:
// benchBacklogMoves moves on IN and their results on OUT, published before
// the timer starts; each op runs an Archiver on a fresh directory from the
// streams' first message until it has taken in the last one and has been
// stopped (its segments committed).
//
//	go test -run '^$' -bench ArchiverBacklog -count 10 ./internal/archive
func BenchmarkArchiverBacklog(b *testing.B) {
	e := benchEnv(b)
	in, out, err := makeLog(e.topo.Prefix, benchBacklogMoves, benchArchBatch, benchLiveRate)
	if err != nil {
		b.Fatal(err)
	}
	ctx := ctxFor(b, 5*time.Minute)
	if err := errors.Join(publishAll(ctx, e.js, in), publishAll(ctx, e.js, out)); err != nil {
		b.Fatal(err)
	}
	in, out = nil, nil
	runtime.GC()
	var u usage
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		b.StartTimer()
		u0 := readUsage(b)
		r := startBenchArchiver(b, e, dir)
		r.finish()
		u.add(b, u0)
	}
	u.report(b, b.N*benchBacklogMoves)
}
