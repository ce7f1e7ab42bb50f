package natsjs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
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
// attempt is bounded by CheckpointLimits.Call (plus 2 ms per meta subject
// beyond 100); a failed one is retried once.
func (c *Checkpoints) ListAll(ctx context.Context) (prox, push []CheckpointInfo, err error) {
	l, err := c.listAll(ctx)
	return l.prox, l.push, err
}

// listing is what listMeta found: the live checkpoints, and the delete
// markers (meta subject → its last sequence) that writers purge.
type listing struct {
	prox, push []CheckpointInfo
	markers    map[string]uint64
}

func (c *Checkpoints) listAll(ctx context.Context) (listing, error) {
	var l listing
	err := c.attempts(ctx, "list", "*", c.lim.Call, func(actx context.Context) error {
		var err error
		l, err = c.listMeta(ctx, actx)
		return err
	})
	return l, err
}

// listMeta lists the meta subjects within actx, then reads each one's last
// message within a bound that grows with their number (from ctx).
func (c *Checkpoints) listMeta(ctx, actx context.Context) (l listing, err error) {
	s, err := c.js.Stream(actx, "OBJ_"+c.bucket)
	if err != nil {
		return l, err
	}
	info, err := s.Info(actx, jetstream.WithSubjectFilter("$O."+c.bucket+".M.>"))
	if err != nil {
		return l, err
	}
	n := len(info.State.Subjects)
	gctx, cancel := context.WithTimeout(ctx, c.lim.Call+time.Duration(max(n-100, 0))*2*time.Millisecond)
	defer cancel()
	for subj := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(gctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged since the subject list
		}
		if err != nil {
			return l, err
		}
		var oi jetstream.ObjectInfo
		if err := json.Unmarshal(m.Data, &oi); err != nil {
			continue
		}
		if oi.Deleted {
			if l.markers == nil {
				l.markers = map[string]uint64{}
			}
			l.markers[subj] = m.Sequence
			continue
		}
		ci := CheckpointInfo{Name: oi.Name, Size: oi.Size, Time: m.Time}
		if part, seq, ok := parseCheckpointName(oi.Name); ok {
			ci.Partition, ci.Seq = part, seq
			l.prox = append(l.prox, ci)
		} else if seq, ok := parsePushCheckpointName(oi.Name); ok {
			ci.Partition, ci.Seq = -1, seq
			l.push = append(l.push, ci)
		}
	}
	slices.SortFunc(l.prox, newestFirst)
	slices.SortFunc(l.push, newestFirst)
	return l, nil
}

// purgeMarkers removes delete markers (meta subject → the sequence of the
// marker): the object store keeps one per deleted object for ever, and a
// worker writing a checkpoint every 10 s would leave 8,640 a day per
// partition for every listing to read. Only messages up to the marker go,
// so an object of the same name stored since is kept.
func (c *Checkpoints) purgeMarkers(ctx context.Context, markers map[string]uint64) error {
	if len(markers) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.lim.Call+time.Duration(len(markers))*2*time.Millisecond)
	defer cancel()
	s, err := c.js.Stream(pctx, "OBJ_"+c.bucket)
	if err != nil {
		return fmt.Errorf("purge delete markers in %s: %w", c.bucket, err)
	}
	for subj, seq := range markers {
		if err := s.Purge(pctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(seq+1)); err != nil {
			return fmt.Errorf("purge delete markers in %s: %w", c.bucket, err)
		}
	}
	return nil
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
	watchDone := make(chan struct{})
	defer func() {
		cancel(nil)
		<-watchDone
	}()
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
		err = c.readInto(rctx, info, buf, h)
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

// readInto reads the chunks of info's object with an ordered consumer
// until it holds info.Size bytes. It does not trust the consumer to say
// when it has read everything (under load a server reports nothing
// pending while chunks are still on their way): it stops on the size, and
// while waiting it asks the server how many chunks the object's chunk
// subject still holds — fewer than the meta names means the object is
// being deleted (errShortObject; get then looks whether it is gone).
func (c *Checkpoints) readInto(ctx context.Context, info *jetstream.ObjectInfo, buf *bytes.Buffer, h io.Writer) error {
	subj := "$O." + c.bucket + ".C." + info.NUID
	s, err := c.js.Stream(ctx, "OBJ_"+c.bucket)
	if err != nil {
		return err
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return err
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for uint64(buf.Len()) < info.Size {
		m, err := it.Next(jetstream.NextMaxWait(c.lim.GoneEvery))
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, nats.ErrTimeout) {
			si, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
			if err != nil {
				return err
			}
			if si.State.Subjects[subj] < uint64(info.Chunks) {
				return fmt.Errorf("%w: %d chunks of %d stored", errShortObject, si.State.Subjects[subj], info.Chunks)
			}
			continue
		}
		if err != nil {
			return err
		}
		if uint64(buf.Len()+len(m.Data())) > info.Size {
			return errShortObject
		}
		buf.Write(m.Data())
		h.Write(m.Data())
	}
	return nil
}

// put stores data as object name, bounded by transfer(len(data)) and
// retried once.
func (c *Checkpoints) put(ctx context.Context, name string, data []byte) error {
	return c.attempts(ctx, "put", name, c.transfer(uint64(len(data))), func(ctx context.Context) error {
		_, err := c.store.PutBytes(ctx, name, data)
		return err
	})
}

// delete deletes object name, bounded and retried once, and then its
// delete marker (see purgeMarkers); an absent one is not an error.
func (c *Checkpoints) delete(ctx context.Context, name string) error {
	err := c.attempts(ctx, "delete", name, c.lim.Call, func(ctx context.Context) error {
		err := c.store.Delete(ctx, name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		subj := "$O." + c.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
		s, err := c.js.Stream(ctx, "OBJ_"+c.bucket)
		if err != nil {
			return err
		}
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var oi jetstream.ObjectInfo
		if json.Unmarshal(m.Data, &oi) != nil || !oi.Deleted {
			return nil // stored again since
		}
		return s.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(m.Sequence+1))
	})
	return err
}
