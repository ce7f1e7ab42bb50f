package e2e

import (
	"context"
	"testing"
	"time"

	"treasure/internal/testenv"
)

// TestClusterR3NodeLossUnderLoad runs the whole pipeline on a three-node
// JetStream cluster (embedded servers routed on loopback, each with its
// own store) with every stream at three replicas, under an open-loop load
// of 300 players at one move a second each. One node that leads neither
// the meta group nor the log stream is stopped and later started again
// with its store; then the same with the node leading the log stream
// (IN). Nothing is lost or doubled (the load generator's accounting, OUT
// and PostgreSQL), and the only errors players see are unavailable (with
// retry_after_ms, sent again) and rate_limited. The figures — how long
// moves waited around each stop, how many were sent again — go to the
// log (BENCHMARKS.md, "Issue 9: cluster").
func TestClusterR3NodeLossUnderLoad(t *testing.T) {
	c := testenv.EmbeddedCluster(t, testenv.ClusterOptions{})
	p, _ := startPipelineOn(t, pipeOptions{url: c.URL(), replicas: 3, partitions: 2})
	streams := []string{p.topo.InStream(), p.topo.OutStream(), p.topo.UpdStream(), p.topo.DLQStream()}
	ctx := context.Background()
	for _, name := range streams {
		s, err := p.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: %d replicas configured, cluster %+v; want 3 (a leader and two followers)", name, info.Config.Replicas, info.Cluster)
		}
	}
	c.WaitCurrent(streams...)
	points := dropTreasures(t, p.d)

	const players, rate = 300, 1.0
	l := startLoad(t, p.d, players, rate, "r3-")
	l.waitMore(t, 900, "load under way")

	// 1. A follower: the node leading neither the meta group nor IN (of
	// those, the one leading the fewest of the four streams).
	in := p.topo.InStream()
	follower, fewest := -1, len(streams)+1
	for i := range c.Len() {
		if i == c.MetaLeader() || i == c.StreamLeader(in) {
			continue
		}
		n := 0
		for _, s := range streams {
			if c.StreamLeader(s) == i {
				n++
			}
		}
		if n < fewest {
			follower, fewest = i, n
		}
	}
	if follower < 0 {
		t.Fatalf("no node leads neither the meta group (node %d) nor %s (node %d)", c.MetaLeader(), in, c.StreamLeader(in))
	}
	l.mark("follower stopped")
	c.Stop(follower)
	l.waitMore(t, 900, "moves flowing on two nodes")
	c.Start(follower)
	l.mark("follower started")
	c.WaitCurrent(streams...)
	l.mark("follower current")
	l.waitMore(t, 600, "moves flowing after the follower's return")

	// 2. The leader of IN (the log every move is appended to); note
	// whether it also leads the meta group.
	leader, meta := c.StreamLeader(in), c.MetaLeader()
	if leader < 0 {
		t.Fatalf("%s has no leader", in)
	}
	what := "IN leader stopped"
	if leader == meta {
		what = "IN and meta leader stopped"
	}
	l.mark(what)
	c.Stop(leader)
	l.waitMore(t, 900, "moves flowing after the leader's stop")
	if nl := c.StreamLeader(in); nl == leader || nl < 0 {
		t.Errorf("%s led by node %d after stopping its leader %d", in, nl, leader)
	}
	c.Start(leader)
	l.mark("leader started")
	c.WaitCurrent(streams...)
	l.mark("leader current")
	l.waitMore(t, 600, "moves flowing after the leader's return")

	r := l.finish(t)
	logFigures(t, l, r)
	t.Logf("stopped: node %d (follower), then node %d (IN leader; meta leader was node %d)", follower, leader, meta)
	out := checkExactlyOnce(t, p, r, points)
	t.Logf("%d proximity results, %d claims in OUT", len(out.prox), len(out.claims))

	// Every node's own replica of IN holds the whole log after the
	// returns: the restarted nodes caught up.
	s, err := p.js.Stream(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Len() {
		testenv.WaitUntil(t, 30*time.Second, "every replica of IN caught up", func() bool {
			st, ok := c.LocalStream(i, in)
			return ok && st.LastSeq >= info.State.LastSeq && st.Msgs >= info.State.Msgs
		})
	}
}
