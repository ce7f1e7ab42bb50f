package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestEmbeddedClusterKeepsAnR3StreamThroughALeaderRestart: a three-node
// cluster takes an R3 stream; its leader is stopped, the stream keeps
// taking messages on the other two (a new leader), and the stopped node
// comes back with its store and catches up: every node then holds every
// message once, in order.
func TestEmbeddedClusterKeepsAnR3StreamThroughALeaderRestart(t *testing.T) {
	t.Parallel()
	c := EmbeddedCluster(t, ClusterOptions{})
	if c.Len() != 3 || strings.Count(c.URL(), ",") != 2 {
		t.Fatalf("cluster of %d nodes, URL %q", c.Len(), c.URL())
	}
	nc := ConnectNATS(t, c.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stream := Prefix(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{stream + ".>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	c.WaitCurrent(stream)
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			// A publish may meet the leader change: retry until stored
			// (the id makes a retry of a stored message a duplicate).
			for attempt := 0; ; attempt++ {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, stream+".x", []byte(fmt.Sprint(i)), jetstream.WithMsgID(fmt.Sprint(i)))
				cancel()
				if err == nil {
					break
				}
				if attempt == 100 {
					t.Fatalf("publish %d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	publish(0, 50)
	leader := c.StreamLeader(stream)
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	c.Stop(leader)
	if c.Server(leader) != nil {
		t.Fatal("a stopped node still has a server")
	}
	publish(50, 100)
	if l := c.StreamLeader(stream); l < 0 || l == leader {
		t.Fatalf("stream leader after stopping node %d: %d", leader, l)
	}
	c.Start(leader)
	c.WaitCurrent(stream)
	publish(100, 120)
	// Every node's own replica holds the 120 messages.
	for i := range c.Len() {
		var st server.StreamState
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, _ = c.LocalStream(i, stream)
			if st.Msgs == 120 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st.Msgs != 120 || st.FirstSeq != 1 || st.LastSeq != 120 {
			t.Fatalf("node %d: replica holds %d messages, seqs %d..%d; want 120, 1..120", i, st.Msgs, st.FirstSeq, st.LastSeq)
		}
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 120; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || string(m.Data) != fmt.Sprint(seq-1) {
			t.Fatalf("seq %d: %v %v, want %d", seq, m, err, seq-1)
		}
	}
}
