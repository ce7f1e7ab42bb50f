package e2e

import (
	"os"
	"testing"
	"time"

	"treasure/internal/loadgen"
	"treasure/internal/testenv"
)

// noQuorumFor is how long two of the three nodes stay dead in
// TestClusterCrashAndQuorumLossUnderLoad before they are started again:
// long enough for ingest's publishes to go unanswered (its ack timeout is
// 5 s) and to be sent again, and for the proximity workers' leases to
// lapse (2/3 of 10 s after their last renewal: the lease bucket takes no
// writes either). TREASURE_TEST_NO_QUORUM sets another (a duration:
// "30s"), for the longer outages CI does not run.
func noQuorumFor(t *testing.T) time.Duration {
	v := os.Getenv("TREASURE_TEST_NO_QUORUM")
	if v == "" {
		return 6 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("TREASURE_TEST_NO_QUORUM=%q: want a positive duration", v)
	}
	return d
}

// TestClusterCrashAndQuorumLossUnderLoad runs the whole pipeline on three
// nats-server processes of the installed binary (Debian's 2.9.10, the
// production version; skipped when absent), every stream at three
// replicas, under an open-loop load of 300 players at one move a second
// each. Nodes crash — SIGKILL: nothing flushed, no leadership handed
// over — and come back with their stores:
//
//  1. the node leading IN: the other two elect a new leader, moves go on,
//     and the killed node, started again, catches up;
//  2. two of the three (the leader of IN and the meta leader, or another
//     node when one leads both): no quorum, no stream takes writes, for
//     noQuorumFor; then both start again and the load goes on.
//
// After each, the test waits until proximity updates have caught up with
// the acked moves (the workers and push's feed recovered: a service that
// stays stuck fails the test there) before going on.
//
// Throughout, players see no error but unavailable (with retry_after_ms,
// sent again) and rate_limited; and at the end nothing is lost or
// doubled: the load generator's accounting, OUT (one result per acked
// move) and PostgreSQL (checkExactlyOnce), and every replica of IN holds
// the whole log. The figures — how long moves waited around each crash,
// how many were sent again, how long players saw no ack while there was
// no quorum — go to the log (BENCHMARKS.md, "Issue 9: cluster").
func TestClusterCrashAndQuorumLossUnderLoad(t *testing.T) {
	c := testenv.ProcessCluster(t, testenv.ClusterOptions{})
	p, _ := startPipelineOn(t, pipeOptions{url: c.URL(), replicas: 3, partitions: 2})
	in := p.topo.InStream()
	streams := []string{in, p.topo.OutStream(), p.topo.UpdStream(), p.topo.DLQStream()}
	c.WaitCurrent(streams...)
	points := dropTreasures(t, p.d)

	const players, rate = 300, 1.0
	l := startLoad(t, p.d, players, rate, "q-")
	l.waitMore(t, 600, "load under way")

	// 1. A crash of the node leading IN (the log every move is appended
	// to). Its followers notice only when its heartbeats stop: the
	// election waits for their timeout.
	leader, meta := c.StreamLeader(in), c.MetaLeader()
	if leader < 0 || meta < 0 {
		t.Fatalf("%s led by node %d, meta group by node %d", in, leader, meta)
	}
	what := "IN leader killed"
	if leader == meta {
		what = "IN and meta leader killed"
	}
	l.mark(what)
	killed := time.Now()
	c.Kill(leader)
	testenv.WaitUntil(t, 2*time.Minute, "a new leader of IN", func() bool {
		nl := c.StreamLeader(in)
		return nl >= 0 && nl != leader
	})
	elected := time.Since(killed)
	l.mark("new IN leader")
	l.waitMore(t, 600, "moves flowing on two nodes")
	c.Start(leader)
	l.mark("killed node started")
	c.WaitCurrent(streams...)
	l.mark("it is current")
	l.waitAnswered(t, "updates caught up after the crash")
	caughtUp := time.Since(killed)
	l.mark("updates caught up")
	l.waitMore(t, 600, "moves flowing after the crashed node's return")

	// 2. Two of three: no quorum for any stream, nor the meta group.
	a := c.StreamLeader(in)
	b := c.MetaLeader()
	if a < 0 || b < 0 {
		t.Fatalf("%s led by node %d, meta group by node %d", in, a, b)
	}
	if b == a {
		b = (a + 1) % c.Len()
	}
	l.mark("two nodes killed: no quorum")
	down := time.Now()
	c.Kill(a)
	c.Kill(b)
	time.Sleep(noQuorumFor(t)) // the outage itself, not a wait for a state
	l.mark("both started")
	started := time.Now()
	c.Start(a)
	c.Start(b)
	testenv.WaitUntil(t, 2*time.Minute, "a leader of IN after the restart", func() bool { return c.StreamLeader(in) >= 0 })
	back := time.Now()
	l.mark("quorum back: IN led")
	c.WaitCurrent(streams...)
	l.mark("all current")
	l.waitMore(t, 900, "moves flowing after quorum returned")
	l.mark("900 more acked")
	l.waitAnswered(t, "updates caught up after quorum returned")
	caughtUpQ := time.Since(down)
	l.mark("updates caught up")
	end := time.Now()

	r := l.finish(t)
	logFigures(t, l, r)
	t.Logf("crash: node %d (IN leader; meta leader was node %d); IN led again %v after the kill; updates caught up %v after it",
		leader, meta, elected.Round(time.Millisecond), caughtUp.Round(time.Millisecond))
	t.Logf("no quorum: nodes %d and %d killed (node %d survived) for %v; IN led again %v after their start (%v after the kill); updates caught up %v after the kill",
		a, b, 3-a-b, started.Sub(down).Round(time.Millisecond), back.Sub(started).Round(time.Millisecond), back.Sub(down).Round(time.Millisecond),
		caughtUpQ.Round(time.Millisecond))
	n, from := noAckRun(r, down, end)
	w := window(r, down, end)
	t.Logf("no quorum as players saw it: no move acked for %d whole seconds (from second %d of the run); from the kill until the load went on: ack max %.0f ms, update max %.0f ms",
		n, from, w.ackMax, w.updMax)
	t.Logf("sent again after unavailable or rate_limited: %d (errors %v)", r.Retries, r.Errors)
	out := checkExactlyOnce(t, p, r, points)
	t.Logf("%d proximity results, %d claims in OUT", len(out.prox), len(out.claims))

	// Every node's own replica of IN holds the whole log: the restarted
	// nodes caught up.
	replicasCaughtUp(t, p.js, c, in)
}

// noAckRun returns the longest run of whole seconds of r, ending in
// (from, to], in which no move was acked, and the index of its first
// second.
func noAckRun(r *loadgen.Result, from, to time.Time) (n, first int) {
	run := 0
	for _, s := range r.Seconds {
		if end := r.Start.Add(time.Duration(s.Index+1) * time.Second); !end.After(from) || end.After(to) {
			continue
		}
		if s.Acked > 0 {
			run = 0
			continue
		}
		run++
		if run > n {
			n, first = run, s.Index-run+1
		}
	}
	return n, first
}
