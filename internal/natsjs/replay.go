package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultReplayWait is how long Replay waits for a message before asking
// the server whether it has read everything.
const DefaultReplayWait = 500 * time.Millisecond

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

// Replay reads a stream in order from StartSeq with an ephemeral ordered
// consumer (no acks, no state on the server beyond the read; a gap is
// repaired by the client library), handing the messages to h in batches.
// It returns nil once it has handed over the last message present (unless
// Follow), h's error as soon as h fails (nothing is retried: a replay is a
// read), and ctx's error when cancelled first.
//
// On a cluster the ordered consumer lives on one server (it has one
// replica); when that server goes away the consumer stops delivering, and
// the client library may not notice for a long time. So when nothing has
// come for StallAfter and the consumer's server does not answer for it,
// or says it holds messages not delivered, Replay reads on from the next
// sequence with a new consumer (on a server that answers).
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
	var one string
	var filters []string
	if err := setFilter(js, o.Subjects, &one, &filters); err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	if one != "" {
		filters = []string{one} // the ordered consumer sends one as FilterSubject
	}
	stream, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	if st := stream.CachedInfo().State; !o.Follow && (st.Msgs == 0 || st.LastSeq < max(o.StartSeq, 1)) {
		return nil // nothing to read
	}
	next := max(o.StartSeq, 1)
	for {
		err := replayFrom(ctx, stream, o, filters, &next, h)
		if !errors.Is(err, errStalled) {
			return err
		}
	}
}

// DefaultStallAfter is the least time without a message after which Replay
// asks whether its consumer still delivers.
const DefaultStallAfter = 2 * time.Second

// errStalled ends a replayFrom whose consumer no longer delivers.
var errStalled = errors.New("ordered consumer stalled")

// replayFrom reads from *next with one ordered consumer, advancing *next
// past every message h accepts, until the end (see Replay) or errStalled.
func replayFrom(ctx context.Context, stream jetstream.Stream, o ReplayOptions, filters []string, next *uint64, h Handler) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubjects: filters}
	if *next > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = *next
	}
	oc, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(2 * o.Batch))
	if err != nil {
		return fmt.Errorf("replay %s: %w", o.Stream, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	msgs := make([]Msg, 0, o.Batch)
	var last uint64 // stream sequence of the last message received
	idleSince := time.Now()
	for {
		m, err := it.Next(jetstream.NextMaxWait(o.MaxWait))
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrTimeout):
			idle := time.Since(idleSince) >= o.StallAfter
			if o.Follow && !idle {
				continue
			}
			done, err := caughtUp(ctx, oc, last, o.MaxWait)
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
		case err != nil:
			return fmt.Errorf("replay %s: %w", o.Stream, err)
		}
		msg, err := toMsg(m)
		if err != nil {
			return fmt.Errorf("replay %s: %w", o.Stream, err)
		}
		msgs = append(msgs[:0], msg)
		last = msg.Seq
		// Gather what the server says is right behind: it is in the
		// buffer or on its way.
		for msg.Pending > 0 && len(msgs) < o.Batch {
			m, err := it.Next(jetstream.NextMaxWait(o.MaxWait))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nats.ErrTimeout) {
				break
			}
			if err != nil {
				return fmt.Errorf("replay %s: %w", o.Stream, err)
			}
			if msg, err = toMsg(m); err != nil {
				return fmt.Errorf("replay %s: %w", o.Stream, err)
			}
			msgs = append(msgs, msg)
			last = msg.Seq
		}
		if err := h(ctx, msgs); err != nil {
			return err
		}
		*next = msgs[len(msgs)-1].Seq + 1
		idleSince = time.Now()
		if !o.Follow && msgs[len(msgs)-1].Pending == 0 {
			return nil
		}
	}
}

// caughtUp asks the server, waiting up to wait (at least a second), whether
// the ordered consumer has nothing left to deliver. Call it only when the
// client's buffer is empty (a Next timed out). last is the stream sequence
// of the last message received: a message the server has delivered but
// that is still on its way (a loaded box) is not caught up with. An error
// says that no server answered for the consumer (it is gone, or being
// recreated).
func caughtUp(ctx context.Context, oc jetstream.Consumer, last uint64, wait time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, max(wait, time.Second))
	defer cancel()
	info, err := oc.Info(ctx)
	if err != nil {
		return false, err
	}
	inFlight := info.Delivered.Consumer > 0 && info.Delivered.Stream > last
	return info.NumPending == 0 && info.NumAckPending == 0 && !inFlight, nil
}
