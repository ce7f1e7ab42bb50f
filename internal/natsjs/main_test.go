package natsjs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"treasure/internal/testenv"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// Publisher, Consumer.Run and Replay must be gone once its test has cleaned
// up (connections closed, embedded servers shut down).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// env is one JetStream server as a test sees it: a connection, a JetStream
// context and a Topology under a fresh prefix, whose streams are deleted on
// cleanup.
type env struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	topo Topology
}

// small bounds the test streams: the file store reserves MaxBytes of the
// shared server's storage per stream.
var small = Limits{MaxBytes: 16 << 20, MaxMsgs: 100_000}

// sharedEnv uses the shared server (Debian's nats-server 2.9.10 on the
// development machines).
func sharedEnv(tb testing.TB) env {
	tb.Helper()
	nc, js, prefix := testenv.JetStream(tb)
	return env{nc: nc, js: js, topo: Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}}
}

// embeddedEnv starts a private in-process server (nats-server v2.15).
func embeddedEnv(tb testing.TB) env {
	tb.Helper()
	url, _ := testenv.EmbeddedNATS(tb)
	nc := testenv.ConnectNATS(tb, url)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	prefix := testenv.Prefix(tb)
	return env{nc: nc, js: js, topo: Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}}
}

// servers runs f against the shared server and an embedded one, as
// parallel subtests named by server.
func servers(t *testing.T, f func(t *testing.T, e env)) {
	t.Helper()
	for _, s := range []struct {
		name string
		env  func(testing.TB) env
	}{{"shared", sharedEnv}, {"embedded", embeddedEnv}} {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			f(t, s.env(t))
		})
	}
}

// ctxFor returns a context cancelled at cleanup or after d, whichever comes
// first: the deadline only stops a wedged test.
func ctxFor(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// ensure declares e's topology, failing the test on error.
func (e env) ensure(tb testing.TB) {
	tb.Helper()
	if err := e.topo.Ensure(ctxFor(tb, 30*time.Second), e.js); err != nil {
		tb.Fatal(err)
	}
}

// streamInfo returns the current info of stream name.
func (e env) streamInfo(tb testing.TB, name string) *jetstream.StreamInfo {
	tb.Helper()
	ctx := ctxFor(tb, 10*time.Second)
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info
}

// publishSync stores n messages "<subject>#<i>" on subject, i from 1, and
// returns their sequences.
func (e env) publishSync(tb testing.TB, subject string, n int) []uint64 {
	tb.Helper()
	ctx := ctxFor(tb, 30*time.Second)
	p, err := NewPublisher(e.nc, PublisherOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer p.Close()
	futures := make([]*Future, n)
	for i := range futures {
		if futures[i], err = p.Publish(ctx, subject, fmt.Appendf(nil, "%s#%d", subject, i+1), ""); err != nil {
			tb.Fatal(err)
		}
	}
	seqs := make([]uint64, n)
	for i, f := range futures {
		a, err := f.Wait(ctx)
		if err != nil {
			tb.Fatalf("publish %d: %v", i+1, err)
		}
		seqs[i] = a.Seq
	}
	return seqs
}

// runConsumer runs c.Run(h) in a goroutine until the returned stop is
// called (or the test ends); stop cancels Run, waits for it and fails the
// test if it returned an error.
func runConsumer(tb testing.TB, c *Consumer, h Handler) (stop func()) {
	tb.Helper()
	return runConsumerFrom(tb, c, h, c.Run)
}

// runConsumerAfter is runConsumer with RunAfter(after).
func runConsumerAfter(tb testing.TB, c *Consumer, after uint64, h Handler) (stop func()) {
	tb.Helper()
	return runConsumerFrom(tb, c, h, func(ctx context.Context, h Handler) error { return c.RunAfter(ctx, after, h) })
}

func runConsumerFrom(tb testing.TB, c *Consumer, h Handler, run func(context.Context, Handler) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, h) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run returned %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("Run did not return within 30s of cancel")
		}
	}
	tb.Cleanup(stop)
	return stop
}
