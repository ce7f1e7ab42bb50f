package graph

import "math"

// Inf is the distance of a node not reached.
const Inf = math.MaxUint32

// Search is a reusable, bounded multi-source Dijkstra over one graph size.
// Its arrays are allocated once and reset in time proportional to the nodes
// a run touched, so a run that settles a thousand nodes costs a thousand
// nodes, not N. The heap holds packed (distance<<32 | node) words.
//
// A Search is not safe for concurrent use; give each goroutine its own.
type Search struct {
	dist    []uint32
	touched []uint32
	heap    packedHeap
}

// NewSearch returns a workspace for graphs of up to n nodes.
func NewSearch(n int) *Search {
	d := make([]uint32, n)
	for i := range d {
		d[i] = Inf
	}
	return &Search{dist: d}
}

// Dist returns v's distance from the last run's sources, or Inf when v was
// not reached within its radius. Valid until the next run.
func (s *Search) Dist(v uint32) uint32 { return s.dist[v] }

// Reached returns the nodes the last run reached (settled or not), in no
// particular order. The slice is reused by the next run.
func (s *Search) Reached() []uint32 { return s.touched }

func (s *Search) reset() {
	for _, v := range s.touched {
		s.dist[v] = Inf
	}
	s.touched = s.touched[:0]
	s.heap = s.heap[:0]
}

// Run settles every node within radius of the nearest source, in order of
// distance (ties by node index), calling visit for each with its distance.
// visit may be nil. Sources all start at distance 0. When visit returns
// false the run stops early; distances of unsettled nodes are then upper
// bounds.
func (s *Search) Run(g *Graph, sources []uint32, radius uint32, visit func(v, d uint32) bool) {
	s.reset()
	for _, v := range sources {
		if s.dist[v] != 0 {
			if s.dist[v] == Inf {
				s.touched = append(s.touched, v)
			}
			s.dist[v] = 0
			s.heap.push(uint64(v))
		}
	}
	for len(s.heap) > 0 {
		top := s.heap.pop()
		d, v := uint32(top>>32), uint32(top)
		if d != s.dist[v] {
			continue // stale entry
		}
		if visit != nil && !visit(v, d) {
			return
		}
		for _, a := range g.Arcs[g.Offsets[v]:g.Offsets[v+1]] {
			nd := uint64(d) + uint64(a.Len)
			if nd > uint64(radius) {
				continue
			}
			if old := s.dist[a.To]; uint32(nd) < old {
				if old == Inf {
					s.touched = append(s.touched, a.To)
				}
				s.dist[a.To] = uint32(nd)
				s.heap.push(nd<<32 | uint64(a.To))
			}
		}
	}
}
