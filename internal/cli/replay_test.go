package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

// TestReplayCommand writes a tiny log by hand — a drop, then a walk onto
// the treasure — and replays it: the output lines are the claim and the
// proximity answers; --check against an OUT stream the workers never
// filled reports the difference and fails.
func TestReplayCommand(t *testing.T) {
	t.Parallel()
	grPath := testgraph.Path(t, "amsterdam.gr.gz")
	g, err := graph.LoadDIMACS(grPath)
	if err != nil {
		t.Fatal(err)
	}
	part, err := graph.Partition(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, js, prefix := testenv.JetStream(t)
	small := natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: 1000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// The treasure sits on b; the player spawns on a, b's neighbour, and
	// steps onto b.
	b := uint32(500)
	a := g.Neighbors(b)[0].To
	drop := &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: "gold", Node: graph.ID(b), Points: 7}}}
	for k := 0; k < 2; k++ {
		data, _ := event.AppendBatch(nil, []*eventpb.Event{drop})
		if _, err := js.Publish(ctx, topo.InSubject(k), data); err != nil {
			t.Fatal(err)
		}
	}
	moves := []*eventpb.MoveAccepted{
		{Player: "ann", Seq: 1, Path: []uint32{graph.ID(a)}},
		{Player: "ann", Seq: 2, Path: []uint32{graph.ID(a), graph.ID(b)}},
	}
	for _, mv := range moves {
		last := mv.Path[len(mv.Path)-1] - 1
		data, _ := event.AppendBatch(nil, []*eventpb.Event{{Kind: &eventpb.Event_Move{Move: mv}}})
		if _, err := js.Publish(ctx, topo.InSubject(int(part[last])), data); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"TREASURE_NATS_URL": testenv.NATSURL(), "TREASURE_STREAM_PREFIX": prefix,
		"TREASURE_PARTITIONS": "2", "TREASURE_GRAPH": grPath, "TREASURE_RADIUS": "2000", "TREASURE_LOG_LEVEL": "warn"}
	code, out, errs := runCLI(t, "", env, "replay")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	type line struct {
		Type     string          `json:"type"`
		Player   string          `json:"player"`
		Seq      uint64          `json:"seq"`
		Treasure json.RawMessage `json:"treasure"`
		Points   uint64          `json:"points"`
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var x line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, x)
	}
	// Partition order can put the moves in either order; find each.
	var claim, prox1, prox2 *line
	for i := range got {
		switch {
		case got[i].Type == "claim":
			claim = &got[i]
		case got[i].Type == "proximity" && got[i].Seq == 1:
			prox1 = &got[i]
		case got[i].Type == "proximity" && got[i].Seq == 2:
			prox2 = &got[i]
		}
	}
	if len(got) != 3 || claim == nil || prox1 == nil || prox2 == nil {
		t.Fatalf("replay output:\n%s", out)
	}
	if claim.Player != "ann" || claim.Seq != 2 || string(claim.Treasure) != `"gold"` || claim.Points != 7 {
		t.Fatalf("claim %+v", *claim)
	}
	if !strings.Contains(string(prox1.Treasure), `"gold"`) || string(prox2.Treasure) != "null" {
		t.Fatalf("before the claim gold is nearest, after it nothing: %s / %s", prox1.Treasure, prox2.Treasure)
	}
	code, _, errs = runCLI(t, "", env, "replay", "--check")
	if code != 1 {
		t.Fatalf("--check with an empty OUT stream: exit %d (%s), want 1", code, errs)
	}
}
