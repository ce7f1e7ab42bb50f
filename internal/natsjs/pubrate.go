package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// PublishRate defaults.
const (
	DefaultPublishRateDuration    = 2 * time.Second
	DefaultPublishRateMaxInFlight = 256
)

// pubRateStall is how long a publish may wait for a free slot in the window,
// i.e. for the oldest ack, before PublishRate gives up.
const pubRateStall = 10 * time.Second

// PublishRateOptions configures PublishRate.
type PublishRateOptions struct {
	// Size of every message's payload in bytes (0 is allowed; at most the
	// server's max payload).
	Size int
	// Duration of the publishing; default DefaultPublishRateDuration.
	Duration time.Duration
	// MaxInFlight bounds the publishes awaiting their ack (the window of
	// jetstream's async publish, as `nats bench js pub async` uses it);
	// default DefaultPublishRateMaxInFlight.
	MaxInFlight int
	// Stream names the temporary stream (file storage, one replica, no
	// limits, subject "pubrate.<Stream>"). It must not exist: PublishRate
	// refuses a name in use, so that it never deletes a stream it did not
	// create. Empty means "PUBRATE_<nuid>".
	Stream string
}

// PublishRateResult is what the broker did.
type PublishRateResult struct {
	// Msgs is the number of messages the server acknowledged; Stored the
	// number the stream held at the end, read from the server (equal unless
	// something else published on its subject).
	Msgs, Stored int
	// Seconds from the first publish to the last ack.
	Seconds                 float64
	MsgsPerSec, BytesPerSec float64 // Msgs and their payload bytes per second
}

// PublishRate measures how fast the JetStream server behind nc stores
// messages of o.Size bytes published asynchronously from one connection with
// at most o.MaxInFlight unacknowledged, for o.Duration: the broker's own
// rate on this box at this moment, to set a pipeline's throughput against.
//
// It creates the stream o.Stream, publishes until o.Duration has passed,
// waits for every ack, reads how many messages the stream holds and deletes
// it — also when it fails or ctx ends (the deletion then runs on a context of
// its own, for at most 10 s). The file stream has no size limit: a long run
// at a high rate needs the disk for Duration × rate × Size bytes.
//
// It returns an error (with the result so far) when a publish is refused or
// not acknowledged, when ctx ends, or when the stream cannot be created or
// deleted. PublishRate uses a JetStream context of its own on nc, and never
// closes nc.
func PublishRate(ctx context.Context, nc *nats.Conn, o PublishRateOptions) (res PublishRateResult, err error) {
	if nc == nil {
		return res, errors.New("publish rate: nil connection")
	}
	if o.Duration <= 0 {
		o.Duration = DefaultPublishRateDuration
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultPublishRateMaxInFlight
	}
	if o.Stream == "" {
		o.Stream = "PUBRATE_" + nuid.Next()
	}
	if o.Size < 0 || int64(o.Size) > nc.MaxPayload() {
		return res, fmt.Errorf("publish rate: size %d outside [0, %d] (the server's max payload)", o.Size, nc.MaxPayload())
	}

	// The outcome of every publish, counted by the callbacks.
	var (
		mu            sync.Mutex
		acked, failed int
		firstErr      error
		outcomes      = func() int { mu.Lock(); defer mu.Unlock(); return acked + failed }
		anyFailed     = func() bool { mu.Lock(); defer mu.Unlock(); return failed > 0 }
	)
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(o.MaxInFlight),
		jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) {
			mu.Lock()
			acked++
			mu.Unlock()
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			mu.Lock()
			failed++
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}),
	)
	if err != nil {
		return res, fmt.Errorf("publish rate: %w", err)
	}
	defer js.CleanupPublisher()

	if _, err := js.Stream(ctx, o.Stream); err == nil {
		return res, fmt.Errorf("publish rate: stream %s already exists", o.Stream)
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return res, fmt.Errorf("publish rate: stream %s: %w", o.Stream, err)
	}
	subject := "pubrate." + o.Stream
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      o.Stream,
		Subjects:  []string{subject},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
		Replicas:  1,
	})
	if err != nil {
		return res, fmt.Errorf("publish rate: create stream %s: %w", o.Stream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := js.DeleteStream(dctx, o.Stream); derr != nil {
			err = errors.Join(err, fmt.Errorf("publish rate: delete stream %s: %w", o.Stream, derr))
		}
	}()

	payload := make([]byte, o.Size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	sent := 0
	start := time.Now()
	end := start.Add(o.Duration)
	for {
		if sent%256 == 0 {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("publish rate: %w", err)
			}
			if time.Now().After(end) || anyFailed() {
				break // a refused publish ends the run: the error says why
			}
		}
		if _, err := js.PublishAsync(subject, payload, jetstream.WithStallWait(pubRateStall)); err != nil {
			return res, fmt.Errorf("publish rate: publish %d: %w", sent+1, err)
		}
		sent++
	}
	// PublishAsyncComplete closes once no ack is outstanding (every publish
	// above has registered its own); the callbacks have run by then, but
	// the count is what decides.
	wait := time.NewTimer(pubRateStall)
	defer wait.Stop()
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return res, fmt.Errorf("publish rate: waiting for acks: %w", ctx.Err())
	case <-wait.C:
		return res, fmt.Errorf("publish rate: %d acks outstanding after %v", js.PublishAsyncPending(), pubRateStall)
	}
	for outcomes() < sent {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("publish rate: waiting for acks: %w", ctx.Err())
		case <-wait.C:
			return res, fmt.Errorf("publish rate: %d of %d outcomes after %v", outcomes(), sent, pubRateStall)
		case <-time.After(time.Millisecond):
		}
	}
	elapsed := time.Since(start).Seconds()

	mu.Lock()
	res.Msgs, res.Seconds = acked, elapsed
	nFailed, first := failed, firstErr
	mu.Unlock()
	res.MsgsPerSec = float64(res.Msgs) / elapsed
	res.BytesPerSec = res.MsgsPerSec * float64(o.Size)
	info, err := stream.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("publish rate: stream info: %w", err)
	}
	res.Stored = int(info.State.Msgs)
	if nFailed > 0 {
		return res, fmt.Errorf("publish rate: %d of %d publishes failed, the first with: %w", nFailed, sent, first)
	}
	return res, nil
}
