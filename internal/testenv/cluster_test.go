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
	publish := func(from, to int) { t.Helper(); publishNumbers(ctx, t, js, stream+".x", from, to) }
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
	checkNumbers(ctx, t, js, stream, 120, c.Len(), c.LocalStream)
}

// publishNumbers publishes the numbers from to to (excluded) to subject,
// each with itself as Nats-Msg-Id. A publish may meet a leader change: it
// is retried until stored (the id makes a retry of a stored message a
// duplicate), for up to 100 attempts of 2 s.
func publishNumbers(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.Publish(pctx, subject, []byte(fmt.Sprint(i)), jetstream.WithMsgID(fmt.Sprint(i)))
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

// checkNumbers checks that every node's own replica of stream (local) holds
// the n numbers publishNumbers stored, once each, in order.
func checkNumbers(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string, n, nodes int, local func(int, string) (server.StreamState, bool)) {
	t.Helper()
	want := uint64(n)
	for i := range nodes {
		var st server.StreamState
		WaitUntil(t, 30*time.Second, fmt.Sprintf("node %d's replica of %s holding %d messages", i, stream, n), func() bool {
			st, _ = local(i, stream)
			return st.Msgs == want
		})
		if st.FirstSeq != 1 || st.LastSeq != want {
			t.Fatalf("node %d: replica holds %d messages, seqs %d..%d; want %d, 1..%d", i, st.Msgs, st.FirstSeq, st.LastSeq, n, n)
		}
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= want; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || string(m.Data) != fmt.Sprint(seq-1) {
			t.Fatalf("seq %d: %v %v, want %d", seq, m, err, seq-1)
		}
	}
}
