package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisProcess is a private redis-server the test started, for tests that
// kill it, keep it down or restart it empty. It keeps nothing on disk: a
// restart always comes back empty. Its methods are safe for use from the
// test's goroutine only.
type RedisProcess struct {
	tb   testing.TB
	Addr string // host:port, the same across restarts
	URL  string // redis://Addr/0
	cmd  *exec.Cmd
	dir  string
}

// PrivateRedis starts a redis-server (the installed binary, found on PATH)
// on a free loopback port, without persistence, and returns once it
// answers PING. The test's cleanup kills it. A missing binary fails the
// test, saying what to install.
func PrivateRedis(tb testing.TB) *RedisProcess {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("testenv: redis-server is not installed (apt-get install redis-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := &RedisProcess{tb: tb, Addr: addr, URL: "redis://" + addr + "/0", dir: tb.TempDir()}
	r.Start()
	tb.Cleanup(func() {
		if r.cmd != nil {
			r.Kill()
		}
	})
	return r
}

// Start starts the server again after Kill: empty, on the same address.
func (r *RedisProcess) Start() {
	r.tb.Helper()
	if r.cmd != nil {
		r.tb.Fatal("testenv: redis-server already running")
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port,
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--loglevel", "warning")
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		r.tb.Fatalf("testenv: start redis-server: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(setupTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.Kill()
			r.tb.Fatalf("testenv: private redis-server on %s does not answer: %v", r.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill sends SIGKILL to the server and waits for it to exit.
func (r *RedisProcess) Kill() {
	r.tb.Helper()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Client returns a new client of the server, closed at the test's end.
// It retries little (MaxRetries 1, short timeouts), as a service's client
// should meet a dead server.
func (r *RedisProcess) Client() *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: 1, DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
	r.tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// String names the server for failure messages.
func (r *RedisProcess) String() string {
	pid := "stopped"
	if r.cmd != nil {
		pid = strconv.Itoa(r.cmd.Process.Pid)
	}
	return fmt.Sprintf("redis-server %s (pid %s)", r.Addr, pid)
}
