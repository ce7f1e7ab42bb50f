package graph

import (
	"container/heap"
)

// RefTreasure is an active treasure as the reference computation sees it.
type RefTreasure struct {
	ID   string
	Node uint32 // node index in the graph given to Reference
}

// RefAnswer is the proximity of one node: the nearest treasure within the
// radius, or Found false.
type RefAnswer struct {
	Found bool
	ID    string
	Node  uint32
	Dist  uint32
}

// ReferenceDistances is a plain, unbounded Dijkstra from src using
// container/heap: slow and obviously correct. It exists to check the fast
// paths against in tests and in `treasure nearest --check`.
func ReferenceDistances(g *Graph, src uint32) []uint64 {
	const inf = ^uint64(0)
	dist := make([]uint64, g.NumNodes())
	for i := range dist {
		dist[i] = inf
	}
	dist[src] = 0
	q := &refQueue{{node: src}}
	for q.Len() > 0 {
		it := heap.Pop(q).(refItem)
		if it.dist != dist[it.node] {
			continue
		}
		for _, a := range g.Neighbors(it.node) {
			if nd := it.dist + uint64(a.Len); nd < dist[a.To] {
				dist[a.To] = nd
				heap.Push(q, refItem{node: a.To, dist: nd})
			}
		}
	}
	return dist
}

// Reference answers the proximity rule of SPEC.md for node v by brute
// force: a full Dijkstra from v, then the treasure with the smallest
// distance within radius, ties to the smaller id in byte order.
func Reference(g *Graph, treasures []RefTreasure, radius uint32, v uint32) RefAnswer {
	dist := ReferenceDistances(g, v)
	var best RefAnswer
	for _, t := range treasures {
		d := dist[t.Node]
		if d > uint64(radius) {
			continue
		}
		if !best.Found || d < uint64(best.Dist) || (d == uint64(best.Dist) && t.ID < best.ID) {
			best = RefAnswer{Found: true, ID: t.ID, Node: t.Node, Dist: uint32(d)}
		}
	}
	return best
}

type refItem struct {
	node uint32
	dist uint64
}

type refQueue []refItem

func (q refQueue) Len() int           { return len(q) }
func (q refQueue) Less(i, j int) bool { return q[i].dist < q[j].dist }
func (q refQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *refQueue) Push(x any)        { *q = append(*q, x.(refItem)) }
func (q *refQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
