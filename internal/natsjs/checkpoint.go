package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/backoff"
)

// CheckpointBucket names the object-store bucket of the proximity
// checkpoints, "<prefix>-ckpt" (its stream is OBJ_<prefix>-ckpt).
func (t Topology) CheckpointBucket() string { return t.Prefix + "-ckpt" }

// Checkpoints stores the proximity workers' checkpoints in a JetStream
// object store: one object per checkpoint, named
// "in-<partition>/<IN stream sequence, 20 digits>". An object becomes
// visible only once all its chunks and then its meta message are stored, so
// a writer killed mid-way leaves no object (its chunks are purged by the
// next put's rollup or stay unreferenced); a read checks the object's
// SHA-256 digest. Safe for concurrent use.
type Checkpoints struct {
	store  jetstream.ObjectStore
	bucket string
}

// OpenCheckpoints creates the topology's checkpoint bucket, or binds to it
// when it exists (file storage, the topology's replicas). It works on
// nats-server 2.9.
func OpenCheckpoints(ctx context.Context, js jetstream.JetStream, t Topology) (*Checkpoints, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	bucket := t.CheckpointBucket()
	cfg := jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "treasure proximity checkpoints (docs/pipeline.md)",
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
	}
	// Workers starting together race to create the bucket; the loser gets
	// an error ("subjects overlap with an existing stream" on 2.9) and
	// binds to the winner's bucket instead.
	retry := backoff.Backoff{Base: 20 * time.Millisecond, Factor: 4}
	for attempt := 1; ; attempt++ {
		store, err := js.CreateOrUpdateObjectStore(ctx, cfg)
		if err == nil {
			return &Checkpoints{store: store, bucket: bucket}, nil
		}
		if bound, berr := js.ObjectStore(ctx, bucket); berr == nil {
			return &Checkpoints{store: bound, bucket: bucket}, nil
		}
		if attempt == 4 || !retry.Wait(ctx) {
			return nil, fmt.Errorf("checkpoint bucket %s: %w", bucket, err)
		}
	}
}

// ErrNoCheckpoints is returned by BindCheckpoints when the bucket does not
// exist (no worker with checkpoints has started).
var ErrNoCheckpoints = errors.New("no checkpoint bucket")

// BindCheckpoints binds to the topology's checkpoint bucket without
// creating it, for tools that only read; ErrNoCheckpoints when it is absent.
func BindCheckpoints(ctx context.Context, js jetstream.JetStream, t Topology) (*Checkpoints, error) {
	bucket := t.CheckpointBucket()
	store, err := js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w %s", ErrNoCheckpoints, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint bucket %s: %w", bucket, err)
	}
	return &Checkpoints{store: store, bucket: bucket}, nil
}

// CheckpointName is the object name of partition part's checkpoint at
// sequence seq.
func CheckpointName(part int, seq uint64) string {
	return fmt.Sprintf("in-%d/%020d", part, seq)
}

// parseCheckpointName is CheckpointName's inverse; ok is false for other
// names.
func parseCheckpointName(name string) (part int, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(name, "in-")
	if !found {
		return 0, 0, false
	}
	p, s, found := strings.Cut(rest, "/")
	if !found || len(s) != 20 {
		return 0, 0, false
	}
	part, err := strconv.Atoi(p)
	if err != nil || part < 0 {
		return 0, 0, false
	}
	seq, err = strconv.ParseUint(s, 10, 64)
	return part, seq, err == nil
}

// CheckpointInfo describes one stored checkpoint.
type CheckpointInfo struct {
	Partition int
	Seq       uint64
	Size      uint64
	Name      string
	// Time is when the object store stored it.
	Time time.Time
}

// listTimeout bounds a listing asked for without a deadline. The object
// store lists through an ordered consumer of one replica, which stops
// delivering when its node leaves a cluster: such a listing fails (its
// caller retries, or exits) instead of waiting for ever.
const listTimeout = 30 * time.Second

// list lists the bucket's objects within ctx's deadline, or listTimeout.
func (c *Checkpoints) list(ctx context.Context) ([]*jetstream.ObjectInfo, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, listTimeout)
		defer cancel()
	}
	return c.store.List(ctx)
}

// List returns every stored checkpoint, by partition and then newest
// (highest sequence) first. Objects with other names are ignored.
func (c *Checkpoints) List(ctx context.Context) ([]CheckpointInfo, error) {
	infos, err := c.list(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list checkpoints in %s: %w", c.bucket, err)
	}
	var out []CheckpointInfo
	for _, o := range infos {
		if o.Deleted {
			continue
		}
		part, seq, ok := parseCheckpointName(o.Name)
		if !ok {
			continue
		}
		out = append(out, CheckpointInfo{Partition: part, Seq: seq, Size: o.Size, Name: o.Name, Time: o.ModTime})
	}
	slices.SortFunc(out, func(a, b CheckpointInfo) int {
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
	})
	return out, nil
}

// Seqs returns the sequences of partition part's checkpoints, newest first.
func (c *Checkpoints) Seqs(ctx context.Context, part int) ([]uint64, error) {
	all, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, ci := range all {
		if ci.Partition == part {
			seqs = append(seqs, ci.Seq)
		}
	}
	return seqs, nil
}

// Get returns the bytes of partition part's checkpoint at seq. An object
// whose content does not match its digest is an error.
func (c *Checkpoints) Get(ctx context.Context, part int, seq uint64) ([]byte, error) {
	name := CheckpointName(part, seq)
	b, err := c.store.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get checkpoint %s/%s: %w", c.bucket, name, err)
	}
	return b, nil
}

// Put stores partition part's checkpoint at seq, replacing one of the same
// name.
func (c *Checkpoints) Put(ctx context.Context, part int, seq uint64, data []byte) error {
	name := CheckpointName(part, seq)
	if _, err := c.store.PutBytes(ctx, name, data); err != nil {
		return fmt.Errorf("put checkpoint %s/%s: %w", c.bucket, name, err)
	}
	return nil
}

// Delete deletes partition part's checkpoint at seq; deleting one that is
// absent is not an error.
func (c *Checkpoints) Delete(ctx context.Context, part int, seq uint64) error {
	name := CheckpointName(part, seq)
	if err := c.store.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete checkpoint %s/%s: %w", c.bucket, name, err)
	}
	return nil
}

// Prune deletes all but partition part's keep newest checkpoints.
func (c *Checkpoints) Prune(ctx context.Context, part int, keep int) error {
	seqs, err := c.Seqs(ctx, part)
	if err != nil {
		return err
	}
	var errs []error
	for _, seq := range seqs[min(keep, len(seqs)):] {
		errs = append(errs, c.Delete(ctx, part, seq))
	}
	return errors.Join(errs...)
}

// Store returns the underlying object store, for tools and tests.
func (c *Checkpoints) Store() jetstream.ObjectStore { return c.store }
