package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// recorder is a Handler that records, in order, the messages of every call
// it accepted; fail, when set, decides per call whether to fail instead.
type recorder struct {
	mu    sync.Mutex
	ok    []Msg // messages of successful calls, in order
	calls int
	fail  func(msgs []Msg) error
}

func (r *recorder) handle(_ context.Context, msgs []Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(msgs); err != nil {
			return err
		}
	}
	r.ok = append(r.ok, msgs...)
	return nil
}

func (r *recorder) seqs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := make([]uint64, len(r.ok))
	for i, m := range r.ok {
		s[i] = m.Seq
	}
	return s
}

// waitSeqs polls until r has accepted exactly want, in order.
func (r *recorder) waitSeqs(tb testing.TB, want []uint64) {
	tb.Helper()
	testenv.WaitFor(tb, 20*time.Second, func() string {
		got := r.seqs()
		if len(got) < len(want) && slices.Equal(got, want[:len(got)]) {
			return fmt.Sprintf("handled %d of %d messages", len(got), len(want))
		}
		if !slices.Equal(got, want) {
			tb.Fatalf("handled sequences %v, want %v", got, want)
		}
		return ""
	})
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for q := from; q <= to; q++ {
		s = append(s, q)
	}
	return s
}

func (e env) newConsumer(tb testing.TB, o ConsumerOptions) *Consumer {
	tb.Helper()
	if o.Stream == "" {
		o.Stream = e.topo.InStream()
	}
	if o.Durable == "" {
		o.Durable = "worker"
	}
	if o.DeadLetter == "" {
		o.DeadLetter = e.topo.DLQSubject()
	}
	c, err := NewConsumer(ctxFor(tb, 10*time.Second), e.js, o)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// waitSettled polls until the consumer has nothing pending or unacked and
// its ack floor is at least wantFloor.
func waitSettled(tb testing.TB, c *Consumer, wantFloor uint64) *jetstream.ConsumerInfo {
	tb.Helper()
	var info *jetstream.ConsumerInfo
	testenv.WaitFor(tb, 20*time.Second, func() string {
		var err error
		info, err = c.Info(ctxFor(tb, 5*time.Second))
		if err != nil {
			return err.Error()
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < wantFloor {
			return fmt.Sprintf("consumer pending %d, ack pending %d, ack floor %d; want 0, 0, %d",
				info.NumPending, info.NumAckPending, info.AckFloor.Stream, wantFloor)
		}
		return ""
	})
	return info
}

// TestConsumerDeliversInOrderAndAcks consumes one partition's subject of a
// stream holding two: every message of that subject, once, in order, in
// batches no larger than Batch, and all acknowledged.
func TestConsumerDeliversInOrderAndAcks(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		var want []uint64
		for range 3 {
			want = append(want, e.publishSync(t, e.topo.InSubject(0), 200)...)
			e.publishSync(t, e.topo.InSubject(1), 50)
		}
		var (
			r       recorder
			largest int
		)
		r.fail = func(msgs []Msg) error {
			largest = max(largest, len(msgs))
			for _, m := range msgs {
				if m.Subject != e.topo.InSubject(0) || m.Delivered != 1 {
					t.Errorf("delivered %s seq %d (delivery %d), want only %s, once", m.Subject, m.Seq, m.Delivered, e.topo.InSubject(0))
				}
			}
			return nil
		}
		c := e.newConsumer(t, ConsumerOptions{Subjects: []string{e.topo.InSubject(0)}, Batch: 64})
		runConsumer(t, c, r.handle)
		r.waitSeqs(t, want)
		waitSettled(t, c, want[len(want)-1])
		r.mu.Lock()
		defer r.mu.Unlock()
		if largest > 64 {
			t.Errorf("a handler call got %d messages, batch is 64", largest)
		}
		for i, m := range r.ok {
			if string(m.Data) != fmt.Sprintf("%s#%d", e.topo.InSubject(0), i%200+1) {
				t.Fatalf("message %d (seq %d) = %q", i, m.Seq, m.Data)
			}
		}
	})
}

// TestConsumerRedeliversOnError fails the handler twice on a batch holding
// a given message: after the backoff the messages come back, in order, and
// every message is accepted exactly once with nothing skipped.
func TestConsumerRedeliversOnError(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	want := e.publishSync(t, e.topo.InSubject(0), 300)
	const bad = 120
	failures := 0
	var redelivered []uint64
	r := recorder{fail: func(msgs []Msg) error {
		for _, m := range msgs {
			if m.Delivered > 1 {
				redelivered = append(redelivered, m.Seq)
			}
		}
		for _, m := range msgs {
			if m.Seq == bad && failures < 2 {
				failures++
				return errors.New("database briefly down")
			}
		}
		return nil
	}}
	c := e.newConsumer(t, ConsumerOptions{Batch: 50, Backoff: []time.Duration{10 * time.Millisecond}})
	runConsumer(t, c, r.handle)
	r.waitSeqs(t, want)
	waitSettled(t, c, 300)
	r.mu.Lock()
	defer r.mu.Unlock()
	if failures != 2 || !slices.Contains(redelivered, bad) {
		t.Errorf("%d failures, redelivered %v; want 2 failures and seq %d redelivered", failures, redelivered, bad)
	}
}

// TestConsumerDeadLettersPoison: a message whose handler always fails is
// dead-lettered after MaxDeliver deliveries, with headers naming the
// reason, and is acknowledged out of the way; every other message,
// including those released behind it, is handled once, in order.
func TestConsumerDeadLettersPoison(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		seqs := e.publishSync(t, e.topo.InSubject(0), 100)
		const poison = 37
		var poisonDeliveries []uint64
		r := recorder{fail: func(msgs []Msg) error {
			for _, m := range msgs {
				if m.Seq == poison {
					poisonDeliveries = append(poisonDeliveries, m.Delivered)
					return fmt.Errorf("bad batch:\nseq %d", m.Seq)
				}
			}
			return nil
		}}
		c := e.newConsumer(t, ConsumerOptions{Batch: 16, MaxDeliver: 3, Backoff: []time.Duration{5 * time.Millisecond}})
		runConsumer(t, c, r.handle)
		want := slices.DeleteFunc(slices.Clone(seqs), func(s uint64) bool { return s == poison })
		r.waitSeqs(t, want)
		waitSettled(t, c, 100)

		var dead []Msg
		err := Replay(ctxFor(t, 10*time.Second), e.js, ReplayOptions{Stream: e.topo.DLQStream()}, func(_ context.Context, msgs []Msg) error {
			dead = append(dead, msgs...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 {
			t.Fatalf("%d dead letters, want 1", len(dead))
		}
		d := dead[0]
		for k, v := range map[string]string{
			HeaderDLQReason:    "bad batch: seq 37",
			HeaderDLQStream:    e.topo.InStream(),
			HeaderDLQConsumer:  "worker",
			HeaderDLQSubject:   e.topo.InSubject(0),
			HeaderDLQSeq:       strconv.Itoa(poison),
			HeaderDLQDelivered: "3",
		} {
			if got := d.Header.Get(k); got != v {
				t.Errorf("dead letter header %s = %q, want %q", k, got, v)
			}
		}
		if string(d.Data) != fmt.Sprintf("%s#%d", e.topo.InSubject(0), poison) || d.Subject != e.topo.DLQSubject() {
			t.Errorf("dead letter on %s = %q", d.Subject, d.Data)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if !slices.Equal(poisonDeliveries, []uint64{1, 2, 3}) {
			t.Errorf("poison delivered as %v, want 1, 2, 3", poisonDeliveries)
		}
	})
}

// TestConsumerDeadLetterNeedsAStream: when JetStream does not store the
// dead letter (no stream on the subject), the poison message is not given
// up: it stays unacknowledged and keeps coming back.
func TestConsumerDeadLetterNeedsAStream(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	e.publishSync(t, e.topo.InSubject(0), 1)
	var deliveries []uint64
	var mu sync.Mutex
	h := func(_ context.Context, msgs []Msg) error {
		mu.Lock()
		defer mu.Unlock()
		deliveries = append(deliveries, msgs[0].Delivered)
		return errors.New("poison")
	}
	c := e.newConsumer(t, ConsumerOptions{MaxDeliver: 2, Backoff: []time.Duration{5 * time.Millisecond},
		DeadLetter: e.topo.Prefix + ".nowhere"})
	stop := runConsumer(t, c, h)
	testenv.WaitFor(t, 20*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(deliveries) < 4 {
			return fmt.Sprintf("%d deliveries", len(deliveries))
		}
		return ""
	})
	stop()
	info, err := c.Info(ctxFor(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 0 || info.NumAckPending != 1 {
		t.Errorf("ack floor %d with %d unacked, want the message still unacked", info.AckFloor.Stream, info.NumAckPending)
	}
}

// TestConsumerResumesAfterRestart stops a consumer after it acknowledged
// everything and starts another with the same durable name: it gets only
// the messages published since, and nothing is delivered twice.
func TestConsumerResumesAfterRestart(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		first := e.publishSync(t, e.topo.InSubject(1), 40)
		var r1 recorder
		c1 := e.newConsumer(t, ConsumerOptions{Durable: "resume", Subjects: []string{e.topo.InSubject(1)}})
		stop := runConsumer(t, c1, r1.handle)
		r1.waitSeqs(t, first)
		waitSettled(t, c1, 40)
		stop()

		second := e.publishSync(t, e.topo.InSubject(1), 25)
		var r2 recorder
		c2 := e.newConsumer(t, ConsumerOptions{Durable: "resume", Subjects: []string{e.topo.InSubject(1)}})
		runConsumer(t, c2, r2.handle)
		r2.waitSeqs(t, second)
		info := waitSettled(t, c2, 65)
		if info.NumRedelivered != 0 || info.Delivered.Stream != 65 {
			t.Errorf("after restart: %d redelivered, last delivered %d; want 0 and 65", info.NumRedelivered, info.Delivered.Stream)
		}
	})
}

// TestConsumerKillWithoutAckRedelivers cancels Run while its handler holds
// a batch (no ack): a consumer started again with the same durable gets
// those messages again, first and in order, then the rest. (AckWait is
// long: the restarted Run must not wait for it.)
func TestConsumerKillWithoutAckRedelivers(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		seqs := e.publishSync(t, e.topo.InSubject(0), 30)
		opts := ConsumerOptions{Durable: "killed", Batch: 10}
		c1 := e.newConsumer(t, opts)
		got := make(chan []uint64, 1)
		stop := runConsumer(t, c1, func(ctx context.Context, msgs []Msg) error {
			s := make([]uint64, len(msgs))
			for i, m := range msgs {
				s[i] = m.Seq
			}
			got <- s
			<-ctx.Done() // killed mid-batch
			return ctx.Err()
		})
		var held []uint64
		select {
		case held = <-got:
		case <-time.After(20 * time.Second):
			t.Fatal("no batch delivered")
		}
		stop()
		if len(held) == 0 || held[0] != 1 {
			t.Fatalf("first batch %v, want it to start at seq 1", held)
		}

		// The handler held the first group; the rest of the pull was
		// delivered too, and none of it acknowledged.
		info, err := c1.Info(ctxFor(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending < len(held) || info.AckFloor.Stream != 0 {
			t.Fatalf("after the kill: %d unacknowledged, ack floor %d (%v); want at least %d and 0",
				info.NumAckPending, info.AckFloor.Stream, err, len(held))
		}

		var r recorder
		c2 := e.newConsumer(t, opts)
		runConsumer(t, c2, r.handle)
		r.waitSeqs(t, seqs)
		waitSettled(t, c2, 30)
	})
}

// TestConsumerResumesAResetConsumerAtItsStart: a consumer that a reset
// recreated to start at sequence 11 has delivered messages, none acked
// yet, when its Run ends (a worker failing right after the reset). The
// next Run resumes at 11, not at the stream's first message: nats-server
// 2.9 reports such a consumer's ack floor as 0 until the first ack
// (AckFloor). Found by the e2e quorum test on Debian's 2.9.10: a
// proximity partition redelivered its whole subject.
func TestConsumerResumesAResetConsumerAtItsStart(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		seqs := e.publishSync(t, e.topo.InSubject(0), 30)
		ctx := ctxFor(t, 10*time.Second)
		// As Consumer.reset creates it.
		jc, err := e.js.CreateConsumer(ctx, e.topo.InStream(), jetstream.ConsumerConfig{
			Durable: "reset", DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seqs[10],
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: DefaultAckWait, MaxDeliver: -1, MaxAckPending: DefaultMaxAckPending,
			ReplayPolicy: jetstream.ReplayInstantPolicy, FilterSubject: e.topo.InSubject(0),
		})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := jc.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range batch.Messages() {
			n++ // delivered, never acked
		}
		info, err := jc.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 || info.NumAckPending == 0 || AckFloor(info) != seqs[9] {
			t.Fatalf("%d delivered, %d unacked, ack floor %d (server says %d); want some, some, %d",
				n, info.NumAckPending, AckFloor(info), info.AckFloor.Stream, seqs[9])
		}
		var r recorder
		c := e.newConsumer(t, ConsumerOptions{Durable: "reset", Batch: 10})
		runConsumer(t, c, r.handle)
		r.waitSeqs(t, seqs[10:])
		waitSettled(t, c, seqs[29])
	})
}

// TestConsumerRunAfterResumesAtTheHandlersPosition: a handler whose
// state was rebuilt up to seq 10 (the ack floor it read) starts when the
// floor has moved on to 20 — late acks of the Run before, or a consumer
// leader elected meanwhile — and gets 11 to 20 again before the rest:
// Run, resuming after the floor it reads itself, would skip them (the
// proximity engine behind it never sees them: a double claim in the
// quorum test). A handler whose state covers 42 (a checkpoint beyond the
// floor, 40) gets 43 on, and what lies between is acknowledged without
// it.
func TestConsumerRunAfterResumesAtTheHandlersPosition(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		seqs := e.publishSync(t, e.topo.InSubject(0), 40)
		opts := ConsumerOptions{Durable: "after", Batch: 10}

		// The run before: it accepts (and acks) 1 to 20, then stops.
		var r0 recorder
		r0.fail = func(msgs []Msg) error {
			if msgs[len(msgs)-1].Seq > seqs[19] {
				return errors.New("stop here")
			}
			return nil
		}
		c0 := e.newConsumer(t, opts)
		stop := runConsumer(t, c0, r0.handle)
		testenv.WaitFor(t, 20*time.Second, func() string {
			info, err := c0.Info(ctxFor(t, 5*time.Second))
			if err != nil {
				return err.Error()
			}
			if info.AckFloor.Stream < seqs[19] {
				return fmt.Sprintf("ack floor %d, want %d", info.AckFloor.Stream, seqs[19])
			}
			return ""
		})
		stop()

		var r recorder
		c := e.newConsumer(t, opts)
		stop = runConsumerAfter(t, c, seqs[9], r.handle)
		r.waitSeqs(t, seqs[10:])
		waitSettled(t, c, seqs[39])
		stop()

		// A state beyond the floor (40): of 41 to 45, the handler gets
		// 43 on; 41 and 42 are acknowledged for it.
		more := e.publishSync(t, e.topo.InSubject(0), 5)
		var r2 recorder
		c2 := e.newConsumer(t, opts)
		runConsumerAfter(t, c2, more[1], r2.handle)
		r2.waitSeqs(t, more[2:])
		waitSettled(t, c2, more[len(more)-1])
	})
}

// TestNewConsumerFromStartsThere: NewConsumerFrom replaces a durable
// whatever it had acked (here everything) with one delivering from the
// sequence given; IsUnavailable tells the answer of a consumer without a
// leader from others.
func TestNewConsumerFromStartsThere(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		seqs := e.publishSync(t, e.topo.InSubject(0), 20)
		opts := ConsumerOptions{Durable: "from", Batch: 5, Subjects: []string{e.topo.InSubject(0)}}
		var r0 recorder
		c0 := e.newConsumer(t, opts)
		stop := runConsumer(t, c0, r0.handle)
		r0.waitSeqs(t, seqs)
		waitSettled(t, c0, seqs[19])
		stop()

		opts.Stream, opts.DeadLetter = e.topo.InStream(), e.topo.DLQSubject()
		c, err := NewConsumerFrom(ctxFor(t, 10*time.Second), e.js, opts, seqs[12])
		if err != nil {
			t.Fatal(err)
		}
		var r recorder
		runConsumer(t, c, r.handle)
		r.waitSeqs(t, seqs[12:])
		waitSettled(t, c, seqs[19])
	})
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	if !IsUnavailable(fmt.Errorf("consumer: %w", unavailable)) {
		t.Error("10008 not taken for unavailable")
	}
	if IsUnavailable(jetstream.ErrConsumerNotFound) || IsUnavailable(errors.New("JetStream system temporarily unavailable")) {
		t.Error("another error taken for unavailable")
	}
}

// TestConsumerStalledIsCreatedAgain: a consumer that takes pulls and
// delivers nothing while its subject holds messages — nats-server
// 2.9.10's consumer whose leader has "NO quorum, stalled", stood for here
// by a consumer paused for an hour (nats-server 2.11's pause, so the
// embedded server only) — is created again after the last message
// accepted once StallAfter has passed, and the rest arrives. A consumer
// with nothing to deliver is left alone.
func TestConsumerStalledIsCreatedAgain(t *testing.T) {
	t.Parallel()
	e := embeddedEnv(t)
	e.ensure(t)
	first := e.publishSync(t, e.topo.InSubject(0), 10)
	opts := ConsumerOptions{Durable: "stalled", Batch: 5, MaxWait: 200 * time.Millisecond, StallAfter: 500 * time.Millisecond}
	c := e.newConsumer(t, opts)
	var r recorder
	runConsumer(t, c, r.handle)
	r.waitSeqs(t, first)
	time.Sleep(time.Second) // idle past StallAfter, nothing to deliver: no reset
	info := waitSettled(t, c, first[9])
	if info.Config.DeliverPolicy != jetstream.DeliverAllPolicy {
		t.Fatalf("an idle consumer was created again (deliver policy %v)", info.Config.DeliverPolicy)
	}

	ctx := ctxFor(t, 10*time.Second)
	if _, err := e.js.PauseConsumer(ctx, e.topo.InStream(), "stalled", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	second := e.publishSync(t, e.topo.InSubject(0), 10)
	r.waitSeqs(t, append(first, second...))
	info = waitSettled(t, c, second[9])
	if info.Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || info.Config.OptStartSeq != second[0] || (info.Config.PauseUntil != nil && info.Config.PauseUntil.After(time.Now())) {
		t.Fatalf("the stalled consumer was not created again after seq %d: %+v", first[9], info.Config)
	}
}

// TestConsumerSeveralSubjects: a consumer on two subjects needs a 2.10
// server. The shared 2.9 server refuses it up front (and no consumer is
// left behind); the embedded server delivers both subjects in stream order.
func TestConsumerSeveralSubjects(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		e.publishSync(t, e.topo.InSubject(0), 5)
		e.publishSync(t, e.topo.InSubject(1), 5)
		o := ConsumerOptions{Stream: e.topo.InStream(), Durable: "both", DeadLetter: e.topo.DLQSubject(),
			Subjects: []string{e.topo.InSubject(0), e.topo.InSubject(1)}}
		newer, err := atLeast210(e.nc.ConnectedServerVersion())
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewConsumer(ctxFor(t, 10*time.Second), e.js, o)
		if !newer {
			if !errors.Is(err, ErrNeedsServer210) {
				t.Fatalf("two subjects on %s: %v, want ErrNeedsServer210", e.nc.ConnectedServerVersion(), err)
			}
			if _, err := e.js.Consumer(ctxFor(t, 10*time.Second), o.Stream, o.Durable); !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Errorf("consumer lookup after refusal: %v, want not found", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var r recorder
		runConsumer(t, c, r.handle)
		r.waitSeqs(t, seqRange(1, 10))
	})
}

// TestConsumerUpdatesConfig creates a durable again with other settings:
// the server takes them and the consumer keeps its position.
func TestConsumerUpdatesConfig(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		c := e.newConsumer(t, ConsumerOptions{AckWait: 10 * time.Second})
		c2 := e.newConsumer(t, ConsumerOptions{AckWait: 20 * time.Second, MaxAckPending: 2000})
		info, err := c2.Info(ctxFor(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.AckWait != 20*time.Second || info.Config.MaxAckPending != 2000 || info.Config.MaxDeliver != -1 {
			t.Errorf("updated consumer config: ack wait %v, max ack pending %d, max deliver %d",
				info.Config.AckWait, info.Config.MaxAckPending, info.Config.MaxDeliver)
		}
		_ = c
	})
}

func TestConsumerOptionsRejects(t *testing.T) {
	t.Parallel()
	base := ConsumerOptions{Stream: "S", Durable: "d", DeadLetter: "p.dlq"}
	for _, c := range []struct {
		name string
		mod  func(*ConsumerOptions)
	}{
		{"no stream", func(o *ConsumerOptions) { o.Stream = "" }},
		{"no durable", func(o *ConsumerOptions) { o.Durable = "" }},
		{"durable with a dot", func(o *ConsumerOptions) { o.Durable = "a.b" }},
		{"no dead letter", func(o *ConsumerOptions) { o.DeadLetter = "" }},
		{"max wait beyond ack wait", func(o *ConsumerOptions) { o.MaxWait = time.Minute }},
		{"backoff beyond ack wait", func(o *ConsumerOptions) { o.Backoff = []time.Duration{time.Hour} }},
		{"max ack pending below batch", func(o *ConsumerOptions) { o.Batch = 100; o.MaxAckPending = 10 }},
		{"linger beyond ack wait", func(o *ConsumerOptions) { o.Linger = time.Minute }},
		{"negative linger", func(o *ConsumerOptions) { o.Linger = -time.Second }},
	} {
		o := base
		c.mod(&o)
		if err := o.withDefaults(); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	o := base
	if err := o.withDefaults(); err != nil || o.Batch != DefaultBatch || o.MaxDeliver != DefaultMaxDeliver {
		t.Errorf("defaults: %v, %+v", err, o)
	}
}

// TestConsumerRecoversLostDelivery: a stray pull request on the durable
// (as one left by a Run that died, or a delivery lost with a connection)
// takes a message that never reaches the running consumer. The gap in the
// delivery sequence makes Run recreate the consumer after the last message
// it accepted: every message is still handled once, in order, and without
// waiting for AckWait.
func TestConsumerRecoversLostDelivery(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		var r recorder
		c := e.newConsumer(t, ConsumerOptions{Durable: "gappy", MaxWait: 200 * time.Millisecond})
		runConsumer(t, c, r.handle)
		warm := e.publishSync(t, e.topo.InSubject(0), 1)
		r.waitSeqs(t, warm) // Run has started and accepted seq 1

		stolen := make(chan *nats.Msg, 10)
		inbox := e.topo.Prefix + ".stray"
		sub, err := e.nc.ChanSubscribe(inbox, stolen)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		req := fmt.Sprintf(`{"batch":1,"expires":%d}`, (30 * time.Second).Nanoseconds())
		if err := e.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+e.topo.InStream()+".gappy", inbox, []byte(req)); err != nil {
			t.Fatal(err)
		}
		if err := e.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		var want []uint64
		want = append(want, warm...)
		for range 20 {
			want = append(want, e.publishSync(t, e.topo.InSubject(0), 1)...)
		}
		select {
		case m := <-stolen:
			t.Logf("the stray pull took %q", m.Data)
		case <-time.After(20 * time.Second):
			t.Fatal("the stray pull request got nothing")
		}
		r.waitSeqs(t, want)
		waitSettled(t, c, want[len(want)-1])
	})
}

// TestConsumerRecreatedAfterDeletion deletes the durable under a running
// Run: Run creates it again after the last message it accepted, and the
// messages published meanwhile are handled once, in order.
func TestConsumerRecreatedAfterDeletion(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	var r recorder
	c := e.newConsumer(t, ConsumerOptions{Durable: "doomed", MaxWait: 100 * time.Millisecond,
		Backoff: []time.Duration{10 * time.Millisecond}})
	runConsumer(t, c, r.handle)
	want := e.publishSync(t, e.topo.InSubject(0), 5)
	r.waitSeqs(t, want)
	if err := e.js.DeleteConsumer(ctxFor(t, 5*time.Second), e.topo.InStream(), "doomed"); err != nil {
		t.Fatal(err)
	}
	want = append(want, e.publishSync(t, e.topo.InSubject(0), 5)...)
	r.waitSeqs(t, want)
	waitSettled(t, c, 10)
}

// TestConsumerLingerAckAll: a lingering consumer with AckAll hands a
// backlog over in full groups of Batch (one pull each), then what is
// published while it runs; every message once and in order; one ack per
// group covers the whole group (nothing left unacknowledged), so that a
// consumer started again on the durable gets only what came after.
func TestConsumerLingerAckAll(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		subj := e.topo.InSubject(0)
		backlog := e.publishSync(t, subj, 300)
		var sizes []int
		r := recorder{fail: func(msgs []Msg) error {
			sizes = append(sizes, len(msgs))
			return nil
		}}
		opts := ConsumerOptions{Durable: "linger", Batch: 64, Linger: 20 * time.Millisecond, AckAll: true}
		c := e.newConsumer(t, opts)
		stop := runConsumer(t, c, r.handle)
		r.waitSeqs(t, backlog)
		more := e.publishSync(t, subj, 200)
		r.waitSeqs(t, append(slices.Clone(backlog), more...))
		info := waitSettled(t, c, 500)
		stop()
		if info.Config.AckPolicy != jetstream.AckAllPolicy {
			t.Errorf("ack policy %v, want AckAll", info.Config.AckPolicy)
		}
		r.mu.Lock()
		if len(sizes) < 5 || !slices.Equal(sizes[:4], []int{64, 64, 64, 64}) {
			t.Errorf("handler groups %v, want the backlog in groups of 64 (one pull each)", sizes)
		}
		for _, n := range sizes {
			if n > 64 {
				t.Errorf("a handler call got %d messages, batch is 64", n)
			}
		}
		r.mu.Unlock()

		last := e.publishSync(t, subj, 10)
		var r2 recorder
		c2 := e.newConsumer(t, opts)
		runConsumer(t, c2, r2.handle)
		r2.waitSeqs(t, last)
		if info := waitSettled(t, c2, 510); info.NumRedelivered != 0 {
			t.Errorf("after restart: %d redelivered, want 0", info.NumRedelivered)
		}
	})
}
