package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func newPublisher(tb testing.TB, nc *nats.Conn, o PublisherOptions) *Publisher {
	tb.Helper()
	p, err := NewPublisher(nc, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// TestPublishDedupStoresOnce publishes one Nats-Msg-Id twice (and once
// more after another message): JetStream stores it once, and the later
// acks name the first one's sequence as a duplicate.
func TestPublishDedupStoresOnce(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		ctx := ctxFor(t, 30*time.Second)
		p := newPublisher(t, e.nc, PublisherOptions{})
		subj := e.topo.InSubject(0)
		wait := func(f *Future, err error) Ack {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			a, err := f.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		first := wait(p.Publish(ctx, subj, []byte("batch 1"), "move-batch-1"))
		again := wait(p.Publish(ctx, subj, []byte("batch 1"), "move-batch-1"))
		other := wait(p.Publish(ctx, subj, []byte("batch 2"), "move-batch-2"))
		third := wait(p.Publish(ctx, subj, []byte("batch 1, resent"), "move-batch-1"))
		if first.Duplicate || first.Seq != 1 || first.Stream != e.topo.InStream() {
			t.Errorf("first ack = %+v, want seq 1 on %s, not duplicate", first, e.topo.InStream())
		}
		if !again.Duplicate || again.Seq != first.Seq || !third.Duplicate || third.Seq != first.Seq {
			t.Errorf("repeated acks = %+v and %+v, want duplicates of seq %d", again, third, first.Seq)
		}
		if other.Duplicate || other.Seq != 2 {
			t.Errorf("other ack = %+v, want seq 2", other)
		}
		if n := e.streamInfo(t, e.topo.InStream()).State.Msgs; n != 2 {
			t.Errorf("stream holds %d messages, want 2", n)
		}
	})
}

// TestFullStreamIsUnavailable fills IN (DiscardNew) by count and by bytes:
// every publish beyond the limit fails with ErrUnavailable and a
// retry-after, every one within it is acked, and the stream holds exactly
// the acked ones — nothing is dropped silently.
func TestFullStreamIsUnavailable(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		for _, c := range []struct {
			name   string
			limits Limits
			size   int
			fit    int
		}{
			{"max msgs", Limits{MaxMsgs: 5, MaxBytes: 1 << 20}, 100, 5},
			// A stored message costs its payload plus subject, headers
			// and a few dozen bytes of overhead.
			{"max bytes", Limits{MaxMsgs: 1000, MaxBytes: 40 << 10}, 10 << 10, 3},
		} {
			t.Run(c.name, func(t *testing.T) {
				topo := e.topo
				topo.Prefix = fmt.Sprintf("%s%d", e.topo.Prefix, c.size)
				topo.In = c.limits
				if err := topo.Ensure(ctxFor(t, 30*time.Second), e.js); err != nil {
					t.Fatal(err)
				}
				const total = 12
				ctx := ctxFor(t, 30*time.Second)
				p := newPublisher(t, e.nc, PublisherOptions{RetryAfter: 750 * time.Millisecond})
				var (
					mu     sync.Mutex
					acked  []uint64
					failed []error
					wg     sync.WaitGroup
				)
				payload := make([]byte, c.size)
				for i := range total {
					wg.Add(1)
					err := p.PublishAsync(ctx, topo.InSubject(0), payload, fmt.Sprint("id-", i), func(a Ack, err error) {
						defer wg.Done()
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							failed = append(failed, err)
						} else {
							acked = append(acked, a.Seq)
						}
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				if err := p.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				if len(acked)+len(failed) != total {
					t.Fatalf("%d acks and %d errors for %d publishes", len(acked), len(failed), total)
				}
				if len(acked) != c.fit {
					t.Errorf("%d publishes acked, want %d (errors: %v)", len(acked), c.fit, failed)
				}
				for _, err := range failed {
					d, ok := RetryAfter(err)
					if !errors.Is(err, ErrUnavailable) || !ok || d != 750*time.Millisecond {
						t.Errorf("publish to a full stream failed with %v (retry after %v, %v), want ErrUnavailable after 750ms", err, d, ok)
					}
					var api *jetstream.APIError
					if !errors.As(err, &api) || api.ErrorCode != codeStoreFailed {
						t.Errorf("cause %v, want JetStream error %d", err, codeStoreFailed)
					}
					if OutcomeUnknown(err) {
						t.Errorf("a full stream's refusal %v counts as an unknown outcome", err)
					}
				}
				if n := e.streamInfo(t, topo.InStream()).State.Msgs; n != uint64(len(acked)) {
					t.Errorf("stream holds %d messages, %d were acked", n, len(acked))
				}
			})
		}
	})
}

// TestPublishWithoutAckTimesOut publishes to a subject that a plain
// subscriber swallows: no JetStream ack ever comes, and the publish fails
// with ErrUnavailable after AckTimeout instead of hanging.
func TestPublishWithoutAckTimesOut(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	subj := e.topo.Prefix + ".void"
	sub, err := e.nc.Subscribe(subj, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, e.nc, PublisherOptions{AckTimeout: 100 * time.Millisecond})
	ctx := ctxFor(t, 30*time.Second)
	f, err := p.Publish(ctx, subj, []byte("x"), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Wait(ctx)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		t.Fatalf("publish without ack: %v, want ErrUnavailable from an ack timeout", err)
	}
	if !OutcomeUnknown(err) {
		t.Errorf("an ack timeout %v does not count as an unknown outcome", err)
	}
	if p.Pending() != 0 {
		t.Errorf("%d publishes still pending", p.Pending())
	}
}

// TestPublishWithoutStreamIsUnavailable: a subject no stream captures gets
// "no responders", an ErrUnavailable (a stream being created or moved).
func TestPublishWithoutStreamIsUnavailable(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	p := newPublisher(t, e.nc, PublisherOptions{})
	ctx := ctxFor(t, 30*time.Second)
	f, err := p.Publish(ctx, e.topo.InSubject(0), []byte("x"), "")
	if err == nil {
		_, err = f.Wait(ctx)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("publish without a stream: %v, want ErrUnavailable", err)
	}
	if OutcomeUnknown(err) {
		t.Errorf("no responders %v counts as an unknown outcome (nothing can have been stored)", err)
	}
}

// TestPublisherBoundsInFlightAndFlushes publishes many messages through a
// publisher allowing four in flight: never more are pending, every one is
// acked exactly once with consecutive sequences, and Flush returns with
// none pending.
func TestPublisherBoundsInFlightAndFlushes(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	const n, inFlight = 500, 4
	p := newPublisher(t, e.nc, PublisherOptions{MaxInFlight: inFlight})
	ctx := ctxFor(t, 30*time.Second)
	var (
		mu   sync.Mutex
		seen = make(map[uint64]int)
		errs []error
	)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		err := p.PublishAsync(ctx, e.topo.InSubject(i%2), []byte{byte(i)}, "", func(a Ack, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			seen[a.Seq]++
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Pending(); got > inFlight {
			t.Fatalf("%d publishes pending, bound is %d", got, inFlight)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Pending() != 0 {
		t.Fatalf("%d pending after Flush", p.Pending())
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	for seq := uint64(1); seq <= n; seq++ {
		if seen[seq] != 1 {
			t.Fatalf("seq %d acked %d times, want once (acks: %d)", seq, seen[seq], len(seen))
		}
	}
}

// TestPublisherWaitsForSlotUntilContext: with the one slot taken by a
// publish whose ack never comes, the next publish waits and gives up with
// its context's error, without calling its callback.
func TestPublisherWaitsForSlotUntilContext(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	subj := e.topo.Prefix + ".void"
	sub, err := e.nc.Subscribe(subj, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p := newPublisher(t, e.nc, PublisherOptions{MaxInFlight: 1, AckTimeout: time.Minute})
	if err := p.PublishAsync(ctxFor(t, 10*time.Second), subj, []byte("x"), "", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err = p.PublishAsync(ctx, subj, []byte("y"), "", func(Ack, error) { called = true })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("publish without a slot: %v, want context.Canceled", err)
	}
	if err := p.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush with a pending publish and a cancelled context: %v", err)
	}
	p.Close()
	if err := p.Flush(ctxFor(t, 10*time.Second)); err != nil {
		t.Errorf("Flush after Close: %v (Close fails what is pending)", err)
	}
	if called {
		t.Error("callback of a refused publish was called")
	}
}

// TestPublisherCloseFailsPendingAndRefusesNew: Close fails the publishes
// still awaiting their ack with ErrClosed, and refuses new ones.
func TestPublisherCloseFailsPendingAndRefusesNew(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	subj := e.topo.Prefix + ".void"
	sub, err := e.nc.Subscribe(subj, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p := newPublisher(t, e.nc, PublisherOptions{AckTimeout: time.Minute})
	ctx := ctxFor(t, 10*time.Second)
	f, err := p.Publish(ctx, subj, []byte("x"), "")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := f.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("pending publish after Close: %v, want ErrClosed", err)
	}
	if _, err := p.Publish(ctx, subj, []byte("y"), ""); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after Close: %v, want ErrClosed", err)
	}
	p.Close() // idempotent
}

// TestPublisherConcurrentUse publishes from several goroutines at once (run
// with -race): every message is acked once.
func TestPublisherConcurrentUse(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	p := newPublisher(t, e.nc, PublisherOptions{MaxInFlight: 16})
	ctx := ctxFor(t, 30*time.Second)
	const workers, each = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				f, err := p.Publish(ctx, e.topo.InSubject(w%2), []byte{byte(w), byte(i)}, fmt.Sprintf("w%d-%d", w, i))
				if err == nil {
					_, err = f.Wait(ctx)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.streamInfo(t, e.topo.InStream()).State.Msgs; n != workers*each {
		t.Errorf("stream holds %d messages, want %d", n, workers*each)
	}
}

// TestPublishCopiesData reuses one buffer for every publish, overwriting it
// as soon as PublishAsync returns: each stored message still holds what was
// in the buffer at its publish.
func TestPublishCopiesData(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	p := newPublisher(t, e.nc, PublisherOptions{})
	ctx := ctxFor(t, 30*time.Second)
	buf := make([]byte, 4096)
	const n = 200
	for i := range n {
		for k := range buf {
			buf[k] = byte(i)
		}
		if err := p.PublishAsync(ctx, e.topo.InSubject(0), buf, "", nil); err != nil {
			t.Fatal(err)
		}
		clear(buf)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := Replay(ctx, e.js, ReplayOptions{Stream: e.topo.InStream()}, func(_ context.Context, msgs []Msg) error {
		for _, m := range msgs {
			if len(m.Data) != len(buf) || m.Data[0] != byte(i) || m.Data[len(m.Data)-1] != byte(i) {
				return fmt.Errorf("message %d holds % x…, want %d bytes of %d", i, m.Data[:min(len(m.Data), 8)], len(buf), byte(i))
			}
			i++
		}
		return nil
	})
	if err != nil || i != n {
		t.Fatalf("replay: %v after %d of %d messages", err, i, n)
	}
}
