package loadgen

import (
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/graph"
)

// openRing is how many moves an open-loop player tracks at once (sent and
// not yet settled); a power of two. A player whose next move's slot is
// still taken waits (its move is late, and its latency says so).
const openRing = 32

// maxBatch bounds the moves one frame carries (SPEC: a frame over 4 KiB
// closes the socket; a move of 12 nodes is under 160 bytes).
const maxBatch = 16

// maxTries bounds how often one move is sent again after
// rate_limited/unavailable.
const maxTries = 32

// Slot states.
const (
	stFree   uint8 = iota
	stAwait        // sent, answer due
	stAcked        // acked, update due
	stErr          // answered with an error, waiting for the player's resync
	stResend       // to be sent again at the player's resendAt
	stDone         // settled (answered, or rejected when rej); kept to spot duplicates until reused
)

// oslot is one move of an open-loop player.
type oslot struct {
	seq     uint64
	sched   int64 // scheduled send time, ns after t0
	state   uint8
	updated bool  // its proximity update came (possibly before its ack)
	rej     bool  // stDone: it was rejected
	retry   bool  // its last error was rate_limited/unavailable
	tries   uint8 // sends after the first
	plen    uint8
	retryMs uint32
	path    [maxPath]uint32 // node indexes
}

func (s *oslot) end() uint32 { return s.path[s.plen-1] }

// oplayer is one open-loop player. Its mutex guards everything but the
// fields marked "sender only"; its sender's sender writes to ingest, its two
// reader goroutines read the sockets.
type oplayer struct {
	idx   int // global index: id = prefix + idx
	local int // index in this run
	sh    *sender

	mu   sync.Mutex
	ring [openRing]oslot
	w    walker // at the end of the last move sent

	nextSeq   uint64 // seq of the next new move
	k         int    // index in the schedule of the next new move
	due       int64  // its scheduled time, or noMore
	awaiting  int    // moves sent whose answer is due
	lastAcked uint64 // highest acked seq
	pos       uint32 // end node of lastAcked's move
	hasPos    bool
	srvNode   uint32 // node a discontinuous error named
	hasSrv    bool
	spawned   bool // a first move was sent (the walker has a position)
	lastUpd   uint64
	blocked   bool // an error came: no new move until resync
	full      bool // the next move's slot is taken
	resend    bool // slots in stResend wait for resendAt
	resendAt  int64
	dead      bool
	lastID    uint64 // push socket, reader only

	ingest, push *websocket.Conn

	// sender only
	queued  bool
	heapDue int64
}

func (p *oplayer) slot(seq uint64) *oslot { return &p.ring[seq&(openRing-1)] }

// lowSeq is the oldest seq that may be in the ring.
func (p *oplayer) lowSeq() uint64 {
	if p.nextSeq > openRing {
		return p.nextSeq - openRing
	}
	return 1
}

// free settles a slot (rej: the move was rejected), leaving its seq to
// spot duplicates until the slot is reused. Called with p.mu held.
func (p *oplayer) free(s *oslot, e *engine, rej bool) {
	*s = oslot{seq: s.seq, state: stDone, rej: rej}
	e.inFlight.Add(-1)
	if p.full {
		p.full = false
		p.sh.wake(p.local)
	}
}

// fill builds the player's next due moves (and pending resends) into
// frame, at most maxBatch, and advances its schedule. It returns the frame
// and when the player next needs its sender (noMore: not until a reader
// wakes it). Called by the sender without p.mu held.
func (p *oplayer) fill(e *engine, now int64, frame []byte) ([]byte, int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return frame, 0, noMore
	}
	n := 0
	if p.resend && now >= p.resendAt {
		for seq := p.lowSeq(); seq < p.nextSeq; seq++ {
			s := p.slot(seq)
			if s.seq != seq || s.state != stResend {
				continue
			}
			frame = appendMoveIdx(frame, seq, s.path[:s.plen])
			s.state = stAwait
			p.awaiting++
			e.retries.Add(1)
			n++
		}
		p.resend, p.blocked = false, false
	}
	for !p.blocked && p.due <= now && n < maxBatch {
		seq, path, ok := p.take(e, now, p.due)
		if !ok {
			break
		}
		frame = appendMoveIdx(frame, seq, path)
		n++
		p.k++
		p.due = e.next(p, p.k, p.due)
		if p.due == noMore {
			e.remaining.Add(-1)
		}
	}
	switch {
	case p.resend:
		return frame, n, p.resendAt
	case p.blocked || p.full:
		return frame, n, noMore
	case n == maxBatch && p.due <= now:
		return frame, n, now
	}
	return frame, n, p.due
}

// take makes the player's next new move, scheduled at sched, at now: it
// fills the slot of the next seq with its path (the spawn first, then
// walks), moves the player and counts the move sent. It returns the seq
// and the path (the slot's, valid until the slot is freed), or false,
// marking the player full, while that slot still waits for its answers.
// fill and the HTTP attack's take share it. Called with p.mu held.
func (p *oplayer) take(e *engine, now, sched int64) (uint64, []uint32, bool) {
	s := p.slot(p.nextSeq)
	if s.state != stFree && s.state != stDone {
		p.full = true // free() wakes it
		return 0, nil, false
	}
	*s = oslot{seq: p.nextSeq, sched: sched, state: stAwait}
	var path []uint32
	if p.spawned {
		path = p.w.nextIdx(s.path[:0])
	} else {
		path = append(s.path[:0], p.w.at)
		p.spawned = true
	}
	s.plen = uint8(len(path))
	p.w.acceptIdx(path)
	seq := p.nextSeq
	p.nextSeq++
	p.awaiting++
	e.sent.Add(1)
	e.inFlight.Add(1)
	if now < e.windowEnd {
		e.inWindow.Add(1)
	}
	return seq, path, true
}

// unsettle takes a dead player's unsettled moves out of the engine's
// counts: they never will be settled, and the drain need not wait for
// them (settle counts them as lost). engine.kill and the HTTP attack's
// kill share it. Called with p.mu held.
func (p *oplayer) unsettle(e *engine) {
	for i := range p.ring {
		switch p.ring[i].state {
		case stAcked:
			e.outstanding.Add(-1)
			e.inFlight.Add(-1)
		case stAwait, stErr, stResend:
			e.inFlight.Add(-1)
		}
	}
}

// endEarly drops the moves scheduled after the early end of the
// schedule (OpenOptions.Stop).
func (p *oplayer) endEarly(e *engine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.due != noMore && p.due >= e.endAt.Load() {
		if !p.dead {
			e.remaining.Add(-1)
		}
		p.due = noMore
	}
}

// answer handles one line of the ingest socket.
func (p *oplayer) answer(e *engine, m msg, ok bool, now int64) {
	if !ok || (m.kind != kindAck && m.kind != kindError) || !m.hasSeq {
		e.countErr(errBadMessage)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return
	}
	s := p.slot(m.seq)
	if s.seq != m.seq || s.state == stFree {
		if m.kind == kindError {
			e.countErrCode(m.code)
		}
		if m.seq > 0 && m.seq < p.nextSeq {
			e.duplicated.Add(1)
		} else {
			e.unexpected.Add(1)
		}
		return
	}
	if s.state != stAwait {
		e.duplicated.Add(1)
		return
	}
	p.awaiting--
	if m.kind == kindAck {
		e.acked.Add(1)
		e.recordAck(p.local, now-s.sched)
		if m.seq > p.lastAcked {
			p.lastAcked, p.pos, p.hasPos = m.seq, s.end(), true
		}
		if s.updated {
			p.free(s, e, false)
		} else {
			s.state = stAcked
			e.outstanding.Add(1)
		}
	} else {
		e.countErrCode(m.code)
		if s.updated {
			e.unexpected.Add(1) // an update for a move it rejects
		}
		s.state = stErr
		s.retry = string(m.code) == "rate_limited" || string(m.code) == "unavailable"
		if s.retry && m.retryAfterMs == 0 {
			e.countErr(errNoRetryAfter)
		}
		s.retryMs = uint32(min(max(m.retryAfterMs, 1), 60_000))
		if string(m.code) == "discontinuous" {
			if id, ok := nodeInMessage(m.message); ok {
				if v, ok := graph.Index(id, e.o.Graph.NumNodes()); ok {
					p.srvNode, p.hasSrv = v, true
				}
			}
		}
		p.blocked = true
	}
	if p.blocked && p.awaiting == 0 && !p.resend {
		p.resync(e, now)
	}
}

// resync decides what a blocked player does once none of its moves awaits
// an answer (see the package doc, "Errors"). Called with p.mu held.
func (p *oplayer) resync(e *engine, now int64) {
	first, chain := true, false
	var prevEnd uint32
	var last *oslot
	var wait uint32
	for seq := p.lowSeq(); seq < p.nextSeq; seq++ {
		s := p.slot(seq)
		if s.seq != seq || s.state != stErr {
			continue
		}
		if seq < p.lastAcked {
			e.rejected.Add(1)
			p.free(s, e, true)
			continue
		}
		if first {
			first = false
			chain = s.retry && s.tries < maxTries && (!p.hasPos || s.path[0] == p.pos)
		} else {
			chain = chain && s.path[0] == prevEnd
		}
		if !chain {
			e.rejected.Add(1)
			p.free(s, e, true)
			continue
		}
		s.state = stResend
		s.tries++
		if s.retry {
			wait = max(wait, s.retryMs)
		}
		prevEnd, last = s.end(), s
	}
	if last != nil {
		p.resend = true
		p.resendAt = now + int64(wait)*int64(time.Millisecond)
		p.w.acceptIdx(last.path[:last.plen])
	} else {
		p.blocked = false
		switch {
		case p.hasSrv:
			p.w.place(p.srvNode)
			p.pos, p.hasPos = p.srvNode, true
		case p.hasPos:
			p.w.place(p.pos)
		default:
			p.spawned = false // spawn again
			p.w.place(p.w.spawnNode())
		}
	}
	p.hasSrv = false
	p.sh.wake(p.local)
}

// update handles one line of the push socket.
func (p *oplayer) update(e *engine, m msg, ok bool, now int64) {
	if !ok {
		e.countErr(errBadMessage)
		return
	}
	if m.hasID {
		if m.id != p.lastID+1 {
			e.outOfOrder.Add(1)
		}
		p.lastID = max(p.lastID, m.id)
	}
	if m.kind != kindProximity {
		return
	}
	if !m.hasSeq || !m.hasID {
		e.countErr(errBadMessage)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return
	}
	seq := m.seq
	if seq < p.lastUpd {
		e.reordered.Add(1) // SPEC: a player's updates come in move order
	}
	p.lastUpd = max(p.lastUpd, seq)
	s := p.slot(seq)
	if s.seq != seq {
		if seq > 0 && seq < p.nextSeq {
			e.duplicated.Add(1) // its slot was reused: it was settled long ago
		} else {
			e.unexpected.Add(1)
		}
		return
	}
	switch {
	case s.state == stAcked:
		e.answered.Add(1)
		e.recordUpdate(p.local, now-s.sched)
		e.outstanding.Add(-1)
		p.free(s, e, false)
	case s.updated || (s.state == stDone && !s.rej):
		e.duplicated.Add(1)
	case s.state == stAwait:
		s.updated = true
		e.answered.Add(1)
		e.recordUpdate(p.local, now-s.sched)
	default: // rejected, or waiting to be sent again
		e.unexpected.Add(1)
	}
}

// settle counts, at the end of the run, what the player still holds: moves
// never answered, acked moves never updated, scheduled moves never sent.
// Called once every socket is closed.
func (p *oplayer) settle(e *engine, r *Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.ring {
		s := &p.ring[i]
		switch s.state {
		case stAwait, stErr, stResend:
			if s.updated {
				r.Answered-- // counted, but its ack never came
			}
			r.LostUnanswered++
		case stAcked:
			r.LostNoUpdate++
		}
	}
	for p.due != noMore {
		r.Unsent++
		p.k++
		p.due = e.next(p, p.k, p.due)
	}
}

// appendMoveIdx appends {"type":"move","seq":S,"path":[…]} and a newline
// separator when dst already holds a move.
func appendMoveIdx(dst []byte, seq uint64, path []uint32) []byte {
	if len(dst) > 0 {
		dst = append(dst, '\n')
	}
	dst = append(dst, `{"type":"move","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"path":[`...)
	for i, v := range path {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, uint64(graph.ID(v)), 10)
	}
	return append(dst, "]}"...)
}
