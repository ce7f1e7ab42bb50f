package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/backoff"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
)

// partition is the batch of moves bound for one partition's subject.
type partition struct {
	in      *Ingest
	k       int
	subject string
	idBase  string // instance-k-

	mu      sync.Mutex
	b       event.Builder
	moves   []*pending
	batchNo uint64 // the last batch published; the open one is batchNo+1
	// closed is set by the flush loop's last flush: nothing is published
	// by the flusher after it, so a move added then fails (errClosed).
	closed bool
	// stalled are the players whose first held move the completer could
	// not add (the batch full, and not to be published while the gate is
	// set); retryLoop hands them back to the completer when it opens the
	// gate.
	stalled []*player

	// Batches whose publish had no answer (natsjs.OutcomeUnknown), in
	// batch order, republished by retryLoop; gate is closed (and set to
	// nil) once retryq is resolved. While gate is set, no new batch of
	// this partition is published, so none overtakes an unresolved one.
	rmu    sync.Mutex
	retryq []*batch
	gate   chan struct{}
}

// batch is one published batch: kept until JetStream answers, so that a
// publish with no answer can be repeated with the same bytes and the same
// Nats-Msg-Id.
type batch struct {
	no    uint64
	id    string
	data  []byte
	moves []*pending
	t0    time.Time // first publish

	// outcome is settle's verdict, once known; guarded by mu, which
	// settle holds while it republishes.
	mu      sync.Mutex
	outcome uint8
}

// Outcomes of a batch (batch.outcome).
const (
	outcomeUnknown = iota
	outcomeStored
	outcomeRefused
)

// errOutcomeUnknown marks the failure of a batch that JetStream never
// answered before shutdown: it may be stored. Its moves get no answer
// (reply.unanswered), and the batch stays with each of its players
// (player.limbo) while this Ingest lives.
var errOutcomeUnknown = errors.New("no answer from JetStream: outcome unknown")

// settle learns b's outcome, republishing it once (same bytes, same
// Nats-Msg-Id) unless it is known already. It returns an error when the
// outcome stays unknown — JetStream did not answer, or b is too old to be
// republished inside the duplicate window (a republish could then be
// stored a second time).
func (pt *partition) settle(b *batch) (stored bool, err error) {
	in := pt.in
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.outcome {
	case outcomeStored:
		return true, nil
	case outcomeRefused:
		return false, nil
	}
	if time.Since(b.t0) > in.dupWindow-in.dupWindow/8 {
		return false, fmt.Errorf("batch %s: outcome unknown and too old to republish: %w", b.id, errOutcomeUnknown)
	}
	ctx := in.retryCtx
	in.m.republished.Inc()
	f, err := in.pub.Publish(ctx, pt.subject, b.data, b.id)
	if err == nil {
		_, err = f.Wait(ctx)
	}
	switch {
	case err == nil:
		b.outcome = outcomeStored
		return true, nil
	case ctx.Err() == nil && !natsjs.OutcomeUnknown(err) && !natsjs.NoStreamListening(err):
		b.outcome = outcomeRefused
		return false, nil
	}
	return false, fmt.Errorf("batch %s: %w (%w)", b.id, errOutcomeUnknown, err)
}

func newPartition(in *Ingest, k int) *partition {
	return &partition{
		in:      in,
		k:       k,
		subject: in.o.Topology.InSubject(k),
		idBase:  in.instance + "-" + strconv.Itoa(k) + "-",
		b:       event.Builder{MaxEvents: in.o.BatchEvents},
	}
}

// errClosed fails a move added to a partition after the flush loop's last
// flush (shutdown): it is not published.
var errClosed = errors.New("ingest is shutting down")

// add appends m's event to the batch, publishing the batch when full, and
// reports whether it did; m.p.mu is held by the caller. When after is set
// (the move of m's player queued just before m, still in flight) m may
// only join after's batch, while it is the open one: otherwise add leaves
// the batch alone and returns false, and the caller holds m back
// (Ingest.send). wait says whether a publish may wait for the partition's
// gate (see flushLocked): without it, a full batch behind the gate makes
// add return false too, and m's player joins stalled.
func (pt *partition) add(m *pending, ev *eventpb.MoveAccepted, after *pending, wait bool) bool {
	pt.mu.Lock()
	if pt.closed {
		pt.mu.Unlock()
		pt.in.enqueue(completion{moves: []*pending{m}, err: errClosed, part: pt.k})
		return true
	}
	if after != nil && (int(after.k) != pt.k || after.bno != pt.batchNo+1) {
		pt.mu.Unlock()
		return false
	}
	err := pt.b.AddMove(ev)
	if errors.Is(err, event.ErrFull) {
		if after != nil || !pt.flushLocked(wait) {
			if after == nil {
				pt.stalled = append(pt.stalled, m.p)
			}
			pt.mu.Unlock()
			return false
		}
		err = pt.b.AddMove(ev)
	}
	if err != nil {
		pt.mu.Unlock()
		pt.in.enqueue(completion{moves: []*pending{m}, err: fmt.Errorf("encode move: %w", err), part: pt.k})
		return true
	}
	m.bno = pt.batchNo + 1
	pt.moves = append(pt.moves, m)
	if pt.b.Len() >= pt.in.o.BatchEvents {
		pt.flushLocked(wait)
	}
	pt.mu.Unlock()
	return true
}

// flush publishes the batch if it holds anything. While an earlier batch
// of the partition is unresolved (see retryLoop) it publishes nothing
// unless wait is set, in which case it waits for the resolution.
func (pt *partition) flush(wait bool) {
	if !wait {
		pt.rmu.Lock()
		g := pt.gate
		pt.rmu.Unlock()
		if g != nil {
			return
		}
	}
	pt.mu.Lock()
	pt.flushLocked(true)
	pt.mu.Unlock()
}

// close is the flush loop's last flush: it publishes the batch, waiting
// for the gate, and closes the partition to later moves.
func (pt *partition) close() {
	pt.mu.Lock()
	pt.flushLocked(true)
	pt.closed = true
	pt.mu.Unlock()
}

// flushLocked publishes the batch asynchronously; its outcome reaches the
// completer. It waits while MaxInFlight batches await their ack (the
// backpressure that slows readers down when JetStream lags), and while an
// earlier batch of the partition awaits its republish (retryLoop) — unless
// wait is false: then it publishes nothing and returns false.
func (pt *partition) flushLocked(wait bool) bool {
	if pt.b.Len() == 0 {
		return true
	}
	in := pt.in
	pt.rmu.Lock()
	g := pt.gate
	pt.rmu.Unlock()
	if g != nil {
		if wait {
			select {
			case <-g:
			case <-in.retryCtx.Done(): // shutting down: order no longer matters
			}
		} else {
			select {
			case <-g:
			case <-in.retryCtx.Done():
			default:
				return false
			}
		}
	}
	moves := pt.moves
	pt.moves = make([]*pending, 0, min(2*len(moves), in.o.BatchEvents))
	pt.batchNo++
	b := &batch{no: pt.batchNo, id: pt.idBase + strconv.FormatUint(pt.batchNo, 10), moves: moves, t0: time.Now()}
	// The publisher copies the bytes, but a republish needs them again.
	b.data = append([]byte(nil), pt.b.Bytes()...)
	in.m.batch.Observe(float64(len(moves)))
	in.openBatch(b)
	err := in.pub.PublishAsync(context.Background(), pt.subject, b.data, b.id, func(_ natsjs.Ack, err error) {
		// No stream listening (its leader is being elected, or it has no
		// quorum) stored nothing, but it is no refusal either: the batch
		// waits for the stream like one without an answer, so that its
		// partition's later batches stay behind it. (Refusing it at
		// once would fail the later moves of its players with it, which
		// wait for it: see Ingest.send; an election passes in seconds.)
		if natsjs.OutcomeUnknown(err) || natsjs.NoStreamListening(err) {
			pt.unresolved(b)
			return
		}
		pt.resolved(b, err)
	})
	pt.b.Reset()
	if err != nil {
		in.enqueue(completion{moves: moves, err: err, part: pt.k, open: b})
	}
	return true
}

// resolved hands b's definitive outcome to the completer.
func (pt *partition) resolved(b *batch, err error) {
	in := pt.in
	now := time.Now()
	in.m.publish.Observe(now.Sub(b.t0).Seconds())
	if err == nil {
		in.m.hops.published(b.moves, now)
	}
	c := completion{moves: b.moves, err: err, part: pt.k, open: b}
	if errors.Is(err, errOutcomeUnknown) {
		c.b = b
	}
	in.enqueue(c)
}

// unresolved queues b, whose publish had no answer, for retryLoop. It
// never blocks: it runs on the publisher's ack goroutine.
func (pt *partition) unresolved(b *batch) {
	pt.rmu.Lock()
	defer pt.rmu.Unlock()
	i := len(pt.retryq)
	for i > 0 && pt.retryq[i-1].no > b.no {
		i--
	}
	pt.retryq = append(pt.retryq, nil)
	copy(pt.retryq[i+1:], pt.retryq[i:])
	pt.retryq[i] = b
	if pt.gate == nil {
		in := pt.in
		in.retryMu.Lock()
		closed := in.retryClosed
		if !closed {
			in.retries.Add(1)
		}
		in.retryMu.Unlock()
		if closed { // shut down: no more republishing
			pt.retryq = pt.retryq[:len(pt.retryq)-1]
			pt.resolved(b, fmt.Errorf("publish %s at shutdown: %w", b.id, errOutcomeUnknown))
			return
		}
		pt.gate = make(chan struct{})
		go pt.retryLoop()
	}
}

// retryLoop resolves the partition's unresolved batches one at a time,
// oldest first (republish), then opens the gate for later batches.
func (pt *partition) retryLoop() {
	defer pt.in.retries.Done()
	for {
		pt.rmu.Lock()
		if len(pt.retryq) == 0 {
			close(pt.gate)
			pt.gate = nil
			pt.rmu.Unlock()
			// The players whose held moves waited for the gate (add
			// registers them under pt.mu after seeing it set).
			pt.mu.Lock()
			stalled := pt.stalled
			pt.stalled = nil
			pt.mu.Unlock()
			if len(stalled) > 0 {
				pt.in.enqueue(completion{release: stalled, part: pt.k})
			}
			return
		}
		b := pt.retryq[0]
		pt.retryq[0] = nil
		pt.retryq = pt.retryq[1:]
		pt.rmu.Unlock()
		pt.resolved(b, pt.republish(b))
	}
}

// republish learns the outcome of b, whose publish had no answer, and
// returns it (nil: stored, once). Its moves stay unanswered until then: a
// move that may be in the log is never answered with an error. Inside the
// duplicate window (up to 7/8 of it after the first publish) it publishes
// b again with the same bytes and Nats-Msg-Id until JetStream answers;
// after that a republish could be stored a second time, so it looks for
// b's Nats-Msg-Id in the partition's log instead (natsjs.FindMsgID): found
// is stored, not found is not stored (errNotStored). It gives up only at
// shutdown (errOutcomeUnknown): the moves then get no answer at all.
func (pt *partition) republish(b *batch) error {
	in := pt.in
	ctx := in.retryCtx
	window := b.t0.Add(in.dupWindow - in.dupWindow/8)
	// Waits between attempts that fail at once (no stream listening).
	wait := backoff.Backoff{Base: 20 * time.Millisecond, Max: in.o.RetryAfter}
	for {
		var f *natsjs.Future
		var err error
		quick := false
		if time.Now().Before(window) {
			in.m.republished.Inc()
			f, err = in.pub.Publish(ctx, pt.subject, b.data, b.id)
			if err == nil {
				_, err = f.Wait(ctx)
			}
			// No stream listening (a leader being elected, a lost
			// quorum) is no verdict on the first publish, which the
			// leader that went may have stored: a refusal now, answered
			// unavailable and sent again by the client, would store the
			// moves twice. Only the stream's own answer settles it.
			// "Duplicate in process" (an earlier copy still being
			// stored) is no verdict either, and comes at once too.
			quick = natsjs.NoStreamListening(err) || natsjs.DuplicateInProcess(err)
			if ctx.Err() == nil && !natsjs.OutcomeUnknown(err) && !quick {
				return err
			}
		} else if in.o.JS != nil {
			var found bool
			fctx, cancel := context.WithTimeout(ctx, in.o.StoreTimeout)
			// The server stamps the message; allow its clock a minute
			// behind ours.
			found, err = natsjs.FindMsgID(fctx, in.o.JS, in.o.Topology.InStream(), pt.subject, b.t0.Add(-time.Minute), b.id)
			cancel()
			if err == nil {
				in.m.searched.Inc()
				if found {
					return nil
				}
				return fmt.Errorf("batch %s: %w", b.id, errNotStored)
			}
		}
		if ctx.Err() != nil {
			in.m.unknown.Add(float64(len(b.moves)))
			return fmt.Errorf("publish %s: %w at shutdown after %v: %w", b.id, errOutcomeUnknown, time.Since(b.t0).Round(time.Millisecond), err)
		}
		switch {
		case f == nil: // failed before sending (disconnected), or a search: do not spin
			backoff.Sleep(ctx, in.o.RetryAfter)
		case quick:
			wait.Wait(ctx)
		default:
			wait.Reset() // the attempt waited AckTimeout
		}
	}
}

// errNotStored is the outcome of a batch whose publish had no answer and
// whose Nats-Msg-Id is not in the log after the duplicate window.
var errNotStored = errors.New("not in the log after the duplicate window: not stored")

// hopBuckets are the buckets of every hop histogram
// (treasure_<service>_hop_*_seconds): 50 µs to 1 s, each about 1.54 times
// the one before, so that a p99 of a fraction of a millisecond and one of
// half a second are both resolved.
var hopBuckets = prometheus.ExponentialBucketsRange(50e-6, 1, 24)

// hopMetrics are ingest's share of the per-hop latency histograms
// (docs/operations.md): from a move's receipt (the instant also written
// as MoveAccepted.ingest_unix_nanos) to the JetStream ack of the batch
// that holds it.
type hopMetrics struct {
	receivedToPublished prometheus.Histogram
	epoch               time.Time // origin of stamp
}

func newHopMetrics() hopMetrics {
	return hopMetrics{
		receivedToPublished: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ingest_hop_received_to_published_seconds",
			Help: "Per move: from ingest receiving it to JetStream acking the batch that holds it.", Buckets: hopBuckets}),
		epoch: time.Now(),
	}
}

// stamp returns t in microseconds of the monotonic clock since the epoch,
// in 32 bits so that it fits a pending move's padding: it wraps every 71
// minutes, and differences of stamps less than that apart are exact.
func (h *hopMetrics) stamp(t time.Time) uint32 {
	return uint32(t.Sub(h.epoch) / time.Microsecond)
}

// published observes the hop of every move of a batch acked at now. It
// reads only the moves' recv, which never changes, so it needs no lock.
func (h *hopMetrics) published(moves []*pending, now time.Time) {
	s := h.stamp(now)
	for _, m := range moves {
		h.receivedToPublished.Observe(float64(s-m.recv) / 1e6)
	}
}

// flushLoop publishes every partition's batch each FlushInterval until
// stop closes, then publishes what is left.
func (in *Ingest) flushLoop(stop <-chan struct{}) {
	t := time.NewTicker(in.o.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			for _, pt := range in.parts {
				pt.close()
			}
			return
		}
		for _, pt := range in.parts {
			pt.flush(false)
		}
	}
}

// completion is the outcome of one published batch.
type completion struct {
	moves []*pending
	err   error
	part  int
	b     *batch // the batch, when err is errOutcomeUnknown
	// open is the batch published (nil: none, the move failed before),
	// closed once the round's states are written (orphans.go).
	open *batch
	// release are players whose held moves waited for part's gate
	// (partition.stalled): no outcome, the completer sends them again.
	release []*player
}

// enqueue hands a completion to the completer. It never blocks: it runs on
// the publisher's ack goroutine.
func (in *Ingest) enqueue(c completion) {
	in.cmu.Lock()
	in.cq = append(in.cq, c)
	in.cmu.Unlock()
	select {
	case in.cwake <- struct{}{}:
	default:
	}
}

// completeLoop processes completions in rounds until stop closes and the
// queue is empty.
func (in *Ingest) completeLoop(stop <-chan struct{}) {
	var (
		round   []completion
		touched []*player
		writes  []stateWrite
		args    []any
		buf     []byte
	)
	for {
		select {
		case <-in.cwake:
		case <-stop:
			in.cmu.Lock()
			empty := len(in.cq) == 0
			in.cmu.Unlock()
			if empty {
				return
			}
		}
		in.cmu.Lock()
		round, in.cq = in.cq, round[:0]
		in.cmu.Unlock()
		if len(round) == 0 {
			continue
		}
		touched, writes, args, buf = in.complete(round, touched[:0], writes[:0], args[:0], buf[:0])
		in.closeBatches(round)
		in.flushReady() // write the replies the round made ready (ws.go)
		clear(round)
	}
}

// stateWrite is one player's share of a round: the first n moves of its
// queue are stored and released together, leaving the player at st.
type stateWrite struct {
	p  *player
	n  int
	st state
}

// complete processes one round of completions: marks the moves stored or
// failed (a failed move fails its player's later moves, failMove), sends
// the held moves that may go now (release), writes the new states of the
// players whose oldest moves are now all stored in one HSET, then acks
// those moves — also when the write failed: a move in the log is applied,
// so it is never answered with an error (its state is written back later,
// see writeBackLoop).
func (in *Ingest) complete(round []completion, touched []*player, writes []stateWrite, args []any, buf []byte) ([]*player, []stateWrite, []any, []byte) {
	failed := 0
	var firstErr error
	for _, c := range round {
		if c.err != nil {
			failed += len(c.moves)
			if firstErr == nil {
				firstErr = c.err
			}
		}
		for _, p := range c.release {
			p.mu.Lock()
			if !p.dirty {
				p.dirty = true
				touched = append(touched, p)
			}
			p.mu.Unlock()
		}
		for _, m := range c.moves {
			p := m.p
			p.mu.Lock()
			if c.b != nil {
				// Answered unavailable below (or already, through an
				// earlier move), yet perhaps stored: the player's next
				// move settles it first (submit).
				if len(p.limbo) == 0 {
					in.players.hold(p) // the player stays until settled
				}
				p.limbo = append(p.limbo, limboMove{b: c.b, pt: in.parts[c.part], seq: m.seq, after: m.after})
			}
			if m.status == inFlight {
				if c.err != nil {
					// Fails the player's later moves too: none is
					// in the log (send).
					in.failMove(p, m, c.err)
				} else {
					m.status = published
				}
				if !p.dirty {
					p.dirty = true
					touched = append(touched, p)
				}
			}
			p.mu.Unlock()
		}
	}
	if failed > 0 {
		in.logFailure("publish failed; moves answered unavailable", firstErr, failed)
	}
	// The stored prefix of each touched player's queue; the held moves
	// behind it go now (release leaves that prefix as it is).
	for _, p := range touched {
		p.mu.Lock()
		p.dirty = false
		n := 0
		for n < len(p.queue) && p.queue[n].status == published {
			n++
		}
		if n > 0 {
			writes = append(writes, stateWrite{p: p, n: n, st: p.queue[n-1].after})
		}
		if n < len(p.queue) {
			in.release(p, &in.cev)
		}
		p.mu.Unlock()
	}
	clear(touched)
	if len(writes) == 0 {
		return touched[:0], writes, args, buf
	}
	// The moves are in the log: they are applied, and are acked whatever
	// becomes of the Redis write. A failed write (or Redis known to be
	// down) leaves the states to be written back when Redis answers
	// (writeBackLoop); until then this instance keeps them in memory.
	var err error
	if in.redisDown.Load() {
		err = errRedisDown
	} else {
		args = append(args, "hset", in.stateKeyArg)
		for _, w := range writes {
			args = append(args, w.p.idArg, w.p.stateArg(w.st))
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), in.o.StoreTimeout)
		err = in.o.Redis.Do(ctx, args...).Err()
		cancel()
		in.m.store.Observe(time.Since(t0).Seconds())
		if err != nil {
			in.redisFailed(err)
		}
	}
	if err != nil {
		in.dirtyMu.Lock()
		for _, w := range writes {
			in.markDirtyLocked(w.p.id, w.st)
		}
		in.dirtyMu.Unlock()
	}
	// Only the completer removes moves from a queue, so each queue still
	// starts with the n moves counted above.
	for _, w := range writes {
		p := w.p
		p.mu.Lock()
		for _, m := range p.queue[:w.n] {
			in.m.accepted.Inc()
			m.answer(reply{seq: m.seq})
		}
		p.acked = w.st
		rest := copy(p.queue, p.queue[w.n:])
		clear(p.queue[rest:])
		p.queue = p.queue[:rest]
		if rest == 0 {
			in.players.release(p)
		}
		p.mu.Unlock()
	}
	clear(writes)
	clear(args)
	return touched[:0], writes[:0], args[:0], buf[:0]
}
