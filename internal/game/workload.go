package game

import (
	"math/rand/v2"

	"treasure/internal/graph"
)

// Workload is a reproducible stream of valid moves for benchmarks and load
// tests: players walking the graph at random, each move 6–12 nodes long
// (SPEC's story) and continuing where the player's last move ended. It is
// stored flat: Paths holds every move's wire ids back to back and
// Offsets[i]:Offsets[i+1] is move i.
type Workload struct {
	Players int
	Player  []uint32 // per move: the player's index
	Seq     []uint64 // per move
	Offsets []uint32 // len moves+1
	Paths   []uint64 // wire ids
}

// Moves returns the number of moves.
func (w *Workload) Moves() int { return len(w.Player) }

// Path returns move i's path (wire ids); the slice aliases w.
func (w *Workload) Path(i int) []uint64 { return w.Paths[w.Offsets[i]:w.Offsets[i+1]] }

// NewWorkload builds moves for players walking g, round-robin over the
// players, from a seed. Players spawn on nodes that have a neighbour and
// walk without stepping back where they can. Moves are valid in order:
// replaying them from fresh player state accepts every one.
func NewWorkload(g *graph.Graph, players, moves int, seed uint64) *Workload {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n := g.NumNodes()
	at := make([]uint32, players)
	prev := make([]uint32, players)
	seq := make([]uint64, players)
	for p := range at {
		v := uint32(r.IntN(n))
		for g.Degree(v) == 0 {
			v = uint32(r.IntN(n))
		}
		at[p], prev[p] = v, graph.NoNode
	}
	w := &Workload{Players: players, Offsets: make([]uint32, 1, moves+1)}
	for i := 0; i < moves; i++ {
		p := i % players
		seq[p] += 1 + uint64(r.IntN(2)) // gaps in seq are allowed
		w.Player = append(w.Player, uint32(p))
		w.Seq = append(w.Seq, seq[p])
		v := at[p]
		w.Paths = append(w.Paths, uint64(graph.ID(v)))
		for steps := 5 + r.IntN(7); steps > 0; steps-- {
			arcs := g.Neighbors(v)
			next := arcs[r.IntN(len(arcs))].To
			if next == prev[p] && len(arcs) > 1 {
				next = arcs[r.IntN(len(arcs))].To
			}
			prev[p], v = v, next
			w.Paths = append(w.Paths, uint64(graph.ID(v)))
		}
		at[p] = v
		w.Offsets = append(w.Offsets, uint32(len(w.Paths)))
	}
	return w
}

// Core is the hot loop of one proximity worker that also validates, as
// the benchmarks measure it: validate the move against the player's state,
// advance the player, apply it to the engine (claims, then proximity).
// It reuses its buffers; Step allocates nothing unless the move claims.
type Core struct {
	G       *graph.Graph
	E       *Engine
	Players []Player
	idx     [MaxPath]uint32
	claims  []Claimed

	Accepted, Rejected, Claims, Found uint64
}

// NewCore returns a Core over engine e for the given number of players.
func NewCore(e *Engine, players int) *Core {
	return &Core{G: e.Graph(), E: e, Players: make([]Player, players), claims: make([]Claimed, 0, 8)}
}

// Step evaluates one move. It returns the validation error, if any.
func (c *Core) Step(player uint32, seq uint64, path []uint64) *Error {
	p := &c.Players[player]
	idx := c.idx[:min(len(path), MaxPath)] // longer paths fail before idx is written
	if err := ValidateMove(c.G, *p, seq, path, idx); err != nil {
		c.Rejected++
		return err
	}
	last := idx[len(path)-1]
	*p = p.Advance(seq, last)
	claims, prox, err := c.E.Move(last, c.claims[:0])
	if err != nil {
		c.Rejected++
		return Errorf(CodeUnknownNode, "%v", err)
	}
	c.claims = claims
	c.Accepted++
	c.Claims += uint64(len(claims))
	if prox.Found {
		c.Found++
	}
	return nil
}

// Reset forgets every player's state, so a workload can be replayed.
func (c *Core) Reset() { clear(c.Players) }
