package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"treasure/internal/backoff"
)

// DefaultReplayWait is how long Replay waits for a message before asking
// the server whether it has read everything.
const DefaultReplayWait = 500 * time.Millisecond

// DefaultReplayHeartbeat is the idle heartbeat Replay asks of the server
// while it follows: a consumer that sends neither a message nor a
// heartbeat for twice as long is taken for lost (its server went away)
// and replaced. nats.go's least.
const DefaultReplayHeartbeat = 500 * time.Millisecond

// ReplayOptions configures a Replay. Stream is required.
type ReplayOptions struct {
	// Stream to read.
	Stream string
	// Subjects filters the stream; empty means all of it. More than one
	// subject needs nats-server 2.10.
	Subjects []string
	// StartSeq is the first stream sequence to read; 0 and 1 both mean
	// the start of the stream.
	StartSeq uint64
	// Batch caps the messages of one handler call. Default DefaultBatch.
	Batch int
	// MaxWait is how long Replay waits for a message before checking
	// whether it has caught up. Default DefaultReplayWait.
	MaxWait time.Duration
	// Follow keeps reading new messages after catching up, until ctx is
	// cancelled; otherwise Replay returns once it has read every message
	// present.
	Follow bool
	// StallAfter is how long without a message Replay waits before asking
	// whether its consumer still delivers (see Replay). Default
	// 4×MaxWait, at least DefaultStallAfter.
	StallAfter time.Duration
}

// Replay reads a stream in order from StartSeq with an ephemeral consumer
// of its own (one replica, in memory, no acks: no state on the server
// beyond the read), handing the messages to h in batches. It returns nil
// once it has handed over the last message present (unless Follow), h's
// error as soon as h fails (nothing is retried: a replay is a read), and
// ctx's error when cancelled first.
//
// A delivery lost on the way (a dropped connection) shows as a gap in the
// consumer's delivery sequence; Replay then reads on from the message
// after the last one handed over with a new consumer, as nats.go's
// ordered consumer does. Replay does that itself rather than use the
// ordered consumer, because on a cluster the consumer lives on one server
// and when that server goes away the ordered consumer does not notice (it
// checks its 5 s heartbeats within one Next call only, and Replay's are
// shorter), and when it does it makes its new consumer with requests it
// waits ten seconds for and retries one, two, four … seconds later, inside
// the read: far longer than the cluster takes to elect new leaders.
// Replay's own: a consumer that sends no message or heartbeat for
// 2×DefaultReplayHeartbeat while following, one read over a connection
// that has just reconnected, or one that has sent nothing for StallAfter
// while its server does not answer for it or says it holds messages not
// delivered, is replaced at once; each request to create one
// waits at most replayCreateWait and failures that waiting may cure (no
// meta leader yet, no answer) are retried after 50 ms, doubling up to a
// second (docs/operations.md, "Where the seconds went").
func Replay(ctx context.Context, js jetstream.JetStream, o ReplayOptions, h Handler) error {
	if o.Stream == "" {
		return errors.New("replay: no stream")
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultReplayWait
	}
	if o.StallAfter <= 0 {
		o.StallAfter = max(4*o.MaxWait, DefaultStallAfter)
	}
	r := replay{js: js, o: o, name: nuid.Next()}
	defer r.removing.Wait()
	if err := setFilter(js, o.Subjects, &r.cfg.FilterSubject, &r.cfg.FilterSubjects); err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	stream, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	if st := stream.CachedInfo().State; !o.Follow && (st.Msgs == 0 || st.LastSeq < max(o.StartSeq, 1)) {
		return nil // nothing to read
	}
	next := max(o.StartSeq, 1)
	var pause time.Duration
	for {
		from := next
		err := r.from(ctx, &next, h)
		if !errors.Is(err, errStalled) {
			return err
		}
		// A consumer that delivered nothing before it was replaced (one
		// deleted at once, say) is not replaced in a busy loop.
		if next > from {
			pause = 0
		} else if !backoff.Sleep(ctx, pause) {
			return ctx.Err()
		}
		pause = min(max(2*pause, 50*time.Millisecond), time.Second)
	}
}

// DefaultStallAfter is the least time without a message after which Replay
// asks whether its consumer still delivers.
const DefaultStallAfter = 2 * time.Second

// replayCreateWait bounds one request creating a replay's consumer: the
// meta leader answers within milliseconds, unless it has just gone (the
// request is then lost, or answered "cluster not available").
const replayCreateWait = 2 * time.Second

// errStalled ends a consumer that no longer delivers.
var errStalled = errors.New("replay consumer stalled")

// replay is one Replay's state across its consumers.
type replay struct {
	js     jetstream.JetStream
	o      ReplayOptions
	cfg    jetstream.ConsumerConfig // the filter; the rest set per consumer
	name   string                   // the consumers' names: name_1, name_2, …
	serial int
	// removing waits for the deletes of replaced consumers.
	removing sync.WaitGroup
}

// create creates a consumer delivering from stream sequence from,
// retrying what waiting may cure until ctx ends.
func (r *replay) create(ctx context.Context, from uint64) (jetstream.Consumer, error) {
	r.serial++
	cfg := r.cfg
	cfg.Name = r.name + "_" + strconv.Itoa(r.serial)
	cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.Replicas, cfg.MemoryStorage = 1, true
	// A consumer left behind (its reader went on with another, or
	// stopped) is removed by the server.
	cfg.InactiveThreshold = 5 * time.Minute
	var pause time.Duration
	for {
		cctx, cancel := context.WithTimeout(ctx, replayCreateWait)
		cons, err := r.js.CreateOrUpdateConsumer(cctx, r.o.Stream, cfg)
		cancel()
		switch {
		case err == nil:
			if r.serial > 1 {
				r.remove(r.name + "_" + strconv.Itoa(r.serial-1))
			}
			return cons, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !transient(err):
			return nil, fmt.Errorf("replay %s: %w", r.o.Stream, err)
		}
		// The same name again: a consumer created by a request whose
		// answer was lost is taken over, not duplicated.
		pause = min(max(2*pause, 50*time.Millisecond), time.Second)
		if !backoff.Sleep(ctx, pause) {
			return nil, ctx.Err()
		}
	}
}

// remove deletes a replaced consumer in the background (Replay waits
// for it before returning), as nats.go's ordered consumer does: one whose
// server is alive (a gap, a reconnect) would otherwise linger until its
// inactivity threshold, holding retention back. It is done after its
// successor exists, so that the stream always has a holder at the
// replay's position; a consumer that is already gone, or a server that
// does not answer within replayCreateWait, is left to the threshold.
func (r *replay) remove(name string) {
	r.removing.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), replayCreateWait)
		defer cancel()
		_ = r.js.DeleteConsumer(ctx, r.o.Stream, name)
	})
}

// from reads from *next with one consumer, advancing *next past every
// message h accepts, until the end (see Replay) or errStalled.
func (r *replay) from(ctx context.Context, next *uint64, h Handler) error {
	o := r.o
	cons, err := r.create(ctx, *next)
	if err != nil {
		return err
	}
	opts := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(2 * o.Batch)}
	wait := o.MaxWait
	if o.Follow {
		// Heartbeats tell a consumer that has gone from one with nothing
		// to send; nats.go checks them within one Next call only, which
		// must therefore outlast two of them.
		opts = append(opts, jetstream.PullHeartbeat(DefaultReplayHeartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
		wait = max(wait, 3*DefaultReplayHeartbeat)
	}
	it, err := cons.Messages(opts...)
	if err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	// A reconnect may have moved the connection off the consumer's server
	// because that server went away: read on with a new consumer at once,
	// as nats.go's ordered consumer does, rather than wait for the
	// heartbeats to stop.
	var reconnected atomic.Bool
	nc := r.js.Conn()
	status := nc.StatusChanged(nats.CONNECTED)
	quit := make(chan struct{})
	var watching sync.WaitGroup
	watching.Go(func() {
		select {
		case <-status:
			reconnected.Store(true)
			it.Stop()
		case <-quit:
		}
	})
	defer func() {
		close(quit)
		watching.Wait()
		nc.RemoveStatusListener(status)
	}()

	msgs := make([]Msg, 0, o.Batch)
	var dseq uint64 // delivery sequence of the last message received
	var last uint64 // stream sequence of the last message received
	// take reads m into msgs, or says that a delivery went missing.
	take := func(m jetstream.Msg) error {
		msg, md, err := toMsgMeta(m)
		if err != nil {
			return fmt.Errorf("replay %s: %w", o.Stream, err)
		}
		if md.Sequence.Consumer != dseq+1 {
			return errStalled // a gap: read on after what h has
		}
		dseq, last = md.Sequence.Consumer, msg.Seq
		msgs = append(msgs, msg)
		return nil
	}
	idleSince := time.Now()
	for {
		m, err := it.Next(jetstream.NextMaxWait(wait))
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrTimeout):
			idle := time.Since(idleSince) >= o.StallAfter
			if o.Follow && !idle {
				continue
			}
			done, err := caughtUp(ctx, cons, last, o.MaxWait)
			switch {
			case err == nil && done && !o.Follow:
				return nil
			case err == nil && done, !idle:
				// Idle and caught up, or not idle for long: wait on.
				if done {
					idleSince = time.Now()
				}
				continue
			}
			// Nothing came for StallAfter, and the consumer's server
			// does not answer for it or holds messages not delivered.
			return errStalled
		case lost(err, &reconnected):
			return errStalled
		case err != nil:
			return fmt.Errorf("replay %s: %w", o.Stream, err)
		}
		msgs = msgs[:0]
		if err := take(m); err != nil {
			return err
		}
		// Gather what the server says is right behind: it is in the
		// buffer or on its way. A failure after the first message is
		// handled after h has what came before it.
		var after error
		for msgs[len(msgs)-1].Pending > 0 && len(msgs) < o.Batch {
			m, err := it.Next(jetstream.NextMaxWait(o.MaxWait))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nats.ErrTimeout) {
				break
			}
			if err == nil {
				err = take(m)
			}
			if err != nil {
				after = err
				break
			}
		}
		if err := h(ctx, msgs); err != nil {
			return err
		}
		*next = msgs[len(msgs)-1].Seq + 1
		idleSince = time.Now()
		switch {
		case after == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(after, errStalled), lost(after, &reconnected):
			return errStalled
		default:
			return fmt.Errorf("replay %s: %w", o.Stream, after)
		}
		if !o.Follow && msgs[len(msgs)-1].Pending == 0 {
			return nil
		}
	}
}

// lost reports whether Next's err says that the consumer no longer
// delivers: its heartbeats stopped (its server went away), it was deleted
// (a restarted server does not keep a consumer in memory), or the
// iterator was stopped for a reconnect.
func lost(err error, reconnected *atomic.Bool) bool {
	return errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrMsgIteratorClosed) && reconnected.Load()
}

// caughtUp asks the server, waiting up to wait (at least a second), whether
// the consumer has nothing left to deliver. Call it only when the client's
// buffer is empty (a Next timed out). last is the stream sequence of the
// last message received: a message the server has delivered but that is
// still on its way (a loaded box) is not caught up with. An error says
// that no server answered for the consumer (it is gone).
func caughtUp(ctx context.Context, cons jetstream.Consumer, last uint64, wait time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, max(wait, time.Second))
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return false, err
	}
	inFlight := info.Delivered.Consumer > 0 && info.Delivered.Stream > last
	return info.NumPending == 0 && info.NumAckPending == 0 && !inFlight, nil
}
