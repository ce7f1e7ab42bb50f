// Package history rebuilds a game's state from the pipeline's log for
// analysts: the state as it stood at a point of the log (leaderboard,
// players' scores, ranks and positions, active treasures), what-if replays
// of the same moves under another radius, treasure set or scoring, and the
// comparison of a rebuild with the live stores (PostgreSQL and Redis).
//
// A Rebuild applies the messages of the IN stream (P_IN) to one
// game.Engine per partition, over the partition's subgraph, with the rules
// a proximity worker applies (services/proximity: duplicate moves skipped
// by seq, claims on the move's last node in id order, the proximity answer
// after the claims, drops and claim notices through each partition's own
// subject). Replayed exactly (Options zero but for the graph), its claims
// and proximity answers are those the live workers published; the
// package's tests hold it to that against a live run.
//
// "Who reached that score first" — the ranker's tie order — is a position
// in P_OUT, which the IN stream does not hold: Positions reads it from
// P_OUT (the position of each move's proximity result), so that ranks
// rebuilt here are the ranker's.
package history

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// Options configures a Rebuild. Graph, Part and Topology are required; the
// rest left zero rebuilds the live run exactly (given the live run's radius).
type Options struct {
	// Graph is the whole road graph; Part its partition assignment,
	// graph.Partition(Graph, Topology.Partitions), as the live run had it.
	Graph    *graph.Graph
	Part     []uint32
	Topology natsjs.Topology
	// Radius is the proximity radius (live: TREASURE_RADIUS; a what-if may
	// choose another).
	Radius uint32
	// WhatIf makes the rebuild decide its own claim notices: a claim made
	// by one partition deactivates the treasure in every other partition
	// at once, and the notices the live workers wrote into the log are
	// ignored (they are the live run's claims, not this rebuild's). Claims,
	// scores and ranks do not depend on when a notice arrives (a claim is
	// decided by the partition owning the treasure's node); only the
	// proximity answers of other partitions in the moments after a claim
	// may differ from the live ones.
	WhatIf bool
	// Treasures, with ReplaceDrops, replace the log's drops: they are all
	// dropped before the first input, and the drops in the log are
	// ignored (a what-if; implies WhatIf semantics for notices).
	Treasures    []game.Treasure
	ReplaceDrops bool
	// Emit, when set, receives every output in the order a live worker
	// publishes it (Claim events, then the move's ProximityResult), with
	// the partition that produced it. An error stops Apply.
	Emit func(part int, ev *eventpb.Event) error
}

// Pos is a position in a stream: the message's sequence and the event's
// index in its batch.
type Pos struct {
	Seq   uint64 `json:"seq"`
	Index uint32 `json:"index"`
}

// Less orders positions as the log does.
func (p Pos) Less(q Pos) bool { return p.Seq < q.Seq || p.Seq == q.Seq && p.Index < q.Index }

// Claim is a treasure claimed in the rebuild.
type Claim struct {
	Treasure string `json:"treasure"`
	Player   string `json:"player"`
	Seq      uint64 `json:"seq"` // the claiming move's seq
	Points   uint64 `json:"points"`
	Node     uint32 `json:"node"` // wire id
	Move     Pos    `json:"move"` // the claiming move's IN position
	// Nth is the claim's place among its move's claims (0-based, in
	// treasure id order).
	Nth       int `json:"-"`
	Partition int `json:"partition"`
}

// Player is what the rebuild knows of a player: their last applied move.
type Player struct {
	ID    string `json:"player"`
	Seq   uint64 `json:"seq"`  // of the last applied move
	Node  uint32 `json:"node"` // its last node (wire id): where the player stands
	Moves int    `json:"moves"`
	Move  Pos    `json:"-"` // its IN position
}

// Treasure is an active treasure, as its owning partition holds it.
type Treasure struct {
	ID      string `json:"id"`
	Node    uint32 `json:"node"` // wire id
	Points  uint64 `json:"points"`
	Dropped Pos    `json:"dropped"` // IN position of the drop its owner applied (zero for --treasures)
}

// Rebuild is the game rebuilt from IN messages applied in stream order.
// It is not safe for concurrent use.
type Rebuild struct {
	o     Options
	parts []*partState
	inPfx string

	players map[string]*Player
	claims  []Claim
	active  map[string]*Treasure

	// Counts and the last message applied.
	Moves, Drops, Notices int
	LastSeq               uint64
	LastTime              time.Time

	rd   event.Reader
	mv   event.Move
	ev   eventpb.Event
	clms []game.Claimed
}

type partState struct {
	k    int
	e    *game.Engine
	seqs map[string]game.SeqWindow // the live worker's rule for repeated and late moves
}

// New checks o and builds every partition's subgraph and engine (for
// ReplaceDrops, with Treasures dropped).
func New(o Options) (*Rebuild, error) {
	if o.Graph == nil {
		return nil, errors.New("history: a graph is required")
	}
	if err := o.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if len(o.Part) != o.Graph.NumNodes() {
		return nil, fmt.Errorf("history: partition assignment for %d nodes, graph has %d", len(o.Part), o.Graph.NumNodes())
	}
	if o.Radius == 0 {
		return nil, errors.New("history: radius must be > 0")
	}
	if o.ReplaceDrops {
		o.WhatIf = true
	}
	r := &Rebuild{o: o, inPfx: o.Topology.Prefix + ".in.", players: map[string]*Player{}, active: map[string]*Treasure{}}
	for k := 0; k < o.Topology.Partitions; k++ {
		sub, err := graph.Subgraph(o.Graph, o.Part, uint32(k), o.Radius)
		if err != nil {
			return nil, fmt.Errorf("history: partition %d: %w", k, err)
		}
		p := &partState{k: k, e: game.NewEngine(sub, o.Radius), seqs: map[string]game.SeqWindow{}}
		r.parts = append(r.parts, p)
	}
	if o.ReplaceDrops {
		for _, t := range o.Treasures {
			if int(t.Node) >= o.Graph.NumNodes() {
				return nil, fmt.Errorf("history: treasure %s: node %d does not exist", t.ID, graph.ID(t.Node))
			}
			if _, dup := r.active[t.ID]; dup {
				continue // the first of a repeated id counts, as for drops
			}
			r.active[t.ID] = &Treasure{ID: t.ID, Node: graph.ID(t.Node), Points: uint64(t.Points)}
		}
		for _, p := range r.parts {
			p.e.DropAll(o.Treasures)
		}
	}
	return r, nil
}

// Partition returns the partition of an IN subject, or -1.
func (r *Rebuild) Partition(subject string) int {
	s, ok := strings.CutPrefix(subject, r.inPfx)
	if !ok {
		return -1
	}
	k, err := strconv.Atoi(s)
	if err != nil || k < 0 || k >= len(r.parts) {
		return -1
	}
	return k
}

// Apply applies one message of the IN stream, as the worker of its
// partition does. Messages must come in stream order; a message that is
// not on a partition's subject, or not an event batch, is skipped (a live
// worker dead-letters the latter without effect).
func (r *Rebuild) Apply(m natsjs.Msg) error {
	k := r.Partition(m.Subject)
	r.LastSeq, r.LastTime = m.Seq, m.Time
	if k < 0 {
		return nil
	}
	p := r.parts[k]
	if err := r.rd.Reset(m.Data); err != nil {
		return nil
	}
	g := r.o.Graph
	for r.rd.Next() {
		switch r.rd.Kind() {
		case event.KindMove:
			if err := r.rd.Move(&r.mv); err != nil {
				return fmt.Errorf("IN seq %d event %d: %w", m.Seq, r.rd.Index(), err)
			}
			mv := &r.mv
			if len(mv.Path) == 0 {
				continue
			}
			if p.seqs[string(mv.Player)].Applied(mv.Seq) {
				continue
			}
			lastID := mv.Path[len(mv.Path)-1]
			last, ok := graph.Index(uint64(lastID), g.NumNodes())
			if !ok {
				continue
			}
			var prox game.Proximity
			var err error
			r.clms, prox, err = p.e.Move(last, r.clms[:0])
			if err != nil {
				continue // not this partition's node: the live worker skips it too
			}
			player := string(mv.Player)
			w := p.seqs[player]
			w.Apply(mv.Seq)
			p.seqs[player] = w
			r.Moves++
			pos := Pos{Seq: m.Seq, Index: uint32(r.rd.Index())}
			pl := r.players[player]
			if pl == nil {
				pl = &Player{ID: player}
				r.players[player] = pl
			}
			pl.Moves++
			if mv.Seq > pl.Seq {
				pl.Seq, pl.Node, pl.Move = mv.Seq, lastID, pos
			}
			lp := &eventpb.LogPosition{StreamSeq: pos.Seq, Index: pos.Index}
			for i, c := range r.clms {
				cl := Claim{Treasure: c.ID, Player: player, Seq: mv.Seq, Points: uint64(c.Points), Node: graph.ID(c.Node), Move: pos, Nth: i, Partition: k}
				r.claims = append(r.claims, cl)
				delete(r.active, c.ID)
				if r.o.WhatIf {
					for _, q := range r.parts {
						if q != p {
							q.e.Claim(c.ID)
						}
					}
				}
				if r.o.Emit != nil {
					ev := &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: player, Seq: mv.Seq, Treasure: c.ID,
						Points: uint64(c.Points), Node: graph.ID(c.Node), Move: lp, PrevSeq: mv.PrevSeq}}}
					if err := r.o.Emit(k, ev); err != nil {
						return err
					}
				}
			}
			if r.o.Emit != nil {
				pr := &eventpb.ProximityResult{Player: player, Seq: mv.Seq, Node: lastID, Move: lp, IngestUnixNanos: mv.IngestUnixNanos, PrevSeq: mv.PrevSeq}
				if prox.Found {
					pr.Treasure = &eventpb.NearestTreasure{Id: prox.ID, Node: graph.ID(prox.Node), Distance: uint64(prox.Distance)}
				}
				if err := r.o.Emit(k, &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: pr}}); err != nil {
					return err
				}
			}
		case event.KindDrop:
			if r.o.ReplaceDrops {
				continue
			}
			if err := r.rd.Event(&r.ev); err != nil {
				return fmt.Errorf("IN seq %d event %d: %w", m.Seq, r.rd.Index(), err)
			}
			d := r.ev.GetDrop()
			node, ok := graph.Index(uint64(d.GetNode()), g.NumNodes())
			if !ok || d.GetPoints() == 0 || d.GetPoints() > 1<<31-1 {
				continue
			}
			added := p.e.Drop(game.Treasure{ID: d.GetId(), Node: node, Points: uint32(d.GetPoints())})
			if added && int(r.o.Part[node]) == k {
				// The owner's copy of the drop: from here on moves can claim it.
				r.Drops++
				r.active[d.GetId()] = &Treasure{ID: d.GetId(), Node: d.GetNode(), Points: d.GetPoints(), Dropped: Pos{Seq: m.Seq, Index: uint32(r.rd.Index())}}
			}
		case event.KindClaim:
			if r.o.WhatIf {
				continue // the live run's notices; this rebuild makes its own
			}
			if err := r.rd.Event(&r.ev); err != nil {
				return fmt.Errorf("IN seq %d event %d: %w", m.Seq, r.rd.Index(), err)
			}
			if p.e.Claim(r.ev.GetClaim().GetTreasure()) {
				r.Notices++
			}
		}
	}
	return nil
}

// Claims returns the claims made so far, in the order they were decided
// (IN order). The slice is the rebuild's own: do not modify it.
func (r *Rebuild) Claims() []Claim { return r.claims }

// Players returns every player with an applied move, keyed by id.
func (r *Rebuild) Players() map[string]*Player { return r.players }

// Active returns the active treasures (dropped on their owner partition's
// subject and not claimed), keyed by id.
func (r *Rebuild) Active() map[string]*Treasure { return r.active }

// Nearest answers the proximity of wire node id now, from the partition
// that owns it (what a move ending there would be told, before claims).
func (r *Rebuild) Nearest(id uint32) (game.Proximity, error) {
	v, ok := graph.Index(uint64(id), r.o.Graph.NumNodes())
	if !ok {
		return game.Proximity{}, fmt.Errorf("node %d does not exist", id)
	}
	return r.parts[r.o.Part[v]].e.Nearest(v)
}
