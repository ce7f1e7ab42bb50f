package push

import (
	"bytes"
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// nShards is the number of independently locked parts of the hub: the
// feed locks one per player update, and a socket's registration locks
// only its player's shard.
const nShards = 64

// boardInterval is the shortest time between two leaderboards sent to
// one socket (SPEC: at most once a second), and the period of the hub's
// leaderboard ticker.
const boardInterval = time.Second

// hub holds every player's update state and the sockets listening to
// them. It is safe for concurrent use; deliver and broadcast are called
// by the feed goroutine only.
//
// Lock order: shard.mu, then conn.mu. Nothing blocks while holding
// either: queuing to a socket appends to its buffer or marks it slow.
//
// Leaderboards are not pushed to the sockets when they arrive: broadcast
// only makes the snapshot the hub's latest (with a new version when its
// top differs from the previous one). A socket takes the latest when it
// writes a frame of updates and is due (its last leaderboard went out at
// least boardInterval ago) and the latest is newer than what it last
// received; once per boardInterval the ticker (runBoards) wakes the
// sockets that are due and behind but had no update to carry it. So a
// socket gets at most one leaderboard per boardInterval, only a changed
// one, in the same frame as its updates where it has any, and the feed
// never visits every socket.
type hub struct {
	seed     maphash.Seed
	shards   [nShards]shard
	ringSize int
	maxConns int // sockets per player
	// onReplace, when set, is called when a socket is closed as
	// "replaced" (under the shard lock: it must not block).
	onReplace func()

	scratch []byte // the feed's record and JSON buffer
	frame   []byte // the feed's direct-write frame buffer
	direct  bool   // the feed writes to idle sockets itself (conn.send); the feed's own
	order   orderMetrics

	mu     sync.Mutex // guards closed and wg.Add against Run's shutdown
	closed bool
	wg     sync.WaitGroup // every socket's goroutines

	epoch    time.Time                // the origin of now
	latest   atomic.Pointer[snapshot] // the latest leaderboard; nil before the first
	boardVer uint64                   // the feed's copy of latest's version
}

// snapshot is a leaderboard message (shared, immutable) and its version:
// 1, 2, … for each snapshot whose top differs from the one before.
type snapshot struct {
	msg []byte
	ver uint64
}

type shard struct {
	mu      sync.Mutex
	players map[string]*player
	conns   []*conn // every registered socket of the shard's players
}

// player is one player's update state: the id its next update gets and
// its most recent updates, for resume, plus its live sockets, and what
// keeps its updates in move order (order.go).
type player struct {
	next  uint64 // id of the next update; ids start at 1
	ring  ring
	conns []*conn
	last  uint64     // highest seq of a proximity result delivered
	hold  *holdQueue // updates waiting for an earlier move's result; nil until the first
}

func newHub(ringSize, maxConns int) *hub {
	h := &hub{seed: maphash.MakeSeed(), ringSize: ringSize, maxConns: maxConns, epoch: time.Now(), order: newOrderMetrics()}
	for i := range h.shards {
		h.shards[i].players = make(map[string]*player)
	}
	return h
}

func (h *hub) shard(id string) *shard {
	return &h.shards[maphash.String(h.seed, id)%nShards]
}

// get returns the state of player id, creating it. Callers hold sh.mu.
func (sh *shard) get(id string) *player {
	p := sh.players[id]
	if p == nil {
		p = &player{next: 1}
		sh.players[id] = p
	}
	return p
}

// deliver gives u the next id of player id, retains it, and queues its
// JSON to the player's sockets — or, when an earlier move's result is
// still missing, holds it until it is (order.go). Called by the feed
// goroutine only.
func (h *hub) deliver(id string, u *update) {
	sh := h.shard(id)
	sh.mu.Lock()
	p := sh.get(id)
	if !p.ready(u) {
		h.hold(p, u)
		sh.mu.Unlock()
		return
	}
	n := p.next
	p.next++
	p.emitted(u.kind, u.seq)
	h.scratch = appendRecord(h.scratch[:0], u)
	p.ring.push(h.scratch, h.ringSize)
	if len(p.conns) > 0 {
		h.scratch = appendJSON(h.scratch[:0], n, u)
		for _, c := range p.conns {
			c.send(h.scratch, h.boardVer, &h.frame)
		}
	}
	sh.mu.Unlock()
}

// broadcast makes msg, a leaderboard message, the latest one, unless
// its top is the same as the latest's. msg must not change afterwards.
// It visits no socket (see hub). Called by the feed goroutine only.
func (h *hub) broadcast(msg []byte) {
	if b := h.latest.Load(); b != nil && bytes.Equal(b.msg, msg) {
		return // the top did not change
	}
	h.boardVer++
	h.latest.Store(&snapshot{msg: msg, ver: h.boardVer})
}

// now is the hub's monotonic clock, in nanoseconds since it was made.
func (h *hub) now() int64 {
	return int64(time.Since(h.epoch))
}

// runBoards is the leaderboard ticker: every boardInterval, until ctx
// is done, it wakes the sockets that are due a newer leaderboard.
func (h *hub) runBoards(ctx context.Context) {
	t := time.NewTicker(boardInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.offerBoard()
		}
	}
}

// offerBoard wakes every socket that is due a leaderboard and behind the
// latest one: its writer then sends it, alone or with what has queued.
func (h *hub) offerBoard() {
	b := h.latest.Load()
	if b == nil {
		return
	}
	now := h.now()
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, c := range sh.conns {
			c.offerBoard(b.ver, now)
		}
		sh.mu.Unlock()
	}
}

// register adds c to its player's sockets and, when resume, returns the
// retained updates with ids above after as JSON, newline-joined (none
// when after is at or beyond the newest id). Registration and the copy
// happen under the player's lock, so every later update goes to c's
// queue and every earlier one is in the backlog (when retained): none is
// lost or sent twice. It returns ok false when the hub is closed.
func (h *hub) register(c *conn, after uint64, resume bool) (backlog []byte, ok bool) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, false
	}
	h.wg.Add(1)
	h.mu.Unlock()

	sh := h.shard(c.player)
	sh.mu.Lock()
	p := sh.get(c.player)
	if len(p.conns) >= h.maxConns {
		// The oldest socket makes room for the newest.
		old := p.conns[0]
		sh.remove(p, old)
		// Counted before the kick, so that whoever sees the close sees
		// the count.
		if h.onReplace != nil {
			h.onReplace()
		}
		old.kick(websocket.ClosePolicyViolation, "replaced")
	}
	p.conns = append(p.conns, c)
	c.idx = len(sh.conns)
	sh.conns = append(sh.conns, c)
	if h.latest.Load() != nil {
		c.wakeBoard() // a new socket gets the latest at once
	}
	var recs []byte
	var first uint64
	if resume && p.ring.count > 0 {
		var r []byte
		r, first = p.ring.since(after, p.next-1)
		recs = append([]byte(nil), r...)
	}
	sh.mu.Unlock()
	// A close that began before c was in its shard did not see it.
	h.mu.Lock()
	if h.closed {
		c.kick(websocket.CloseGoingAway, "shutdown")
	}
	h.mu.Unlock()

	eachRecord(recs, func(rec []byte) bool {
		if len(backlog) > 0 {
			backlog = append(backlog, '\n')
		}
		var ok bool
		if backlog, ok = recordJSON(backlog, first, rec); !ok {
			return false
		}
		first++
		return true
	})
	return backlog, true
}

// unregister removes c from its player's sockets (if still there) and
// marks its goroutines done.
func (h *hub) unregister(c *conn) {
	sh := h.shard(c.player)
	sh.mu.Lock()
	if p := sh.players[c.player]; p != nil {
		sh.remove(p, c)
	}
	sh.mu.Unlock()
	h.wg.Done()
}

// remove takes c off p's and sh's lists; a no-op when it is not there.
// Callers hold sh.mu.
func (sh *shard) remove(p *player, c *conn) {
	if c.idx < 0 {
		return
	}
	for i, pc := range p.conns {
		if pc == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	last := sh.conns[len(sh.conns)-1]
	sh.conns[c.idx] = last
	last.idx = c.idx
	sh.conns[len(sh.conns)-1] = nil
	sh.conns = sh.conns[:len(sh.conns)-1]
	c.idx = -1
}

// close refuses new sockets, asks every socket to close with code and
// reason, and waits for their goroutines to end.
func (h *hub) close(code int, reason string) {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, c := range sh.conns {
			c.kick(code, reason)
		}
		sh.mu.Unlock()
	}
	h.wg.Wait()
}

// stats returns the number of players known and of sockets registered.
func (h *hub) stats() (players, conns int) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		players += len(sh.players)
		conns += len(sh.conns)
		sh.mu.Unlock()
	}
	return players, conns
}

// nextID returns the id player id's next update will get (1 for a
// player never seen).
func (h *hub) nextID(id string) uint64 {
	sh := h.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if p := sh.players[id]; p != nil {
		return p.next
	}
	return 1
}
