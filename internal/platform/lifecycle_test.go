package platform

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// lockedBuffer is a bytes.Buffer safe for the logger's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runAsync runs r in a goroutine and returns the channel its result arrives on.
func runAsync(ctx context.Context, r Runner) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return done
}

func TestHTTPServerServesLogsAndShutsDownWithoutLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var logs lockedBuffer
	s := &HTTPServer{
		Name:    "ops",
		Addr:    "127.0.0.1:0",
		Handler: OpsMux(NewRegistry(), nil),
		Log:     slog.New(slog.NewTextHandler(&logs, nil)),
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, s)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	resp, err := client.Get("http://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("healthz = %d %q", resp.StatusCode, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	tr.CloseIdleConnections()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "msg=listening") || !strings.Contains(lines[0], "addr="+addr.String()) || !strings.Contains(lines[0], "server=ops") {
		t.Errorf("log = %q, want one listening line with addr=%s", logs.String(), addr)
	}
	if _, err := client.Get("http://" + addr.String() + "/healthz"); err == nil {
		t.Error("server still answers after Run returned")
	}
}

func TestHTTPServerShutdownWaitsForInFlightRequest(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	entered, release := make(chan struct{}), make(chan struct{})
	s := &HTTPServer{
		Addr: "127.0.0.1:0",
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			close(entered)
			<-release
			_, _ = io.WriteString(w, "finished")
		}),
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, s)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	got := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get("http://" + addr.String() + "/")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	cancel()
	// Shutdown must wait for the request in flight: Run has not returned
	// while the handler is blocked.
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a request was in flight", err)
	default:
	}
	close(release)
	if body := <-got; body != "finished" {
		t.Errorf("in-flight request got %q, want finished", body)
	}
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestHTTPServerShutdownTimeoutCutsOffAndReports(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	entered, release := make(chan struct{}), make(chan struct{})
	handlerDone := make(chan struct{})
	shutdownHook := make(chan struct{})
	s := &HTTPServer{
		Addr: "127.0.0.1:0",
		Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			defer close(handlerDone)
			close(entered)
			<-release
		}),
		ShutdownTimeout: 20 * time.Millisecond,
		OnShutdown:      func() { close(shutdownHook) },
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, s)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	clientDone := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get("http://" + addr.String() + "/")
		if err == nil {
			resp.Body.Close()
		}
		clientDone <- err
	}()
	<-entered
	cancel()
	err = <-done
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "http: shutdown") {
		t.Errorf("Run = %v, want a shutdown deadline error", err)
	}
	<-shutdownHook // OnShutdown ran
	if err := <-clientDone; err == nil {
		t.Error("client of the cut-off request got no error")
	}
	close(release)
	<-handlerDone
}

func TestHTTPServerReportsListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &HTTPServer{Name: "push", Addr: ln.Addr().String(), Handler: http.NotFoundHandler()}
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "push: listen") {
		t.Errorf("Run on a taken port = %v, want a listen error", err)
	}
}

func TestRunGroupStopsEveryoneOnParentCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 3)
	waitCancel := RunFunc(func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	done := make(chan error, 1)
	go func() { done <- RunGroup(ctx, waitCancel, waitCancel, waitCancel) }()
	for range 3 {
		<-started
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunGroup after cancel = %v, want nil", err)
	}
}

func TestRunGroupFailureCancelsTheOthersAndIsReturned(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var stopped sync.WaitGroup
	stopped.Add(2)
	waitCancel := RunFunc(func(ctx context.Context) error {
		defer stopped.Done()
		<-ctx.Done()
		return ctx.Err()
	})
	err := RunGroup(context.Background(), waitCancel, RunFunc(func(context.Context) error { return boom }), waitCancel)
	if !errors.Is(err, boom) {
		t.Errorf("RunGroup = %v, want boom", err)
	}
	stopped.Wait() // both others returned before RunGroup did
}

func TestRunGroupEarlyCleanReturnStopsTheGroup(t *testing.T) {
	t.Parallel()
	waitCancel := RunFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	err := RunGroup(context.Background(), waitCancel, RunFunc(func(context.Context) error { return nil }))
	if err != nil {
		t.Errorf("RunGroup = %v, want nil", err)
	}
}

func TestRunGroupKeepsAWrappedCancelFromOutside(t *testing.T) {
	t.Parallel()
	// A runner that reports context.Canceled while the group still runs is
	// a real failure (say, a client library's own cancellation), not an
	// acknowledgement.
	err := RunGroup(context.Background(), RunFunc(func(context.Context) error {
		return context.Canceled
	}))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("RunGroup = %v, want context.Canceled", err)
	}
}
