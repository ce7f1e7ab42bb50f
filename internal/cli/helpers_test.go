package cli

import (
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
	"treasure/services/proximity"
)

// testStreams creates small streams of the given number of partitions
// under a fresh prefix on the shared NATS server (deleted on cleanup) and
// returns them with the environment that points the CLI at them; a test
// adds what else its command reads.
func testStreams(t *testing.T, partitions int) (jetstream.JetStream, natsjs.Topology, map[string]string) {
	t.Helper()
	_, js, prefix := testenv.JetStream(t)
	small := natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: 1000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: partitions, In: small, Out: small, Upd: small, DLQ: small}
	if err := topo.Ensure(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TREASURE_NATS_URL": testenv.NATSURL(), "TREASURE_STREAM_PREFIX": prefix, "TREASURE_PARTITIONS": strconv.Itoa(partitions)}
	return js, topo, env
}

// publishIn publishes n one-byte messages on partition k's IN subject.
func publishIn(t *testing.T, js jetstream.JetStream, topo natsjs.Topology, k, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := js.Publish(context.Background(), topo.InSubject(k), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
}

// idleConsumer creates partition k's proximity consumer, which reads
// nothing: everything on its subject waits.
func idleConsumer(t *testing.T, js jetstream.JetStream, topo natsjs.Topology, k int) {
	t.Helper()
	if _, err := natsjs.NewConsumer(context.Background(), js, natsjs.ConsumerOptions{Stream: topo.InStream(), Durable: proximity.Durable(topo, k),
		Subjects: []string{topo.InSubject(k)}, DeadLetter: topo.DLQSubject()}); err != nil {
		t.Fatal(err)
	}
}

// goldWalkLog writes a tiny log by hand into testStreams of two partitions
// of amsterdam: a treasure "gold" (7 points) dropped on node b (500) of
// every partition, then player ann spawning on a, b's neighbour, and
// stepping onto b, each move to the partition of its last node. prevSeq
// is the second move's PrevSeq (0: none). The environment also names the
// graph and the radius (2000).
func goldWalkLog(t *testing.T, ctx context.Context, prevSeq uint64) (jetstream.JetStream, natsjs.Topology, map[string]string) {
	t.Helper()
	grPath := testgraph.Path(t, "amsterdam.gr.gz")
	g, err := graph.LoadDIMACS(grPath)
	if err != nil {
		t.Fatal(err)
	}
	part, err := graph.Partition(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	js, topo, env := testStreams(t, 2)
	env["TREASURE_GRAPH"] = grPath
	env["TREASURE_RADIUS"] = "2000"
	b := uint32(500)
	a := g.Neighbors(b)[0].To
	drop := &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: "gold", Node: graph.ID(b), Points: 7}}}
	for k := 0; k < topo.Partitions; k++ {
		data, _ := event.AppendBatch(nil, []*eventpb.Event{drop})
		if _, err := js.Publish(ctx, topo.InSubject(k), data); err != nil {
			t.Fatal(err)
		}
	}
	for _, mv := range []*eventpb.MoveAccepted{
		{Player: "ann", Seq: 1, Path: []uint32{graph.ID(a)}},
		{Player: "ann", Seq: 2, Path: []uint32{graph.ID(a), graph.ID(b)}, PrevSeq: prevSeq},
	} {
		last := mv.Path[len(mv.Path)-1] - 1
		data, _ := event.AppendBatch(nil, []*eventpb.Event{{Kind: &eventpb.Event_Move{Move: mv}}})
		if _, err := js.Publish(ctx, topo.InSubject(int(part[last])), data); err != nil {
			t.Fatal(err)
		}
	}
	return js, topo, env
}
