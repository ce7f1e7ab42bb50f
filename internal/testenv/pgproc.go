package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresProcess is a private PostgreSQL server the test started, for
// tests that stop it and start it again (its data survives: a restart is
// a database coming back, not a new one). Its methods are safe for use
// from the test's goroutine only.
type PostgresProcess struct {
	tb   testing.TB
	Addr string // host:port, the same across restarts
	// URL is postgres://postgres@Addr/treasure?sslmode=disable; the
	// database exists.
	URL  string
	bin  string // the directory of initdb and postgres
	dir  string // owned by the server's user: data/, the socket, the log
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{}
}

// PrivatePostgres creates a cluster with initdb (the installed binaries:
// PATH, else the newest /usr/lib/postgresql/*/bin) in a temporary folder,
// starts it on a free loopback port without fsync and returns once the
// database "treasure" answers. As root the server runs as the user
// "postgres" (initdb and postgres refuse root). The test's cleanup stops it
// and removes the folder. A missing binary fails the test, saying what to
// install.
func PrivatePostgres(tb testing.TB) *PostgresProcess {
	tb.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	p := &PostgresProcess{tb: tb, bin: bin}
	// Not tb.TempDir(): its parents are private to root, and the server
	// may run as another user.
	if p.dir, err = os.MkdirTemp("", "treasure-pg-"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(p.dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("testenv: running as root, and there is no user postgres to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(p.dir, int(uid), int(gid)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Chmod(p.dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(p.dir, "data"),
		"-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.Addr = l.Addr().String()
	l.Close()
	p.URL = "postgres://postgres@" + p.Addr + "/treasure?sslmode=disable"
	p.Start()
	tb.Cleanup(func() {
		if p.cmd != nil {
			p.Kill()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, "postgres://postgres@"+p.Addr+"/postgres?sslmode=disable")
	if err != nil {
		tb.Fatalf("testenv: private PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE treasure"); err != nil {
		tb.Fatalf("testenv: private PostgreSQL: %v", err)
	}
	return p
}

// postgresBinDir finds the directory holding initdb and postgres.
func postgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // newest major version first
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL's initdb and postgres are not installed (apt-get install postgresql)")
}

// Start starts the server (again, after Stop or Kill) on the same address
// and data, and returns once it accepts connections.
func (p *PostgresProcess) Start() {
	p.tb.Helper()
	if p.cmd != nil {
		p.tb.Fatal("testenv: postgres already running")
	}
	_, port, _ := net.SplitHostPort(p.Addr)
	log, err := os.OpenFile(filepath.Join(p.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.tb.Fatal(err)
	}
	defer log.Close()
	p.cmd = exec.Command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.dir, "data"),
		"-p", port, "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+p.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=60")
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		p.cmd = nil
		p.tb.Fatalf("testenv: start postgres: %v", err)
	}
	done := make(chan struct{})
	cmd := p.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	p.done = done
	deadline := time.Now().Add(setupTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, "postgres://postgres@"+p.Addr+"/postgres?sslmode=disable&connect_timeout=1")
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return
		}
		select {
		case <-done:
			p.cmd = nil
			p.tb.Fatalf("testenv: postgres exited at start: %s", p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			p.Kill()
			p.tb.Fatalf("testenv: private postgres on %s does not answer: %v\n%s", p.Addr, err, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down as an operator's fast shutdown does (SIGINT:
// sessions are cut, transactions rolled back) and waits until it is gone.
func (p *PostgresProcess) Stop() {
	p.tb.Helper()
	p.signal(syscall.SIGINT)
}

// Kill sends SIGKILL to the server and every backend (its process group)
// and waits for the postmaster to exit; the next Start recovers from the
// write-ahead log.
func (p *PostgresProcess) Kill() {
	p.tb.Helper()
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.signal(syscall.SIGKILL)
}

func (p *PostgresProcess) signal(sig syscall.Signal) {
	p.tb.Helper()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(setupTimeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		p.tb.Errorf("testenv: postgres did not stop within %v of %v; killed", setupTimeout, sig)
	}
	// Backends of a killed postmaster exit on their own; make sure, and
	// wait until they are gone: one still exiting keeps the shared memory
	// attached, and the next start refuses it ("pre-existing shared
	// memory block is still in use", seen once in CI).
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	p.cmd = nil
	for gone := time.Now().Add(setupTimeout); syscall.Kill(-pgid, 0) == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(gone) {
			p.tb.Fatalf("testenv: processes of postgres's group %d still there %v after %v", pgid, setupTimeout, sig)
		}
	}
	// Stopped means refusing connections.
	deadline := time.Now().Add(setupTimeout)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			p.tb.Fatalf("testenv: %s still accepts connections %v after %v", p.Addr, setupTimeout, sig)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *PostgresProcess) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// String names the server for failure messages.
func (p *PostgresProcess) String() string {
	pid := "stopped"
	if p.cmd != nil {
		pid = strconv.Itoa(p.cmd.Process.Pid)
	}
	return fmt.Sprintf("postgres %s (pid %s)", p.Addr, pid)
}
