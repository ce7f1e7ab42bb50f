package push

import (
	"github.com/prometheus/client_golang/prometheus"
)

// MaxHeld is how many updates of one player push holds back waiting for
// a missing predecessor before it gives up on it: one more held update
// releases everything held, in move order (docs/pipeline.md, "Push order").
const MaxHeld = 64

// Push order. SPEC sends a player's updates in move order, but a player's
// consecutive moves can end in different partitions, whose proximity
// workers publish to P_OUT independently: move S+1's result can come
// before move S's. Every proximity result and claim carries prev_seq, the
// seq of the player's move accepted just before its move (0 for the
// first move, and in logs older than schema revision 4). Per player the
// hub keeps last, the highest seq of a proximity result delivered, and:
//
//   - a result or claim with prev_seq ≤ last is ready: delivered at once
//     when nothing of the player is held;
//   - one with prev_seq > last waits, with every later update of the
//     player (claims, scores), in the player's hold queue;
//   - after each arrival the queue releases, scanning it in arrival
//     order, every ready result or claim, and a score once everything
//     before it has gone; releasing a result raises last and may make
//     more ready, so the scan repeats until nothing moves;
//   - when more than MaxHeld updates are held, the missing predecessor
//     is taken as lost (a move dead-lettered after a later one was
//     stored, a log from before ingest held a player's later moves back
//     behind an unsettled one, or a player split between ingest instances
//     whose states disagreed): last jumps to the smallest waiting prev_seq, repeatedly,
//     until the queue is empty, releasing everything in move order.
//     treasure_push_order_forced_releases_total counts the jumps.
//
// Ids are given at release, so they follow the delivered order. All of it
// is a function of P_OUT's contents alone: every push instance, and one
// rebuilt from the stream, delivers the same order with the same ids.
// Held updates are not in the resume ring yet (they have no id).
//
// The common case, nothing held and the update ready, touches none of
// this and allocates nothing; the queue is allocated on a player's first
// hold and reused.
type holdQueue struct {
	items []heldItem
	buf   []byte // the held records, at heldItem.off
	live  int    // items not yet released
}

// heldItem is one held update: its record (appendRecord) and what
// ordering needs of it.
type heldItem struct {
	kind      byte // record kind (recProximity…)
	seq, prev uint64
	off, n    int
	done      bool
}

// orderMetrics counts the reordering's work.
type orderMetrics struct {
	held   prometheus.Counter
	forced prometheus.Counter
}

func newOrderMetrics() orderMetrics {
	return orderMetrics{
		held: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_order_held_total",
			Help: "Player updates held back because an earlier move's proximity result had not arrived yet (delivered later, in move order)."}),
		forced: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_order_forced_releases_total",
			Help: "Times a player's held updates passed a predecessor that never came, after more than MaxHeld were held."}),
	}
}

// ready reports whether u may be delivered now by ordering alone.
func (p *player) ready(u *update) bool {
	if p.hold != nil && p.hold.live > 0 {
		return false
	}
	return u.kind == recScore || u.prev <= p.last
}

// emitted records that an update of kind with seq went out.
func (p *player) emitted(kind byte, seq uint64) {
	if (kind == recProximity || kind == recProximityFound) && seq > p.last {
		p.last = seq
	}
}

// hold queues u behind the player's held updates and releases what is
// ready. Callers hold the player's shard lock; the feed goroutine only.
func (h *hub) hold(p *player, u *update) {
	if u.kind == recScore || u.prev > p.last {
		h.order.held.Inc() // waits (else it goes with this very call)
	}
	q := p.hold
	if q == nil {
		q = &holdQueue{}
		p.hold = q
	}
	off := len(q.buf)
	q.buf = appendRecord(q.buf, u)
	q.items = append(q.items, heldItem{kind: u.kind, seq: u.seq, prev: u.prev, off: off, n: len(q.buf) - off})
	q.live++
	h.release(p)
	if q.live <= MaxHeld {
		return
	}
	for q.live > 0 {
		h.order.forced.Inc()
		min := uint64(0)
		for i := range q.items {
			it := &q.items[i]
			if !it.done && it.kind != recScore && it.prev > p.last && (min == 0 || it.prev < min) {
				min = it.prev
			}
		}
		if min == 0 {
			break // cannot happen: release empties a queue of ready updates
		}
		p.last = min
		h.release(p)
	}
}

// release emits every held update that ordering allows, in queue order,
// repeating while releases make more ready.
func (h *hub) release(p *player) {
	q := p.hold
	for moved := true; moved && q.live > 0; {
		moved = false
		blocked := false // an update before this one is still held
		for i := range q.items {
			it := &q.items[i]
			if it.done {
				continue
			}
			ok := it.prev <= p.last
			if it.kind == recScore {
				ok = !blocked
			}
			if !ok {
				blocked = true
				continue
			}
			it.done = true
			q.live--
			moved = true
			h.emitRecord(p, q.buf[it.off:it.off+it.n], it.kind, it.seq)
		}
	}
	if q.live == 0 {
		q.items, q.buf = q.items[:0], q.buf[:0]
		return
	}
	// Drop the released items from the front, keeping the order.
	n := 0
	for _, it := range q.items {
		if !it.done {
			q.items[n] = it
			n++
		}
	}
	q.items = q.items[:n]
}

// emitRecord gives the held record rec the player's next id, retains it
// and queues its JSON to the player's sockets.
func (h *hub) emitRecord(p *player, rec []byte, kind byte, seq uint64) {
	n := p.next
	p.next++
	p.emitted(kind, seq)
	p.ring.push(rec, h.ringSize)
	if len(p.conns) > 0 {
		var ok bool
		if h.scratch, ok = recordJSON(h.scratch[:0], n, rec); ok {
			for _, c := range p.conns {
				c.send(h.scratch, h.boardVer, &h.frame)
			}
		}
	}
}
