package ranker

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
)

// outEvent is an output event and the input it belongs to.
type outEvent struct {
	msgSeq uint64
	ev     *eventpb.Event
}

// publishEvents publishes events to P.out.rank in as few messages as fit,
// cut only between inputs (or, for an input whose events alone do not fit,
// into parts starting with its first event). Each message is published once
// the previous one is stored, so what JetStream holds is always a prefix
// whose extent the last message's id names (see ids.go), and r.published
// follows it. After a failure, whose message may have been stored without
// its ack arriving, r.pubUnsure has the next call read the subject's last
// message again. lastSeq is the last input of the call.
func (r *Ranker) publishEvents(ctx context.Context, events []outEvent, lastSeq uint64) error {
	if len(events) == 0 {
		return nil
	}
	r.out.Reset()
	flush := func(id string, covered uint64) error {
		if r.out.Len() == 0 {
			return nil
		}
		f, err := r.pub.Publish(ctx, r.rankSubject, r.out.Bytes(), id) // copied
		if err == nil {
			_, err = f.Wait(ctx)
		}
		if err == nil {
			err = r.callHook("ack") // tests: an ack lost after the store
		}
		if err != nil {
			r.pubUnsure = true
			return err
		}
		r.published = max(r.published, covered)
		r.out.Reset()
		return nil
	}
	for i := 0; i < len(events); {
		seq := events[i].msgSeq
		j := i
		size := 0
		for j < len(events) && events[j].msgSeq == seq {
			size += eventSize(events[j].ev)
			j++
		}
		if r.out.Size()+size > r.out.MaxBytes || r.out.Len()+j-i > r.out.MaxEvents {
			if err := flush(rankID(seq-1), seq-1); err != nil {
				return err
			}
		}
		part := 0
		for _, e := range events[i:j] {
			err := r.out.Add(e.ev)
			if errors.Is(err, event.ErrFull) {
				if err := flush(rankPartID(seq, part), seq-1); err != nil {
					return err
				}
				part++
				err = r.out.Add(e.ev)
			}
			if err != nil {
				return fmt.Errorf("encode score event: %w", err)
			}
		}
		i = j
	}
	return flush(rankID(lastSeq), lastSeq)
}

// eventSize is the bytes ev adds to a batch.
func eventSize(ev *eventpb.Event) int {
	n := proto.Size(ev)
	return protowire.SizeTag(2) + protowire.SizeBytes(n)
}
