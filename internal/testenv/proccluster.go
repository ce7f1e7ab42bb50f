package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSServerBinary is where Debian installs nats-server (2.9.10 on the
// development machines and in production), the binary ProcessCluster
// runs; when it is absent, the first nats-server on PATH.
const NATSServerBinary = "/usr/sbin/nats-server"

// ProcCluster is a JetStream cluster of nats-server processes on
// loopback (the installed binary, not the embedded module), routed to each
// other, each with its own configuration file, store directory and
// monitoring port. Unlike Cluster it can crash a node: Kill sends SIGKILL,
// so the node flushes nothing and hands no leadership over, as a machine
// that loses power. A node comes back with Start, with its name, ports and
// store. Its lookups (leaders, current replicas, a node's own replica)
// read the nodes' monitoring endpoints (/jsz, /routez).
//
// Kill, Start and the waits are for the test's goroutine (they fail the
// test); the lookups are safe for concurrent use.
type ProcCluster struct {
	tb   testing.TB
	bin  string
	http *http.Client

	mu    sync.Mutex
	nodes []*procNode
	// lastLook is when view last asked the nodes (see pace).
	lastLook time.Time
}

type procNode struct {
	name               string
	port, cport, hport int // client, cluster (route) and monitoring ports, kept across restarts
	dir                string
	cmd                *exec.Cmd     // nil while stopped
	exited             chan struct{} // closed when cmd has exited
}

// ProcessCluster starts a JetStream cluster of o.Nodes nats-server
// processes (NATSServerBinary) and returns once every node is routed to
// the others and every node is current with a meta leader. Every node is
// killed on cleanup. Clients connect with URL(), which names every node.
// o.Debug turns on the servers' debug log; a node's log (stdout and
// stderr, in its folder) is shown, its tail, when the test fails.
//
// The test is skipped, saying so, when nats-server is not installed: the
// process cluster exists to run the production server, and the embedded
// one (EmbeddedCluster) covers the rest.
//
// The ports are picked free before the servers start, below the kernel's
// ephemeral range (a node keeps its ports across a restart, so that routes
// and client URLs stay valid; see freePort); a port taken by another
// process in between fails the test.
func ProcessCluster(tb testing.TB, o ClusterOptions) *ProcCluster {
	tb.Helper()
	bin := NATSServerBinary
	if _, err := os.Stat(bin); err != nil {
		p, err := exec.LookPath("nats-server")
		if err != nil {
			tb.Skipf("testenv: nats-server is not installed (%s, nor on PATH; apt-get install nats-server): the process cluster runs the installed server", NATSServerBinary)
		}
		bin = p
	}
	n := o.Nodes
	if n == 0 {
		n = 3
	}
	prefix := Prefix(tb)
	c := &ProcCluster{tb: tb, bin: bin, http: &http.Client{Timeout: 2 * time.Second}}
	var routes []string
	for i := range n {
		nd := &procNode{
			name:  fmt.Sprintf("%s-n%d", prefix, i),
			port:  freePort(tb),
			cport: freePort(tb),
			hport: freePort(tb),
			dir:   tb.TempDir(),
		}
		routes = append(routes, strconv.Quote("nats-route://127.0.0.1:"+strconv.Itoa(nd.cport)))
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		var conf strings.Builder
		fmt.Fprintf(&conf, "server_name: %q\nlisten: \"127.0.0.1:%d\"\nhttp: \"127.0.0.1:%d\"\ndebug: %v\n", nd.name, nd.port, nd.hport, o.Debug)
		fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n", filepath.Join(nd.dir, "store"))
		if o.MaxStore > 0 {
			fmt.Fprintf(&conf, "  max_file_store: %d\n", o.MaxStore)
		}
		fmt.Fprintf(&conf, "}\ncluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n", "c"+prefix, nd.cport, strings.Join(routes, ", "))
		if err := os.WriteFile(filepath.Join(nd.dir, "nats.conf"), []byte(conf.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		for i := range c.nodes {
			c.kill(i)
		}
		if tb.Failed() {
			c.keepLogs(tb)
		}
	})
	for i := range c.nodes {
		c.Start(i)
	}
	c.WaitFormed()
	return c
}

// Len returns the number of nodes, running or not.
func (c *ProcCluster) Len() int { return len(c.nodes) }

// URL returns the client URLs of every node, comma-separated, as
// nats.Connect takes them.
func (c *ProcCluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(nd.port)
	}
	return strings.Join(urls, ",")
}

// Name returns node i's server name.
func (c *ProcCluster) Name(i int) string { return c.nodes[i].name }

// Running reports whether node i's process runs (started, and neither
// killed nor exited).
func (c *ProcCluster) Running(i int) bool {
	c.mu.Lock()
	nd := c.nodes[i]
	cmd, exited := nd.cmd, nd.exited
	c.mu.Unlock()
	if cmd == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// Start starts node i (killed, or never started) with its configuration —
// name, ports, store directory — and waits until it accepts client
// connections. Rejoining the cluster and catching up with the others come
// after: see WaitCurrent.
func (c *ProcCluster) Start(i int) {
	c.tb.Helper()
	nd := c.nodes[i]
	if c.Running(i) {
		c.tb.Fatalf("testenv: cluster node %d (%s) is already running", i, nd.name)
	}
	log, err := os.OpenFile(filepath.Join(nd.dir, "nats.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.tb.Fatal(err)
	}
	cmd := exec.Command(c.bin, "-c", filepath.Join(nd.dir, "nats.conf"))
	cmd.Stdout, cmd.Stderr = log, log
	err = cmd.Start()
	log.Close() // the server has its own descriptor
	if err != nil {
		c.tb.Fatalf("testenv: start %s for cluster node %s: %v", c.bin, nd.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.mu.Lock()
	nd.cmd, nd.exited = cmd, exited
	c.mu.Unlock()
	WaitFor(c.tb, setupTimeout, func() string {
		select {
		case <-exited:
			c.tb.Fatalf("testenv: cluster node %s exited at start (port %d, %d or %d taken?): %s", nd.name, nd.port, nd.cport, nd.hport, nd.logTail())
		default:
		}
		if err := greets(nd.port); err != nil {
			return fmt.Sprintf("testenv: cluster node %s (pid %d) does not accept clients: %v", nd.name, cmd.Process.Pid, err)
		}
		return ""
	})
}

// greets reports whether a NATS server on port accepts a connection and
// sends its INFO line, as it does once it serves clients.
func greets(port int) error {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	var b [5]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return err
	}
	if string(b[:]) != "INFO " {
		return fmt.Errorf("greeting %q", b[:])
	}
	return nil
}

// Kill sends SIGKILL to node i (it must be running) and waits until the
// process is gone: nothing is flushed and no leadership is handed over.
// Its store directory is kept for Start.
func (c *ProcCluster) Kill(i int) {
	c.tb.Helper()
	if !c.kill(i) {
		c.tb.Fatalf("testenv: cluster node %d (%s) is not running", i, c.nodes[i].name)
	}
}

func (c *ProcCluster) kill(i int) bool {
	c.mu.Lock()
	nd := c.nodes[i]
	cmd, exited := nd.cmd, nd.exited
	nd.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return false
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return true
}

// keepLogs keeps the nodes' logs of a failed test (KeepLog).
func (c *ProcCluster) keepLogs(tb testing.TB) {
	for _, nd := range c.nodes {
		b, _ := os.ReadFile(filepath.Join(nd.dir, "nats.log"))
		tb.Logf("testenv: cluster node %s (ports %d, %d, %d): %s", nd.name, nd.port, nd.cport, nd.hport, KeepLog(tb, "nats-"+nd.name, b, 3))
	}
}

// jsz is the part of a node's /jsz?streams=true the lookups read, the same
// in nats-server 2.9 and 2.15. A node's cluster information about a
// stream or the meta group is its own belief: only the leader's list of
// replicas says which are current (a follower's is stale).
type jsz struct {
	Meta *struct {
		Leader   string    `json:"leader"`
		Replicas []jszPeer `json:"replicas"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Name    string `json:"name"`
		Streams []struct {
			Name    string `json:"name"`
			Cluster *struct {
				Leader   string    `json:"leader"`
				Replicas []jszPeer `json:"replicas"`
			} `json:"cluster"`
			State server.StreamState `json:"state"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

type jszPeer struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
}

// isCurrent reports whether peers, a leader's list of replicas, has name
// current.
func isCurrent(peers []jszPeer, name string) bool {
	for _, p := range peers {
		if p.Name == name {
			return p.Current && !p.Offline
		}
	}
	return false
}

// get decodes node i's monitoring endpoint path into out.
func (c *ProcCluster) get(i int, path string, out any) error {
	resp, err := c.http.Get("http://127.0.0.1:" + strconv.Itoa(c.nodes[i].hport) + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// jsz returns node i's /jsz with the default account's streams, or nil
// when the node is stopped or does not answer.
func (c *ProcCluster) jsz(i int) *jsz {
	if !c.Running(i) {
		return nil
	}
	var j jsz
	if c.get(i, "/jsz?accounts=true&streams=true", &j) != nil {
		return nil
	}
	return &j
}

// stream returns node i's replica of stream from j, or nil.
func (j *jsz) stream(name string) (leader string, replicas []jszPeer, state server.StreamState, ok bool) {
	if j == nil {
		return "", nil, server.StreamState{}, false
	}
	for _, a := range j.Accounts {
		if a.Name != server.DEFAULT_GLOBAL_ACCOUNT {
			continue
		}
		for _, s := range a.Streams {
			if s.Name == name {
				if s.Cluster != nil {
					leader, replicas = s.Cluster.Leader, s.Cluster.Replicas
				}
				return leader, replicas, s.State, true
			}
		}
	}
	return "", nil, server.StreamState{}, false
}

// view looks at every running node (one /jsz and one /routez each) and
// at its replicas of streams. A node that does not answer counts as
// running but routed to nobody, leading nothing and current with nothing.
func (c *ProcCluster) view(streams ...string) clusterView {
	c.pace()
	v := make(clusterView, len(c.nodes))
	js := make([]*jsz, len(c.nodes))
	for i := range c.nodes {
		if !c.Running(i) {
			continue
		}
		js[i] = c.jsz(i)
		var rz struct {
			Routes []struct {
				RemoteID string `json:"remote_id"`
			} `json:"routes"`
		}
		peers := map[string]bool{}
		if c.get(i, "/routez", &rz) == nil {
			for _, r := range rz.Routes {
				peers[r.RemoteID] = true
			}
		}
		v[i] = nodeView{running: true, routed: len(peers),
			leads: make(map[string]bool, len(streams)), current: make(map[string]bool, len(streams))}
	}
	// Who leads what, by each node's own word; then who is current, by
	// the leader's.
	meta := -1
	for i, j := range js {
		if j != nil && j.Meta != nil && j.Meta.Leader == c.nodes[i].name {
			v[i].metaLeader, v[i].metaCurrent, meta = true, true, i
		}
	}
	if meta >= 0 {
		for i := range v {
			if v[i].running && i != meta {
				v[i].metaCurrent = isCurrent(js[meta].Meta.Replicas, c.nodes[i].name)
			}
		}
	}
	for _, st := range streams {
		leader := -1
		for i, j := range js {
			if l, _, _, ok := j.stream(st); ok && l == c.nodes[i].name {
				v[i].leads[st], v[i].current[st], leader = true, true, i
			}
		}
		if leader < 0 {
			continue
		}
		_, replicas, _, _ := js[leader].stream(st)
		for i := range v {
			if v[i].running && i != leader {
				v[i].current[st] = isCurrent(replicas, c.nodes[i].name)
			}
		}
	}
	return v
}

// lookEvery spaces the looks of a wait: each asks every node twice over
// HTTP, and the waits run beside a load on a shared box.
const lookEvery = 50 * time.Millisecond

// pace sleeps until lookEvery has passed since the previous look.
func (c *ProcCluster) pace() {
	c.mu.Lock()
	wait := time.Until(c.lastLook.Add(lookEvery))
	c.lastLook = time.Now().Add(max(wait, 0))
	c.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}

// MetaLeader returns the index of the node leading the JetStream meta
// group, or -1 when no running node does (as a node says of itself).
func (c *ProcCluster) MetaLeader() int { return c.view().metaLeader() }

// StreamLeader returns the index of the node leading stream (of the
// default account), or -1 when no running node does.
func (c *ProcCluster) StreamLeader(stream string) int { return c.view(stream).streamLeader(stream) }

// StreamCurrent reports whether every running node has a current replica
// of stream: a leader is elected and, by its word, every follower has
// caught up with it.
func (c *ProcCluster) StreamCurrent(stream string) bool {
	return c.view(stream).streamCurrent(stream) == nil
}

// LocalStream returns the state of node i's own replica of stream (not
// the leader's), and false when node i is stopped, does not answer or
// holds no replica.
func (c *ProcCluster) LocalStream(i int, stream string) (server.StreamState, bool) {
	_, _, st, ok := c.jsz(i).stream(stream)
	return st, ok
}

// WaitFormed waits until every running node is routed to every other
// running node and the cluster has a meta leader every running node is
// current with.
func (c *ProcCluster) WaitFormed() {
	c.tb.Helper()
	waitFormed(c.tb, c.view)
}

// WaitCurrent waits until the cluster is formed and every running node
// holds a current replica of each of streams.
func (c *ProcCluster) WaitCurrent(streams ...string) {
	c.tb.Helper()
	waitFormed(c.tb, c.view, streams...)
}

func (nd *procNode) logTail() string {
	b, _ := os.ReadFile(filepath.Join(nd.dir, "nats.log"))
	return LastLines(b, 20)
}
