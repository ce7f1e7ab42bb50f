package e2e

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

// The stream caps the processes run with (TREASURE_STREAM_MAX_BYTES,
// TREASURE_STREAM_MAX_MSGS): the defaults would reserve about 9 GiB of the
// shared server's file store per test.
const (
	procStreamMaxBytes = 64 << 20
	procStreamMaxMsgs  = 200_000
)

// How long a process may take to answer /readyz 200 (graph load, stream
// declaration, rebuild from the log) and to exit after SIGTERM.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveTreasureBinary()
	os.Exit(code)
}

// treasureBinary is the treasure binary, built once per test process.
func treasureBinary(tb testing.TB) string { return testenv.TreasureBinary(tb) }

// syncBuffer collects a process's stdout and stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// bytes returns a copy of everything written.
func (s *syncBuffer) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// tail returns the last 32 KiB written.
func (s *syncBuffer) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > 32<<10 {
		return "…" + string(b[len(b)-32<<10:])
	}
	return string(b)
}

// proc is one running process of the treasure binary.
type proc struct {
	name    string
	args    []string
	addrVar string // the environment variable that gives it addr
	addr    string // its HTTP address: service and ops endpoints
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{} // closed once it has exited and been reaped
	err     error         // Wait's, set before done closes
	killed  atomic.Bool   // SIGKILLed on purpose
	stopped atomic.Bool   // stop has run (a test's, before the cleanup's)
}

// kill sends SIGKILL (no drain, no ack, no flush) and waits until the
// process is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.killed.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s still running %v after SIGKILL", p.name, stopTimeout)
	}
}

// stop sends SIGTERM and checks that the process exits 0 within
// stopTimeout (a graceful shutdown); it is SIGKILLed otherwise. A second
// stop does nothing.
func (p *proc) stop(t *testing.T) {
	if p.stopped.Swap(true) {
		return
	}
	select {
	case <-p.done:
		if !p.killed.Load() {
			t.Errorf("%s exited before it was stopped: %v", p.name, p.err)
		}
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM %s: %v", p.name, err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // in case a test left it stopped
	select {
	case <-p.done:
		if st := p.cmd.ProcessState; st == nil || !st.Success() {
			t.Errorf("%s after SIGTERM: %v, want exit status 0", p.name, p.err)
		}
	case <-time.After(stopTimeout):
		t.Errorf("%s did not exit within %v of SIGTERM; killing it", p.name, stopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cluster is the four services as five processes: ingest, push, ranker and
// two proximity workers (one per partition, K=2), on their own streams,
// Redis keys and PostgreSQL schema.
type cluster struct {
	t      *testing.T
	bin    string
	env    []string // shared by every process
	topo   natsjs.Topology
	js     jetstream.JetStream
	pool   *pgxpool.Pool // on the processes' schema
	rdb    *redis.Client // the shared Redis; the processes' keys are under topo.Prefix + ":"
	d      deployment
	ingest *proc
	push   *proc
	ranker *proc
	prox   [2]*proc
}

// startCluster starts the processes, waits until every one answers
// /readyz 200 and checks that the streams took the small caps. On cleanup
// the processes get SIGTERM and must exit 0, then the streams, Redis keys
// and schema are removed; when the test failed, each process's output is
// logged.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	return startClusterEnv(t, nil)
}

// startClusterEnv is startCluster with ingestEnv added to the first
// ingest process's environment (its later values win), e.g. another
// TREASURE_NATS_URL.
func startClusterEnv(t *testing.T, ingestEnv []string) *cluster {
	t.Helper()
	ctx := context.Background()
	g := amsterdam(t)
	exe := treasureBinary(t)

	// Cleanups run last-in first-out: everything registered here runs
	// after the processes have stopped.
	nc := testenv.NATS(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	prefix := testenv.Prefix(t)
	testenv.DeleteStreamsOnCleanup(t, js, prefix)
	rdb, _ := testenv.Redis(t) // only a client: the processes' keys are under prefix + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := testenv.DeleteKeys(ctx, rdb, prefix+":"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	dbURL := testenv.PostgresURL(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	c := &cluster{
		t: t, bin: exe, js: js, pool: pool, rdb: rdb,
		topo: natsjs.Topology{Prefix: prefix, Partitions: 2},
		env: []string{
			"TREASURE_NATS_URL=" + testenv.NATSURL(),
			"TREASURE_STREAM_PREFIX=" + prefix,
			"TREASURE_REDIS_URL=" + testenv.RedisURL(),
			"TREASURE_DATABASE_URL=" + dbURL,
			"TREASURE_GRAPH=" + testgraph.Path(t, "amsterdam.gr.gz"),
			"TREASURE_PARTITIONS=2",
			"TREASURE_RADIUS=2000",
			"TREASURE_JWT_SECRET=" + secret,
			"TREASURE_LEADERBOARD_RATE=0", // the tests poll every 20 ms
			"TREASURE_STREAM_MAX_BYTES=" + strconv.Itoa(procStreamMaxBytes),
			"TREASURE_STREAM_MAX_MSGS=" + strconv.Itoa(procStreamMaxMsgs),
			// A killed proximity worker's partitions are taken over this
			// long after its last lease renewal (default 10 s).
			"TREASURE_PROXIMITY_LEASE_TTL=" + procLeaseTTL.String(),
		},
	}
	c.ranker = c.start("ranker", "TREASURE_RANKER_ADDR", "ranker")
	c.push = c.start("push", "TREASURE_PUSH_ADDR", "push")
	c.prox[0] = c.start("proximity-0", "TREASURE_PROXIMITY_ADDR", "proximity", "--partitions", "0")
	c.prox[1] = c.start("proximity-1", "TREASURE_PROXIMITY_ADDR", "proximity", "--partitions", "1")
	c.ingest = c.startEnv("ingest", "TREASURE_INGEST_ADDR", freeAddr(t), ingestEnv, "ingest")
	c.waitReady(c.ranker, c.push, c.prox[0], c.prox[1], c.ingest)

	for _, name := range []string{c.topo.InStream(), c.topo.OutStream(), c.topo.UpdStream(), c.topo.DLQStream()} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if cfg := s.CachedInfo().Config; cfg.MaxBytes != procStreamMaxBytes || cfg.MaxMsgs != procStreamMaxMsgs {
			t.Fatalf("stream %s: max bytes %d, max msgs %d; want the TREASURE_STREAM_MAX_* caps %d, %d",
				name, cfg.MaxBytes, cfg.MaxMsgs, procStreamMaxBytes, procStreamMaxMsgs)
		}
	}

	c.d = deployment{
		ingest: "http://" + c.ingest.addr, push: "http://" + c.push.addr,
		secret: secret, g: g, radius: 2000,
		score: func(player string) int64 {
			var s int64 = -1
			_ = pool.QueryRow(context.Background(), "SELECT score FROM players WHERE player = $1", player).Scan(&s)
			return s
		},
	}
	return c
}

// start runs `treasure args...` with the cluster's environment and a free
// loopback port in addrVar.
func (c *cluster) start(name, addrVar string, args ...string) *proc {
	c.t.Helper()
	return c.startAt(name, addrVar, freeAddr(c.t), args...)
}

// startAt is start on a given address (a restarted process takes its
// predecessor's, so that clients reconnect to it).
func (c *cluster) startAt(name, addrVar, addr string, args ...string) *proc {
	c.t.Helper()
	return c.startEnv(name, addrVar, addr, nil, args...)
}

// startEnv is startAt with extra added to the cluster's environment (an
// exec.Cmd takes the last value of a variable set twice).
func (c *cluster) startEnv(name, addrVar, addr string, extra []string, args ...string) *proc {
	t := c.t
	t.Helper()
	// The context is a backstop: the cleanup below stops the process
	// first, gracefully.
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(append(append([]string(nil), c.env...), extra...), addrVar+"="+addr)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	p := &proc{name: name, args: args, addrVar: addrVar, addr: addr, cmd: cmd, out: out, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s (treasure %s): %s", p.name, strings.Join(p.args, " "), testenv.KeepLog(t, p.name, p.out.bytes(), 10))
		}
	})
	t.Cleanup(func() {
		p.stop(t)
		cancel()
	})
	return p
}

// waitReady polls every process's /readyz until it answers 200.
func (c *cluster) waitReady(ps ...*proc) {
	t := c.t
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(readyTimeout)
	for _, p := range ps {
		for {
			select {
			case <-p.done:
				t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, p.out.tail())
			default:
			}
			if resp, err := client.Get("http://" + p.addr + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready within %v:\n%s", p.name, readyTimeout, p.out.tail())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// metric reads one unlabelled counter or gauge from a process's /metrics.
func metric(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s /metrics: %s: %v", p.name, name, err)
			}
			return f
		}
	}
	t.Fatalf("%s /metrics has no %s", p.name, name)
	return 0
}

// TestEndToEndFourProcesses runs the scenario against the services started
// as separate processes of the treasure binary, as a deployment runs them.
func TestEndToEndFourProcesses(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	scenario(t, c.d, "bob")

	// Every process's /metrics counted the scenario's 7 moves in each of
	// its hop histograms (proximity's are split over its two workers).
	// Observations may trail the updates the client read: poll.
	const moves = 7
	count := func(p *proc, name string) float64 { return metric(t, p, name+"_count") }
	testenv.WaitUntil(t, 20*time.Second, "every hop histogram of every process counting the moves", func() bool {
		for _, name := range hopHistograms {
			var n float64
			switch {
			case strings.HasPrefix(name, "treasure_ingest_"):
				n = count(c.ingest, name)
			case strings.HasPrefix(name, "treasure_proximity_"):
				n = count(c.prox[0], name) + count(c.prox[1], name)
			case strings.HasPrefix(name, "treasure_push_"):
				n = count(c.push, name)
			}
			if n < moves {
				return false
			}
		}
		return true
	})
}
