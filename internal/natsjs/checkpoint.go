package natsjs

import (
	"context"
	"errors"
	"fmt"
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
//
// Every call to the store is bounded (CheckpointLimits): with nats-server
// 2.9 the object store's own listing (a watcher waiting for a message with
// nothing pending) and its read of an object deleted meanwhile (waiting for
// chunks that are gone) can wait for as long as their context lasts, and
// the services call with contexts that last for ever. So the listing reads
// the bucket's meta subjects instead (ListAll), a read watches whether its
// object is still there, and each call has its own timeout and is retried
// once.
type Checkpoints struct {
	store  jetstream.ObjectStore
	js     jetstream.JetStream
	bucket string
	lim    CheckpointLimits
}

// CheckpointLimits bound the calls of Checkpoints to the object store.
type CheckpointLimits struct {
	// Call bounds one listing, info or delete (default 5 s).
	Call time.Duration
	// Rate is the slowest transfer a get or put of a checkpoint is allowed
	// (bytes/s, default 4 MiB/s): a transfer of n bytes may take Call +
	// n/Rate.
	Rate float64
	// GoneEvery is how often a read in progress looks whether its object
	// is still there (default 250 ms).
	GoneEvery time.Duration
}

// DefaultCheckpointLimits are the limits of OpenCheckpoints and
// BindCheckpoints.
var DefaultCheckpointLimits = CheckpointLimits{Call: 5 * time.Second, Rate: 4 << 20, GoneEvery: 250 * time.Millisecond}

// SetLimits replaces the limits of c's calls (zero fields keep theirs); for
// tests and tools. Not safe while calls are in flight.
func (c *Checkpoints) SetLimits(l CheckpointLimits) {
	if l.Call > 0 {
		c.lim.Call = l.Call
	}
	if l.Rate > 0 {
		c.lim.Rate = l.Rate
	}
	if l.GoneEvery > 0 {
		c.lim.GoneEvery = l.GoneEvery
	}
}

func newCheckpoints(js jetstream.JetStream, store jetstream.ObjectStore, bucket string) *Checkpoints {
	return &Checkpoints{store: store, js: js, bucket: bucket, lim: DefaultCheckpointLimits}
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
			return newCheckpoints(js, store, bucket), nil
		}
		if bound, berr := js.ObjectStore(ctx, bucket); berr == nil {
			return newCheckpoints(js, bound, bucket), nil
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
	return newCheckpoints(js, store, bucket), nil
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
	if err != nil || part < 0 || strconv.Itoa(part) != p {
		return 0, 0, false // only CheckpointName's spelling ("in-3", not "in-03" or "in-+3")
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

// List returns every stored proximity checkpoint, by partition and then
// newest (highest sequence) first. Objects with other names are ignored.
func (c *Checkpoints) List(ctx context.Context) ([]CheckpointInfo, error) {
	prox, _, err := c.ListAll(ctx)
	return prox, err
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
	return c.get(ctx, CheckpointName(part, seq))
}

// Put stores partition part's checkpoint at seq, replacing one of the same
// name.
func (c *Checkpoints) Put(ctx context.Context, part int, seq uint64, data []byte) error {
	return c.put(ctx, CheckpointName(part, seq), data)
}

// Delete deletes partition part's checkpoint at seq; deleting one that is
// absent is not an error.
func (c *Checkpoints) Delete(ctx context.Context, part int, seq uint64) error {
	return c.delete(ctx, CheckpointName(part, seq))
}

// Prune deletes all but partition part's keep newest checkpoints, and the
// delete markers of objects deleted before (see purgeMarkers).
func (c *Checkpoints) Prune(ctx context.Context, part int, keep int) error {
	l, err := c.listAll(ctx)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, ci := range l.prox {
		if ci.Partition == part {
			seqs = append(seqs, ci.Seq)
		}
	}
	errs := []error{c.purgeMarkers(ctx, l.markers)}
	for _, seq := range seqs[min(keep, len(seqs)):] {
		errs = append(errs, c.Delete(ctx, part, seq))
	}
	return errors.Join(errs...)
}

// Store returns the underlying object store, for tools and tests.
func (c *Checkpoints) Store() jetstream.ObjectStore { return c.store }
