package proximity

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestReplayReproducesLiveRun runs a log through a live worker, then
// replays it: every partition's replayed outputs are exactly the events
// the live worker published on its P.out.<k>, in the same order, and
// Replay published nothing.
func TestReplayReproducesLiveRun(t *testing.T) {
	t.Parallel()
	f := amsterdamFixture(t)
	ctx := context.Background()
	_, js, prefix := testenv.JetStream(t)
	topo := freshTopo(t, ctx, js, prefix, f.k)
	publishInputs(t, ctx, js, topo, f)
	stop := startWorker(t, ctx, f, topo, js, testenv.NATSURL(), nil)
	live := waitOutputs(t, ctx, js, topo, len(f.moves))
	stop()
	if len(live.claims) == 0 {
		t.Fatal("the fixture produced no claims")
	}

	// The live outputs of each partition, in the order they were stored.
	want := make([][]string, f.k)
	var b eventpb.Batch
	for k := 0; k < f.k; k++ {
		err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: topo.OutStream(), Subjects: []string{topo.OutSubject(k)}, MaxWait: 200 * time.Millisecond}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if err := event.Decode(m.Data, &b); err != nil {
					return err
				}
				for _, ev := range b.Events {
					want[k] = append(want[k], ev.String())
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	inBefore, outBefore := streamMsgs(t, js, topo.InStream()), streamMsgs(t, js, topo.OutStream())

	got := make([][]string, f.k)
	results, claims := 0, 0
	err := Replay(ctx, ReplayOptions{Graph: f.g, Part: f.part, Radius: f.radius, Topology: topo, JS: js}, func(k int, ev *eventpb.Event) error {
		switch {
		case ev.GetProximity() != nil:
			results++
		case ev.GetClaim() != nil:
			claims++
		default:
			return fmt.Errorf("partition %d: unexpected output %v", k, ev)
		}
		got[k] = append(got[k], ev.String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if results != len(live.prox) || claims != len(live.claims) {
		t.Fatalf("replay: %d results and %d claims, live run: %d and %d", results, claims, len(live.prox), len(live.claims))
	}
	for k := range want {
		if len(got[k]) != len(want[k]) {
			t.Fatalf("partition %d: %d outputs replayed, %d published live", k, len(got[k]), len(want[k]))
		}
		for i := range want[k] {
			if got[k][i] != want[k][i] {
				t.Fatalf("partition %d output %d: replay %s, live %s", k, i, got[k][i], want[k][i])
			}
		}
	}
	if in, out := streamMsgs(t, js, topo.InStream()), streamMsgs(t, js, topo.OutStream()); in != inBefore || out != outBefore {
		t.Fatalf("replay published: in %d → %d messages, out %d → %d", inBefore, in, outBefore, out)
	}

	// One partition only, and emit's error stops the replay.
	stopErr := errors.New("enough")
	n := 0
	err = Replay(ctx, ReplayOptions{Graph: f.g, Part: f.part, Partitions: []int{1}, Radius: f.radius, Topology: topo, JS: js}, func(k int, ev *eventpb.Event) error {
		if k != 1 {
			return fmt.Errorf("output of partition %d", k)
		}
		if n++; n == 5 {
			return stopErr
		}
		return nil
	})
	if !errors.Is(err, stopErr) || n != 5 {
		t.Fatalf("emit failing at its 5th output: Replay returned %v after %d outputs", err, n)
	}
	for _, parts := range [][]int{{f.k}, {0, 0}, {-1}} {
		err := Replay(ctx, ReplayOptions{Graph: f.g, Part: f.part, Partitions: parts, Radius: f.radius, Topology: topo, JS: js}, func(int, *eventpb.Event) error { return nil })
		if err == nil {
			t.Fatalf("partitions %v: no error", parts)
		}
	}
}

// streamMsgs is the number of messages stored in a stream.
func streamMsgs(tb testing.TB, js jetstream.JetStream, name string) uint64 {
	tb.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}
