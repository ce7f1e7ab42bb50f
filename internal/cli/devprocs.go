package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"treasure/internal/platform"
)

// The multi-process topology of `treasure dev --separate`: the services run
// as child processes of the same binary, supervised by the dev process.

// devPortStep is the distance between the ports of two instances of one
// service: instance i (from 1) of a service whose address is host:p listens
// on host:p+devPortStep·i, so 8181, 8281, … for ingest with the default
// 8081, and never on the defaults themselves (8081–8084), which stay free
// for a `treasure dev` or services started by hand beside the run.
const devPortStep = 100

// devMaxInstances bounds --ingest, --push and --proximity.
const devMaxInstances = 50

// How long the children may take to answer /readyz 200 (graph load,
// partitioning, proximity's rebuild from the log — on the synthetic city
// with every child loading at once on a shared box), and how long they get
// to exit after SIGTERM before their process group is SIGKILLed.
const (
	devReadyTimeout = 5 * time.Minute
	devStopTimeout  = 20 * time.Second
)

// instanceAddr returns the listen address of instance i (from 1) of a
// service whose configured address is base. A base port of 0 picks a free
// port (one the kernel handed out a moment ago) instead, so that tests can
// ask for free ports as they do for the in-process stack.
func instanceAddr(base string, i int) (string, error) {
	host, portStr, err := net.SplitHostPort(base)
	if err != nil {
		return "", err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", fmt.Errorf("bad port in %q", base)
	}
	if port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", fmt.Errorf("find a free port on %s: %w", host, err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	p := port + devPortStep*i
	if p > 65535 {
		return "", fmt.Errorf("instance %d of %s would listen on port %d (above 65535): choose a lower base port", i, base, p)
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// proximityParts returns the partitions (below k) worker j of n owns:
// those with partition % n == j, as a --partitions list.
func proximityParts(j, n, k int) string {
	var parts []string
	for p := j; p < k; p += n {
		parts = append(parts, strconv.Itoa(p))
	}
	return strings.Join(parts, ",")
}

// runPrefix is the stream prefix of a temporary run: base, cut so that the
// result stays a valid prefix (32 characters at most), then "-" and the
// run's id. The children derive their Redis key prefix from it ("<prefix>:"),
// so one name isolates the run's streams and keys.
func runPrefix(base, run string) string {
	if max := 32 - 1 - len(run); len(base) > max {
		base = base[:max]
	}
	return base + "-" + run
}

// withSearchPath returns the PostgreSQL connection string url with schema
// as its search_path, so that a child process's pool lands on the run's
// schema: an "options=-c search_path=…" query parameter for a URL, a
// search_path setting appended to a key=value string.
func withSearchPath(dsn, schema string) string {
	if schema == "" {
		return dsn
	}
	if !strings.Contains(dsn, "://") {
		return strings.TrimSpace(dsn) + " search_path=" + schema
	}
	base, query, _ := strings.Cut(dsn, "?")
	opt := "options=-c%20search_path%3D" + schema
	var kept []string
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		if k, v, _ := strings.Cut(kv, "="); k == "options" {
			opt = "options=" + v + "%20-c%20search_path%3D" + schema
			continue
		}
		kept = append(kept, kv)
	}
	return base + "?" + strings.Join(append(kept, opt), "&")
}

// devChildEnv is the environment of every child: the dev process's own
// without any TREASURE_* variable (GOMAXPROCS, GOGC, PATH… pass through),
// then the settings that must agree across the run, then extra.
func devChildEnv(env Env, set map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TREASURE_") {
			out = append(out, kv)
		}
	}
	// Passed as given to dev (its Env: os.Getenv, or a map in tests).
	for _, k := range []string{platform.EnvRadius, platform.EnvPartitions, platform.EnvStreamMaxBytes, platform.EnvStreamMaxMsgs,
		platform.EnvStreamReplicas, platform.EnvLogFormat, platform.EnvLogLevel, platform.EnvCheckpointEvery, envIngestFlush,
		// The access limits (docs/operations.md "Limits and access").
		platform.EnvMaxConnsPerAddr, platform.EnvMaxSocketsPerPlayer, platform.EnvLeaderboardRate,
		platform.EnvHTTPReadHeaderTimeout, platform.EnvHTTPReadTimeout} {
		if _, ok := set[k]; !ok {
			if v := env(k); v != "" {
				out = append(out, k+"="+v)
			}
		}
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	return out
}

// lineWriter writes whole lines to w, each behind prefix, under mu (shared
// by every child writing to the same stream).
type lineWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a runaway line: write what there is
		l.emit(append(l.buf, '\n'))
		l.buf = nil
	}
	return len(p), nil
}

// flush writes a last line that had no newline.
func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.emit(append(l.buf, '\n'))
		l.buf = nil
	}
}

func (l *lineWriter) emit(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, l.prefix)
	_, _ = l.w.Write(line)
}

// devChild is one service process of the run.
type devChild struct {
	Name    string   // "ingest-1", "push-2", "proximity-1", "ranker-1"
	Service string   // the subcommand
	Args    []string // after the subcommand
	Addr    string   // its listen address: API (ingest, push) and ops endpoints

	cmd  *exec.Cmd
	out  *lineWriter
	done chan struct{} // closed once it has exited and its output is written
	err  error         // Wait's, set before done closes
}

// Pid is the child's process id (0 before it started).
func (c *devChild) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// devChildren supervises the children: starts them, reports the first one
// that exits on its own, and stops them all.
type devChildren struct {
	exe    string
	env    []string
	stderr io.Writer
	mu     sync.Mutex // serialises the children's lines on stderr
	list   []*devChild
	died   chan *devChild // buffered: every child fits
}

func newDevChildren(exe string, env []string, stderr io.Writer, n int) *devChildren {
	return &devChildren{exe: exe, env: env, stderr: stderr, died: make(chan *devChild, n)}
}

// start runs `exe service args…` with the shared environment plus
// addrVar=addr; its stdout and stderr go, line by line, to the dev
// process's stderr behind "[name] ".
func (s *devChildren) start(name, service, addrVar, addr string, args ...string) (*devChild, error) {
	c := &devChild{Name: name, Service: service, Args: args, Addr: addr, done: make(chan struct{})}
	c.out = &lineWriter{mu: &s.mu, w: s.stderr, prefix: "[" + name + "] "}
	cmd := exec.Command(s.exe, append([]string{service}, args...)...)
	cmd.Env = append(append([]string(nil), s.env...), addrVar+"="+addr)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = childProcAttr()
	cmd.WaitDelay = 5 * time.Second // output pipes held open by a grandchild
	c.cmd = cmd
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s %s): %w", name, s.exe, service, err)
	}
	s.list = append(s.list, c)
	go func() {
		c.err = cmd.Wait()
		c.out.flush()
		close(c.done)
		s.died <- c
	}()
	return c, nil
}

// stop sends SIGTERM to every child still running, waits up to timeout
// for all of them, then SIGKILLs the process group of any left and waits
// for it. It returns the children that did not exit 0 after SIGTERM (those
// that had exited before are not its to report).
func (s *devChildren) stop(timeout time.Duration) []string {
	signalled := make(map[*devChild]bool)
	for _, c := range s.list {
		select {
		case <-c.done:
		default:
			terminate(c.cmd.Process)
			signalled[c] = true
		}
	}
	deadline := time.After(timeout)
	var bad []string
	for _, c := range s.list {
		if !signalled[c] {
			continue
		}
		select {
		case <-c.done:
		case <-deadline:
		}
		select {
		case <-c.done:
		default:
			killGroup(c.cmd.Process)
			<-c.done
			bad = append(bad, fmt.Sprintf("%s (pid %d) did not exit within %v of SIGTERM: killed", c.Name, c.Pid(), timeout))
			continue
		}
		if c.err != nil {
			bad = append(bad, fmt.Sprintf("%s (pid %d): %v", c.Name, c.Pid(), c.err))
		}
	}
	return bad
}

// waitReady polls every child's /readyz until all answer 200, calling
// progress with the names of those not ready yet about every 2 s. A child
// that exits first, or the limit, ends the wait with an error.
func (s *devChildren) waitReady(ctx context.Context, limit time.Duration, progress func(waiting []string, elapsed time.Duration)) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	t0 := time.Now()
	ready := make(map[*devChild]bool)
	lastProgress := t0
	for {
		var waiting []string
		for _, c := range s.list {
			if ready[c] {
				continue
			}
			select {
			case <-c.done:
				return fmt.Errorf("%s (pid %d) exited before it was ready: %v (its output is above, prefixed [%s])", c.Name, c.Pid(), c.err, c.Name)
			default:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/readyz", nil)
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ready[c] = true
					continue
				}
			}
			waiting = append(waiting, c.Name)
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Since(t0) > limit {
			return fmt.Errorf("not ready after %v: %s", limit, strings.Join(waiting, ", "))
		}
		if progress != nil && time.Since(lastProgress) >= 2*time.Second {
			lastProgress = time.Now()
			progress(waiting, time.Since(t0))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// devEndpoints is the JSON `treasure dev --endpoints FILE` writes once every
// service is ready (CONTRACTS.md): where the load generator finds the run.
type devEndpoints struct {
	Ingest       []string     `json:"ingest"`  // ws:// base URLs; the HTTP side is the same host:port
	Push         []string     `json:"push"`    // ws:// base URLs
	Metrics      []string     `json:"metrics"` // one /metrics URL per server process
	NATS         string       `json:"nats"`
	StreamPrefix string       `json:"stream_prefix"`
	Redis        string       `json:"redis"`
	RedisPrefix  string       `json:"redis_prefix"`
	Secret       string       `json:"secret"`
	Graph        string       `json:"graph"` // absolute path
	Processes    []devProcess `json:"processes"`
}

// devProcess is one server process of the run.
type devProcess struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	Addr string `json:"addr"`
}

// writeEndpoints writes e to path atomically (a temporary file renamed),
// readable by the owner only: it holds the JWT secret.
func writeEndpoints(path string, e devEndpoints) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".endpoints-*")
	if err != nil {
		return fmt.Errorf("--endpoints: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("--endpoints: %w", err)
	}
	return nil
}

// scrapeSums reads the named unlabelled counters and gauges from every URL
// (Prometheus text format) and returns their sums; ok is false when a URL
// could not be read.
func scrapeSums(ctx context.Context, client *http.Client, urls []string, names ...string) (sums map[string]float64, ok bool) {
	sums = make(map[string]float64, len(names))
	ok = true
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return sums, false
		}
		resp, err := client.Do(req)
		if err != nil {
			ok = false
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			for _, n := range names {
				if v, found := strings.CutPrefix(line, n+" "); found {
					if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
						sums[n] += f
					}
				}
			}
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || sc.Err() != nil {
			ok = false
		}
	}
	return sums, ok
}

// errChildDied marks dev's failure because a child exited on its own.
var errChildDied = errors.New("a service process exited")
