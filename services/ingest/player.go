package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
)

// state is what validation needs of a player plus the hash of the path of
// their last accepted move, for recognising a retry.
type state struct {
	game.Player
	Hash uint64
}

// hashPath is FNV-1a (64 bits) over the path's wire ids, each as 8 bytes
// little-endian. It is stored in Redis, so it must never change.
func hashPath(path []uint64) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, v := range path {
		for i := 0; i < 8; i++ {
			h ^= v & 0xff
			h *= prime
			v >>= 8
		}
	}
	return h
}

// appendState encodes s as Redis stores it: "seq node hash" (decimal seq,
// the end node's wire id, 16 hex digits).
func appendState(dst []byte, s state) []byte {
	dst = strconv.AppendUint(dst, s.Seq, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(graph.ID(s.Node)), 10)
	dst = append(dst, ' ')
	const hexDigits = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, hexDigits[s.Hash>>uint(i)&0xf])
	}
	return dst
}

// stateValue is a state as Redis stores it (appendState), passed to
// go-redis as an encoding.BinaryMarshaler: a pointer in an interface
// costs no allocation, a string or a []byte would.
type stateValue struct {
	b [64]byte // appendState writes at most 20+1+20+1+16 bytes
	n int
}

func (v *stateValue) MarshalBinary() ([]byte, error) { return v.b[:v.n], nil }

// stateArg returns st as p's HSET value. It reuses p's buffer: the value
// is valid until the next call, and only the completer calls it.
func (p *player) stateArg(st state) any {
	p.val.n = len(appendState(p.val.b[:0], st))
	return &p.val
}

// parseState decodes appendState's form for a graph of n nodes.
func parseState(v string, n int) (state, error) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return state{}, fmt.Errorf("player state %q: want \"seq node hash\"", v)
	}
	seq, err1 := strconv.ParseUint(f[0], 10, 64)
	id, err2 := strconv.ParseUint(f[1], 10, 64)
	h, err3 := strconv.ParseUint(f[2], 16, 64)
	if err := errors.Join(err1, err2, err3); err != nil || seq == 0 {
		return state{}, fmt.Errorf("player state %q: want \"seq node hash\"", v)
	}
	node, ok := graph.Index(id, n)
	if !ok {
		return state{}, fmt.Errorf("player state %q: node %d is not in the graph", v, id)
	}
	return state{Player: game.Player{Seq: seq, Node: node, Moved: true}, Hash: h}, nil
}

// Status of a pending move.
const (
	inFlight  = iota // in its partition's batch, which awaits the JetStream ack (or its publish)
	published        // stored; waits for the Redis write
	finished         // answered (acked or failed)
	// held back: an earlier move of the player is in a batch that may
	// still be refused, and this one is not in that batch (Ingest.send)
	held
)

// pending is an accepted move until it is answered. Its fields are guarded
// by p.mu.
type pending struct {
	p      *player
	seq    uint64
	after  state // the player's state once this move is stored
	status uint8
	k      uint16 // the partition owning the path's last node (Topology allows 1<<16)
	recv   uint32 // when received, hopMetrics.stamp; set once, read without p.mu (fits the padding)
	// bno is the number of k's batch that holds the move (0 until it
	// joins one).
	bno   uint64
	h     *heldMove // the event of a held move, until it joins a batch
	first waiter
	more  []waiter // retries of the same move waiting for its outcome
}

// heldMove keeps what a held move's event needs beyond its pending move
// (from Ingest.heldMoves, so that holding allocates nothing once warm).
type heldMove struct {
	path  [game.MaxPath]uint32 // wire ids
	n     int
	nanos int64  // MoveAccepted.ingest_unix_nanos
	prev  uint64 // MoveAccepted.prev_seq
}

// waiter is where a move's reply goes: a slot of a socket's outbox or of a
// request's collector.
type waiter struct {
	s    sink
	slot uint64
}

// sink receives replies. deliver is called exactly once per reserved
// slot, possibly with locks held (see the package's lock order): it must
// not block, and it never writes to the network. It reports whether the
// sink now has replies ready to write; whoever delivered then calls flush
// once it holds no lock (a socket's reader after each frame, the completer
// after each round: Ingest.flushReady). flush writes what is ready and
// never blocks on a slow client (see sendConn).
type sink interface {
	deliver(slot uint64, r reply) (ready bool)
	flush()
}

// reply is the answer to one move: an ack when code is empty.
type reply struct {
	seq   uint64
	code  game.Code
	msg   string
	retry time.Duration
	done  bool // set by the sinks
	// unanswered: the move's outcome is unknown (shutdown); the client
	// gets no reply for it (its socket closes, its request is aborted).
	unanswered bool
}

// answer delivers r to every waiter of m; the sinks that have replies
// ready join the Ingest's list for flushReady. Called by the completer
// only, with m.p.mu held.
func (m *pending) answer(r reply) {
	m.status = finished
	rl := &m.p.in.flushq
	if m.first.s.deliver(m.first.slot, r) {
		rl.add(m.first.s)
	}
	for _, w := range m.more {
		if w.s.deliver(w.slot, r) {
			rl.add(w.s)
		}
	}
	m.more = nil
}

// player is the in-memory state of one player, shared by their sockets and
// requests on this instance.
type player struct {
	id    string
	in    *Ingest
	shard *shard
	// idArg is id boxed once, and val the state's HSET value (stateArg),
	// so that a round's HSET allocates nothing per player. val is used
	// by the completer only.
	idArg any
	val   stateValue

	// refs counts sockets and requests using the player, plus one while
	// queue is not empty; guarded by shard.mu. At zero the player leaves
	// the registry.
	refs int

	mu     sync.Mutex
	loaded bool
	acked  state      // the last acked move's state (what Redis holds)
	head   state      // the state after every move in queue
	queue  []*pending // accepted moves not yet answered, in order
	dirty  bool       // queued in the completer's round
	// limbo holds the moves answered unavailable although their batch's
	// outcome was unknown (errOutcomeUnknown), oldest first; settled the
	// ones of them found stored by the last settleLimbo, so that a resend
	// of one of them is acked rather than published again.
	limbo   []limboMove
	settled []limboMove
}

// limboMove is a move of a batch whose outcome is unknown.
type limboMove struct {
	b     *batch
	pt    *partition
	seq   uint64
	after state
}

// settleLimbo learns the outcome of every batch in p.limbo, oldest first:
// a stored one moves p on to its move (and writes that state to Redis), a
// refused one is forgotten. It returns an error, leaving the rest of
// p.limbo, when an outcome stays unknown or the write fails. p.mu must be
// held and p.queue be empty.
func (in *Ingest) settleLimbo(p *player) error {
	p.settled = p.settled[:0]
	for len(p.limbo) > 0 {
		l := p.limbo[0]
		stored, err := l.pt.settle(l.b)
		if err != nil {
			return err
		}
		if stored && l.after.Seq > p.acked.Seq {
			// The move is in the log: the player is at it, whatever
			// Redis says (a failed write is written back later).
			in.writeState(p.id, l.after)
			p.acked, p.head = l.after, l.after
		}
		if stored {
			p.settled = append(p.settled, l)
		}
		p.limbo[0] = limboMove{}
		p.limbo = p.limbo[1:]
	}
	p.limbo = nil
	in.players.release(p) // complete's hold
	return nil
}

const numShards = 64

type shard struct {
	mu sync.Mutex
	m  map[string]*player
	// known remembers the acked state of players who left m (no socket,
	// no request, nothing in flight), at most Options.RememberPlayers
	// over all shards: with Redis down it is where a returning player's
	// state comes from (docs/pipeline.md, "Ingest: player state").
	known map[string]state
}

// registry holds the players in use, sharded by id.
type registry struct {
	in     *Ingest
	seed   maphash.Seed
	shards [numShards]shard
}

func (r *registry) init(in *Ingest) {
	r.in = in
	r.seed = maphash.MakeSeed()
	for i := range r.shards {
		r.shards[i].m = make(map[string]*player)
		r.shards[i].known = make(map[string]state)
	}
}

// shardOf returns the shard holding the player named id.
func (r *registry) shardOf(id string) *shard {
	return &r.shards[maphash.String(r.seed, id)%numShards]
}

// errStateUnknown is attach's failure for a player this instance does not
// remember while Redis does not answer: their last accepted move is
// unknown here, so no move of theirs can be validated.
var errStateUnknown = errors.New("player state unknown to this instance while Redis is down")

// attach returns the player named id, shared with every other user of
// that player on this instance, with their state refreshed from Redis
// (see refresh). The caller releases the player when done.
func (r *registry) attach(ctx context.Context, id string) (*player, error) {
	s := r.shardOf(id)
	s.mu.Lock()
	p := s.m[id]
	if p == nil {
		p = &player{id: id, in: r.in, shard: s, idArg: id}
		if st, ok := s.known[id]; ok {
			p.acked, p.head, p.loaded = st, st, true
			delete(s.known, id)
		}
		s.m[id] = p
	}
	p.refs++
	s.mu.Unlock()

	p.mu.Lock()
	err := r.refresh(ctx, p)
	p.mu.Unlock()
	if err != nil {
		r.release(p)
		return nil, err
	}
	return p, nil
}

// refresh reads p's state from Redis unless moves of p are in flight here
// (then memory is ahead of Redis). While Redis is down (or when the read
// fails) a player this instance remembers keeps their state from memory;
// one it does not know gets errStateUnknown. p.mu must be held.
func (r *registry) refresh(ctx context.Context, p *player) error {
	if len(p.queue) > 0 {
		return nil
	}
	if r.in.redisDown.Load() {
		if p.loaded {
			return nil
		}
		r.in.m.unknownDown.Inc()
		return errStateUnknown
	}
	st, found, err := r.load(ctx, p.id)
	if err != nil {
		r.in.redisFailed(err)
		if p.loaded {
			return nil
		}
		r.in.m.unknownDown.Inc()
		return fmt.Errorf("%w: %w", errStateUnknown, err)
	}
	// Another instance may have moved the player on since; Redis never
	// goes back.
	if !p.loaded || found && st.Seq > p.acked.Seq {
		p.acked = st
	}
	p.loaded = true
	p.head = p.acked
	return nil
}

func (r *registry) load(ctx context.Context, id string) (state, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.in.o.StoreTimeout)
	defer cancel()
	v, err := r.in.o.Redis.HGet(ctx, r.in.stateKey, id).Result()
	if errors.Is(err, redis.Nil) {
		return state{}, false, nil
	}
	if err != nil {
		return state{}, false, fmt.Errorf("read player state: %w", err)
	}
	st, err := parseState(v, r.in.o.Graph.NumNodes())
	if err != nil {
		return state{}, false, fmt.Errorf("read player state of %q: %w", id, err)
	}
	return st, true, nil
}

// release drops one reference taken by attach or by a non-empty queue.
// The last one moves the player's acked state to the shard's known
// states. (The releaser is then the only user of p; every goroutine that
// wrote p.acked released or held p afterwards, through s.mu.)
func (r *registry) release(p *player) {
	s := p.shard
	s.mu.Lock()
	p.refs--
	if p.refs == 0 {
		delete(s.m, p.id)
		if p.loaded && p.acked.Seq > 0 {
			if len(s.known) >= r.in.knownPerShard {
				for id := range s.known { // evict one at random
					delete(s.known, id)
					break
				}
			}
			s.known[p.id] = p.acked
		}
	}
	s.mu.Unlock()
}

// states calls f with every player state this instance holds in memory:
// the acked state of the players in use and the known ones. f must not
// call back into the registry.
func (r *registry) states(f func(id string, st state)) {
	var ps []*player
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for id, st := range s.known {
			f(id, st)
		}
		for _, p := range s.m {
			ps = append(ps, p)
		}
		s.mu.Unlock()
	}
	for _, p := range ps {
		p.mu.Lock()
		if p.loaded && p.acked.Seq > 0 {
			f(p.id, p.acked)
		}
		p.mu.Unlock()
	}
}

// hold takes the queue's reference; p.mu must be held.
func (r *registry) hold(p *player) {
	s := p.shard
	s.mu.Lock()
	p.refs++
	s.mu.Unlock()
}

// scratch is one reader's reusable buffers for submit.
type scratch struct {
	idx  [game.MaxPath]uint32
	path [game.MaxPath]uint32
	ev   eventpb.MoveAccepted
}

// submit takes one well-formed move of player p and arranges for exactly
// one reply to reach s at slot: at once for a rejection or the retry of an
// acked move, once durable (or failed) otherwise.
func (in *Ingest) submit(p *player, seq uint64, path []uint64, s sink, slot uint64, sc *scratch) {
	now := time.Now()
	if ok, wait := in.limiter.Allow(p.id, now); !ok {
		in.reject(s, slot, seq, game.CodeRateLimited, rateMsg(in), wait)
		return
	}
	in.submitAt(p, seq, path, s, slot, sc, now, true)
}

// submitAt is submit past the rate limit. recheck lets a move found
// discontinuous wait for a look for dead instances (recheckDead) and be
// validated once more: the player may come from an instance that died
// with their last move stored and unacked, not yet recovered here.
func (in *Ingest) submitAt(p *player, seq uint64, path []uint64, s sink, slot uint64, sc *scratch, now time.Time, recheck bool) {
	if len(path) == 0 || len(path) > game.MaxPath {
		// The parser never hands these over; ValidateMove words them.
		err := game.ValidateMove(in.o.Graph, game.Player{}, seq, path, nil)
		in.reject(s, slot, seq, err.Code, err.Msg, 0)
		return
	}
	idx := sc.idx[:len(path)]
	p.mu.Lock()
	if len(p.limbo) > 0 && len(p.queue) == 0 {
		// An earlier move's batch may or may not be stored: learn which
		// before this move, so that a resend of it does not store it
		// twice and nothing overtakes it.
		if err := in.settleLimbo(p); err != nil {
			p.mu.Unlock()
			in.logFailure("a batch's outcome is still unknown; move answered unavailable", err, 1)
			in.reject(s, slot, seq, game.CodeUnavailable, "the move could not be stored; send it again", in.o.RetryAfter)
			return
		}
	}
	if len(p.settled) > 0 {
		h := hashPath(path)
		for _, l := range p.settled {
			if l.seq == seq && l.after.Hash == h {
				// Answered unavailable, then found stored: ack.
				p.mu.Unlock()
				in.m.duplicates.Inc()
				in.m.accepted.Inc()
				s.deliver(slot, reply{seq: seq})
				return
			}
		}
	}
	if verr := game.ValidateMove(in.o.Graph, p.head.Player, seq, path, idx); verr != nil {
		if verr.Code == game.CodeStaleSeq && seq == p.head.Seq && hashPath(path) == p.head.Hash {
			in.m.duplicates.Inc()
			if n := len(p.queue); n > 0 {
				// The original is in flight: answer both with its outcome.
				m := p.queue[n-1]
				m.more = append(m.more, waiter{s, slot})
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			in.m.accepted.Inc()
			s.deliver(slot, reply{seq: seq})
			return
		}
		if recheck && verr.Code == game.CodeDiscontinous && len(p.queue) == 0 {
			p.mu.Unlock()
			in.recheckDead()
			in.submitAt(p, seq, path, s, slot, sc, now, false)
			return
		}
		p.mu.Unlock()
		in.reject(s, slot, seq, verr.Code, verr.Msg, 0)
		return
	}
	last := idx[len(idx)-1]
	k := in.o.Part[last]
	m := &pending{p: p, seq: seq, recv: in.m.hops.stamp(now), after: state{Player: p.head.Advance(seq, last), Hash: hashPath(path)}, first: waiter{s, slot}}
	for i, v := range idx {
		sc.path[i] = graph.ID(v)
	}
	sc.ev.Player = p.id
	sc.ev.Seq = seq
	sc.ev.Path = sc.path[:len(idx)]
	sc.ev.IngestUnixNanos = now.UnixNano()
	sc.ev.Partition = k
	// The move accepted just before this one (0: the player's first), so
	// that push can put the player's updates back in move order when the
	// two moves' results come from different partitions.
	sc.ev.PrevSeq = p.head.Seq
	m.k = uint16(k)
	var prev *pending
	if n := len(p.queue); n > 0 {
		prev = p.queue[n-1]
	} else {
		in.players.hold(p)
	}
	p.settled = p.settled[:0]
	p.queue = append(p.queue, m)
	p.head = m.after
	in.send(m, prev, &sc.ev)
	p.mu.Unlock()
}

// send puts m, just queued, into its partition's batch (ev is its event),
// or holds it back while it may not go yet: no move is published while an
// earlier move of its player is in a batch whose outcome is not known,
// unless it joins that very batch (a batch is stored or refused whole). A
// refused move fails every later one of its player (failMove), and none of
// those is in the log: a move answered with an error never takes effect,
// and a stored move always continues from a stored one (docs/pipeline.md,
// "Exactly-once effects"). prev is the move queued before m (nil: none).
// p.mu is held.
func (in *Ingest) send(m, prev *pending, ev *eventpb.MoveAccepted) {
	var after *pending
	if prev != nil {
		switch prev.status {
		case held: // behind prev, as ever
			in.hold(m, ev)
			return
		case inFlight:
			after = prev
		}
	}
	if !in.parts[m.k].add(m, ev, after, true) {
		in.hold(m, ev)
	}
}

// hold marks m held back, keeping its event's fields for release.
func (in *Ingest) hold(m *pending, ev *eventpb.MoveAccepted) {
	h := in.heldMoves.Get().(*heldMove)
	h.n = copy(h.path[:], ev.Path)
	h.nanos, h.prev = ev.IngestUnixNanos, ev.PrevSeq
	m.h, m.status = h, held
	in.m.held.Inc()
}

// unhold returns m's held event to the pool.
func (in *Ingest) unhold(m *pending) {
	if m.h != nil {
		in.heldMoves.Put(m.h)
		m.h = nil
	}
}

// release sends p's held moves that may go now: the first once no earlier
// move of p is in flight, then each next one as long as it joins the
// batch of the one before it (see send). The completer calls it, after a
// round settled moves of p (or a partition's gate opened: stalled), with
// p.mu held; ev is its scratch.
func (in *Ingest) release(p *player, ev *eventpb.MoveAccepted) {
	var after *pending
	for _, m := range p.queue {
		switch m.status {
		case inFlight:
			if after == nil {
				return // an earlier move's batch is not settled yet
			}
			continue
		case held:
		default:
			continue
		}
		h := m.h
		ev.Player = p.id
		ev.Seq = m.seq
		ev.Path = h.path[:h.n]
		ev.IngestUnixNanos = h.nanos
		ev.Partition = uint32(m.k)
		ev.PrevSeq = h.prev
		m.status = inFlight
		if !in.parts[m.k].add(m, ev, after, false) {
			m.status = held
			return
		}
		ev.Path = nil
		in.unhold(m)
		after = m
	}
}

func rateMsg(in *Ingest) string {
	return "too many moves: at most " + in.o.RateLimit.String()
}

// reject answers a move with an error.
func (in *Ingest) reject(s sink, slot, seq uint64, code game.Code, msg string, retry time.Duration) {
	in.m.reject(code)
	s.deliver(slot, reply{seq: seq, code: code, msg: msg, retry: retry})
}

// failMove answers m, whose batch was not stored (or whose outcome stays
// unknown at shutdown), and takes it out of p's queue with every later
// move of p: those were validated on top of m, and none of them is in the
// log — each is in m's batch, sharing its fate, or held back (send) — so
// they are answered unavailable too (the client sends them again after
// m), and p's head goes back to the last move before m. A move whose
// outcome is unknown is not answered at all (reply.unanswered): its socket
// is closed or its request aborted, and the client's resend finds out.
// p.mu must be held.
func (in *Ingest) failMove(p *player, m *pending, err error) {
	i := 0
	for i < len(p.queue) && p.queue[i] != m {
		i++
	}
	if i == len(p.queue) {
		return
	}
	retry := in.retryAfter(err)
	unknown := errors.Is(err, errOutcomeUnknown)
	for j, l := range p.queue[i:] {
		var r reply
		switch {
		case l.status == held:
			// Never published.
			r = reply{seq: l.seq, code: game.CodeUnavailable, msg: "an earlier move could not be stored; send it again after that one", retry: retry}
		case unknown: // m, or a move of m's batch
			r = reply{seq: l.seq, unanswered: true}
		case j == 0:
			r = reply{seq: l.seq, code: game.CodeUnavailable, msg: "the move could not be stored; send it again", retry: retry}
		default: // in m's batch
			r = reply{seq: l.seq, code: game.CodeUnavailable, msg: "an earlier move could not be stored; send it again after that one", retry: retry}
		}
		if !r.unanswered {
			in.m.reject(game.CodeUnavailable)
		}
		in.unhold(l)
		l.answer(r)
	}
	clear(p.queue[i:])
	p.queue = p.queue[:i]
	if i == 0 {
		p.head = p.acked
		in.players.release(p)
	} else {
		p.head = p.queue[i-1].after
	}
}
