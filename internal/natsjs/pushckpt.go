package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	_, push, err := c.ListAll(ctx)
	return push, err
}

// PushGet returns the bytes of the push checkpoint at seq; an object whose
// content does not match its digest is an error.
func (c *Checkpoints) PushGet(ctx context.Context, seq uint64) ([]byte, error) {
	return c.get(ctx, PushCheckpointName(seq))
}

// PushPut stores the push checkpoint at seq, replacing one of the same
// name (which, written by any push instance, holds the same bytes).
func (c *Checkpoints) PushPut(ctx context.Context, seq uint64, data []byte) error {
	return c.put(ctx, PushCheckpointName(seq), data)
}

// PushDelete deletes the push checkpoint at seq; an absent one is not an
// error.
func (c *Checkpoints) PushDelete(ctx context.Context, seq uint64) error {
	return c.delete(ctx, PushCheckpointName(seq))
}

// PushPrune deletes all but the keep newest push checkpoints, and the
// delete markers of objects deleted before (see purgeMarkers).
func (c *Checkpoints) PushPrune(ctx context.Context, keep int) error {
	l, err := c.listAll(ctx)
	if err != nil {
		return err
	}
	errs := []error{c.purgeMarkers(ctx, l.markers)}
	for _, ci := range l.push[min(keep, len(l.push)):] {
		errs = append(errs, c.PushDelete(ctx, ci.Seq))
	}
	return errors.Join(errs...)
}
