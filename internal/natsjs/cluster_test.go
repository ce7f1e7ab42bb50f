package natsjs

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// TestReplayFollowSurvivesANodeLoss: a following Replay of an R3 stream on
// a three-node cluster keeps delivering, in order and once, when the node
// its ordered consumer lives on is stopped (the consumer, of one replica,
// goes with it) and started again. The client library alone may not
// notice for minutes.
func TestReplayFollowSurvivesANodeLoss(t *testing.T) {
	t.Parallel()
	c := testenv.EmbeddedCluster(t, testenv.ClusterOptions{})
	nc := testenv.ConnectNATS(t, c.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := env{nc: nc, js: js, topo: Topology{Prefix: testenv.Prefix(t), Partitions: 1, Replicas: 3, In: small, Out: small, Upd: small, DLQ: small}}
	// A cluster just formed may not count every peer online yet ("no
	// suitable peers for placement, peer offline", seen with 20 clusters
	// starting at once): declare the streams until it does.
	testenv.WaitFor(t, 30*time.Second, func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.topo.Ensure(ctx, js); err != nil {
			return err.Error()
		}
		return ""
	})
	stream, subject := e.topo.OutStream(), e.topo.OutSubject(0)
	c.WaitCurrent(stream)

	// The replay runs on a connection to another node than the one its
	// ordered consumer lives on: then only the consumer goes away with
	// the node, not the connection (whose reconnect alone would have the
	// client library make a new consumer). The consumer's node is chosen
	// by the server: start replays until one lands elsewhere.
	var last atomic.Uint64
	var bad atomic.Value
	var stopReplay func()
	seen := map[string]bool{}
	host := -1
	for attempt := 0; host < 0; attempt++ {
		if attempt == 20 {
			t.Fatal("20 replays' consumers all live on the node their connection is on")
		}
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
		stopReplay = func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("replay: %v", err)
			}
		}
		found := -1
		testenv.WaitFor(t, 10*time.Second, func() string {
			for i := range c.Len() {
				for _, name := range c.LocalConsumers(i, stream) {
					if !seen[name] {
						seen[name], found = true, i
					}
				}
			}
			if found < 0 {
				return "the replay's consumer is on no node"
			}
			return ""
		})
		if c.Name(found) != nc.ConnectedServerName() {
			host = found
			break
		}
		stopReplay()
	}
	t.Cleanup(stopReplay)
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
		testenv.WaitFor(t, 45*time.Second, func() string {
			if last.Load() >= published {
				return ""
			}
			return what + ": the replay delivered up to seq " + itoa(last.Load()) + " of " + itoa(published)
		})
	}
	publish(20)
	caughtUp("before any stop")
	t.Logf("the consumer lives on node %d (meta leader %v, stream leader %v)", host, c.MetaLeader() == host, c.StreamLeader(stream) == host)
	c.Stop(host)
	publish(20)
	caughtUp("its node stopped")
	c.Start(host)
	c.WaitCurrent(stream)
	publish(20)
	caughtUp("its node back")
	if v := bad.Load(); v != nil {
		t.Fatalf("out of order: seq %d after %d", v, last.Load())
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
