package event_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// sampleMoves returns n moves shaped like the game's: 36-char player ids,
// growing seqs, paths of 1-16 wire ids up to 2.3 M, current timestamps and
// a few partitions. Deterministic for a seed.
func sampleMoves(n int, seed uint64) []*eventpb.MoveAccepted {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]*eventpb.MoveAccepted, n)
	for i := range out {
		path := make([]uint32, 6+r.IntN(7))
		node := 1 + r.Uint32N(2_300_000)
		for j := range path {
			path[j] = node
			node = 1 + (node+r.Uint32N(50))%2_300_000
		}
		out[i] = &eventpb.MoveAccepted{
			Player:          fmt.Sprintf("6f1c2e0a-%04x-4d2b-9a51-%012x", r.IntN(1<<16), r.Uint64N(1<<48)),
			Seq:             uint64(1000 + i),
			Path:            path,
			IngestUnixNanos: 1_795_000_000_000_000_000 + int64(i)*21_000,
			Partition:       r.Uint32N(16),
			PrevSeq:         uint64(999+i) * uint64(r.IntN(2)),
		}
	}
	return out
}

// moveEvent wraps m in an Event.
func moveEvent(m *eventpb.MoveAccepted) *eventpb.Event {
	return &eventpb.Event{Kind: &eventpb.Event_Move{Move: m}}
}

// marshalBatch is the reference encoding: the generated code's.
func marshalBatch(tb testing.TB, events ...*eventpb.Event) []byte {
	tb.Helper()
	b, err := proto.Marshal(&eventpb.Batch{SchemaVersion: event.SchemaVersion, Events: events})
	if err != nil {
		tb.Fatalf("marshal batch: %v", err)
	}
	return b
}

// sampleEvents returns one event of every kind, every field set.
func sampleEvents() []*eventpb.Event {
	pos := &eventpb.LogPosition{StreamSeq: 123456789, Index: 17}
	return []*eventpb.Event{
		moveEvent(&eventpb.MoveAccepted{Player: "alice", Seq: 7, Path: []uint32{1, 2, 300000, 4294967295}, IngestUnixNanos: -5, Partition: 3, PrevSeq: 6}),
		{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: "gold_1-A", Node: 42, Points: 250, IngestUnixNanos: 1_795_000_000_000_000_000}}},
		{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: "bob", Seq: 9, Treasure: "gold_1-A", Points: 250, Node: 42, Move: pos}}},
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: "bob", Seq: 9, Node: 42,
			Treasure: &eventpb.NearestTreasure{Id: "silver", Node: 43, Distance: 1999}, Move: pos}}},
		{Kind: &eventpb.Event_Proximity{Proximity: &eventpb.ProximityResult{Player: "carol", Seq: 1, Node: 5, Move: pos}}},
		{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{Player: "bob", Score: 250, Rank: 1,
			Cause: &eventpb.ClaimRef{Treasure: "gold_1-A", Move: pos}}}},
		{Kind: &eventpb.Event_Leaderboard{Leaderboard: &eventpb.LeaderboardSnapshot{
			Top: []*eventpb.LeaderboardEntry{
				{Player: "bob", Score: 250, Rank: 1},
				{Player: "dave", Score: 250, Rank: 1},
				{Player: "ünïcødé", Score: 10, Rank: 3},
			},
			Players: 3, Version: 88}}},
	}
}
