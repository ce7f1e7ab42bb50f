package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FindMsgID reports whether stream holds, on subject, a message stored at
// or after since whose Nats-Msg-Id header is id. It reads the headers only
// (an ephemeral ordered consumer, headers-only, from since) up to the
// stream's last message at the time of the call, so its cost is the
// messages of subject stored since then. It is how a publisher learns the
// outcome of a publish that got no answer once the duplicate window, in
// which a republish with the same id would tell, has passed: found means
// stored; not found means not stored by the time of the call (a publish
// still in flight inside the server could be stored later; after far
// longer than any publish takes, none is).
func FindMsgID(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, id string) (bool, error) {
	err := scan(ctx, js, stream, subject, since, true, func(m jetstream.Msg) error {
		if m.Headers().Get(jetstream.MsgIDHeader) == id {
			return errFound
		}
		return nil
	}, func(err error) error { return fmt.Errorf("find msg id %s in %s: %w", id, stream, err) })
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

// errFound ends FindMsgID's scan at the message it looks for.
var errFound = errors.New("found")

// ScanSince hands h every message of stream on subject (a wildcard is
// fine) stored at or after since, in stream order, headers and data, up
// to the stream's last message at the time of the call (an ephemeral
// ordered consumer from since, as FindMsgID's but with the data). It
// returns h's first error, or nil once it has read every message present.
// It is how an ingest instance finds the moves a dead instance stored but
// never acknowledged (services/ingest, orphans.go).
func ScanSince(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, h func(jetstream.Msg) error) error {
	return scan(ctx, js, stream, subject, since, false, h, func(err error) error { return fmt.Errorf("scan %s since %v: %w", stream, since, err) })
}

// MsgIDsSince hands f the Nats-Msg-Id of every message of stream on
// subject stored at or after since, in stream order (headers only, as
// FindMsgID reads them), up to the stream's last message at the time of
// the call. A publisher that may publish again what it published before
// its restart reads what is there already: JetStream's duplicate window
// does not always catch a copy — nats-server 2.9 lets a new stream leader
// take writes before it has applied every message it caught up with,
// and the ids of those are missing from its window (fixed in 2.11,
// nats-server#6485 and #6486).
func MsgIDsSince(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, f func(id string)) error {
	return scan(ctx, js, stream, subject, since, true, func(m jetstream.Msg) error {
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
			f(id)
		}
		return nil
	}, func(err error) error {
		return fmt.Errorf("msg ids of %s in %s since %v: %w", subject, stream, since, err)
	})
}

// scan is FindMsgID's and ScanSince's reader: an ephemeral ordered
// consumer of stream on subject from since (headers only if headersOnly)
// handing h each message, up to the stream's last message at the time of
// the call. It returns h's first error and ctx's as they are, and wraps
// its own failures with wrap.
func scan(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, headersOnly bool, h func(jetstream.Msg) error, wrap func(error) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return wrap(err)
	}
	if s.CachedInfo().State.Msgs == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
		HeadersOnly:    headersOnly,
	}
	oc, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return wrap(err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return wrap(err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var last uint64 // the stream sequence of the last message read
	for {
		m, err := it.Next(jetstream.NextMaxWait(200 * time.Millisecond))
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrTimeout):
			done, err := caughtUp(ctx, oc, last, time.Second)
			if errors.Is(err, jetstream.ErrOrderedConsumerNotCreated) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue // being (re)created: ask again
			}
			if err != nil {
				return wrap(err)
			}
			if done {
				return nil
			}
			continue
		case err != nil:
			return wrap(err)
		}
		if err := h(m); err != nil {
			return err
		}
		md, err := m.Metadata()
		if err == nil {
			last = md.Sequence.Stream
			if md.NumPending == 0 {
				return nil
			}
		}
	}
}
