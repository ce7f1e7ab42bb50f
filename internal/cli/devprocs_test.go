package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgconn"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/platform"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveTreasureBinary()
	os.Exit(code)
}

// buildTreasure is the treasure binary, built once per test process.
func buildTreasure(tb testing.TB) string { return testenv.TreasureBinary(tb) }

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// devProc is a `treasure dev --separate` run of the built binary.
type devProc struct {
	cmd      *exec.Cmd
	out, err *lockedBuffer
	done     chan struct{}
	waitErr  error
	epFile   string
	ep       devEndpoints
}

const devTestSecret = "topo-test-secret"

// startDevSeparate runs `treasure dev args…` with the services on free
// ports, a private stream prefix and small stream caps, and waits for its
// endpoints file (written once every service is ready).
func startDevSeparate(t *testing.T, args ...string) *devProc {
	t.Helper()
	exe := buildTreasure(t)
	epFile := filepath.Join(t.TempDir(), "endpoints.json")
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TREASURE_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"TREASURE_GRAPH="+testgraph.Path(t, "amsterdam.gr.gz"),
		"TREASURE_REDIS_URL="+testenv.RedisURL(),
		"TREASURE_DATABASE_URL="+testenv.DatabaseURL(),
		"TREASURE_DEV_NATS_ADDR=127.0.0.1:0",
		"TREASURE_INGEST_ADDR=127.0.0.1:0",
		"TREASURE_PUSH_ADDR=127.0.0.1:0",
		"TREASURE_PROXIMITY_ADDR=127.0.0.1:0",
		"TREASURE_RANKER_ADDR=127.0.0.1:0",
		"TREASURE_ARCHIVE_ADDR=127.0.0.1:0",
		"TREASURE_STREAM_PREFIX="+testenv.Prefix(t),
		"TREASURE_STREAM_MAX_BYTES=67108864",
		"TREASURE_STREAM_MAX_MSGS=200000",
		"TREASURE_PARTITIONS=2",
		"TREASURE_JWT_SECRET="+devTestSecret,
		"TREASURE_LOG_LEVEL=warn",
	)
	d := &devProc{out: &lockedBuffer{}, err: &lockedBuffer{}, done: make(chan struct{}), epFile: epFile}
	d.cmd = exec.Command(exe, append([]string{"dev", "--treasures", "0", "--endpoints", epFile}, args...)...)
	d.cmd.Env = env
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.err
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { // a backstop: tests stop dev themselves
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev stderr:\n%s", d.out, d.err)
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		data, err := os.ReadFile(epFile)
		if err == nil {
			if err := json.Unmarshal(data, &d.ep); err != nil {
				t.Fatalf("endpoints file: %v\n%s", err, data)
			}
			break
		}
		select {
		case <-d.done:
			t.Fatalf("dev exited before it was ready: %v", d.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no endpoints file after 3 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// wait waits for dev to exit and returns its exit code.
func (d *devProc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(limit):
		t.Fatalf("dev still running %v later", limit)
	}
	var ee *exec.ExitError
	if d.waitErr != nil && !errors.As(d.waitErr, &ee) {
		t.Fatalf("dev: %v", d.waitErr)
	}
	return d.cmd.ProcessState.ExitCode()
}

// checkGone fails the test for every process of the run that still exists.
func (d *devProc) checkGone(t *testing.T) {
	t.Helper()
	if len(d.ep.Processes) == 0 {
		t.Fatal("endpoints list no processes")
	}
	for _, p := range d.ep.Processes {
		if err := syscall.Kill(p.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after dev exited (kill 0: %v)", p.Name, p.Pid, err)
			_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		}
	}
}

// readMsgs reads newline-separated JSON messages from conn until one
// satisfies match, or the deadline.
func readUntil(t *testing.T, conn *websocket.Conn, what string, match func(m map[string]any) bool) map[string]any {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("waiting for %s: %q: %v", what, sc.Bytes(), err)
			}
			if m["type"] == "error" {
				t.Fatalf("waiting for %s: %s", what, sc.Bytes())
			}
			if match(m) {
				return m
			}
		}
	}
}

func dialWS(t *testing.T, base, path, token string, query url.Values) *websocket.Conn {
	t.Helper()
	if query == nil {
		query = url.Values{}
	}
	query.Set("token", token)
	conn, resp, err := websocket.DefaultDialer.Dial(base+path+"?"+query.Encode(), nil)
	if err != nil {
		status := ""
		if resp != nil {
			status = resp.Status
		}
		t.Fatalf("dial %s%s: %v %s", base, path, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestDevSeparateProcesses runs `treasure dev --ingest 2 --push 2
// --proximity 2` from the built binary on amsterdam: every service is its
// own process on its own port; a move sent through each ingest instance
// gets its proximity update through each push instance; SIGTERM (what
// Ctrl-C and --duration amount to) ends dev with status 0 and leaves no
// service process behind, nor any of the run's Redis keys.
func TestDevSeparateProcesses(t *testing.T) {
	t.Parallel()
	g, err := graph.Open(testgraph.Path(t, "amsterdam.gr.gz"))
	if err != nil {
		t.Fatal(err)
	}
	d := startDevSeparate(t, "--ingest", "2", "--push", "2", "--proximity", "2")
	ep := d.ep
	if len(ep.Ingest) != 2 || len(ep.Push) != 2 || len(ep.Processes) != 8 || len(ep.Metrics) != 8 {
		t.Fatalf("endpoints: want 2 ingest, 2 push, 8 processes (the archiver's too) with 8 /metrics: %+v", ep)
	}
	if ep.Secret != devTestSecret || !strings.HasSuffix(ep.RedisPrefix, ":") || !strings.HasPrefix(ep.RedisPrefix, ep.StreamPrefix) {
		t.Fatalf("endpoints: secret %q, stream prefix %q, redis prefix %q", ep.Secret, ep.StreamPrefix, ep.RedisPrefix)
	}
	seen := map[int]bool{os.Getpid(): true, d.cmd.Process.Pid: true}
	for _, p := range ep.Processes {
		if seen[p.Pid] {
			t.Fatalf("pid %d twice (or dev's own): %+v", p.Pid, ep.Processes)
		}
		seen[p.Pid] = true
	}

	// Every (ingest, push) pair: one player each.
	for i, in := range ep.Ingest {
		for j, push := range ep.Push {
			player := fmt.Sprintf("p%d%d", i, j)
			token, err := auth.Sign(devTestSecret, player, "", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			node := graph.ID(uint32((1 + 2*i + j) * g.NumNodes() / 5))
			upd := dialWS(t, push, "/v1/updates/ws", token, url.Values{"after": {"0"}, "leaderboard": {"off"}})
			mv := dialWS(t, in, "/v1/moves/ws", token, nil)
			if err := mv.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"move","seq":1,"path":[%d]}`, node))); err != nil {
				t.Fatal(err)
			}
			readUntil(t, mv, "the ack of "+player+"'s move through "+in, func(m map[string]any) bool { return m["type"] == "ack" && m["seq"] == 1.0 })
			m := readUntil(t, upd, "the proximity update of "+player+"'s move through "+push, func(m map[string]any) bool { return m["type"] == "proximity" })
			if m["seq"] != 1.0 || m["id"] != 1.0 || m["node"] != float64(node) {
				t.Fatalf("%s through ingest %s, push %s: got %v, want proximity id 1, seq 1, node %d", player, in, push, m, node)
			}
		}
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("dev after SIGTERM: exit %d, want 0", code)
	}
	d.checkGone(t)
	if _, err := os.Stat(d.epFile); err == nil {
		t.Errorf("endpoints file left after exit")
	}
	rdb, _ := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if keys, err := rdb.Keys(ctx, ep.RedisPrefix+"*").Result(); err != nil || len(keys) > 0 {
		t.Errorf("the run's Redis keys after exit: %v %v", keys, err)
	}
}

// TestDevSeparateChildDies: when a service process dies (SIGKILL), dev
// stops the others and exits with status 1 naming it, and no process of
// the run is left.
func TestDevSeparateChildDies(t *testing.T) {
	t.Parallel()
	d := startDevSeparate(t, "--separate")
	if len(d.ep.Processes) != 5 {
		t.Fatalf("--separate alone: want 5 processes (ingest, push, proximity, ranker, archive), got %+v", d.ep.Processes)
	}
	var victim devProcess
	for _, p := range d.ep.Processes {
		if p.Name == "push-1" {
			victim = p
		}
	}
	if victim.Pid == 0 {
		t.Fatalf("no push-1 in %+v", d.ep.Processes)
	}
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t, 2*time.Minute); code != 1 {
		t.Fatalf("dev after push-1 was killed: exit %d, want 1", code)
	}
	if msg := d.err.String(); !strings.Contains(msg, "push-1 (pid "+strconv.Itoa(victim.Pid)+", treasure push) exited: signal: killed") {
		t.Fatalf("dev's stderr does not say push-1 died:\n%s", msg)
	}
	d.checkGone(t)
}

func TestInstanceAddrKeepsClearOfTheDefaults(t *testing.T) {
	for _, c := range []struct {
		base string
		i    int
		want string
	}{
		{"127.0.0.1:8081", 1, "127.0.0.1:8181"},
		{"127.0.0.1:8081", 2, "127.0.0.1:8281"},
		{"127.0.0.1:8084", 1, "127.0.0.1:8184"},
		{"0.0.0.0:9000", 3, "0.0.0.0:9300"},
	} {
		got, err := instanceAddr(c.base, c.i)
		if err != nil || got != c.want {
			t.Errorf("instanceAddr(%q, %d) = %q, %v; want %q", c.base, c.i, got, err, c.want)
		}
	}
	if got, err := instanceAddr("127.0.0.1:65500", 1); err == nil {
		t.Errorf("port above 65535: got %q", got)
	}
	a, err := instanceAddr("127.0.0.1:0", 1)
	if err != nil || strings.HasSuffix(a, ":0") || !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("instanceAddr with port 0 = %q, %v; want a free port", a, err)
	}
}

func TestRunPrefixIsAValidPrefix(t *testing.T) {
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, base := range []string{"treasure", "t0123456789ab", strings.Repeat("x", 32)} {
		p := runPrefix(base, run)
		if !strings.HasSuffix(p, "-"+run) || !strings.HasPrefix(p, base[:min(len(base), 5)]) {
			t.Errorf("runPrefix(%q) = %q", base, p)
		}
		if _, err := platformFromMap(map[string]string{"TREASURE_STREAM_PREFIX": p}); err != nil {
			t.Errorf("runPrefix(%q) = %q: %v", base, p, err)
		}
	}
}

func TestWithSearchPathReachesPgx(t *testing.T) {
	for _, dsn := range []string{
		"postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable",
		"postgres://postgres@127.0.0.1:5432/treasure",
		"postgres://postgres@127.0.0.1:5432/treasure?options=-c%20work_mem%3D8MB&sslmode=disable",
		"host=127.0.0.1 user=postgres dbname=treasure",
	} {
		got := withSearchPath(dsn, "dev_abc")
		cfg, err := pgxParse(got)
		if err != nil {
			t.Errorf("%q → %q: %v", dsn, got, err)
			continue
		}
		opts, sp := cfg.RuntimeParams["options"], cfg.RuntimeParams["search_path"]
		if !strings.Contains(opts, "search_path=dev_abc") && sp != "dev_abc" {
			t.Errorf("%q → %q: runtime params %v lack the search path", dsn, got, cfg.RuntimeParams)
		}
		if strings.Contains(dsn, "work_mem") && !strings.Contains(opts, "work_mem=8MB") {
			t.Errorf("%q → %q: lost the existing options: %v", dsn, got, cfg.RuntimeParams)
		}
		if cfg.Database != "treasure" {
			t.Errorf("%q → %q: database %q", dsn, got, cfg.Database)
		}
	}
	if got := withSearchPath("postgres://x/y", ""); got != "postgres://x/y" {
		t.Errorf("no schema: %q", got)
	}
}

func TestProximityPartsDealsEveryPartitionOnce(t *testing.T) {
	for _, c := range []struct{ n, k int }{{1, 4}, {2, 4}, {3, 4}, {4, 4}, {2, 5}} {
		seen := map[int]int{}
		for j := 0; j < c.n; j++ {
			parts, err := parseParts(proximityParts(j, c.n, c.k), c.k)
			if err != nil || len(parts) == 0 {
				t.Fatalf("worker %d of %d, K=%d: %v %v", j, c.n, c.k, parts, err)
			}
			for _, p := range parts {
				seen[p]++
			}
		}
		for p := 0; p < c.k; p++ {
			if seen[p] != 1 {
				t.Errorf("%d workers, K=%d: partition %d owned %d times", c.n, c.k, p, seen[p])
			}
		}
	}
}

func TestLineWriterPrefixesWholeLines(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	a := &lineWriter{mu: &mu, w: &out, prefix: "[a] "}
	b := &lineWriter{mu: &mu, w: &out, prefix: "[b] "}
	a.Write([]byte("one\ntw"))
	b.Write([]byte("x\n"))
	a.Write([]byte("o\nthree"))
	a.flush()
	if got, want := out.String(), "[a] one\n[b] x\n[a] two\n[a] three\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestDevSeparateRefusesATestBinary(t *testing.T) {
	code, _, errs := runCLI(t, "", map[string]string{"TREASURE_GRAPH": testgraph.Path(t, "amsterdam.gr.gz"), "TREASURE_JWT_SECRET": "x"}, "dev", "--separate")
	if code != 2 || !strings.Contains(errs, "test binary") {
		t.Fatalf("exit %d, stderr %q; want 2 and a word about the test binary", code, errs)
	}
}

func platformFromMap(m map[string]string) (platform.Config, error) {
	return platform.FromEnv(func(k string) string { return m[k] })
}

func pgxParse(dsn string) (*pgconn.Config, error) { return pgconn.ParseConfig(dsn) }

// TestDevChildrenStopKillsTheGroup: a child that ignores SIGTERM, and the
// grandchild it started, are SIGKILLed with their process group once the
// stop timeout has passed, and stop reports it.
func TestDevChildrenStopKillsTheGroup(t *testing.T) {
	var out lockedBuffer
	sup := newDevChildren("/bin/sh", nil, &out, 1)
	c, err := sup.start("stubborn", "-c", "X_ADDR", "127.0.0.1:1", `trap '' TERM; sleep 120 & echo "grandchild $!"; wait`)
	if err != nil {
		t.Fatal(err)
	}
	var grandchild int
	for deadline := time.Now().Add(30 * time.Second); grandchild == 0; time.Sleep(10 * time.Millisecond) {
		if _, err := fmt.Sscanf(strings.TrimPrefix(out.String(), "[stubborn] "), "grandchild %d", &grandchild); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no grandchild pid in %q", out.String())
		}
	}
	bad := sup.stop(300 * time.Millisecond)
	if len(bad) != 1 || !strings.Contains(bad[0], "stubborn (pid "+strconv.Itoa(c.Pid())+") did not exit") {
		t.Fatalf("stop reported %q", bad)
	}
	for _, pid := range []int{c.Pid(), grandchild} {
		// The grandchild is reaped by init once killed: wait for that.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still exists after stop", pid)
			}
		}
	}
}
