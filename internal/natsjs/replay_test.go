package natsjs

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// replayAll runs Replay with o and returns the sequences it handed over,
// failing on error or when a batch exceeds o.Batch.
func replayAll(tb testing.TB, e env, o ReplayOptions) []uint64 {
	tb.Helper()
	var seqs []uint64
	err := Replay(ctxFor(tb, 30*time.Second), e.js, o, func(_ context.Context, msgs []Msg) error {
		if o.Batch > 0 && len(msgs) > o.Batch {
			tb.Errorf("batch of %d, cap %d", len(msgs), o.Batch)
		}
		for _, m := range msgs {
			seqs = append(seqs, m.Seq)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return seqs
}

// TestReplayReadsFromStart replays a stream written on two subjects: all
// of it from sequence 1, one subject, from a sequence, and an empty stream,
// each in order and returning once caught up.
func TestReplayReadsFromStart(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		if got := replayAll(t, e, ReplayOptions{Stream: e.topo.OutStream()}); len(got) != 0 {
			t.Errorf("empty stream replayed %v", got)
		}
		var one []uint64
		for range 3 {
			e.publishSync(t, e.topo.InSubject(0), 100)
			one = append(one, e.publishSync(t, e.topo.InSubject(1), 50)...)
		}
		if got := replayAll(t, e, ReplayOptions{Stream: e.topo.InStream(), Batch: 64}); !slices.Equal(got, seqRange(1, 450)) {
			t.Errorf("replay of all: %d messages %v…, want 1..450", len(got), got[:min(len(got), 10)])
		}
		if got := replayAll(t, e, ReplayOptions{Stream: e.topo.InStream(), Subjects: []string{e.topo.InSubject(1)}}); !slices.Equal(got, one) {
			t.Errorf("replay of %s = %v, want %v", e.topo.InSubject(1), got, one)
		}
		if newer, _ := atLeast210(e.nc.ConnectedServerVersion()); newer {
			both := []string{e.topo.InSubject(0), e.topo.InSubject(1)}
			if got := replayAll(t, e, ReplayOptions{Stream: e.topo.InStream(), Subjects: both}); !slices.Equal(got, seqRange(1, 450)) {
				t.Errorf("replay of both subjects (2.10+): %d messages", len(got))
			}
		}
		if got := replayAll(t, e, ReplayOptions{Stream: e.topo.InStream(), StartSeq: 400}); !slices.Equal(got, seqRange(400, 450)) {
			t.Errorf("replay from 400 = %v", got)
		}
		if got := replayAll(t, e, ReplayOptions{Stream: e.topo.InStream(), StartSeq: 451}); len(got) != 0 {
			t.Errorf("replay past the end = %v", got)
		}
	})
}

// TestReplayFollowsUntilCancelled: with Follow, Replay hands over messages
// published after it started, and returns ctx's error once cancelled.
func TestReplayFollowsUntilCancelled(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	e.publishSync(t, e.topo.InSubject(0), 5)
	ctx, cancel := context.WithCancel(ctxFor(t, 30*time.Second))
	got := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- Replay(ctx, e.js, ReplayOptions{Stream: e.topo.InStream(), Follow: true, MaxWait: 50 * time.Millisecond},
			func(_ context.Context, msgs []Msg) error {
				for _, m := range msgs {
					got <- m.Seq
				}
				return nil
			})
	}()
	e.publishSync(t, e.topo.InSubject(1), 5)
	for want := uint64(1); want <= 10; want++ {
		select {
		case seq := <-got:
			if seq != want {
				t.Fatalf("followed seq %d, want %d", seq, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("seq %d never came", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Replay after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Replay did not return after cancel")
	}
}

// TestReplayStopsAtHandlerError returns the handler's error at once.
func TestReplayStopsAtHandlerError(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	e.publishSync(t, e.topo.InSubject(0), 20)
	boom := errors.New("boom")
	calls := 0
	err := Replay(ctxFor(t, 30*time.Second), e.js, ReplayOptions{Stream: e.topo.InStream(), Batch: 5}, func(context.Context, []Msg) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Errorf("Replay = %v after %d calls, want boom after 1", err, calls)
	}
	if err := Replay(ctxFor(t, 5*time.Second), e.js, ReplayOptions{}, nil); err == nil {
		t.Error("Replay without a stream did not fail")
	}
	if newer, _ := atLeast210(e.nc.ConnectedServerVersion()); !newer {
		err = Replay(ctxFor(t, 5*time.Second), e.js, ReplayOptions{Stream: e.topo.InStream(),
			Subjects: []string{e.topo.InSubject(0), e.topo.InSubject(1)}}, nil)
		if !errors.Is(err, ErrNeedsServer210) {
			t.Errorf("Replay of two subjects on %s = %v, want ErrNeedsServer210", e.nc.ConnectedServerVersion(), err)
		}
	}
}

// TestReplayFollowReplacesADeletedConsumer: a following Replay whose
// consumer is deleted under it (as a restarted server forgets one kept
// in memory) reads on with a new one from the message after the last it
// handed over: every message once, in order.
func TestReplayFollowReplacesADeletedConsumer(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		stream := e.topo.InStream()
		e.publishSync(t, e.topo.InSubject(0), 5)
		ctx, cancel := context.WithCancel(ctxFor(t, 60*time.Second))
		got := make(chan uint64, 100)
		done := make(chan error, 1)
		go func() {
			done <- Replay(ctx, e.js, ReplayOptions{Stream: stream, Follow: true, MaxWait: 50 * time.Millisecond},
				func(_ context.Context, msgs []Msg) error {
					for _, m := range msgs {
						got <- m.Seq
					}
					return nil
				})
		}()
		defer func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Replay after cancel = %v, want context.Canceled", err)
			}
		}()
		want := uint64(1)
		expect := func(to uint64) {
			t.Helper()
			for ; want <= to; want++ {
				select {
				case seq := <-got:
					if seq != want {
						t.Fatalf("followed seq %d, want %d", seq, want)
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("seq %d never came", want)
				}
			}
		}
		expect(5)
		s, err := e.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for ci := range s.ListConsumers(ctx).Info() {
			if err := e.js.DeleteConsumer(ctx, stream, ci.Name); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
		if deleted != 1 {
			t.Fatalf("%d consumers on %s, want the replay's one", deleted, stream)
		}
		e.publishSync(t, e.topo.InSubject(1), 5)
		expect(10)
		select {
		case seq := <-got:
			t.Fatalf("seq %d after the last one published", seq)
		case <-time.After(200 * time.Millisecond):
		}
	})
}
