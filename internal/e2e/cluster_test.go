package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// TestClusterR3NodeLossUnderLoad runs the whole pipeline on a three-node
// JetStream cluster (embedded servers routed on loopback, each with its
// own store) with every stream at three replicas, under an open-loop load
// of 300 players at one move a second each. One node that leads neither
// the meta group nor the log stream is stopped and later started again
// with its store; then the same with the node leading the log stream
// (IN); then with the node holding the consumer push's feed reads OUT
// with (it has one replica). Nothing is lost or doubled (the load
// generator's accounting, OUT and PostgreSQL), and the only errors players
// see are unavailable (with retry_after_ms, sent again) and rate_limited.
// The figures — how long moves waited around each stop, how many were
// sent again, the longest gap in one player's updates on the push side
// (and in results reaching OUT) from each stop until the next, with what
// changed in the cluster meanwhile — go to the log (BENCHMARKS.md, "Issue
// 9: cluster"); no time is asserted.
func TestClusterR3NodeLossUnderLoad(t *testing.T) {
	c := testenv.EmbeddedCluster(t, testenv.ClusterOptions{})
	p, pnc := startPipelineOn(t, pipeOptions{url: c.URL(), replicas: 3, partitions: 2})
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
	// What the figures of the push side are taken from (see logGaps).
	upd := watchUpdates(t, p.d.push)
	pubs := watchOut(t, c, p.topo.Prefix+".out.>")
	tl := watchCluster(t, c, pnc, p.topo.OutStream())
	var faults []fault

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
	faults = append(faults, fault{what: "follower", node: follower, stopped: time.Now()})
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
	faults = append(faults, fault{what: what, node: leader, stopped: time.Now()})
	faults[0].next = faults[1].stopped
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

	// 3. The node push's feed reads OUT from (its consumer has one
	// replica), whichever it is.
	host := feedHost(t, c, p)
	l.mark("push's feed node stopped")
	faults = append(faults, fault{what: "push's feed node stopped", node: host, stopped: time.Now()})
	faults[1].next = faults[2].stopped
	c.Stop(host)
	l.waitMore(t, 900, "moves flowing after the stop of push's feed node")
	c.Start(host)
	l.mark("feed node started")
	c.WaitCurrent(streams...)
	l.mark("feed node current")
	l.waitMore(t, 600, "moves flowing after the feed node's return")

	faults[2].next = time.Now() // the load stops sending
	r := l.finish(t)
	logFigures(t, l, r)
	t.Logf("stopped: node %d (follower), then node %d (IN leader; meta leader was node %d), then node %d (push's feed)", follower, leader, meta, host)
	logGaps(t, c, upd, pubs, tl, faults)
	t.Logf("publishes sent again after a lost ack: proximity %v, ranker %v; proximity rebuilds %v (one per partition at start)",
		counterValue(t, p.st.Registry, "treasure_proximity_publish_resends_total"), counterValue(t, p.st.Registry, "treasure_ranker_publish_resends_total"),
		counterValue(t, p.st.Registry, "treasure_proximity_rebuilds_total"))
	out := checkExactlyOnce(t, p, r, points)
	t.Logf("%d proximity results, %d claims in OUT", len(out.prox), len(out.claims))

	// Every node's own replica of IN holds the whole log after the
	// returns: the restarted nodes caught up.
	replicasCaughtUp(t, p.js, c, in)
}

// instants records, by key (a player, a subject), when something
// happened, for the longest gap between two around a fault. Safe for
// concurrent use.
type instants struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func newInstants() *instants { return &instants{at: map[string][]time.Time{}} }

func (in *instants) add(key string, t time.Time) {
	in.mu.Lock()
	in.at[key] = append(in.at[key], t)
	in.mu.Unlock()
}

// gap is the longest time between two consecutive instants of one key.
type gap struct {
	key   string
	d     time.Duration
	began time.Time
}

// longestGap returns, over every key, the longest time between two of
// its consecutive instants that overlaps (from, to); a key's last instant
// before to with nothing after it counts as a gap up to to (at least that
// long).
func (in *instants) longestGap(from, to time.Time) gap {
	in.mu.Lock()
	defer in.mu.Unlock()
	var g gap
	for key, at := range in.at {
		for i, a := range at {
			if !a.Before(to) {
				break
			}
			b := to
			if i+1 < len(at) && at[i+1].Before(to) {
				b = at[i+1]
			}
			if b.After(from) && b.Sub(a) > g.d {
				g = gap{key, b.Sub(a), a}
			}
		}
	}
	return g
}

// watchUpdates follows push's spectator feed (the public view) and records
// when each player's new position arrives. The spectator tracker reads
// the very steps of push's OUT feed that send the players their updates,
// so a stalled feed (or a stalled partition upstream) shows as a longer
// gap between a player's positions than the one between their moves (a
// second here); frames come at most every 200 ms (SpectateInterval),
// which is the resolution. A feed that breaks off fails the test.
func watchUpdates(t *testing.T, pushBase string) *instants {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(ws(pushBase)+"/v1/spectate", nil)
	if err != nil {
		t.Fatalf("spectator feed: %v", err)
	}
	in := newInstants()
	done := make(chan struct{})
	var closing atomic.Bool
	go func() {
		defer close(done)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				if !closing.Load() {
					t.Errorf("spectator feed broke off: %v", err)
				}
				return
			}
			now := time.Now()
			var m struct {
				Type  string
				Moves [][]json.RawMessage
			}
			if json.Unmarshal(data, &m) != nil || m.Type != "frame" {
				continue
			}
			for _, mv := range m.Moves {
				var player string
				if len(mv) > 0 && json.Unmarshal(mv[0], &player) == nil {
					in.add(player, now)
				}
			}
		}
	}()
	t.Cleanup(func() {
		closing.Store(true)
		conn.Close()
		<-done
	})
	return in
}

// watchOut records when results are published to each subject of OUT, as
// a plain subscriber on every node (each connection bound to its node),
// so that a stall upstream of push (a proximity worker's consumer, OUT's
// leader) can be told from one of push's feed: for a stopped node, read
// another node's.
func watchOut(t *testing.T, c *testenv.Cluster, subject string) []*instants {
	t.Helper()
	urls := strings.Split(c.URL(), ",")
	out := make([]*instants, len(urls))
	for i, u := range urls {
		in := newInstants()
		nc := testenv.ConnectNATS(t, u)
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) { in.add(m.Subject, time.Now()) }); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		out[i] = in
	}
	return out
}

// timeline notes, every 100 ms, what changes in the cluster that a
// consumer of OUT depends on — the meta leader, OUT's leader, the node
// holding each ordered consumer of OUT (a consumer on one node only:
// push's), the services' connection — for the log around each fault.
type timeline struct {
	mu     sync.Mutex
	events []mark
}

func (tl *timeline) note(what string) {
	tl.mu.Lock()
	tl.events = append(tl.events, mark{what, time.Now()})
	tl.mu.Unlock()
}

func watchCluster(t *testing.T, c *testenv.Cluster, nc *nats.Conn, out string) *timeline {
	tl := &timeline{}
	status := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		meta, lead, conn, ordered := -2, -2, "", ""
		for {
			select {
			case <-stop:
				return
			case s := <-status:
				tl.note(fmt.Sprintf("services' connection %v %s", s, nc.ConnectedServerName()))
				continue
			case <-tick.C:
			}
			if m := c.MetaLeader(); m != meta {
				meta = m
				tl.note(fmt.Sprintf("meta leader: node %d", m))
			}
			if l := c.StreamLeader(out); l != lead {
				lead = l
				tl.note(fmt.Sprintf("OUT leader: node %d", l))
			}
			if s := nc.ConnectedServerName(); s != conn {
				conn = s
				tl.note("services connected to " + s)
			}
			// Consumers of OUT held by one node only (push's ordered
			// consumers; the ranker's durable is on all three).
			where := map[string][]int{}
			for i := range c.Len() {
				for _, name := range c.LocalConsumers(i, out) {
					where[name] = append(where[name], i)
				}
			}
			var ones []string
			for name, nodes := range where {
				if len(nodes) == 1 {
					ones = append(ones, fmt.Sprintf("%s@node %d", name, nodes[0]))
				}
			}
			slices.Sort(ones)
			if o := strings.Join(ones, " "); o != ordered {
				ordered = o
				tl.note("ordered consumers of OUT: " + o)
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		nc.RemoveStatusListener(status)
	})
	return tl
}

// log logs the events in (from, to], each with its time after at.
func (tl *timeline) log(t *testing.T, what string, at, from, to time.Time) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, e := range tl.events {
		if e.at.After(from) && !e.at.After(to) {
			t.Logf("  %s %+6d ms: %s", what, e.at.Sub(at).Milliseconds(), e.what)
		}
	}
}

// feedHost returns the node holding the consumer push's feed reads OUT
// with: of the consumers of OUT held by one node only (push's; one it
// left behind lingers until the server removes it), the one that has
// delivered furthest.
func feedHost(t *testing.T, c *testenv.Cluster, p inproc) int {
	t.Helper()
	out := p.topo.OutStream()
	host := -1
	testenv.WaitFor(t, 30*time.Second, func() string {
		where := map[string][]int{}
		for i := range c.Len() {
			for _, name := range c.LocalConsumers(i, out) {
				where[name] = append(where[name], i)
			}
		}
		var furthest uint64
		for name, nodes := range where {
			if len(nodes) != 1 {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cons, err := p.js.Consumer(ctx, out, name)
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = cons.Info(ctx)
			}
			cancel()
			if err == nil && info.Delivered.Stream > furthest {
				furthest, host = info.Delivered.Stream, nodes[0]
			}
		}
		if host < 0 {
			return "no consumer of " + out + " on one node only (push's feed)"
		}
		return ""
	})
	return host
}

// fault is one node's stop, for the figures.
type fault struct {
	what          string
	node          int
	stopped, next time.Time // when it was stopped; the next fault or the end
}

// logGaps logs, for each fault, from the stop until the next fault (or
// the end of the load): the longest gap between two updates of one
// player on the push side (the spectator feed), and between two results
// published to one subject of OUT (seen from another node), with what
// changed in the cluster meanwhile; and the same gaps in the 5 s before
// the first stop, for comparison.
func logGaps(t *testing.T, c *testenv.Cluster, upd *instants, pubs []*instants, tl *timeline, faults []fault) {
	t.Helper()
	first := faults[0].stopped
	g, pg := upd.longestGap(first.Add(-5*time.Second), first), pubs[0].longestGap(first.Add(-5*time.Second), first)
	t.Logf("before the first stop (5 s): longest gap in one player's updates (push) %d ms; in results published to one subject of OUT %d ms (%s)",
		g.d.Milliseconds(), pg.d.Milliseconds(), pg.key)
	for _, f := range faults {
		g := upd.longestGap(f.stopped, f.next)
		other := (f.node + 1) % c.Len()
		pg := pubs[other].longestGap(f.stopped, f.next)
		t.Logf("%s (node %d): longest gap in one player's updates (push) %d ms, from %+d ms after the stop (%s); in results published to one subject of OUT (seen on node %d) %d ms, from %+d ms (%s)",
			f.what, f.node, g.d.Milliseconds(), g.began.Sub(f.stopped).Milliseconds(), g.key,
			other, pg.d.Milliseconds(), pg.began.Sub(f.stopped).Milliseconds(), pg.key)
		tl.log(t, f.what, f.stopped, f.stopped.Add(-time.Second), f.next)
	}
}
