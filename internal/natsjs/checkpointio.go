package natsjs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The bounded calls of Checkpoints (see its doc): every call gets its own
// timeout, derived from the caller's context, and is tried at most twice.
// A checkpoint that is absent or was deleted while it was read is
// jetstream.ErrObjectNotFound at once (no retry); one whose bytes do not
// match their digest is jetstream.ErrDigestMismatch (no retry either).

// errGone is the cause of a read given up because its object went away.
var errGone = fmt.Errorf("%w (deleted or replaced while read)", jetstream.ErrObjectNotFound)

// attempts runs f at most twice, each time with a context bounded by
// timeout(attempt context's parent); it returns f's last error, or ctx's
// once ctx has ended. Errors that another try cannot mend end it early.
func (c *Checkpoints) attempts(ctx context.Context, op, name string, timeout time.Duration, f func(ctx context.Context) error) error {
	var err error
	tries := 0
	for tries < 2 {
		tries++
		actx, cancel := context.WithTimeout(ctx, timeout)
		err = f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s checkpoint %s/%s: %w", op, c.bucket, name, ctx.Err())
		}
		if errors.Is(err, jetstream.ErrObjectNotFound) || errors.Is(err, jetstream.ErrDigestMismatch) || errors.Is(err, errShortObject) {
			break
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("timed out (%v): %w", timeout, err)
	}
	return fmt.Errorf("%s checkpoint %s/%s (%d tries): %w", op, c.bucket, name, tries, err)
}

// transfer is how long a get or put of n bytes may take.
func (c *Checkpoints) transfer(n uint64) time.Duration {
	return c.lim.Call + time.Duration(float64(n)/c.lim.Rate*float64(time.Second))
}

// ListAll lists the bucket's checkpoints from its meta subjects (the
// stream's subject list, then the last meta message of each), not with
// the object store's watcher, which can wait for ever on nats-server 2.9
// when a delete races it: proximity checkpoints by partition then newest
// first (as List), and push checkpoints newest first (as PushList).
// Deleted objects and objects with other names are left out. Each
// attempt is bounded by CheckpointLimits.Call; a failed one is retried
// once.
func (c *Checkpoints) ListAll(ctx context.Context) (prox, push []CheckpointInfo, err error) {
	err = c.attempts(ctx, "list", "*", c.lim.Call, func(ctx context.Context) error {
		prox, push, err = c.listMeta(ctx)
		return err
	})
	return prox, push, err
}

func (c *Checkpoints) listMeta(ctx context.Context) (prox, push []CheckpointInfo, err error) {
	s, err := c.js.Stream(ctx, "OBJ_"+c.bucket)
	if err != nil {
		return nil, nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("$O."+c.bucket+".M.>"))
	if err != nil {
		return nil, nil, err
	}
	for subj := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged since the subject list
		}
		if err != nil {
			return nil, nil, err
		}
		var oi jetstream.ObjectInfo
		if err := json.Unmarshal(m.Data, &oi); err != nil || oi.Deleted {
			continue
		}
		ci := CheckpointInfo{Name: oi.Name, Size: oi.Size, Time: m.Time}
		if part, seq, ok := parseCheckpointName(oi.Name); ok {
			ci.Partition, ci.Seq = part, seq
			prox = append(prox, ci)
		} else if seq, ok := parsePushCheckpointName(oi.Name); ok {
			ci.Partition, ci.Seq = -1, seq
			push = append(push, ci)
		}
	}
	slices.SortFunc(prox, newestFirst)
	slices.SortFunc(push, newestFirst)
	return prox, push, nil
}

// newestFirst orders checkpoints by partition, then highest sequence first.
func newestFirst(a, b CheckpointInfo) int {
	if a.Partition != b.Partition {
		return a.Partition - b.Partition
	}
	switch {
	case a.Seq > b.Seq:
		return -1
	case a.Seq < b.Seq:
		return 1
	}
	return 0
}

// errShortObject: the chunks read do not add up to the object's size.
var errShortObject = errors.New("object shorter or longer than its meta says")

// get reads object name, bounded: its meta (CheckpointLimits.Call), then
// its chunks (transfer(size)), while looking every GoneEvery whether the
// object is still the one whose meta was read; if not, or if it is gone
// after a read that fell short, the answer is ErrObjectNotFound at once.
// The chunks are read with an ordered consumer, not the object store's
// reader (which waits for the chunks of a deleted object until its
// context's deadline, however it is cancelled).
func (c *Checkpoints) get(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := c.attempts(ctx, "get", name, c.lim.Call, func(actx context.Context) error {
		info, err := c.store.GetInfo(actx, name)
		if err != nil {
			return err
		}
		// The transfer gets its own bound, from the caller's context.
		tctx, cancel := context.WithTimeout(ctx, c.transfer(info.Size))
		defer cancel()
		data, err = c.readChunks(tctx, info)
		return err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// readChunks reads info's object's chunks and checks their size and
// digest, giving up with errGone when the object goes away meanwhile.
func (c *Checkpoints) readChunks(ctx context.Context, info *jetstream.ObjectInfo) ([]byte, error) {
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, errors.New("checkpoint is a link")
	}
	want, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return nil, err
	}
	gone := func() bool {
		gctx, cancel := context.WithTimeout(ctx, c.lim.Call)
		defer cancel()
		now, err := c.store.GetInfo(gctx, info.Name, jetstream.GetObjectInfoShowDeleted())
		return errors.Is(err, jetstream.ErrObjectNotFound) || err == nil && (now.Deleted || now.NUID != info.NUID)
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchDone := make(chan struct{})
	defer func() { <-watchDone }()
	go func() {
		defer close(watchDone)
		tick := time.NewTicker(c.lim.GoneEvery)
		defer tick.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
				if gone() {
					cancel(errGone)
					return
				}
			}
		}
	}()

	buf := bytes.NewBuffer(make([]byte, 0, info.Size))
	h := sha256.New()
	if info.Size > 0 {
		err = Replay(rctx, c.js, ReplayOptions{
			Stream:   "OBJ_" + c.bucket,
			Subjects: []string{"$O." + c.bucket + ".C." + info.NUID},
			Batch:    64,
			MaxWait:  100 * time.Millisecond,
		}, func(_ context.Context, msgs []Msg) error {
			for _, m := range msgs {
				if uint64(buf.Len()+len(m.Data)) > info.Size {
					return errShortObject
				}
				buf.Write(m.Data)
				h.Write(m.Data)
			}
			return nil
		})
	}
	if cause := context.Cause(rctx); errors.Is(cause, errGone) {
		return nil, errGone
	}
	if err == nil && uint64(buf.Len()) != info.Size {
		err = fmt.Errorf("%w: %d bytes of %d", errShortObject, buf.Len(), info.Size)
	}
	if err != nil {
		if gone() {
			return nil, errGone
		}
		return nil, err
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return nil, jetstream.ErrDigestMismatch
	}
	return buf.Bytes(), nil
}

// put stores data as object name, bounded by transfer(len(data)) and
// retried once.
func (c *Checkpoints) put(ctx context.Context, name string, data []byte) error {
	return c.attempts(ctx, "put", name, c.transfer(uint64(len(data))), func(ctx context.Context) error {
		_, err := c.store.PutBytes(ctx, name, data)
		return err
	})
}

// delete deletes object name, bounded and retried once; an absent one is
// not an error.
func (c *Checkpoints) delete(ctx context.Context, name string) error {
	err := c.attempts(ctx, "delete", name, c.lim.Call, func(ctx context.Context) error {
		return c.store.Delete(ctx, name)
	})
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}
