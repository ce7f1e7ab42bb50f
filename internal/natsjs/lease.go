package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/backoff"
)

// LeaseBucket names the key-value bucket of the proximity workers'
// partition leases, "<prefix>-leases" (stream KV_<prefix>-leases). Its
// key PartitionLeaseKey(k) names the worker that owns partition k.
func (t Topology) LeaseBucket() string { return t.Prefix + "-leases" }

// PartitionLeaseKey is the key of partition part's lease.
func PartitionLeaseKey(part int) string { return "proximity." + strconv.Itoa(part) }

// Lease defaults and bounds.
const (
	// DefaultLeaseTTL is how long a lease outlives its holder's last
	// renewal.
	DefaultLeaseTTL = 10 * time.Second
	// MinLeaseTTL is the shortest TTL accepted: a holder renews every
	// third of it, and must get an answer within two thirds.
	MinLeaseTTL = time.Second
)

var (
	// ErrLeaseLost is returned by Lease.Keep when the lease ended under
	// its holder: not renewed in time, taken, or deleted by an operator.
	ErrLeaseLost = errors.New("lease lost")
	// ErrNoLeases is returned by BindLeases when the bucket does not
	// exist (no worker has started).
	ErrNoLeases = errors.New("no lease bucket")
)

// Leases is a bucket of leases: keys that at most one holder owns at a
// time, each until its holder stops renewing it. It works with
// nats-server 2.9, which has no per-key TTL: the bucket's MaxAge (its TTL)
// removes a key that was not written for that long, so a holder that dies
// or freezes loses its lease TTL after its last renewal, by the server's
// clock. Safe for concurrent use.
//
// The protocol, per key:
//
//   - acquire: create the key when it is absent (released, expired, never
//     held); the server refuses a create of a key that exists, so one of
//     several contenders wins;
//   - renew: every TTL/3, update the key at the revision the holder wrote
//     last; the server refuses it once anybody else has written the key (or
//     it expired), which is how a holder learns it lost the lease;
//   - hold: a holder counts its lease valid until two thirds of the TTL
//     after it sent its last successful write — by its own monotonic clock
//     and its wall clock, whichever has advanced more, so that a process
//     stopped (SIGSTOP, a suspended VM) finds its lease invalid the instant
//     it runs again. The server keeps the key at least a TTL after
//     receiving that write, so the holder gives up a third of the TTL
//     before anybody else can acquire;
//   - release: delete the key at the holder's revision; a watcher of the
//     key (every waiting contender) tries at once.
type Leases struct {
	kv     jetstream.KeyValue
	bucket string
	ttl    time.Duration
}

// OpenLeases creates the topology's lease bucket with TTL ttl (0 means
// DefaultLeaseTTL), or binds to it when it exists. The bucket's TTL is
// fixed when it is created: Leases.TTL reports the one that applies, which
// differs from ttl when another worker created the bucket with another
// (to change it, stop every worker and delete the bucket).
func OpenLeases(ctx context.Context, js jetstream.JetStream, t Topology, ttl time.Duration) (*Leases, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	if ttl < MinLeaseTTL {
		return nil, fmt.Errorf("lease ttl %v is shorter than %v", ttl, MinLeaseTTL)
	}
	bucket := t.LeaseBucket()
	cfg := jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "treasure proximity partition leases: which worker owns each partition (docs/pipeline.md)",
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		History:     1,
		TTL:         ttl,
	}
	// Workers starting together race to create the bucket; the loser binds.
	retry := backoff.Backoff{Base: 20 * time.Millisecond, Factor: 4}
	for attempt := 1; ; attempt++ {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			kv, err = js.CreateKeyValue(ctx, cfg)
		}
		if err == nil {
			return newLeases(ctx, kv, bucket)
		}
		if attempt == 4 || !retry.Wait(ctx) {
			return nil, fmt.Errorf("lease bucket %s: %w", bucket, err)
		}
	}
}

// BindLeases binds to the topology's lease bucket without creating it, for
// tools that only read; ErrNoLeases when it is absent.
func BindLeases(ctx context.Context, js jetstream.JetStream, t Topology) (*Leases, error) {
	bucket := t.LeaseBucket()
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w %s", ErrNoLeases, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", bucket, err)
	}
	return newLeases(ctx, kv, bucket)
}

func newLeases(ctx context.Context, kv jetstream.KeyValue, bucket string) (*Leases, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", bucket, err)
	}
	if st.TTL() <= 0 {
		// Without an age limit a dead holder's lease would never end.
		return nil, fmt.Errorf("lease bucket %s has no TTL (was it created by hand?): delete it and let a worker create it", bucket)
	}
	return &Leases{kv: kv, bucket: bucket, ttl: st.TTL()}, nil
}

// TTL is the bucket's TTL: how long a lease outlives its last renewal.
func (ls *Leases) TTL() time.Duration { return ls.ttl }

// Bucket names the bucket.
func (ls *Leases) Bucket() string { return ls.bucket }

// The holder's timing, from the TTL.
func (ls *Leases) renewEvery() time.Duration { return ls.ttl / 3 }
func (ls *Leases) validFor() time.Duration   { return ls.ttl * 2 / 3 }
func (ls *Leases) retryEvery() time.Duration { return ls.ttl / 12 }

// pollEvery is how often a waiting contender looks whether the lease
// expired (an expiry, unlike a release, wakes no watcher).
func (ls *Leases) pollEvery() time.Duration { return ls.ttl / 8 }

// LeaseValue is what a lease's key holds (JSON).
type LeaseValue struct {
	// Holder names the holder: unique per process (host, pid, a random
	// part), so that two processes never take each other's lease for
	// their own.
	Holder string `json:"holder"`
	// Acquired is when the holder acquired it and Renewed when it sent
	// its last renewal, by the holder's clock (information only).
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
}

// LeaseState is a lease as read from the bucket.
type LeaseState struct {
	Key string
	LeaseValue
	Revision uint64
	// Written is when the server stored its last write: the lease expires
	// TTL after it, unless renewed.
	Written time.Time
}

// Get reads the lease at key; ok is false when nobody holds it (absent,
// released or expired).
func (ls *Leases) Get(ctx context.Context, key string) (st LeaseState, ok bool, err error) {
	e, err := ls.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseState{Key: key}, false, nil
	}
	if err != nil {
		return LeaseState{Key: key}, false, fmt.Errorf("lease %s in %s: %w", key, ls.bucket, err)
	}
	return readLease(e), true, nil
}

// readLease decodes an entry; an unreadable value (written by hand) still
// counts as held, by a holder named after it.
func readLease(e jetstream.KeyValueEntry) LeaseState {
	st := LeaseState{Key: e.Key(), Revision: e.Revision(), Written: e.Created()}
	if err := json.Unmarshal(e.Value(), &st.LeaseValue); err != nil || st.Holder == "" {
		st.Holder = fmt.Sprintf("(unreadable value %.40q)", e.Value())
	}
	return st
}

// LeaseOptions configures one Lease.
type LeaseOptions struct {
	// Holder names this holder in the bucket; it must be unique among
	// the processes that may contend (see LeaseValue.Holder).
	Holder string
	// BeforeRenew, when not nil, is called before every renewal; a test
	// blocks it to stand for a frozen process.
	BeforeRenew func()
}

// Lease is one holder's view of one key of a Leases bucket. Acquire, Keep
// and Release are called by one goroutine, in turn; Valid is safe for
// concurrent use (the lease's user asks it before every effect).
type Lease struct {
	ls  *Leases
	key string
	o   LeaseOptions

	// base is the monotonic reference of mono. While the lease is held,
	// mono (nanoseconds after base) and wall (Unix nanoseconds) are when
	// it stops being valid; 0 when it is not held.
	base       time.Time
	mono, wall atomic.Int64

	// Of the goroutine that acquires, keeps and releases: the revision of
	// our last write, when we acquired, and when we sent our last
	// successful write.
	rev      uint64
	acquired time.Time
	sent     time.Time
}

// Lease returns key's lease for the holder o.Holder, not held yet.
func (ls *Leases) Lease(key string, o LeaseOptions) *Lease {
	return &Lease{ls: ls, key: key, o: o, base: time.Now()}
}

// Key returns the lease's key.
func (l *Lease) Key() string { return l.key }

// TTL returns the bucket's TTL.
func (l *Lease) TTL() time.Duration { return l.ls.ttl }

// Valid reports whether the lease is surely held now: acquired, and not
// past two thirds of the TTL after the last write that succeeded, by both
// clocks. It turns false at that deadline even while no renewal was
// attempted (the process was stopped), and at once when Keep learns the
// lease was taken or deleted.
func (l *Lease) Valid() bool {
	m := l.mono.Load()
	if m == 0 {
		return false
	}
	now := time.Now()
	return int64(now.Sub(l.base)) < m && now.UnixNano() < l.wall.Load()
}

// deadline returns when the lease stops being valid (by the monotonic
// clock); the zero time when it is not held.
func (l *Lease) deadline() time.Time {
	m := l.mono.Load()
	if m == 0 {
		return time.Time{}
	}
	return l.base.Add(time.Duration(m))
}

// wrote records a successful write of revision rev sent at sent.
func (l *Lease) wrote(rev uint64, sent time.Time) {
	l.rev, l.sent = rev, sent
	until := sent.Add(l.ls.validFor())
	l.wall.Store(until.UnixNano())
	l.mono.Store(max(int64(until.Sub(l.base)), 1))
}

// drop marks the lease not held.
func (l *Lease) drop() {
	l.mono.Store(0)
	l.wall.Store(0)
}

func (l *Lease) value(acquired, renewed time.Time) []byte {
	b, _ := json.Marshal(LeaseValue{Holder: l.o.Holder, Acquired: acquired.UTC(), Renewed: renewed.UTC()})
	return b
}

// isRevisionMismatch reports a write refused because the key's last
// revision is not the one expected (10164 on replicated streams).
func isRevisionMismatch(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Acquire returns once the lease is held, or with ctx's error when ctx
// ends first. While another holder has it, Acquire calls waiting (when
// not nil) after every look with what it found — the holder, or the error
// that kept it from reading — and tries again when the holder releases
// the lease (a watch on the key) or, for an expiry, every TTL/8. A key
// whose value names this holder (a write of ours whose answer was lost)
// is taken back at its revision.
func (l *Lease) Acquire(ctx context.Context, waiting func(LeaseState, error)) error {
	// The watch lives as long as this call.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var updates <-chan jetstream.KeyValueEntry
	if w, err := l.ls.kv.Watch(wctx, l.key, jetstream.UpdatesOnly()); err == nil {
		defer w.Stop()
		updates = w.Updates()
	} // else: the polls alone find a release, later
	tick := time.NewTicker(l.ls.pollEvery())
	defer tick.Stop()
	for {
		st, held, err := l.try(ctx)
		if held {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if waiting != nil {
			waiting(st, err)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
				break wait
			case e, ok := <-updates:
				if !ok {
					updates = nil // the watch ended: poll
					continue
				}
				if e != nil && e.Operation() == jetstream.KeyValuePut {
					continue // a renewal: still held
				}
				break wait // released or purged
			}
		}
	}
}

// try makes one attempt to acquire the lease. It returns what it found
// when another holds it.
func (l *Lease) try(ctx context.Context) (LeaseState, bool, error) {
	kv := l.ls.kv
	e, err := kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		sent := time.Now()
		rev, err := kv.Create(ctx, l.key, l.value(sent, sent))
		if err == nil {
			l.acquired = sent
			l.wrote(rev, sent)
			return LeaseState{}, true, nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) || isRevisionMismatch(err) {
			// Another contender was faster: report it.
			st, _, err := l.ls.Get(ctx, l.key)
			return st, false, err
		}
		return LeaseState{Key: l.key}, false, fmt.Errorf("acquire lease %s: %w", l.key, err)
	}
	if err != nil {
		return LeaseState{Key: l.key}, false, fmt.Errorf("read lease %s: %w", l.key, err)
	}
	st := readLease(e)
	if st.Holder != l.o.Holder {
		return st, false, nil
	}
	// Ours: a write whose answer we did not get. Nobody else wrote since,
	// so updating that revision makes it ours again, from now.
	sent := time.Now()
	rev, err := kv.Update(ctx, l.key, l.value(sent, sent), st.Revision)
	if err == nil {
		l.acquired = sent
		l.wrote(rev, sent)
		return LeaseState{}, true, nil
	}
	return st, false, nil
}

// Keep renews the held lease every TTL/3 until ctx ends (then it returns
// nil, the lease still held until Release or its expiry) or the lease is
// lost: a renewal refused (another holder wrote the key, an operator
// deleted it, it expired), or none succeeding within two thirds of the
// TTL of the last. A failed renewal is tried again every TTL/12 until
// then. When the lease is lost, Valid turns false before Keep returns an
// error wrapping ErrLeaseLost — at the deadline at the latest, whatever a
// renewal in flight waits for.
func (l *Lease) Keep(ctx context.Context) error {
	ls := l.ls
	next := l.sent.Add(ls.renewEvery())
	for {
		deadline := l.deadline()
		if deadline.IsZero() {
			return fmt.Errorf("%w: not held", ErrLeaseLost)
		}
		// Wake for the next renewal, or at the deadline when that comes
		// first (the renewals failed until then).
		wake := next
		if deadline.Before(wake) {
			wake = deadline
		}
		t := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if l.o.BeforeRenew != nil {
			l.o.BeforeRenew()
		}
		if !l.Valid() {
			l.drop()
			return fmt.Errorf("%w: no renewal succeeded within %v of the last (a frozen process, or NATS unreachable)", ErrLeaseLost, ls.validFor())
		}
		// A renewal still unanswered at the deadline cannot help: the
		// lease is lost then.
		rctx, cancel := context.WithDeadline(ctx, deadline)
		sent := time.Now()
		rev, err := ls.kv.Update(rctx, l.key, l.value(l.acquired, sent), l.rev)
		cancel()
		switch {
		case err == nil:
			l.wrote(rev, sent)
			next = sent.Add(ls.renewEvery())
		case ctx.Err() != nil:
			return nil
		case isRevisionMismatch(err):
			// Written by somebody else, deleted, or expired — unless the
			// last write is ours, a renewal whose answer was lost: then
			// renew from its revision (the deadline stays that of the
			// last answered write).
			gctx, cancel := context.WithDeadline(ctx, deadline)
			st, ok, gerr := ls.Get(gctx, l.key)
			cancel()
			if gerr == nil && ok && st.Holder == l.o.Holder {
				l.rev = st.Revision
				next = time.Now()
				continue
			}
			l.drop()
			if gerr == nil && ok {
				return fmt.Errorf("%w: taken by %s", ErrLeaseLost, st.Holder)
			}
			if gerr == nil {
				return fmt.Errorf("%w: the key was deleted or expired", ErrLeaseLost)
			}
			return fmt.Errorf("%w: renewal refused (%v), and the key unreadable: %v", ErrLeaseLost, err, gerr)
		default:
			next = time.Now().Add(ls.retryEvery())
		}
	}
}

// Release gives the lease up: Valid turns false, and the key is deleted
// if it is still ours, so that a waiting contender takes it at once. A
// lease not held, or no longer ours, is not an error.
func (l *Lease) Release(ctx context.Context) error {
	if l.mono.Load() == 0 && l.rev == 0 {
		return nil
	}
	l.drop()
	rev := l.rev
	l.rev = 0
	err := l.ls.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && !isRevisionMismatch(err) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("release lease %s: %w", l.key, err)
	}
	return nil
}
