package testenv

import (
	"fmt"
	"testing"
)

// clusterView is one look at every node of a cluster (EmbeddedCluster or
// ProcessCluster), taken together, so that the waits of both judge the
// same things the same way: the embedded cluster asks its servers, the
// process cluster their monitoring endpoints. Indexed by node; a stopped
// node's entry is the zero value.
type clusterView []nodeView

// nodeView is what one running node says.
type nodeView struct {
	running bool
	// routed counts the distinct servers the node has routes to (a pool
	// of several connections to one peer counts once).
	routed int
	// metaLeader: the node leads the JetStream meta group (stream and
	// consumer assignments); metaCurrent: it is current with the meta
	// leader (the leader itself is).
	metaLeader, metaCurrent bool
	// leads and current say, for each stream the look asked about,
	// whether the node leads it and whether its replica is current with
	// the leader's (the leader's is).
	leads, current map[string]bool
}

// metaLeader returns the index of the node leading the meta group, or -1.
func (v clusterView) metaLeader() int {
	for i, n := range v {
		if n.running && n.metaLeader {
			return i
		}
	}
	return -1
}

// streamLeader returns the index of the node leading stream, or -1.
func (v clusterView) streamLeader(stream string) int {
	for i, n := range v {
		if n.running && n.leads[stream] {
			return i
		}
	}
	return -1
}

// formed returns nil when every running node is routed to every other
// running node and the cluster has a meta leader that every running node
// is current with, and otherwise what is missing.
func (v clusterView) formed() error {
	up := 0
	for _, n := range v {
		if n.running {
			up++
		}
	}
	for i, n := range v {
		if n.running && n.routed < up-1 {
			return fmt.Errorf("node %d is routed to %d nodes, want %d", i, n.routed, up-1)
		}
	}
	if v.metaLeader() < 0 {
		return fmt.Errorf("no meta leader")
	}
	for i, n := range v {
		if n.running && !n.metaCurrent {
			return fmt.Errorf("node %d is not current with the meta leader", i)
		}
	}
	return nil
}

// streamCurrent returns nil when stream has a leader and every running
// node's replica of it is current, and otherwise what is missing.
func (v clusterView) streamCurrent(stream string) error {
	if v.streamLeader(stream) < 0 {
		return fmt.Errorf("stream %s has no leader", stream)
	}
	for i, n := range v {
		if n.running && !n.current[stream] {
			return fmt.Errorf("node %d's replica of stream %s is not current", i, stream)
		}
	}
	return nil
}

// waitFormed waits, polling look, until the cluster is formed; with
// streams, until each of them is current on every running node too. It
// fails the test after two setup timeouts (a minute) with what is
// missing.
func waitFormed(tb testing.TB, look func(streams ...string) clusterView, streams ...string) {
	tb.Helper()
	WaitFor(tb, 2*setupTimeout, func() string {
		v := look(streams...)
		if err := v.formed(); err != nil {
			return "testenv: cluster not formed: " + err.Error()
		}
		for _, st := range streams {
			if err := v.streamCurrent(st); err != nil {
				return "testenv: streams not current on every running node: " + err.Error()
			}
		}
		return ""
	})
}
