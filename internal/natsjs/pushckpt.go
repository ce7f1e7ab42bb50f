package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Push checkpoints live in the same object-store bucket as the proximity
// checkpoints (CheckpointBucket), named "out-push/<OUT stream sequence, 20
// digits>": push state is one function of the whole OUT stream, the same
// on every push instance, so there is one series of them, not one per
// instance (docs/pipeline.md "Push checkpoints").

// PushCheckpointName is the object name of the push checkpoint at OUT
// sequence seq.
func PushCheckpointName(seq uint64) string { return fmt.Sprintf("out-push/%020d", seq) }

func parsePushCheckpointName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, "out-push/")
	if !ok || len(s) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil
}

// PushList returns the stored push checkpoints, newest (highest sequence)
// first; Partition is -1 in each.
func (c *Checkpoints) PushList(ctx context.Context) ([]CheckpointInfo, error) {
	infos, err := c.list(ctx)
	if err != nil {
		if errors.Is(err, errNoObjects) {
			return nil, nil
		}
		return nil, fmt.Errorf("list checkpoints in %s: %w", c.bucket, err)
	}
	var out []CheckpointInfo
	for _, o := range infos {
		if o.Deleted {
			continue
		}
		seq, ok := parsePushCheckpointName(o.Name)
		if !ok {
			continue
		}
		out = append(out, CheckpointInfo{Partition: -1, Seq: seq, Size: o.Size, Name: o.Name, Time: o.ModTime})
	}
	slices.SortFunc(out, func(a, b CheckpointInfo) int {
		switch {
		case a.Seq > b.Seq:
			return -1
		case a.Seq < b.Seq:
			return 1
		}
		return 0
	})
	return out, nil
}

// PushGet returns the bytes of the push checkpoint at seq; an object whose
// content does not match its digest is an error.
func (c *Checkpoints) PushGet(ctx context.Context, seq uint64) ([]byte, error) {
	name := PushCheckpointName(seq)
	b, err := c.store.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get checkpoint %s/%s: %w", c.bucket, name, err)
	}
	return b, nil
}

// PushPut stores the push checkpoint at seq, replacing one of the same
// name (which, written by any push instance, holds the same bytes).
func (c *Checkpoints) PushPut(ctx context.Context, seq uint64, data []byte) error {
	name := PushCheckpointName(seq)
	if _, err := c.store.PutBytes(ctx, name, data); err != nil {
		return fmt.Errorf("put checkpoint %s/%s: %w", c.bucket, name, err)
	}
	return nil
}

// PushDelete deletes the push checkpoint at seq; an absent one is not an
// error.
func (c *Checkpoints) PushDelete(ctx context.Context, seq uint64) error {
	name := PushCheckpointName(seq)
	if err := c.store.Delete(ctx, name); err != nil && !errors.Is(err, errObjectNotFound) {
		return fmt.Errorf("delete checkpoint %s/%s: %w", c.bucket, name, err)
	}
	return nil
}

// PushPrune deletes all but the keep newest push checkpoints.
func (c *Checkpoints) PushPrune(ctx context.Context, keep int) error {
	all, err := c.PushList(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ci := range all[min(keep, len(all)):] {
		errs = append(errs, c.PushDelete(ctx, ci.Seq))
	}
	return errors.Join(errs...)
}

var (
	errNoObjects      = jetstream.ErrNoObjectsFound
	errObjectNotFound = jetstream.ErrObjectNotFound
)
