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
// A Publisher is safe for concurrent use. It holds one subscription and one
// goroutine on the connection, released when the connection closes; it
// never closes the connection.
type Publisher struct {
	js         jetstream.JetStream
	sem        chan struct{}
	retryAfter time.Duration
	opts       []jetstream.PublishOpt

	// life is held shared by every publish from its closed check until
	// the message is handed over, and exclusively by Close to set closed:
	// no publish registers after Close has failed the pending ones.
	life   sync.RWMutex
	closed bool

	mu      sync.Mutex
	pending map[*nats.Msg]func(Ack, error)
	idle    chan struct{} // closed when pending empties; nil when nobody waits
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
		pending:    make(map[*nats.Msg]func(Ack, error), o.MaxInFlight),
		// No client-side retry on "no responders": the library would
		// publish m.Data again later, and the caller owns data once
		// PublishAsync returns. The caller retries on ErrUnavailable.
		opts: []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)},
	}
	js, err := jetstream.New(nc,
		// The semaphore keeps the library's own cap from ever stalling.
		jetstream.WithPublishAsyncMaxPending(o.MaxInFlight+1),
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
// is never called.
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
	m := &nats.Msg{Subject: subject, Data: data}
	if msgID != "" {
		m.Header = nats.Header{jetstream.MsgIDHeader: []string{msgID}}
	}
	p.life.RLock()
	defer p.life.RUnlock()
	if p.closed {
		<-p.sem
		return ErrClosed
	}
	p.mu.Lock()
	p.pending[m] = done
	p.mu.Unlock()
	if _, err := p.js.PublishMsgAsync(m, p.opts...); err != nil {
		if _, ok := p.take(m); ok {
			<-p.sem
		}
		return fmt.Errorf("publish %s: %w", subject, publishError(err, p.retryAfter))
	}
	return nil
}

// take removes m from the pending set and returns its callback; ok is false
// when m was not pending (already resolved).
func (p *Publisher) take(m *nats.Msg) (done func(Ack, error), ok bool) {
	p.mu.Lock()
	done, ok = p.pending[m]
	if ok {
		delete(p.pending, m)
		if len(p.pending) == 0 && p.idle != nil {
			close(p.idle)
			p.idle = nil
		}
	}
	p.mu.Unlock()
	return done, ok
}

func (p *Publisher) onAck(_ jetstream.JetStream, m *nats.Msg, pa *jetstream.PubAck) {
	done, ok := p.take(m)
	if !ok {
		return
	}
	<-p.sem
	if done != nil {
		done(Ack{Stream: pa.Stream, Seq: pa.Sequence, Duplicate: pa.Duplicate}, nil)
	}
}

func (p *Publisher) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	done, ok := p.take(m)
	if !ok {
		return
	}
	<-p.sem
	if done != nil {
		done(Ack{}, fmt.Errorf("publish %s: %w", m.Subject, publishError(err, p.retryAfter)))
	}
}

// Pending returns the number of publishes awaiting their ack.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Flush waits until no publish awaits its ack (every done has been called)
// or ctx is done. Publishes made while it waits delay it; stop publishing
// first to flush at shutdown.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	if len(p.pending) == 0 {
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
	pending := p.pending
	p.pending = make(map[*nats.Msg]func(Ack, error))
	if p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
	for m, done := range pending {
		<-p.sem
		if done != nil {
			done(Ack{}, fmt.Errorf("publish %s: %w", m.Subject, ErrClosed))
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
