package proximity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestStopBeforeAckAppliesAgainPublishesOnce: a worker stopped after it
// published an input's outputs and before it acked the input (a stop in
// the middle of a batch: natsjs.Consumer acks nothing once its context is
// cancelled) leaves the input to its successor, which applies it again.
// Its outputs would carry the same events under the same Nats-Msg-Ids,
// but other hop timestamps (the batch's input_consumed_unix_nanos) — the
// copy that made e2e's TestLongRunTrimmedReplayEqualsLive, which counted
// distinct payloads published live, count one message more than OUT
// holds. The successor finds those ids on OUT when it rebuilds
// (readInLog) and does not publish them again: every id is published
// once and stored once, and any id published twice must carry the same
// events.
func TestStopBeforeAckAppliesAgainPublishesOnce(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	nc, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix+"r", f.k)

	// Every copy published on partition 0's OUT subject, by id.
	var mu sync.Mutex
	seen := map[string][][]byte{} // id -> distinct payloads, in arrival order
	var ids []string              // in arrival order
	sub, err := nc.Subscribe(topo.OutSubject(0), func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		id := m.Header.Get(jetstream.MsgIDHeader)
		ps, ok := seen[id]
		if !ok {
			ids = append(ids, id)
		}
		for _, p := range ps {
			if bytes.Equal(p, m.Data) {
				return
			}
		}
		seen[id] = append(ps, bytes.Clone(m.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	outStream, err := js.Stream(ctx, topo.OutStream())
	if err != nil {
		t.Fatal(err)
	}

	moves := f.moves[:len(f.moves)/4]
	publishDrops(t, ctx, js, topo, f)
	publishMoves(t, ctx, js, topo, f, moves)

	// Worker A: in the first batch of partition 0 in which an input comes
	// after a move input (the partition's first input is the drops), once
	// that one's outputs are stored (and so before the batch is acked),
	// its context is cancelled.
	wctx, cancel := context.WithCancel(ctx)
	lastOut := func() (uint64, string, error) {
		m, err := outStream.GetLastMsgForSubject(ctx, topo.OutSubject(0))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, "", nil
		}
		if err != nil {
			return 0, "", err
		}
		return m.Sequence, m.Header.Get(jetstream.MsgIDHeader), nil
	}
	var applies, inBatch int
	var seqAtBatch uint64
	var stopped, failed string // the id stored when A was stopped; or why it was not
	hook := func(k int, at hookPoint) {
		if k != 0 || wctx.Err() != nil {
			return
		}
		var err error
		switch at {
		case hookBatch:
			inBatch = 0
			seqAtBatch, _, err = lastOut()
			if err != nil {
				failed = err.Error()
				cancel()
			}
			return
		case hookApply:
			inBatch++
			applies++
		}
		if inBatch < 2 || applies < 3 {
			return
		}
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			seq, id, err := lastOut()
			if err != nil || time.Now().After(end) {
				failed = fmt.Sprintf("the outputs of the batch's earlier inputs never stored (%v)", err)
				break
			}
			if seq > seqAtBatch {
				stopped = id
				break
			}
		}
		cancel()
	}
	a := startHookedWorker(t, wctx, f, topo, url, hook)
	testenv.WaitUntil(t, 60*time.Second, "worker A stopped mid-batch", func() bool { return wctx.Err() != nil })
	a()
	if failed != "" {
		t.Fatal(failed)
	}
	t.Logf("worker A stopped with %s stored and its input not acked", stopped)

	// Worker B takes over: one result per move (readOutputs fails on a
	// second one).
	b := startHookedWorker(t, ctx, f, topo, url, nil)
	waitOutputs(t, ctx, js, topo, len(moves))
	testenv.WaitFor(t, 60*time.Second, func() string {
		for k := 0; k < topo.Partitions; k++ {
			c, err := js.Consumer(ctx, topo.InStream(), Durable(topo, k))
			if err != nil {
				return err.Error() // a consumer being reset
			}
			info, err := c.Info(ctx)
			if err != nil {
				return err.Error()
			}
			if info.NumPending+uint64(info.NumAckPending) != 0 {
				return fmt.Sprintf("partition %d: %d inputs waiting, %d unacked", k, info.NumPending, info.NumAckPending)
			}
		}
		return ""
	})
	b()

	stored := map[string][]natsjs.Msg{}
	err = natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.OutStream(), Subjects: []string{topo.OutSubject(0)}}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			id := m.Header.Get(jetstream.MsgIDHeader)
			stored[id] = append(stored[id], m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	again := 0
	for _, id := range ids {
		ps := seen[id]
		if len(stored[id]) != 1 {
			t.Fatalf("id %s stored %d times", id, len(stored[id]))
		}
		if !bytes.Equal(stored[id][0].Data, ps[0]) {
			t.Fatalf("id %s: OUT holds another payload than its first copy", id)
		}
		if len(ps) == 1 {
			continue
		}
		again++
		var first, second eventpb.Batch
		if err := event.Decode(ps[0], &first); err != nil {
			t.Fatal(err)
		}
		if err := event.Decode(ps[1], &second); err != nil {
			t.Fatal(err)
		}
		if len(ps) != 2 || len(first.Events) == 0 || len(first.Events) != len(second.Events) {
			t.Fatalf("id %s published with %d payloads, of %d and %d events", id, len(ps), len(first.Events), len(second.Events))
		}
		for i := range first.Events {
			if !proto.Equal(first.Events[i], second.Events[i]) {
				t.Fatalf("id %s: event %d differs between its copies: %v, %v", id, i, first.Events[i], second.Events[i])
			}
		}
		if first.InputConsumedUnixNanos == second.InputConsumedUnixNanos {
			t.Fatalf("id %s: two payloads, the same hop timestamps", id)
		}
	}
	if len(seen[stopped]) != 1 {
		t.Fatalf("id %s, stored before A's stop, was published with %d payloads, want 1 (B found it on OUT)", stopped, len(seen[stopped]))
	}
	t.Logf("%d ids on %s, %d published again with other hop timestamps, each stored once", len(ids), topo.OutSubject(0), again)
}

// startHookedWorker starts a worker of every partition with the test hook
// hook (nil: none) until ctx ends or the returned stop is called.
func startHookedWorker(tb testing.TB, ctx context.Context, f fixture, topo natsjs.Topology, url string, hook func(k int, at hookPoint)) (stop func()) {
	tb.Helper()
	nc := testenv.ConnectNATS(tb, url)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	o := Options{Graph: f.g, Part: f.part, Radius: f.radius, Topology: topo, NC: nc, JS: js, Batch: 8, AckWait: 2 * time.Second}
	return runHookedWorker(tb, ctx, o, testLog().Handler(), false, hook).stop
}
