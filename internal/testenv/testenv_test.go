package testenv

import (
	"fmt"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if a helper leaves a goroutine behind after its
// cleanups: closed clients, pools and embedded servers must stop everything.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestPrefixIsShortUniqueAndAValidName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^t[0-9a-f]{12}$`)
	seen := make(map[string]bool)
	for range 1000 {
		p := Prefix(t)
		if !valid.MatchString(p) {
			t.Fatalf("Prefix = %q, want t + 12 hex digits", p)
		}
		if seen[p] {
			t.Fatalf("Prefix repeated %q", p)
		}
		seen[p] = true
	}
}

// fakeTB records a helper's failure instead of failing the test, so that a
// test can check what a helper says when a server is absent. Fatalf ends the
// calling goroutine, as testing.T's does.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	cleanups []func()
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// run calls fn(f) in its own goroutine, runs the registered cleanups, and
// returns the Fatalf message ("" when fn did not fail).
func (f *fakeTB) run(fn func(tb testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f.fatal
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestAbsentServersFailClearly(t *testing.T) {
	// Not parallel: it changes the environment.
	addr := closedPort(t)
	tests := []struct {
		name, env, url string
		helper         func(testing.TB)
	}{
		{"nats", EnvNATSURL, "nats://" + addr, func(tb testing.TB) { NATS(tb) }},
		{"redis", EnvRedisURL, "redis://" + addr + "/0", func(tb testing.TB) { Redis(tb) }},
		{"postgres", EnvDatabaseURL, "postgres://postgres@" + addr + "/treasure?sslmode=disable", func(tb testing.TB) { Postgres(tb) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.env, tt.url)
			f := &fakeTB{TB: t}
			msg := f.run(tt.helper)
			if msg == "" {
				t.Fatalf("%s with nothing at %s did not fail", tt.name, addr)
			}
			for _, want := range []string{"does not answer", "scripts/services.sh ensure", tt.env} {
				if !strings.Contains(msg, want) {
					t.Errorf("failure %q lacks %q", msg, want)
				}
			}
		})
	}
}

// TestWaitForPollsUntilDoneAndFailsWithTheLastComplaint: WaitFor returns
// once cond is satisfied, and fails a test whose cond never is with cond's
// last complaint (run in a fake TB, whose Fatalf ends the goroutine).
func TestWaitForPollsUntilDoneAndFailsWithTheLastComplaint(t *testing.T) {
	t.Parallel()
	n := 0
	WaitFor(t, time.Minute, func() string {
		if n++; n < 3 {
			return "not yet"
		}
		return ""
	})
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
	m := 0
	WaitUntil(t, time.Minute, "never", func() bool { m++; return m == 2 })
	if m != 2 {
		t.Fatalf("WaitUntil's cond called %d times, want 2", m)
	}

	ft := &fatalTB{TB: t}
	done := make(chan struct{})
	calls := 0
	go func() {
		defer close(done)
		WaitFor(ft, time.Millisecond, func() string { calls++; return fmt.Sprintf("complaint %d", calls) })
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, fmt.Sprintf("complaint %d", calls)) || calls < 1 {
		t.Fatalf("failed=%v msg=%q after %d calls, want a failure with the last complaint", ft.failed, ft.msg, calls)
	}
}

// fatalTB records Fatalf and ends the calling goroutine, as testing does.
type fatalTB struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
