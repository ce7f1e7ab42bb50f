package proximity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// ReplayOptions configures a Replay. Graph, Part, Topology and JS are
// required; Graph, Part and Radius must be those of the live run for the
// replay to reproduce it.
type ReplayOptions struct {
	// Graph is the whole road graph; Part its partition assignment,
	// graph.Partition(Graph, Topology.Partitions).
	Graph *graph.Graph
	Part  []uint32
	// Partitions lists the partitions to replay, in that order; empty
	// means all, in ascending order.
	Partitions []int
	// Radius is the proximity radius.
	Radius   uint32
	Topology natsjs.Topology
	JS       jetstream.JetStream
	// Read reads a partition's log subject; nil means natsjs.Replay.
	// archive.ReplayAll (through a closure naming the archive) reads what
	// retention trimmed from the archive.
	Read func(ctx context.Context, js jetstream.JetStream, o natsjs.ReplayOptions, h natsjs.Handler) error
}

// Replay reads each partition's log subject P.in.<k> from the start into
// a fresh engine over the partition's subgraph, applying every input
// exactly as a live worker does, and hands each output event (Claim and
// ProximityResult events, in the order a live worker publishes them) to
// emit with its partition. Partitions are replayed one after another; the
// outputs of one partition come in log order. Replay publishes nothing
// and leaves no state on the server. It stops at the first error of emit
// or of the read (wrapped with the partition; errors.Is finds emit's), and
// returns nil once every partition's subject has been read to its end.
func Replay(ctx context.Context, o ReplayOptions, emit func(part int, ev *eventpb.Event) error) error {
	if o.Graph == nil || o.JS == nil || emit == nil {
		return errors.New("proximity replay: graph, JetStream and emit are required")
	}
	if err := o.Topology.Validate(); err != nil {
		return fmt.Errorf("proximity replay: %w", err)
	}
	if len(o.Part) != o.Graph.NumNodes() {
		return fmt.Errorf("proximity replay: partition assignment for %d nodes, graph has %d", len(o.Part), o.Graph.NumNodes())
	}
	parts := o.Partitions
	if len(parts) == 0 {
		for k := 0; k < o.Topology.Partitions; k++ {
			parts = append(parts, k)
		}
	}
	seen := map[int]bool{}
	for _, k := range parts {
		if k < 0 || k >= o.Topology.Partitions || seen[k] {
			return fmt.Errorf("proximity replay: partition %d: want distinct partitions in 0..%d", k, o.Topology.Partitions-1)
		}
		seen[k] = true
	}
	// The partitions share a Worker that only carries the options: in the
	// replay mode apply neither publishes nor counts.
	w := &Worker{o: Options{Graph: o.Graph, Part: o.Part, Partitions: parts, Radius: o.Radius, Topology: o.Topology, JS: o.JS, Log: slog.New(slog.DiscardHandler)}}
	t := o.Topology
	read := o.Read
	if read == nil {
		read = natsjs.Replay
	}
	for _, k := range parts {
		sub, err := graph.Subgraph(o.Graph, o.Part, uint32(k), o.Radius)
		if err != nil {
			return fmt.Errorf("proximity replay: partition %d: %w", k, err)
		}
		p := &partition{w: w, k: k, sub: sub, e: game.NewEngine(sub, o.Radius), seqs: make(map[string]game.SeqWindow)}
		p.emit = func(ev *eventpb.Event) error { return emit(k, ev) }
		err = read(ctx, o.JS, natsjs.ReplayOptions{Stream: t.InStream(), Subjects: []string{t.InSubject(k)}}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if err := p.apply(m, modeReplay); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("proximity replay: partition %d: %w", k, err)
		}
	}
	return nil
}
