package natsjs

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// TestReplayFollowSurvivesANodeLoss: a following Replay of an R3 stream on
// a three-node cluster keeps delivering, in order and once, while each
// node in turn is stopped (one of them hosts its ordered consumer, which
// dies with it) and started again.
func TestReplayFollowSurvivesANodeLoss(t *testing.T) {
	t.Parallel()
	c := testenv.EmbeddedCluster(t, testenv.ClusterOptions{})
	nc := testenv.ConnectNATS(t, c.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := env{nc: nc, js: js, topo: Topology{Prefix: testenv.Prefix(t), Partitions: 1, Replicas: 3, In: small, Out: small, Upd: small, DLQ: small}}
	e.ensure(t)
	stream, subject := e.topo.OutStream(), e.topo.OutSubject(0)
	c.WaitCurrent(stream)

	var last atomic.Uint64
	var bad atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Replay(ctx, js, ReplayOptions{Stream: stream, Follow: true, MaxWait: 100 * time.Millisecond}, func(_ context.Context, msgs []Msg) error {
			for _, m := range msgs {
				if m.Seq != last.Load()+1 {
					bad.Store(m.Seq)
				}
				last.Store(m.Seq)
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var published uint64
	// publish stores n more messages, each sent again (same id) until
	// stored: a publish may meet the stop of the stream's leader.
	publish := func(n int) {
		t.Helper()
		t0 := time.Now()
		defer func() { t.Logf("%d published in %v", n, time.Since(t0).Round(time.Millisecond)) }()
		for range n {
			id := itoa(published + 1)
			for attempt := 0; ; attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				a, err := js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id))
				cancel()
				if err == nil {
					if a.Sequence != published+1 {
						t.Fatalf("message %s stored at seq %d", id, a.Sequence)
					}
					break
				}
				if attempt == 100 {
					t.Fatalf("publish %s: %v", id, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			published++
		}
	}
	caughtUp := func(what string) {
		t.Helper()
		t0 := time.Now()
		defer func() { t.Logf("%s: caught up in %v", what, time.Since(t0).Round(time.Millisecond)) }()
		waitFor(t, 45*time.Second, func() string {
			if last.Load() >= published {
				return ""
			}
			return what + ": the replay delivered up to seq " + itoa(last.Load()) + " of " + itoa(published)
		})
	}
	publish(20)
	caughtUp("before any stop")
	for i := range c.Len() {
		t.Logf("node %d: meta leader %v, stream leader %v", i, c.MetaLeader() == i, c.StreamLeader(stream) == i)
		c.Stop(i)
		publish(20)
		caughtUp("node " + itoa(uint64(i)) + " stopped")
		c.Start(i)
		c.WaitCurrent(stream)
		publish(20)
		caughtUp("node " + itoa(uint64(i)) + " back")
	}
	if v := bad.Load(); v != nil {
		t.Fatalf("out of order: seq %d after %d", v, last.Load())
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
