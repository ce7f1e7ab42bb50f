package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher defaults.
const (
	DefaultMaxInFlight = 1024
	DefaultAckTimeout  = 5 * time.Second
	DefaultRetryAfter  = time.Second
)

// PublisherOptions configures a Publisher. The zero value takes the
// defaults.
type PublisherOptions struct {
	// MaxInFlight bounds the publishes whose ack has not come back; a
	// publish beyond it waits for a slot. Default DefaultMaxInFlight.
	MaxInFlight int
	// AckTimeout fails a publish whose ack has not come within it, with
	// ErrUnavailable. Default DefaultAckTimeout.
	AckTimeout time.Duration
	// RetryAfter is the wait ErrUnavailable suggests. Default
	// DefaultRetryAfter.
	RetryAfter time.Duration
	// ResendFor, when set, makes the Publisher send a message again
	// itself — the same bytes under the same Nats-Msg-Id — when an
	// attempt's ack does not come within AckTimeout or no stream listens
	// (a stream leader leaving or being elected), for up to ResendFor
	// after its first publish; only then does its done see the error.
	// Messages without a Nats-Msg-Id are never sent again. ResendFor must
	// stay well inside the stream's duplicate window (Limits.Duplicates):
	// a copy sent after it would be stored a second time. Zero: no resend,
	// every failure is reported at once.
	ResendFor time.Duration
}

// Ack is a stored message: the stream and sequence JetStream gave it, and
// whether it was a duplicate of an earlier message with the same
// Nats-Msg-Id (then Seq is that message's sequence).
type Ack struct {
	Stream    string
	Seq       uint64
	Duplicate bool
}

// Publisher publishes messages to JetStream asynchronously: a publish hands
// the message to the connection and returns, and its outcome — the Ack or
// an error — arrives later through a callback or a Future. At most
// MaxInFlight publishes await their ack at a time; beyond that a publish
// waits for a slot (or for its context).
//
// Errors that waiting can cure (a stream full under DiscardNew, exhausted
// storage, an ack timeout, a disconnect) are ErrUnavailable with a
// RetryAfter; the message was not stored, or was stored but its ack was
// lost: publish it again with the same Nats-Msg-Id.
//
// With ResendFor set, the Publisher does that itself for a lost ack or a
// stream without a leader (see resendRound), keeping each subject's order:
// a later message of a subject is never sent before an earlier one that is
// sent again.
//
// A Publisher is safe for concurrent use. It holds one subscription and one
// goroutine on the connection, released when the connection closes; it
// never closes the connection.
type Publisher struct {
	js         jetstream.JetStream
	sem        chan struct{}
	retryAfter time.Duration
	resendFor  time.Duration
	opts       []jetstream.PublishOpt

	// life is held shared by every publish from its closed check until
	// the message is handed over, and exclusively by Close to set closed:
	// no publish registers after Close has failed the pending ones.
	life   sync.RWMutex
	closed bool

	// send is held (resend only) from a publish's registration until its
	// message is handed to the connection, and by a resend round for all
	// of its messages: the connection sees each subject's messages in the
	// order of their queue.
	send sync.Mutex

	mu      sync.Mutex
	pending map[*nats.Msg]*pubEntry // every attempt awaiting its outcome
	n       int                     // unresolved entries
	queues  map[string]*pubQueue    // resend only: unresolved entries per subject
	idle    chan struct{}           // closed when n drops to 0; nil when nobody waits
	resends uint64                  // messages sent again
}

// pubEntry is one message published and its outcome. Its attempts (the
// first publish and each one again) are keys of Publisher.pending; the
// first outcome that settles it wins, later ones are ignored.
type pubEntry struct {
	subject  string
	data     []byte
	id       string
	done     func(Ack, error)
	first    time.Time
	cur      *nats.Msg // the attempt whose failure counts; nil while it waits for a round
	resolved bool
	// The subject's queue of unresolved entries, in publish order
	// (resend only).
	prev, next *pubEntry
}

// pubQueue is a subject's unresolved entries (resend only).
type pubQueue struct {
	head, tail *pubEntry
	round      bool // a resend round is scheduled: new entries wait for it
	fast       int  // attempts in a row that failed at once (backoff)
}

// NewPublisher returns a Publisher on nc.
func NewPublisher(nc *nats.Conn, o PublisherOptions) (*Publisher, error) {
	if nc == nil {
		return nil, errors.New("new publisher: nil connection")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = DefaultAckTimeout
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	p := &Publisher{
		sem:        make(chan struct{}, o.MaxInFlight),
		retryAfter: o.RetryAfter,
		resendFor:  max(o.ResendFor, 0),
		pending:    make(map[*nats.Msg]*pubEntry, o.MaxInFlight),
		// No client-side retry on "no responders": the library would
		// publish m.Data again later, and the caller owns data once
		// PublishAsync returns. The caller retries on ErrUnavailable.
		opts: []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)},
	}
	maxPending := o.MaxInFlight + 1 // the semaphore keeps the library's own cap from ever stalling
	if p.resendFor > 0 {
		p.queues = make(map[string]*pubQueue)
		// Attempts replaced by a resend stay with the library until their
		// own timeout: room for a few per message.
		maxPending = 4*o.MaxInFlight + 1
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(o.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr),
	)
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	p.js = js
	return p, nil
}

// PublishAsync publishes data to subject, with a Nats-Msg-Id header when
// msgID is not empty. It waits for a slot while MaxInFlight publishes are
// pending; ctx bounds only that wait. data is copied before PublishAsync
// returns: the caller may reuse it at once.
//
// When PublishAsync returns nil, done (if not nil) is called exactly once
// with the Ack or the error; it runs on the connection's ack goroutine, so
// it must return quickly and must not block on this Publisher (a done that
// waits for a slot can deadlock it). When PublishAsync returns an error —
// ctx done while waiting, ErrClosed, ErrUnavailable, a bad subject — done
// is never called. A message sent again may be acked as a Duplicate of
// its own first attempt, whose ack was lost.
func (p *Publisher) PublishAsync(ctx context.Context, subject string, data []byte, msgID string, done func(Ack, error)) error {
	select {
	case p.sem <- struct{}{}:
	default:
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("publish %s: waiting for a slot: %w", subject, ctx.Err())
		}
	}
	resend := p.resendFor > 0 && msgID != ""
	e := &pubEntry{subject: subject, data: data, id: msgID, done: done}
	if resend {
		// Kept for sending again; the caller may reuse data.
		e.data = append([]byte(nil), data...)
		e.first = time.Now()
		p.send.Lock()
		defer p.send.Unlock()
	}
	m := e.msg()
	p.life.RLock()
	defer p.life.RUnlock()
	if p.closed {
		<-p.sem
		return ErrClosed
	}
	p.mu.Lock()
	p.n++
	held := false
	if resend {
		q := p.queue(subject)
		q.push(e)
		// A round is due for the subject: this message goes out after
		// the earlier ones, with the round.
		held = q.round
	}
	if !held {
		e.cur = m
		p.pending[m] = e
	}
	p.mu.Unlock()
	if held {
		return nil
	}
	if _, err := p.js.PublishMsgAsync(m, p.opts...); err != nil {
		p.mu.Lock()
		_, ok := p.pending[m]
		delete(p.pending, m)
		if ok && !e.resolved {
			p.resolveLocked(e)
		} else {
			ok = false
		}
		p.mu.Unlock()
		if ok {
			<-p.sem
		}
		return fmt.Errorf("publish %s: %w", subject, publishError(err, p.retryAfter))
	}
	return nil
}

// msg returns a new attempt of e.
func (e *pubEntry) msg() *nats.Msg {
	m := &nats.Msg{Subject: e.subject, Data: e.data}
	if e.id != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: []string{e.id}}
	}
	return m
}

// queue returns subject's queue, made if needed; p.mu is held.
func (p *Publisher) queue(subject string) *pubQueue {
	q := p.queues[subject]
	if q == nil {
		q = &pubQueue{}
		p.queues[subject] = q
	}
	return q
}

func (q *pubQueue) push(e *pubEntry) {
	e.prev = q.tail
	if q.tail != nil {
		q.tail.next = e
	} else {
		q.head = e
	}
	q.tail = e
}

func (q *pubQueue) remove(e *pubEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		q.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		q.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// resolveLocked marks e settled and unqueues it; p.mu is held. The caller
// releases e's slot and calls done.
func (p *Publisher) resolveLocked(e *pubEntry) {
	e.resolved = true
	p.n--
	if p.queues != nil && e.id != "" {
		if q := p.queues[e.subject]; q != nil {
			q.remove(e)
			if q.head == nil && !q.round {
				delete(p.queues, e.subject)
			}
		}
	}
	if p.n == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
}

func (p *Publisher) onAck(_ jetstream.JetStream, m *nats.Msg, pa *jetstream.PubAck) {
	p.mu.Lock()
	e, ok := p.pending[m]
	delete(p.pending, m)
	if !ok || e.resolved {
		p.mu.Unlock()
		return
	}
	p.resolveLocked(e)
	if q := p.queues[e.subject]; q != nil {
		q.fast = 0
	}
	p.mu.Unlock()
	<-p.sem
	if e.done != nil {
		e.done(Ack{Stream: pa.Stream, Seq: pa.Sequence, Duplicate: pa.Duplicate}, nil)
	}
}

func (p *Publisher) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	p.mu.Lock()
	e, ok := p.pending[m]
	delete(p.pending, m)
	if !ok || e.resolved || m != e.cur {
		// Settled, or an attempt a resend replaced: its failure says
		// nothing the newer attempt will not.
		p.mu.Unlock()
		return
	}
	if p.resendLocked(e, err, false) {
		p.mu.Unlock()
		return
	}
	p.failLocked(e, err)
}

// failLocked settles e as failed with err: it resolves it, unlocks p.mu
// (held on entry), releases e's slot and tells done.
func (p *Publisher) failLocked(e *pubEntry, err error) {
	p.resolveLocked(e)
	p.mu.Unlock()
	<-p.sem
	if e.done != nil {
		e.done(Ack{}, fmt.Errorf("publish %s: %w", e.subject, publishError(err, p.retryAfter)))
	}
}

// resendLocked schedules e to be sent again after its current attempt
// failed with err (quick: at once, without reaching the server), and
// reports whether it did; p.mu is held. It does not
// when resending is off, e has no Nats-Msg-Id, err is JetStream's own
// answer (a refusal), or ResendFor has passed since e's first publish.
func (p *Publisher) resendLocked(e *pubEntry, err error, quick bool) bool {
	// After Close nothing is pending, so no failure reaches here; a
	// round scheduled before it finds the Publisher closed.
	if p.resendFor <= 0 || e.id == "" || time.Since(e.first) >= p.resendFor {
		return false
	}
	quick = quick || NoStreamListening(err) || DuplicateInProcess(err) || errors.Is(err, jetstream.ErrTooManyStalledMsgs) || errors.Is(err, nats.ErrReconnectBufExceeded)
	if !quick && !OutcomeUnknown(err) || errors.Is(err, nats.ErrConnectionClosed) {
		return false
	}
	e.cur = nil
	q := p.queue(e.subject)
	if q.round {
		return true
	}
	q.round = true
	var wait time.Duration
	if quick {
		// Failed at once (no leader yet): back off, 20 ms doubling up
		// to RetryAfter, rather than spin.
		wait = min(20*time.Millisecond<<min(q.fast, 10), p.retryAfter)
		q.fast++
	}
	subject := e.subject
	time.AfterFunc(wait, func() { p.resendRound(subject) })
	return true
}

// resendRound sends every unresolved message of subject again, oldest
// first, each as a new attempt with the same bytes and Nats-Msg-Id. All of
// them, not only the one whose attempt failed: when a stream leader leaves,
// a message can be dropped while the next ones, sent to the new leader, are
// stored; or every one is lost. Sending the whole queue again in order
// stores nothing twice (the duplicate window) and stores the lost ones in
// order, unless a later one was stored already before the loss showed —
// which no resend can undo.
func (p *Publisher) resendRound(subject string) {
	p.send.Lock()
	defer p.send.Unlock()
	p.life.RLock()
	defer p.life.RUnlock()
	p.mu.Lock()
	q := p.queues[subject]
	if q == nil || p.closed {
		p.mu.Unlock()
		return
	}
	q.round = false
	var es []*pubEntry
	var ms []*nats.Msg
	for e := q.head; e != nil; e = e.next {
		m := e.msg()
		e.cur = m
		p.pending[m] = e
		es, ms = append(es, e), append(ms, m)
	}
	if q.head == nil {
		delete(p.queues, subject)
	}
	p.resends += uint64(len(ms))
	p.mu.Unlock()
	for i, m := range ms {
		if _, err := p.js.PublishMsgAsync(m, p.opts...); err != nil {
			// Not sent: neither are the ones after it, which wait for
			// the next round behind it.
			p.mu.Lock()
			for _, m := range ms[i+1:] {
				delete(p.pending, m)
			}
			for _, e := range es[i+1:] {
				if !e.resolved {
					e.cur = nil
				}
			}
			e := es[i]
			delete(p.pending, m)
			if e.resolved || e.cur != m || p.resendLocked(e, err, true) {
				p.mu.Unlock()
				return
			}
			p.failLocked(e, err)
			return
		}
	}
}

// Resends returns how many messages were sent again (ResendFor).
func (p *Publisher) Resends() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resends
}

// Pending returns the number of publishes awaiting their ack.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Flush waits until no publish awaits its ack (every done has been called)
// or ctx is done. Publishes made while it waits delay it; stop publishing
// first to flush at shutdown.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	if p.n == 0 {
		p.mu.Unlock()
		return nil
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush: %d publishes pending: %w", p.Pending(), ctx.Err())
	}
}

// Close refuses further publishes and fails those still awaiting their ack
// with ErrClosed (their done is called; they may yet be stored). Flush
// first to keep their outcome. Close is idempotent. The library's reply
// subscription stays until the connection closes: releasing it early
// (jetstream's CleanupPublisher) can strand one of its goroutines.
func (p *Publisher) Close() {
	p.life.Lock()
	was := p.closed
	p.closed = true
	p.life.Unlock()
	if was {
		return
	}
	// No publish can reach the library any more; late acks find nothing.
	p.mu.Lock()
	var failed []*pubEntry
	for _, e := range p.pending {
		if !e.resolved {
			e.resolved = true
			failed = append(failed, e)
		}
	}
	for _, q := range p.queues {
		for e := q.head; e != nil; e = e.next {
			if !e.resolved { // waiting for a round
				e.resolved = true
				failed = append(failed, e)
			}
		}
	}
	p.pending = make(map[*nats.Msg]*pubEntry)
	if p.queues != nil {
		p.queues = make(map[string]*pubQueue)
	}
	p.n = 0
	if p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
	for _, e := range failed {
		<-p.sem
		if e.done != nil {
			e.done(Ack{}, fmt.Errorf("publish %s: %w", e.subject, ErrClosed))
		}
	}
}

// Future is the outcome of one Publish.
type Future struct {
	done chan struct{}
	ack  Ack
	err  error
}

// Publish is PublishAsync with a Future to wait on instead of a callback.
// It returns an error, and no Future, when PublishAsync does.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte, msgID string) (*Future, error) {
	f := &Future{done: make(chan struct{})}
	err := p.PublishAsync(ctx, subject, data, msgID, func(a Ack, err error) {
		f.ack, f.err = a, err
		close(f.done)
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Done is closed once the outcome is known.
func (f *Future) Done() <-chan struct{} { return f.done }

// Result returns the outcome; call it after Done is closed.
func (f *Future) Result() (Ack, error) {
	select {
	case <-f.done:
		return f.ack, f.err
	default:
		return Ack{}, errors.New("publish outcome not known yet")
	}
}

// Wait waits for the outcome or for ctx. A ctx done first returns its
// error; the publish itself goes on.
func (f *Future) Wait(ctx context.Context) (Ack, error) {
	select {
	case <-f.done:
		return f.ack, f.err
	case <-ctx.Done():
		return Ack{}, ctx.Err()
	}
}

// Options of a Publisher that sends lost messages again (ResendOptions).
const (
	// ResendAckTimeout is the wait for one attempt's ack. A stream leader
	// answers in milliseconds; a second without an answer means the
	// attempt went to a leader that has left (or the connection went), and
	// sending it again costs at most a duplicate the stream drops.
	ResendAckTimeout = time.Second
	// MaxResendFor bounds ResendFor: an election after a crash takes a
	// few seconds; a stream without a quorum for longer is an outage the
	// caller handles as before (ErrUnavailable).
	MaxResendFor = 10 * time.Second
)

// ResendOptions returns the options of a Publisher whose messages all carry
// a Nats-Msg-Id, to streams with the duplicate windows dups (Limits.Duplicates;
// zero: DefaultDuplicates): attempts of ResendAckTimeout, sent again for up
// to MaxResendFor or a quarter of the shortest window, whichever is less.
func ResendOptions(dups ...time.Duration) PublisherOptions {
	o := PublisherOptions{AckTimeout: ResendAckTimeout, ResendFor: MaxResendFor}
	for _, d := range dups {
		if d <= 0 {
			d = DefaultDuplicates
		}
		o.ResendFor = min(o.ResendFor, d/4)
	}
	return o
}
