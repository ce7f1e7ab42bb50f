package fleet

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testBinary starts this test binary as a worker process running the fake
// engine named mode (see TestMain), recording the pids it started.
type testBinary struct {
	mode   func(k int) string
	stderr syncBuffer
	mu     sync.Mutex
	pids   []int
}

func (b *testBinary) start(k int) (proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := startProcess([]string{exe, "-test.run=^$"}, []string{"FLEET_TEST_WORKER=" + b.mode(k)},
		&b.stderr, "worker "+strconv.Itoa(k)+": ")
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.pids = append(b.pids, p.cmd.Process.Pid)
	b.mu.Unlock()
	return p, nil
}

// requireGone fails tb when a worker process (or its process group) still
// exists.
func (b *testBinary) requireGone(tb testing.TB) {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pids) == 0 {
		tb.Fatal("no worker was started")
	}
	for _, pid := range b.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			tb.Errorf("worker pid %d still exists (kill 0: %v)", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			tb.Errorf("worker process group %d still exists (kill 0: %v)", pid, err)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mode(m string) func(int) string { return func(int) string { return m } }

func TestProcessesRunAndMerge(t *testing.T) {
	t.Parallel()
	b := &testBinary{mode: mode("fake")}
	var seconds int
	res, err := coordinate(context.Background(), coordOptions{configs: configs(3, 4), start: b.start},
		fakeCodec, func(i int, s *fakeSecond) {
			if i != seconds || len(s.Workers) != 2 || s.Sent != 3*1+4*2 {
				t.Errorf("second %d: %+v, want second %d from both workers, 11 sent", i, s, seconds)
			}
			seconds++
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Players != 7 || res.Sent != 3*11 || seconds != 3 {
		t.Errorf("merged %+v with %d seconds, want 7 players, 33 sent, 3 seconds", res, seconds)
	}
	b.requireGone(t)
}

func TestProcessThatFailsFailsTheRunAndStopsTheOthers(t *testing.T) {
	t.Parallel()
	b := &testBinary{mode: func(k int) string {
		if k == 1 {
			return "fail"
		}
		return "until-stopped"
	}}
	_, err := coordinate(context.Background(), coordOptions{configs: configs(2, 2, 2), start: b.start}, fakeCodec, nil)
	if err == nil || !strings.Contains(err.Error(), "worker 1") || !strings.Contains(err.Error(), "the sky fell") {
		t.Fatalf("err %v: want worker 1's failure", err)
	}
	b.requireGone(t)
}

func TestProcessThatExitsWithoutAWordFailsTheRun(t *testing.T) {
	t.Parallel()
	b := &testBinary{mode: func(k int) string {
		if k == 0 {
			return "exit3"
		}
		return "until-stopped"
	}}
	_, err := coordinate(context.Background(), coordOptions{configs: configs(2, 2), start: b.start}, fakeCodec, nil)
	if err == nil {
		t.Fatal("a worker exiting with status 3 did not fail the run")
	}
	for _, want := range []string{"worker 0", "exit status 3", "worker about to exit 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !strings.Contains(b.stderr.String(), "worker 0: worker about to exit 3\n") {
		t.Errorf("worker stderr not passed through with its prefix: %q", b.stderr.String())
	}
	b.requireGone(t)
}

func TestCancelKillsWorkersThatDoNotStop(t *testing.T) {
	t.Parallel()
	b := &testBinary{mode: mode("hang")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := coordinate(ctx, coordOptions{
		configs: configs(2, 2),
		start:   b.start,
		connected: func(context.Context) (time.Time, error) {
			cancel() // Ctrl-C once everyone is connected
			return time.Now(), nil
		},
		stopTimeout: 200 * time.Millisecond,
	}, fakeCodec, nil)
	if err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("err %v: want the hung workers reported", err)
	}
	b.requireGone(t)
}

func TestCancelStopsWorkerProcesses(t *testing.T) {
	t.Parallel()
	b := &testBinary{mode: mode("until-stopped")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	res, err := coordinate(ctx, coordOptions{configs: configs(2, 2), start: b.start}, fakeCodec,
		func(int, *fakeSecond) {
			if n++; n == 2 {
				cancel()
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stopped || res.Players != 4 {
		t.Errorf("result %+v: want both workers stopped", res)
	}
	b.requireGone(t)
}

func TestWorkerStopsWhenItsCoordinatorIsGone(t *testing.T) {
	t.Parallel()
	b := &testBinary{mode: mode("until-stopped")}
	p, err := b.start(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	w := &lineWriter{w: p.stdin()}
	if err := w.send(message{Type: msgConfig, Config: &Config{Players: 3}}); err != nil {
		t.Fatal(err)
	}
	r := newLineReader(p.stdout())
	for {
		m, err := r.next()
		if err != nil {
			t.Fatalf("worker ended before it was ready: %v", err)
		}
		if m.Type == msgReady {
			break
		}
	}
	if err := w.send(message{Type: msgStart, T0: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	p.stdin().Close() // the coordinator dies
	exited := make(chan error, 1)
	go func() {
		for {
			if _, err := r.next(); err != nil {
				break
			}
		}
		exited <- p.wait()
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("worker exited with %v after its stdin closed, want a clean stop", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker still running 30 s after its stdin closed")
	}
	b.requireGone(t)
}
