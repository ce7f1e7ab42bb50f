package natsjs

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderDLQIndex names, in a dead letter that carries some events of a
// batch rather than the whole message, the indexes of those events in the
// original batch (comma-separated).
const HeaderDLQIndex = "Treasure-Dlq-Index"

// DeadLetterEvents publishes part of an input message — data, a batch of
// the events a handler could not apply — to subject (Topology.DLQSubject)
// with the same headers as a whole message's dead letter (HeaderDLQ*:
// reason, stream, consumer, subject, sequence, time) plus HeaderDLQIndex,
// and waits for JetStream to store it. Its Nats-Msg-Id is derived from the
// stream, consumer and sequence, so the dead letter of a message handled
// again after a crash is stored once.
func DeadLetterEvents(ctx context.Context, js jetstream.JetStream, subject string, msg Msg, stream, consumer string, indexes []int, data []byte, reason string) error {
	out := nats.NewMsg(subject)
	out.Data = data
	out.Header.Set(HeaderDLQReason, headerValue(reason))
	out.Header.Set(HeaderDLQStream, stream)
	out.Header.Set(HeaderDLQConsumer, consumer)
	out.Header.Set(HeaderDLQSubject, msg.Subject)
	out.Header.Set(HeaderDLQSeq, strconv.FormatUint(msg.Seq, 10))
	out.Header.Set(HeaderDLQTime, msg.Time.UTC().Format(time.RFC3339Nano))
	idx := make([]byte, 0, 4*len(indexes))
	for i, v := range indexes {
		if i > 0 {
			idx = append(idx, ',')
		}
		idx = strconv.AppendInt(idx, int64(v), 10)
	}
	out.Header.Set(HeaderDLQIndex, headerValue(string(idx)))
	out.Header.Set(jetstream.MsgIDHeader, "dlq-events."+stream+"."+consumer+"."+strconv.FormatUint(msg.Seq, 10))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(pctx, out); err != nil {
		return fmt.Errorf("dead letter events of seq %d to %s: %w", msg.Seq, subject, err)
	}
	return nil
}
