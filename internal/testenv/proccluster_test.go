package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestProcessClusterSurvivesACrashAndRegainsQuorum: three nats-server
// processes take an R3 stream. Its leader is killed (SIGKILL): the other
// two elect a new one and keep taking messages, and the killed node comes
// back with its store and catches up. Then two of the three are killed:
// the survivor alone stores nothing (no quorum); both come back, a leader
// is elected, and the stream takes messages again. Every node then holds
// every message once, in order.
func TestProcessClusterSurvivesACrashAndRegainsQuorum(t *testing.T) {
	t.Parallel()
	c := ProcessCluster(t, ClusterOptions{})
	if c.Len() != 3 || strings.Count(c.URL(), ",") != 2 {
		t.Fatalf("cluster of %d nodes, URL %q", c.Len(), c.URL())
	}
	if c.MetaLeader() < 0 {
		t.Fatal("formed without a meta leader")
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
	if !c.StreamCurrent(stream) {
		t.Fatal("WaitCurrent returned, StreamCurrent is false")
	}
	publish := func(from, to int) {
		t.Helper()
		publishNumbers(ctx, t, js, stream+".x", from, to)
	}
	publish(0, 50)

	// A crash of the leader.
	leader := c.StreamLeader(stream)
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatal("a killed node still runs")
	}
	if _, ok := c.LocalStream(leader, stream); ok {
		t.Fatal("a killed node answers for its replica")
	}
	publish(50, 100)
	if l := c.StreamLeader(stream); l < 0 || l == leader {
		t.Fatalf("stream leader after killing node %d: %d", leader, l)
	}
	// The lookups skip the killed node: the two live replicas are current.
	c.WaitCurrent(stream)
	c.Start(leader)
	c.WaitCurrent(stream)
	publish(100, 120)

	// Two of three: no quorum.
	a := c.StreamLeader(stream)
	b := (a + 1) % c.Len()
	c.Kill(a)
	c.Kill(b)
	// The publish below goes to the survivor, a follower, which drops it;
	// one left in the client's reconnect buffer could be stored once the
	// others are back.
	survivor := strings.Split(c.URL(), ",")[3-a-b]
	WaitUntil(t, 30*time.Second, "client connected to the surviving node", func() bool {
		return nc.IsConnected() && nc.ConnectedUrl() == survivor
	})
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = js.Publish(pctx, stream+".x", []byte("no quorum"), jetstream.WithMsgID("no quorum"))
	pcancel()
	if err == nil {
		t.Fatal("one node of three stored a message")
	}
	c.Start(a)
	c.Start(b)
	c.WaitCurrent(stream)
	publish(120, 150)
	checkNumbers(ctx, t, js, stream, 150, c.Len(), c.LocalStream)
}
