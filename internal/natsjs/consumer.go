package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/backoff"
)

// Consumer defaults.
const (
	DefaultBatch         = 256
	DefaultMaxWait       = 2 * time.Second
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 1024
	DefaultMaxDeliver    = 10
)

// DefaultBackoff returns the waits after a failed attempt before the next:
// the i-th entry after the (i+1)-th attempt, the last one after every later
// attempt. With DefaultMaxDeliver a transient failure is retried for about
// fifty seconds before the message is dead-lettered.
func DefaultBackoff() []time.Duration {
	return []time.Duration{
		100 * time.Millisecond, 500 * time.Millisecond, time.Second,
		2 * time.Second, 5 * time.Second, 10 * time.Second,
	}
}

// Headers of a dead-lettered message. The payload and the original's own
// headers (other than the Nats-* ones) are kept.
const (
	HeaderDLQReason    = "Treasure-Dlq-Reason"    // the handler's error
	HeaderDLQStream    = "Treasure-Dlq-Stream"    // the stream it came from
	HeaderDLQConsumer  = "Treasure-Dlq-Consumer"  // the consumer that gave up
	HeaderDLQSubject   = "Treasure-Dlq-Subject"   // its subject
	HeaderDLQSeq       = "Treasure-Dlq-Seq"       // its stream sequence
	HeaderDLQDelivered = "Treasure-Dlq-Delivered" // the handler's attempts (Msg.Delivered)
	HeaderDLQTime      = "Treasure-Dlq-Time"      // when it was stored (RFC 3339)

	maxReasonLen = 1024
)

// Msg is one delivered message.
type Msg struct {
	// Subject the message was published to.
	Subject string
	// Seq is its stream sequence, its position in the log.
	Seq uint64
	// Delivered counts the handler's attempts at it, 1 the first time:
	// the server's deliveries plus the Run's own retries.
	Delivered uint64
	// Pending counts the messages on the consumer's subjects after this one
	// that had not been delivered when it was.
	Pending uint64
	// Time is when the stream stored it.
	Time time.Time
	// Header holds its headers (nil when none).
	Header nats.Header
	// Data is the payload. It is not reused: a handler may keep it.
	Data []byte
}

// Handler processes messages, in stream order. It returns nil once their
// effect is durable; they are then acknowledged. An error has them tried
// again after a backoff (see Consumer). It must return well within
// AckWait. ctx is Run's. msgs is reused after the handler returns; the Data
// slices are not.
//
// Delivery is at least once: after a crash or a lost ack a message the
// handler accepted may come again (with a Seq it has seen), so effects
// should be idempotent by Seq.
type Handler func(ctx context.Context, msgs []Msg) error

// ConsumerOptions configures a durable Consumer. Stream, Durable and
// DeadLetter are required; zero values elsewhere take the defaults.
type ConsumerOptions struct {
	// Stream to consume.
	Stream string
	// Durable names the consumer; a Consumer created again with the same
	// name resumes after the last acknowledged message.
	Durable string
	// Subjects filters the stream; empty means all of it. More than one
	// subject needs nats-server 2.10 (ErrNeedsServer210 otherwise).
	Subjects []string
	// Batch caps the messages of one fetch and of one handler call.
	// Default DefaultBatch.
	Batch int
	// MaxWait bounds one pull request; it is the longest a Run stays
	// unaware of a dead connection. Default DefaultMaxWait; below AckWait.
	MaxWait time.Duration
	// AckWait is how long the server waits for an ack before redelivering.
	// A handler must return well within it. Default DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending caps the delivered, unacknowledged messages; at least
	// Batch. Default DefaultMaxAckPending.
	MaxAckPending int
	// MaxDeliver is the number of attempts after which a message whose
	// handler still fails, alone, is dead-lettered. Default
	// DefaultMaxDeliver.
	MaxDeliver int
	// Backoff is the wait after a failure, by attempt (see
	// DefaultBackoff); every entry below AckWait. Default DefaultBackoff(),
	// each capped at AckWait/2.
	Backoff []time.Duration
	// Linger, when positive, makes the consumer pull in bursts, for a
	// handler to which latency does not matter (the archiver): a pull asks
	// for what the stream holds now, without waiting for more, and the
	// handler gets it once it has all arrived, in groups of Batch; after a
	// pull that came back short, the next one waits Linger. A consumer
	// that keeps up with a steady stream then makes one pull and a few
	// handler calls per Linger, where a waiting pull hands over each
	// message as it arrives, with a handler call and a goroutine wake-up
	// for each. 0: pulls wait for messages (up to MaxWait) and hand them
	// over as they come.
	Linger time.Duration
	// AckAll acknowledges a group of messages the handler accepted with
	// one ack, of its last message (JetStream's AckAll policy: an ack
	// covers every message before it), instead of one ack per message.
	AckAll bool
	// DeadLetter is the subject poison messages are published to, with
	// headers naming the reason (Topology.DLQSubject). A stream must
	// capture it: a dead letter that JetStream does not store is retried,
	// never dropped.
	DeadLetter string
	// Logger receives failures; nil discards them.
	Logger *slog.Logger
	// Fence, when not nil, is asked before every pull request and every
	// handler call; an error ends Run with an error wrapping ErrFenced and
	// it, leaving what Run holds unacknowledged. A worker whose right to
	// consume (a lease) has lapsed takes no more messages that way, even
	// when it finds out only as it runs again after being frozen.
	Fence func() error
	// StallAfter is how long Run lets its consumer deliver nothing while
	// the stream holds messages of its subjects after the last one
	// accepted before it takes the consumer for stalled and creates it
	// again after that message. nats-server 2.9.10 can leave a consumer
	// created shortly before two of three nodes crashed with a leader that
	// has "NO quorum, stalled" for good: pulls are taken and nothing comes.
	// Default DefaultConsumerStallAfter; negative: never.
	StallAfter time.Duration
}

// DefaultConsumerStallAfter is ConsumerOptions.StallAfter's default: far
// beyond an election, which takes seconds.
const DefaultConsumerStallAfter = 30 * time.Second

// ErrFenced is wrapped by Run's error when ConsumerOptions.Fence refused.
var ErrFenced = errors.New("consumer fenced")

func (o *ConsumerOptions) withDefaults() error {
	if o.Stream == "" {
		return errors.New("consumer: no stream")
	}
	if o.Durable == "" || strings.ContainsAny(o.Durable, " \t\r\n.*>/\\") {
		return fmt.Errorf("consumer: durable name %q: want a non-empty name without whitespace, '.', '*', '>' or slashes", o.Durable)
	}
	if o.DeadLetter == "" {
		return errors.New("consumer: no dead-letter subject")
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = max(DefaultMaxAckPending, o.Batch)
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.StallAfter == 0 {
		o.StallAfter = DefaultConsumerStallAfter
	}
	o.Backoff = slices.Clone(o.Backoff)
	o.Subjects = slices.Clone(o.Subjects)
	if len(o.Backoff) == 0 {
		// The defaults, each below AckWait.
		o.Backoff = DefaultBackoff()
		for i, d := range o.Backoff {
			o.Backoff[i] = min(d, o.AckWait/2)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Linger < 0 || o.Linger >= o.AckWait {
		return fmt.Errorf("consumer: linger %v not in [0, ack wait %v)", o.Linger, o.AckWait)
	}
	if o.MaxWait >= o.AckWait {
		return fmt.Errorf("consumer: max wait %v must be below ack wait %v", o.MaxWait, o.AckWait)
	}
	if o.MaxAckPending < o.Batch {
		return fmt.Errorf("consumer: max ack pending %d below batch %d", o.MaxAckPending, o.Batch)
	}
	for _, d := range o.Backoff {
		if d <= 0 || d >= o.AckWait {
			return fmt.Errorf("consumer: backoff %v not in (0, ack wait %v)", d, o.AckWait)
		}
	}
	return nil
}

// Consumer is a durable pull consumer that hands batches of messages to a
// Handler strictly in stream order and acknowledges them once it returns
// nil. What it guarantees, per durable name with one Run at a time:
//
//   - order: the handler sees stream sequences strictly increasing, and
//     never a message it has already accepted (in this Run);
//   - at least once: a message is acknowledged only after the handler
//     accepted it; a new Run resumes after the last acknowledged message
//     (one whose ack was lost comes again);
//   - no silent loss: the server never gives up on a message (its
//     MaxDeliver is unlimited); only the handler's verdict dead-letters.
//
// A delivery lost between server and client (a dropped connection, a pull
// that outlived its Run) shows as a gap in the consumer's delivery
// sequence; Run then recreates the consumer at the message after the last
// one it accepted, as the client library's ordered consumer does. A Run
// that starts with messages still unacknowledged from an earlier one (a
// killed process) does the same, so that those come back at once and
// first, rather than after AckWait and behind newer ones.
//
// When the handler fails, Run keeps the messages (telling the server they
// are in progress, so they do not expire), waits the Backoff for their
// attempt count and tries again, one message at a time until it is past
// every message of the failed group, so that a failure is pinned to one
// message. (A nak would put the message at the back of the server's
// redelivery queue, behind others: order is why failures are retried here
// and not nak'ed.) A message whose handler fails alone on its MaxDeliver-th
// attempt is published to the DeadLetter subject with headers naming the
// reason, then terminated; if the dead letter cannot be stored, it is
// retried instead.
//
// Two Runs on one durable (two processes) would steal each other's
// messages and reset each other's consumer: give each its own durable, or
// make them take turns — the proximity workers hold a partition's lease
// (Leases) while they consume its durable, with a Fence that stops Run
// once the lease has lapsed.
type Consumer struct {
	js  jetstream.JetStream
	o   ConsumerOptions
	log *slog.Logger
	cfg jetstream.ConsumerConfig

	mu   sync.Mutex
	cons jetstream.Consumer // replaced by reset, like cfg
}

// NewConsumer creates the durable consumer o describes on its stream, or
// updates it to o when it exists (keeping where it starts), and returns a
// Consumer ready to Run.
func NewConsumer(ctx context.Context, js jetstream.JetStream, o ConsumerOptions) (*Consumer, error) {
	cfg, err := consumerConfig(js, &o)
	if err != nil {
		return nil, err
	}
	// A consumer that a reset recreated starts at a sequence; the server
	// refuses to change that in place, and there is no need to.
	existing, err := js.Consumer(ctx, o.Stream, o.Durable)
	switch {
	case err == nil:
		ec := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq = ec.DeliverPolicy, ec.OptStartSeq
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("consumer %s on %s: %w", o.Durable, o.Stream, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, o.Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", o.Durable, o.Stream, err)
	}
	return &Consumer{js: js, cfg: cfg, o: o, cons: cons, log: o.Logger.With("stream", o.Stream, "consumer", o.Durable)}, nil
}

// NewConsumerFrom deletes the durable consumer o describes, whatever its
// state, and creates it again delivering from stream sequence from. It is
// for a consumer that cannot be read at all — nats-server 2.9.10 can
// leave a consumer created shortly before two of three nodes crashed
// without a leader for good ("JetStream system temporarily unavailable"
// at every lookup) — by a user that knows from where it must consume.
func NewConsumerFrom(ctx context.Context, js jetstream.JetStream, o ConsumerOptions, from uint64) (*Consumer, error) {
	cfg, err := consumerConfig(js, &o)
	if err != nil {
		return nil, err
	}
	c := &Consumer{js: js, cfg: cfg, o: o, log: o.Logger.With("stream", o.Stream, "consumer", o.Durable)}
	if err := c.reset(ctx, from); err != nil {
		return nil, err
	}
	return c, nil
}

// IsUnavailable reports an error of JetStream's "system temporarily
// unavailable" (10008): what a lookup of a stream or consumer without a
// leader answers.
func IsUnavailable(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == errCodeUnavailable
}

// errCodeUnavailable is JSClusterNotAvailErr's code, which nats.go does
// not name.
const errCodeUnavailable jetstream.ErrorCode = 10008

// consumerConfig validates o (filling its defaults) and returns the
// configuration of its consumer, delivering from the stream's start.
func consumerConfig(js jetstream.JetStream, o *ConsumerOptions) (jetstream.ConsumerConfig, error) {
	if err := o.withDefaults(); err != nil {
		return jetstream.ConsumerConfig{}, err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       o.Durable,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: o.MaxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
	if o.AckAll {
		cfg.AckPolicy = jetstream.AckAllPolicy
	}
	if err := setFilter(js, o.Subjects, &cfg.FilterSubject, &cfg.FilterSubjects); err != nil {
		return jetstream.ConsumerConfig{}, fmt.Errorf("consumer %s: %w", o.Durable, err)
	}
	return cfg, nil
}

// setFilter fills a consumer's filter: one subject as FilterSubject (any
// server), several as FilterSubjects after checking that the server is
// 2.10 or later.
func setFilter(js jetstream.JetStream, subjects []string, one *string, several *[]string) error {
	for _, s := range subjects {
		if s == "" {
			return errors.New("empty filter subject")
		}
	}
	switch len(subjects) {
	case 0:
	case 1:
		*one = subjects[0]
	default:
		ok, err := atLeast210(js.Conn().ConnectedServerVersion())
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w (server %s)", ErrNeedsServer210, js.Conn().ConnectedServerVersion())
		}
		*several = append([]string(nil), subjects...)
	}
	return nil
}

func (c *Consumer) consumer() jetstream.Consumer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cons
}

// Info returns the consumer's state on the server: its backlog
// (NumPending), unacknowledged messages (NumAckPending) and positions.
// It is safe to call while Run runs.
func (c *Consumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	info, err := c.consumer().Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s info: %w", c.o.Durable, err)
	}
	return info, nil
}

// resetWait bounds each request of a reset.
const resetWait = 2 * time.Second

// reset deletes the consumer and creates it again, same name and
// settings, delivering from stream sequence from: what was delivered and
// not acknowledged comes again, at once and in order.
func (c *Consumer) reset(ctx context.Context, from uint64) error {
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(from, 1)
	// Each request waits at most resetWait: one lost with a server that
	// went away is retried by Run rather than waited for.
	dctx, cancel := context.WithTimeout(ctx, resetWait)
	err := c.js.DeleteConsumer(dctx, c.o.Stream, c.o.Durable)
	cancel()
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("reset consumer %s: %w", c.o.Durable, err)
	}
	cctx, cancel := context.WithTimeout(ctx, resetWait)
	cons, err := c.js.CreateConsumer(cctx, c.o.Stream, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("reset consumer %s: %w", c.o.Durable, err)
	}
	c.mu.Lock()
	c.cons, c.cfg = cons, cfg
	c.mu.Unlock()
	return nil
}

// Run fetches messages and hands them to h until ctx is cancelled, and then
// returns nil. Messages delivered but not yet accepted when ctx is
// cancelled are left unacknowledged, for the next Run. Failures to fetch
// (a lost connection, a restarting server) are logged and retried with
// backoff — a pull ended by the consumer's leader stepping down or its
// server shutting down after the first step only, and one in flight at a
// reconnect at once; a consumer deleted under a running Run is created
// again, after the last message it accepted. Run returns an error only for a delivery
// it cannot read.
func (c *Consumer) Run(ctx context.Context, h Handler) error {
	return c.run(ctx, h, startUnknown)
}

// RunAfter is Run for a handler whose state already covers the
// consumer's messages up to stream sequence after — rebuilt from a
// checkpoint and a replay up to an ack floor read a moment before — and
// misses every one past it. Run would resume after the ack floor it reads
// at its start, which is not always the one the rebuild read: acks of an
// earlier Run that reach the consumer late, or a consumer leader elected
// while the rebuild ran (a new leader's state may be ahead of the old
// one's answer), move it on, and the messages between would never reach
// the handler. RunAfter resumes after after: a floor found beyond it
// makes it recreate the consumer there (what lies between comes again;
// the handler has not seen it), one short of it acknowledges what comes
// up to it without the handler (its state covers that).
func (c *Consumer) RunAfter(ctx context.Context, after uint64, h Handler) error {
	if after == startUnknown {
		after--
	}
	return c.run(ctx, h, after)
}

// run is Run, resuming after the handler's position after, or after
// the ack floor read at the start when after is startUnknown.
func (c *Consumer) run(ctx context.Context, h Handler, after uint64) error {
	s := &runState{c: c, h: h, resetFrom: startUnknown, after: after, quiet: time.Now()}
	// A fetch or a reset in flight when the connection comes back (its
	// server went away) may never be answered: its requests can have died
	// with the old connection, and it would wait out MaxWait or
	// resetWait. It is abandoned at once and tried again on the new
	// connection; what an abandoned fetch was sent after it shows as a
	// delivery gap, which a reset repairs.
	nc := c.js.Conn()
	status := nc.StatusChanged(nats.CONNECTED)
	quit := make(chan struct{})
	var watching sync.WaitGroup
	watching.Go(func() {
		for {
			select {
			case <-status:
				s.abortInFlight()
			case <-quit:
				return
			}
		}
	})
	defer func() {
		close(quit)
		watching.Wait()
		nc.RemoveStatusListener(status)
	}()
	fails := 0
	for ctx.Err() == nil {
		if err := c.fence(); err != nil {
			return err
		}
		var err error
		switch {
		case s.resetFrom == startUnknown:
			err = s.start(ctx)
		case s.resetFrom != 0:
			rctx, cancel := s.abortable(ctx)
			err = c.reset(rctx, s.resetFrom)
			if err != nil && errors.Is(context.Cause(rctx), errReconnected) {
				err = nil // abandoned at a reconnect: again, at once
			} else if err == nil {
				// What was queued comes again from the new consumer.
				clear(s.queue)
				s.queue, s.resetFrom, s.dseq = s.queue[:0], 0, 0
				s.quiet, s.unavailable = time.Now(), time.Time{}
			}
			cancel()
		default:
			before := s.dseq
			err = s.fetch(ctx)
			if serr := s.checkStalled(ctx, s.dseq != before, err); err == nil {
				err = serr
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			fails = 0
		case errors.Is(err, errUnreadable), errors.Is(err, ErrFenced):
			return err
		case errors.Is(err, errGap):
			c.log.Info("lost delivery; resuming after the last accepted message", "err", err, "from", s.accepted+1)
			s.resetFrom = s.accepted + 1
		case s.resetFrom == 0 && (errors.Is(err, jetstream.ErrServerShutdown) || errors.Is(err, jetstream.ErrConsumerLeadershipChanged)):
			// The consumer's leader stepped down, or its server is going
			// (which steps it down): a new leader takes over within
			// moments, so fetch again without asking whether the
			// consumer is gone (a question its old server may never
			// answer) and without backing off further than the first
			// step, which would only add to the election.
			c.log.Info("pull ended by the consumer's leader; fetching again", "err", err)
			if !backoff.Sleep(ctx, c.backoff(1)) {
				return nil
			}
		case s.resetFrom == 0 && mayBeDeleted(err, fails) && c.deleted(ctx):
			c.log.Warn("consumer deleted; creating it again after the last accepted message", "err", err, "from", s.accepted+1)
			s.resetFrom = s.accepted + 1
		default:
			fails++
			c.log.Warn("consume failed", "err", err, "attempt", fails)
			if !backoff.Sleep(ctx, c.backoff(uint64(fails))) {
				return nil
			}
		}
	}
	return nil
}

// fence asks ConsumerOptions.Fence, if any.
func (c *Consumer) fence() error {
	if c.o.Fence == nil {
		return nil
	}
	if err := c.o.Fence(); err != nil {
		return fmt.Errorf("consumer %s: %w: %w", c.o.Durable, ErrFenced, err)
	}
	return nil
}

// mayBeDeleted says whether a fetch's err, after fails failed fetches
// in a row before it, is worth asking the server whether the consumer
// still exists: when the server said it was deleted, or from the third
// failure on. A consumer whose leader is being elected also has no
// responders, and a question about it is often not answered until the
// election is over: asking at the first failure would only hold the Run.
func mayBeDeleted(err error, fails int) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || fails >= 2
}

// deleted reports whether the consumer is gone from the server (an
// operator deleted it), after a failed fetch. It waits at most MaxWait
// for the answer: a request sent as the connection's server goes away is
// never answered, and the client's own default wait (5 s) would hold the
// Run that long.
func (c *Consumer) deleted(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, c.o.MaxWait)
	defer cancel()
	_, err := c.consumer().Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

var (
	errUnreadable = errors.New("delivery without JetStream metadata")
	errGap        = errors.New("delivery sequence gap")
)

// startUnknown marks a Run that has not read the consumer's state yet.
const startUnknown = ^uint64(0)

// held is a delivered message not yet accepted.
type held struct {
	raw      jetstream.Msg
	msg      Msg
	failures uint64 // failed handler attempts in this Run
}

// runState is what Run carries from one fetch to the next.
type runState struct {
	c *Consumer
	h Handler

	queue    []held // delivered, not yet accepted, in stream order
	msgs     []Msg  // the handler's argument, reused
	dseq     uint64 // consumer sequence of the last delivery taken in
	accepted uint64 // stream sequence of the last message accepted
	// alone, after a failure, is the last sequence of the failed group:
	// until the handler has accepted it, it gets one message at a time.
	alone uint64
	// resetFrom, when not 0, is where the consumer must be recreated to
	// start before the next fetch; startUnknown before start.
	resetFrom uint64
	// after is the position of the handler's state given to RunAfter
	// (startUnknown for Run).
	after uint64
	// quiet is when the pulls began to come back empty (the last
	// delivery, failed pull, start of the Run or reset, or stall check),
	// and unavailable when they began to fail with "temporarily
	// unavailable" (zero when the last one did not): checkStalled.
	quiet, unavailable time.Time
	// short: the last pull of a lingering consumer did not fill Batch.
	short bool

	mu    sync.Mutex
	abort context.CancelCauseFunc // ends the fetch or reset in flight; nil between them
}

// errReconnected abandons a fetch or reset when the connection comes back.
var errReconnected = errors.New("connection re-established")

// abortable returns a context for one fetch or reset that a reconnect
// cancels (with cause errReconnected), and the function that ends it.
func (s *runState) abortable(ctx context.Context) (context.Context, func()) {
	actx, cancel := context.WithCancelCause(ctx)
	s.mu.Lock()
	s.abort = cancel
	s.mu.Unlock()
	return actx, func() {
		s.mu.Lock()
		s.abort = nil
		s.mu.Unlock()
		cancel(nil)
	}
}

// abortInFlight abandons the fetch or reset in flight, if any.
func (s *runState) abortInFlight() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.abort != nil {
		s.abort(errReconnected)
	}
}

// start reads where the consumer stands. Messages still unacknowledged (a
// Run that was killed) make it recreate the consumer after the ack floor,
// so that they come back first.
func (s *runState) start(ctx context.Context) error {
	info, err := s.c.Info(ctx)
	if err != nil {
		return err
	}
	floor := AckFloor(info)
	s.accepted, s.dseq, s.resetFrom = floor, info.Delivered.Consumer, 0
	if s.after != startUnknown {
		if floor > s.after {
			missed, err := s.c.holds(ctx, s.after+1, floor)
			if err != nil {
				return err
			}
			if missed {
				s.c.log.Warn("the consumer's ack floor is past the handler's state: resuming after the handler's position", "ack_floor", floor, "from", s.after+1)
				s.accepted, s.resetFrom = s.after, s.after+1
				return nil
			}
			// Only other subjects' messages between (a consumer created
			// at a sequence moves its floor to the first of its own).
		} else {
			s.accepted = s.after
		}
	}
	if info.NumAckPending > 0 {
		s.c.log.Info("resuming after the last acknowledged message", "unacked", info.NumAckPending, "from", s.accepted+1)
		s.resetFrom = s.accepted + 1
	}
	return nil
}

// checkStalled is called after every pull, with whether it delivered
// anything and its error. A consumer is stalled when its pulls have come
// back empty, without a failure between, for StallAfter — a leader with
// "NO quorum, stalled" takes them and sends nothing — or have failed with
// "temporarily unavailable" for StallAfter (no leader at all), while the
// stream holds messages of its subjects after the last one accepted;
// then the consumer is created again after that one (a reset). Failures
// of other kinds (an outage: timeouts, no responders) restart both
// clocks, so that a consumer is not recreated the moment the cluster
// comes back.
func (s *runState) checkStalled(ctx context.Context, delivered bool, err error) error {
	o := s.c.o
	now := time.Now()
	var since time.Time
	switch {
	case delivered:
		s.quiet, s.unavailable = now, time.Time{}
		return nil
	case err == nil:
		s.unavailable = time.Time{}
		since = s.quiet
	case IsUnavailable(err):
		if s.unavailable.IsZero() {
			s.unavailable = now
		}
		s.quiet = now
		since = s.unavailable
	default:
		s.quiet, s.unavailable = now, time.Time{}
		return nil
	}
	if o.StallAfter < 0 || len(s.queue) > 0 || now.Sub(since) < o.StallAfter {
		return nil
	}
	waiting, herr := s.c.holds(ctx, s.accepted+1, math.MaxUint64)
	if herr != nil {
		return herr // a failed pull, for Run: logged and retried
	}
	if waiting {
		s.c.log.Error("consumer stalled: nothing delivered while its subjects hold messages after the last accepted; creating it again",
			"for", now.Sub(since).Round(time.Second), "from", s.accepted+1, "err", err)
		s.resetFrom = s.accepted + 1
	}
	// The next check, StallAfter from now.
	s.quiet = now
	if !s.unavailable.IsZero() {
		s.unavailable = now
	}
	return nil
}

// holds reports whether the stream holds a message of the consumer's
// subjects with a sequence in [from, to].
func (c *Consumer) holds(ctx context.Context, from, to uint64) (bool, error) {
	st, err := c.js.Stream(ctx, c.o.Stream)
	if err != nil {
		return false, err
	}
	subjects := c.o.Subjects
	if len(subjects) == 0 {
		subjects = []string{">"}
	}
	for _, subj := range subjects {
		m, err := st.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("consumer %s: next message of %s from %d: %w", c.o.Durable, subj, from, err)
		}
		if m.Sequence <= to {
			return true, nil
		}
	}
	return false, nil
}

// AckFloor returns the stream sequence up to which info's consumer is
// done: everything at or below it is acknowledged or was never to be
// delivered. For a consumer created to start at a sequence (as a reset
// creates it) nats-server 2.10 and later report the sequence before it as
// the ack floor from the start, but 2.9 reports 0 until the first ack:
// taken at its word, a Run resuming such a consumer (or a worker
// rebuilding up to its floor) would start again from the stream's first
// message.
func AckFloor(info *jetstream.ConsumerInfo) uint64 {
	floor := info.AckFloor.Stream
	if c := info.Config; c.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && c.OptStartSeq > 1 {
		floor = max(floor, c.OptStartSeq-1)
	}
	return floor
}

// fetch runs one pull request: it hands what arrives to the handler, in
// groups of what has arrived (so that a light load is not held back to
// fill a batch), until the pull has ended and every message is accepted.
func (s *runState) fetch(ctx context.Context) error {
	if s.c.o.Linger > 0 {
		return s.fetchBurst(ctx)
	}
	tctx, cancelT := context.WithTimeout(ctx, s.c.o.MaxWait)
	defer cancelT()
	fctx, cancel := s.abortable(tctx)
	defer cancel()
	batch, err := s.c.consumer().Fetch(s.c.o.Batch, jetstream.FetchContext(fctx))
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	ch := batch.Messages()
	open := true
	for {
		if len(s.queue) == 0 {
			if !open {
				break
			}
			select {
			case m, ok := <-ch:
				if !ok {
					open = false
					continue
				}
				if err := s.take(m); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	take:
		for open {
			select {
			case m, ok := <-ch:
				if !ok {
					open = false
					break take
				}
				if err := s.take(m); err != nil {
					return err
				}
			default:
				break take
			}
		}
		if len(s.queue) > 0 {
			if err := s.step(ctx); err != nil {
				return err
			}
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(context.Cause(fctx), errReconnected) {
		return fmt.Errorf("fetch: %w", err)
	}
	return nil
}

// fetchBurst is fetch for a consumer with a Linger: after a short pull it
// waits Linger, then pulls what the stream holds now (the server answers
// at once, and the client library ends the pull after a second at the
// latest) and hands it to the handler once the pull has ended.
func (s *runState) fetchBurst(ctx context.Context) error {
	if s.short && !backoff.Sleep(ctx, s.c.o.Linger) {
		return ctx.Err()
	}
	batch, err := s.c.consumer().FetchNoWait(s.c.o.Batch)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	n := 0
	for ch := batch.Messages(); ; {
		var m jetstream.Msg
		var ok bool
		select {
		case m, ok = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			break
		}
		n++
		if err := s.take(m); err != nil {
			return err
		}
	}
	s.short = n < s.c.o.Batch
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("fetch: %w", err)
	}
	for len(s.queue) > 0 {
		if err := s.step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// take queues one delivery, checking that none went missing before it and
// dropping what is a redelivery of something accepted or queued already.
func (s *runState) take(m jetstream.Msg) error {
	msg, err := toMsg(m)
	if err != nil {
		return err
	}
	md, _ := m.Metadata() // toMsg has parsed it
	if dseq := md.Sequence.Consumer; dseq != s.dseq+1 {
		return fmt.Errorf("%w: delivery %d after %d", errGap, dseq, s.dseq)
	}
	s.dseq++
	if msg.Seq <= s.accepted {
		// Accepted, but its ack was lost: acknowledge again.
		if err := m.Ack(); err != nil {
			s.c.log.Warn("ack failed", "seq", msg.Seq, "err", err)
		}
		return nil
	}
	if n := len(s.queue); n > 0 && msg.Seq <= s.queue[n-1].msg.Seq {
		for i := range s.queue {
			if s.queue[i].msg.Seq == msg.Seq {
				// It expired while queued: answer the newer delivery.
				s.queue[i].raw = m
				s.queue[i].msg.Delivered = msg.Delivered
				return nil
			}
		}
		return fmt.Errorf("%w: seq %d delivered after %d", errGap, msg.Seq, s.queue[n-1].msg.Seq)
	}
	s.queue = append(s.queue, held{raw: m, msg: msg})
	return nil
}

// step hands the group at the head of the queue to the handler once.
func (s *runState) step(ctx context.Context) error {
	c := s.c
	n := min(len(s.queue), c.o.Batch)
	if s.alone != 0 {
		n = 1
	}
	group := s.queue[:n]
	s.msgs = s.msgs[:0]
	for _, q := range group {
		m := q.msg
		m.Delivered += q.failures
		s.msgs = append(s.msgs, m)
	}
	if err := c.fence(); err != nil {
		return err
	}
	herr := s.h(ctx, s.msgs)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if herr == nil {
		acks := group
		if c.o.AckAll {
			acks = group[n-1:] // it acknowledges the ones before it too
		}
		for _, q := range acks {
			if err := q.raw.Ack(); err != nil {
				// It comes back after AckWait and is acknowledged then.
				c.log.Warn("ack failed", "seq", q.msg.Seq, "err", err)
				break
			}
		}
		s.accept(n)
		return nil
	}
	for i := range group {
		group[i].failures++
	}
	first, last := s.msgs[0], s.msgs[n-1]
	attempt := first.Delivered
	if n == 1 && attempt >= uint64(c.o.MaxDeliver) {
		err := c.deadLetter(ctx, first, herr)
		if err == nil {
			c.log.Warn("dead-lettered", "seq", first.Seq, "subject", first.Subject, "attempts", attempt, "reason", herr)
			if err := s.queue[0].raw.Term(); err != nil {
				c.log.Warn("term failed", "seq", first.Seq, "err", err)
			}
			s.accept(1)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Error("dead letter failed; will retry", "seq", first.Seq, "err", err)
	} else {
		c.log.Warn("handler failed", "first_seq", first.Seq, "last_seq", last.Seq, "messages", n, "attempt", attempt, "err", herr)
	}
	if n > 1 {
		s.alone = max(s.alone, last.Seq)
	}
	// Keep what we hold from expiring while we wait.
	for _, q := range s.queue {
		if err := q.raw.InProgress(); err != nil {
			c.log.Warn("in-progress failed", "seq", q.msg.Seq, "err", err)
			break
		}
	}
	if !backoff.Sleep(ctx, c.backoff(attempt)) {
		return ctx.Err()
	}
	return nil
}

// accept drops the first n queued messages, now accepted.
func (s *runState) accept(n int) {
	s.accepted = s.queue[n-1].msg.Seq
	if s.accepted >= s.alone {
		s.alone = 0
	}
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
}

// backoff returns the wait after a failed delivery number n (1-based).
func (c *Consumer) backoff(n uint64) time.Duration {
	i := int(min(max(n, 1), uint64(len(c.o.Backoff)))) - 1
	return c.o.Backoff[i]
}

// deadLetter publishes msg to the consumer's dead-letter subject (see
// DeadLetter).
func (c *Consumer) deadLetter(ctx context.Context, msg Msg, reason error) error {
	return DeadLetter(ctx, c.js, c.o.DeadLetter, c.o.Stream, c.o.Durable, msg, reason)
}

// DeadLetterTimeout bounds the wait for JetStream to store a dead letter.
const DeadLetterTimeout = 5 * time.Second

// DeadLetter publishes msg, delivered from stream to consumer durable, to
// subject with its payload, its own headers (other than the Nats-* ones)
// and the HeaderDLQ* headers naming the reason, and waits at most
// DeadLetterTimeout for JetStream to store it. Its Nats-Msg-Id names the
// stream, consumer and sequence, so a dead letter published again after a
// crash is stored once. A Consumer dead-letters with it; a handler that
// skips a poison message itself (and returns nil) calls it too.
func DeadLetter(ctx context.Context, js jetstream.JetStream, subject, stream, durable string, msg Msg, reason error) error {
	out := nats.NewMsg(subject)
	out.Data = msg.Data
	for k, v := range msg.Header {
		if !strings.HasPrefix(k, "Nats-") {
			out.Header[k] = append([]string(nil), v...)
		}
	}
	out.Header.Set(HeaderDLQReason, headerValue(reason.Error()))
	out.Header.Set(HeaderDLQStream, stream)
	out.Header.Set(HeaderDLQConsumer, durable)
	out.Header.Set(HeaderDLQSubject, msg.Subject)
	out.Header.Set(HeaderDLQSeq, strconv.FormatUint(msg.Seq, 10))
	out.Header.Set(HeaderDLQDelivered, strconv.FormatUint(msg.Delivered, 10))
	out.Header.Set(HeaderDLQTime, msg.Time.UTC().Format(time.RFC3339Nano))
	out.Header.Set(jetstream.MsgIDHeader, "dlq."+stream+"."+durable+"."+strconv.FormatUint(msg.Seq, 10))
	pctx, cancel := context.WithTimeout(ctx, DeadLetterTimeout)
	defer cancel()
	if _, err := js.PublishMsg(pctx, out); err != nil {
		return fmt.Errorf("dead letter seq %d to %s: %w", msg.Seq, subject, err)
	}
	return nil
}

// headerValue makes s a valid header value: one line, at most maxReasonLen
// bytes of valid UTF-8.
func headerValue(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) > maxReasonLen {
		s = strings.ToValidUTF8(s[:maxReasonLen], "")
	}
	return s
}

// toMsg reads a delivery's metadata.
func toMsg(m jetstream.Msg) (Msg, error) {
	msg, _, err := toMsgMeta(m)
	return msg, err
}

// toMsgMeta reads a delivery's metadata and returns it too.
func toMsgMeta(m jetstream.Msg) (Msg, *jetstream.MsgMetadata, error) {
	md, err := m.Metadata()
	if err != nil {
		return Msg{}, nil, fmt.Errorf("%w: %v", errUnreadable, err)
	}
	return Msg{
		Subject:   m.Subject(),
		Seq:       md.Sequence.Stream,
		Delivered: md.NumDelivered,
		Pending:   md.NumPending,
		Time:      md.Timestamp,
		Header:    m.Headers(),
		Data:      m.Data(),
	}, md, nil
}
