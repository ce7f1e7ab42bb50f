package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterOptions configures an EmbeddedCluster or a ProcessCluster. The
// zero value is three JetStream nodes.
type ClusterOptions struct {
	// Nodes is the number of servers; 0 means 3.
	Nodes int
	// MaxStore caps each node's JetStream file storage in bytes; 0 lets
	// the server choose.
	MaxStore int64
	// Debug sends the servers' logs to tb.Log (EmbeddedCluster), or turns
	// on the debug lines of the log each process writes (ProcessCluster).
	Debug bool
}

// Cluster is a JetStream cluster of embedded nats-server v2.15 nodes on
// loopback, routed to each other, each with its own store directory, all
// in this process. A node can be stopped and started again with the same
// name, ports and store, as a restarted machine comes back. Its methods
// are safe for concurrent use; tb's methods are called from the test's
// goroutine only (Stop, Start and the waits fail the test).
type Cluster struct {
	tb    testing.TB
	name  string
	debug bool
	// routes names every node's cluster listener.
	routes string

	mu    sync.Mutex
	nodes []*clusterNode
}

type clusterNode struct {
	name        string
	port, cport int // client and cluster (route) ports, kept across restarts
	dir         string
	maxStore    int64
	srv         *server.Server // nil while stopped
}

// EmbeddedCluster starts a JetStream cluster of o.Nodes servers and
// returns once every node is routed to the others and the cluster has a
// meta leader (its JetStream API answers). Every node is shut down on
// cleanup. Clients connect with URL(), which names every node, so that
// they fail over when one stops.
//
// The ports are picked free before the servers start, below the kernel's
// ephemeral range (a node keeps its ports across a restart, so that routes
// and client URLs stay valid; see freePort); a port taken by another
// process in between fails the test.
func EmbeddedCluster(tb testing.TB, o ClusterOptions) *Cluster {
	tb.Helper()
	n := o.Nodes
	if n == 0 {
		n = 3
	}
	prefix := Prefix(tb)
	c := &Cluster{tb: tb, name: "c" + prefix, debug: o.Debug}
	var routes []string
	for i := range n {
		nd := &clusterNode{
			name:     fmt.Sprintf("%s-n%d", prefix, i),
			port:     freePort(tb),
			cport:    freePort(tb),
			dir:      tb.TempDir(),
			maxStore: o.MaxStore,
		}
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(nd.cport))
		c.nodes = append(c.nodes, nd)
	}
	c.routes = strings.Join(routes, ",")
	tb.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	for i := range c.nodes {
		c.Start(i)
	}
	c.WaitFormed()
	return c
}

// freePort returns a loopback TCP port that was free a moment ago, below
// the kernel's ephemeral range when it can: a cluster node keeps its ports
// across a restart, and while it is down a port of the ephemeral range
// may be handed to any outgoing connection on the box (the shared box
// opens thousands), which would keep the node from listening again. A
// port is handed out once per test process.
func freePort(tb testing.TB) int {
	tb.Helper()
	low := ephemeralLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := minPort + rand.IntN(low-minPort)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p
	}
	// The range below is crowded: any free port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// minPort is the lowest port freePort picks.
const minPort = 10000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow returns the first port of the kernel's ephemeral range
// (Linux: /proc/sys/net/ipv4/ip_local_port_range; elsewhere, or when it
// leaves too little room below, 32768).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > minPort+1000 {
				return low
			}
		}
	}
	return 32768
}

// Len returns the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.nodes) }

// URL returns the client URLs of every node, comma-separated, as
// nats.Connect takes them.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		urls[i] = "nats://127.0.0.1:" + strconv.Itoa(nd.port)
	}
	return strings.Join(urls, ",")
}

// Name returns node i's server name.
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// Server returns node i's running server, or nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Start starts node i (stopped, or never started) with its name, ports
// and store directory, and waits until it accepts client connections.
// Rejoining the cluster and catching up with the others come after: see
// WaitCurrent.
func (c *Cluster) Start(i int) {
	c.tb.Helper()
	c.mu.Lock()
	nd := c.nodes[i]
	running := nd.srv != nil
	c.mu.Unlock()
	if running {
		c.tb.Fatalf("testenv: cluster node %d (%s) is already running", i, nd.name)
	}
	opts := &server.Options{
		ServerName:        nd.name,
		Host:              "127.0.0.1",
		Port:              nd.port,
		JetStream:         true,
		StoreDir:          nd.dir,
		JetStreamMaxStore: nd.maxStore,
		Cluster: server.ClusterOpts{
			Name: c.name,
			Host: "127.0.0.1",
			Port: nd.cport,
		},
		Routes: server.RoutesFromStr(c.routes),
		NoSigs: true,
		NoLog:  !c.debug,
		Debug:  c.debug,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		c.tb.Fatalf("testenv: cluster node %s: %v", nd.name, err)
	}
	if c.debug {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(setupTimeout) {
		srv.Shutdown()
		c.tb.Fatalf("testenv: cluster node %s not ready within %v (port %d or %d taken?)", nd.name, setupTimeout, nd.port, nd.cport)
	}
	c.mu.Lock()
	nd.srv = srv
	c.mu.Unlock()
}

// Stop shuts node i down (it must be running) and waits until it is gone.
// nats-server's shutdown hands the node's Raft leaderships over first,
// as a rolling restart or a drained machine does; its clients reconnect
// to the other nodes. Its store directory is kept for Start.
func (c *Cluster) Stop(i int) {
	c.tb.Helper()
	if !c.stop(i) {
		c.tb.Fatalf("testenv: cluster node %d (%s) is not running", i, c.nodes[i].name)
	}
}

func (c *Cluster) stop(i int) bool {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv == nil {
		return false
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	return true
}

// running returns the running servers by index (nil for stopped ones).
func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*server.Server, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = nd.srv
	}
	return out
}

// MetaLeader returns the index of the node leading the JetStream meta
// group (stream and consumer assignments), or -1 when no running node
// does.
func (c *Cluster) MetaLeader() int {
	for i, s := range c.running() {
		if s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader returns the index of the node leading stream (of the
// default account, where clients without credentials put their streams),
// or -1 when no running node does.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.running() {
		if s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// StreamCurrent reports whether every running node has a current replica
// of stream: a leader is elected and every follower has caught up with it.
func (c *Cluster) StreamCurrent(stream string) bool {
	if c.StreamLeader(stream) < 0 {
		return false
	}
	for _, s := range c.running() {
		if s != nil && !s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return false
		}
	}
	return true
}

// LocalConsumers returns the names of stream's consumers that node i holds
// a replica of (for a consumer of one replica, such as an ordered
// consumer: the node it lives on); nil when node i is stopped.
func (c *Cluster) LocalConsumers(i int, stream string) []string {
	s := c.Server(i)
	if s == nil {
		return nil
	}
	jsz, err := s.Jsz(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true, Consumer: true})
	if err != nil {
		return nil
	}
	var names []string
	for _, ad := range jsz.AccountDetails {
		for _, sd := range ad.Streams {
			if sd.Name == stream {
				for _, ci := range sd.Consumer {
					names = append(names, ci.Name)
				}
			}
		}
	}
	return names
}

// LocalStream returns the state of node i's own replica of stream (not
// the leader's, as a client's stream info would), and false when node i
// is stopped or holds no replica.
func (c *Cluster) LocalStream(i int, stream string) (server.StreamState, bool) {
	s := c.Server(i)
	if s == nil {
		return server.StreamState{}, false
	}
	jsz, err := s.Jsz(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
	if err != nil {
		return server.StreamState{}, false
	}
	for _, ad := range jsz.AccountDetails {
		for _, sd := range ad.Streams {
			if sd.Name == stream {
				return sd.State, true
			}
		}
	}
	return server.StreamState{}, false
}

// WaitFormed waits until every running node is routed to every other
// running node and the cluster has a current meta leader.
func (c *Cluster) WaitFormed() {
	c.tb.Helper()
	waitFormed(c.tb, c.view)
}

// WaitCurrent waits until the cluster is formed and every running node
// holds a current replica of each of streams.
func (c *Cluster) WaitCurrent(streams ...string) {
	c.tb.Helper()
	waitFormed(c.tb, c.view, streams...)
}

// view looks at every running server, and at its replicas of streams.
func (c *Cluster) view(streams ...string) clusterView {
	srvs := c.running()
	v := make(clusterView, len(srvs))
	for i, s := range srvs {
		if s == nil {
			continue
		}
		n := nodeView{running: true, routed: routedPeers(s), metaLeader: s.JetStreamIsLeader(), metaCurrent: s.JetStreamIsCurrent(),
			leads: make(map[string]bool, len(streams)), current: make(map[string]bool, len(streams))}
		for _, st := range streams {
			n.leads[st] = s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, st)
			n.current[st] = s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, st)
		}
		v[i] = n
	}
	return v
}

// routedPeers counts the distinct servers s has routes to (a pool of
// several connections per peer counts once).
func routedPeers(s *server.Server) int {
	rz, err := s.Routez(nil)
	if err != nil {
		return 0
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteID] = true
	}
	return len(peers)
}
