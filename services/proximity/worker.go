// Package proximity is the proximity service: workers that own graph
// partitions, consume each partition's log subject in order, and turn
// moves into claims and proximity answers (docs/pipeline.md).
//
// For every partition it serves, a Worker holds the partition's subgraph
// (own nodes + halo) and a game.Engine over it, consumes P.in.<k> with a
// durable pull consumer in batches, and for each input message publishes
// its outputs — ProximityResult and Claim events to P.out.<k>, claim
// notices to every other partition's P.in.<q> — with Nats-Msg-Ids derived
// from the input's stream sequence, acking the input only after those
// publishes are acknowledged. A partition whose processing fails (a publish
// error, a lost connection) throws its engine away, rebuilds it by reading
// its subject from the start up to the durable consumer's ack floor without
// publishing, and resumes; the redelivered inputs republish the same ids,
// which JetStream stores once. So a killed or failing worker loses no move
// and doubles no claim.
//
// A worker serves a partition only while it holds the partition's lease
// (natsjs.Leases, bucket <prefix>-leases): a second worker started for the
// same partition — an operator's mistake, a rolling deploy, a pod slow to
// die — waits until the lease is released or expires, and a worker that
// cannot renew its lease in time stops consuming the partition before
// anybody else can take it over (docs/pipeline.md, "Partition leases").
package proximity

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"treasure/internal/backoff"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// Options configures a Worker. Graph, Part, Topology, NC and JS are
// required.
type Options struct {
	// Graph is the whole road graph; Part its partition assignment,
	// graph.Partition(Graph, Topology.Partitions).
	Graph *graph.Graph
	Part  []uint32
	// Partitions lists the partitions this worker serves; empty means all.
	Partitions []int
	// Radius is the proximity radius.
	Radius   uint32
	Topology natsjs.Topology
	NC       *nats.Conn
	JS       jetstream.JetStream
	// Batch caps the input messages of one handler call (default 64).
	Batch int
	// AckWait is how long an input may stay unacked before JetStream
	// redelivers it, to this worker or its successor (default natsjs's).
	AckWait time.Duration
	// Log receives one line per start, rebuild and failure; nil discards.
	Log *slog.Logger
	// Registerer receives the worker's metrics; nil registers nowhere.
	Registerer prometheus.Registerer

	// Checkpoints stores the partitions' checkpoints; nil means the
	// topology's object-store bucket (natsjs.OpenCheckpoints), opened by
	// Run. CheckpointEvery is how often a partition writes one (after a
	// batch, once that long has passed since the last; and at a clean
	// shutdown); 0 means DefaultCheckpointEvery, negative disables
	// checkpoints (a start then rebuilds from the start of the log).
	// CheckpointKeep is how many of each partition's newest checkpoints
	// are kept (default DefaultCheckpointKeep).
	Checkpoints     Checkpoints
	CheckpointEvery time.Duration
	CheckpointKeep  int

	// LeaseTTL is how long a partition's lease outlives its holder's last
	// renewal (0 means natsjs.DefaultLeaseTTL; at least natsjs.MinLeaseTTL).
	// The worker renews every LeaseTTL/3 and stops consuming a partition
	// whose lease it could not renew within 2/3 of it. The lease bucket's
	// TTL, fixed by the worker that created it, is the one that applies.
	LeaseTTL time.Duration
	// Holder names this worker in the lease bucket (treasure status shows
	// it); it must be unique among the workers. Empty means
	// "<host>/<pid>/<random>".
	Holder string
}

// Defaults of the checkpoint options.
const (
	DefaultCheckpointEvery = 10 * time.Second
	DefaultCheckpointKeep  = 3
	// checkpointTimeout bounds one checkpoint's upload and pruning.
	checkpointTimeout = 30 * time.Second
)

// Checkpoints is where a Worker keeps its partitions' checkpoints
// (docs/pipeline.md): natsjs.Checkpoints in production. Implementations
// are safe for concurrent use; a checkpoint is visible to Seqs only once
// completely stored.
type Checkpoints interface {
	// Seqs returns the IN sequences of partition part's checkpoints,
	// newest first.
	Seqs(ctx context.Context, part int) ([]uint64, error)
	Get(ctx context.Context, part int, seq uint64) ([]byte, error)
	Put(ctx context.Context, part int, seq uint64, data []byte) error
	Delete(ctx context.Context, part int, seq uint64) error
	// Prune deletes all but partition part's keep newest checkpoints.
	Prune(ctx context.Context, part int, keep int) error
}

var _ Checkpoints = (*natsjs.Checkpoints)(nil)

// Worker serves a set of partitions. Run it once.
type Worker struct {
	o     Options
	pub   *natsjs.Publisher
	parts []*partition
	m     metrics

	// noFinalCheckpoint skips the checkpoint of a clean shutdown, and
	// noRelease the release of the leases (tests simulating a kill).
	noFinalCheckpoint, noRelease bool
	// hook, when not nil, is called at the points of a partition's
	// handling that a test pauses to stand for a frozen process (with
	// renewHook, called before every lease renewal).
	hook      func(k int, at hookPoint)
	renewHook func(k int)
	// stuckAfter is how long a partition's consumer may stay unreadable
	// before the partition creates it again (consumerStuckAfter).
	stuckAfter time.Duration
}

// consumerStuckAfter is how long a partition waits for its durable
// consumer to answer "JetStream system temporarily unavailable" no more
// (an election takes seconds) before it deletes it and creates it again
// after its newest checkpoint: nats-server 2.9.10 can leave a consumer
// created shortly before two of three nodes crashed without a leader for
// good (seen in the R3 quorum test: two minutes and on).
const consumerStuckAfter = 30 * time.Second

// hookPoint says where Worker.hook is called.
type hookPoint int

const (
	// hookBatch: a batch was delivered, before the handler looks at the
	// lease.
	hookBatch hookPoint = iota
	// hookApply: an input is about to be applied (and its outputs
	// published), its lease found valid.
	hookApply
)

type metrics struct {
	moves, claims, drops, notices prometheus.Counter
	// foreign counts moves for a node the partition does not own.
	foreign  prometheus.Counter
	rebuilds prometheus.Counter
	batch    prometheus.Histogram
	// Per-hop latency of every move evaluated live (docs/operations.md):
	// from the log storing its input message to this worker beginning to
	// apply it (the queue), and from then to the JetStream ack of the
	// output batch holding its result.
	logWait, consumedToResult prometheus.Histogram

	// Checkpoints (docs/operations.md).
	replayed                             prometheus.Counter
	inLog                                prometheus.Counter
	recreated                            prometheus.Counter
	ckptWritten, ckptFailed, ckptInvalid prometheus.Counter
	ckptLoaded                           prometheus.Counter
	// ckptUnreachable: listings and reads of checkpoints at a start that
	// failed after their bounded tries; trimmedRebuilds: starts whose
	// rebuild needed messages the log no longer holds.
	ckptUnreachable, trimmedRebuilds        prometheus.Counter
	ckptBytes                               prometheus.Gauge
	ckptPause, ckptWrite, ckptLoad, rebuild prometheus.Histogram

	// inputs counts the IN messages each partition handled live (its
	// processing rate; the backlog comes from natsjs.BacklogCollector).
	inputs *prometheus.CounterVec

	// Partition leases (docs/operations.md): held, waiting for another
	// worker's to end, and lost.
	leaseHeld, leaseWaiting *prometheus.GaugeVec
	leaseLost               *prometheus.CounterVec
}

// hopBuckets are the buckets of every hop histogram
// (treasure_<service>_hop_*_seconds): 50 µs to 1 s, each about 1.54 times
// the one before.
var hopBuckets = prometheus.ExponentialBucketsRange(50e-6, 1, 24)

// inputHops is what handle needs to observe consumedToResult for one input
// message: when it was consumed, how many results it produced, and the end
// of its publishes in partition.futures.
type inputHops struct {
	consumed int64 // Unix nanoseconds
	moves    int
	futEnd   int
}

func newMetrics(r prometheus.Registerer) metrics {
	m := metrics{
		moves:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_moves_total", Help: "Moves evaluated (live, not rebuilds)."}),
		claims:  prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_claims_total", Help: "Treasures claimed by moves ending on their node."}),
		drops:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_drops_total", Help: "Treasure drops applied."}),
		notices: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_claim_notices_total", Help: "Claims decided by other partitions applied here."}),
		foreign: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_moves_not_owned_total",
			Help: "Moves whose last node this worker's partition does not own (or its graph does not hold): never applied, dead-lettered to <prefix>.dlq. Any is a configuration mismatch."}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_rebuilds_total", Help: "Partition engines rebuilt from the log after a failure or at start."}),
		batch:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_batch_seconds", Help: "Time to process one consumer batch, publishes included.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
		logWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_hop_log_wait_seconds",
			Help: "Per move: from JetStream storing its input message (published) to the worker beginning to apply it (consumed).", Buckets: hopBuckets}),
		consumedToResult: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_hop_consumed_to_result_seconds",
			Help: "Per move: from the worker beginning to apply its input message to JetStream acking the output batch with its result.", Buckets: hopBuckets}),
	}
	secs := prometheus.ExponentialBuckets(0.001, 2, 16) // 1 ms to 33 s
	m.inputs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_proximity_input_messages_total",
		Help: "IN messages a partition handled live and acknowledged (its processing rate, in log messages)."}, []string{"partition"})
	m.inLog = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_outputs_found_in_log_total",
		Help: "Output batches of inputs applied again after a rebuild that were not published again: the partition's OUT subject held their Nats-Msg-Id already."})
	m.recreated = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_consumers_recreated_total",
		Help: "Partition consumers deleted and created again after their newest checkpoint, having answered \"unavailable\" for longer than 30 s."})
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_replayed_messages_total",
		Help: "Input messages read back from the log to rebuild a partition's engine (the tail after its checkpoint, or the whole log without one)."})
	m.ckptWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_checkpoints_total", Help: "Checkpoints written."})
	m.ckptFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_checkpoint_failures_total", Help: "Checkpoint writes that failed (the partition carries on; the next one retries)."})
	m.ckptInvalid = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_checkpoint_invalid_total",
		Help: "Stored checkpoints refused at load (unreadable, truncated, corrupt, of another graph), each skipped for the one before it."})
	m.ckptLoaded = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_checkpoint_loads_total", Help: "Partition rebuilds that started from a checkpoint."})
	m.ckptUnreachable = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_checkpoint_unreachable_total",
		Help: "Checkpoint listings and reads at a (re)start that failed after their bounded tries (timeout, deleted meanwhile, connection): a failed read skips to the checkpoint before, a failed listing restarts the partition."})
	m.trimmedRebuilds = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_rebuilds_trimmed_log_total",
		Help: "Partition (re)starts without a usable checkpoint reaching back to the log's first message, while the rebuild needed older messages: its state misses the removed ones (logged as an error)."})
	m.ckptBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_proximity_checkpoint_bytes", Help: "Size of the last checkpoint written."})
	m.ckptPause = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_checkpoint_pause_seconds",
		Help: "Time a partition stops consuming to copy its state for a checkpoint (encoding and upload run beside it).", Buckets: secs})
	m.ckptWrite = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_checkpoint_write_seconds",
		Help: "Time to encode and store a checkpoint and prune the old ones (in the background).", Buckets: secs})
	m.ckptLoad = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_checkpoint_load_seconds",
		Help: "Time to fetch, check and load a checkpoint (the field restored and checked; rebuilt for a version 1 checkpoint).", Buckets: secs})
	m.rebuild = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_rebuild_seconds",
		Help: "Time from a partition's (re)start to serving: checkpoint load plus tail replay.", Buckets: secs})
	m.leaseHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_proximity_partition_lease_held",
		Help: "1 while this worker holds the partition's lease (and may rebuild and consume it)."}, []string{"partition"})
	m.leaseWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_proximity_partition_lease_waiting",
		Help: "1 while the partition's lease is held by another worker and this one waits for it to be released or to expire."}, []string{"partition"})
	m.leaseLost = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_proximity_partition_lease_lost_total",
		Help: "Leases lost while held (not renewed in time, taken, deleted): the partition stopped consuming at once and waits for its lease again."}, []string{"partition"})
	if r != nil {
		r.MustRegister(m.leaseHeld, m.leaseWaiting, m.leaseLost)
		r.MustRegister(m.moves, m.claims, m.drops, m.notices, m.foreign, m.rebuilds, m.inputs, m.batch, m.logWait, m.consumedToResult,
			m.replayed, m.inLog, m.recreated, m.ckptWritten, m.ckptFailed, m.ckptInvalid, m.ckptLoaded, m.ckptUnreachable, m.trimmedRebuilds, m.ckptBytes, m.ckptPause, m.ckptWrite, m.ckptLoad, m.rebuild)
	}
	return m
}

// New checks o and builds the subgraph of every served partition (the
// expensive part of start-up: a bounded search per partition).
func New(o Options) (*Worker, error) {
	if o.Graph == nil || o.NC == nil || o.JS == nil {
		return nil, errors.New("proximity: graph, NATS connection and JetStream are required")
	}
	if err := o.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("proximity: %w", err)
	}
	if len(o.Part) != o.Graph.NumNodes() {
		return nil, fmt.Errorf("proximity: partition assignment for %d nodes, graph has %d", len(o.Part), o.Graph.NumNodes())
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.CheckpointKeep <= 0 {
		o.CheckpointKeep = DefaultCheckpointKeep
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = natsjs.DefaultLeaseTTL
	}
	if o.LeaseTTL < natsjs.MinLeaseTTL {
		return nil, fmt.Errorf("proximity: lease ttl %v is shorter than %v", o.LeaseTTL, natsjs.MinLeaseTTL)
	}
	if o.Holder == "" {
		o.Holder = DefaultHolder()
	}
	if len(o.Partitions) == 0 {
		for k := 0; k < o.Topology.Partitions; k++ {
			o.Partitions = append(o.Partitions, k)
		}
	}
	w := &Worker{o: o, m: newMetrics(o.Registerer), stuckAfter: consumerStuckAfter}
	seen := map[int]bool{}
	for _, k := range o.Partitions {
		if k < 0 || k >= o.Topology.Partitions || seen[k] {
			return nil, fmt.Errorf("proximity: partition %d: want distinct partitions in 0..%d", k, o.Topology.Partitions-1)
		}
		seen[k] = true
		sub, err := graph.Subgraph(o.Graph, o.Part, uint32(k), o.Radius)
		if err != nil {
			return nil, fmt.Errorf("proximity: partition %d: %w", k, err)
		}
		label := strconv.Itoa(k)
		w.parts = append(w.parts, &partition{w: w, k: k, sub: sub, fingerprint: game.Fingerprint(sub),
			inputs: w.m.inputs.WithLabelValues(label), leaseHeld: w.m.leaseHeld.WithLabelValues(label),
			leaseWaiting: w.m.leaseWaiting.WithLabelValues(label), leaseLost: w.m.leaseLost.WithLabelValues(label)})
	}
	if o.Registerer != nil {
		durables, values := make([]string, len(o.Partitions)), make([]string, len(o.Partitions))
		for i, k := range o.Partitions {
			durables[i], values[i] = Durable(o.Topology, k), strconv.Itoa(k)
		}
		// Only the partitions this worker holds: a worker waiting for
		// another's lease does not report (or alert on) its backlog.
		o.Registerer.MustRegister(natsjs.NewBacklogCollector(o.JS, natsjs.BacklogOptions{Stream: o.Topology.InStream(),
			Durables: durables, Namespace: "treasure_proximity", Label: "partition", Values: values,
			Include: func(i int) bool { return w.parts[i].held.Load() }}))
	}
	// Outputs (OUT) and claim notices (IN) all carry a Nats-Msg-Id: one
	// whose ack is lost as a stream leader leaves is sent again, in
	// order, rather than failing the batch into a rebuild from the log.
	pub, err := natsjs.NewPublisher(o.NC, natsjs.ResendOptions(o.Topology.Out.Duplicates, o.Topology.In.Duplicates))
	if err != nil {
		return nil, fmt.Errorf("proximity: %w", err)
	}
	w.pub = pub
	if o.Registerer != nil {
		o.Registerer.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "treasure_proximity_publish_resends_total",
			Help: "Outputs and claim notices sent again under their Nats-Msg-Id after an attempt's ack did not come (a stream leader leaving) or no stream listened."},
			func() float64 { return float64(pub.Resends()) }))
	}
	return w, nil
}

// DefaultHolder names this process in the lease bucket:
// "<host>/<pid>/<8 random hex digits>".
func DefaultHolder() string {
	host, err := os.Hostname()
	if err != nil {
		host = "proximity"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b[:])
}

// Ready reports nil once every partition holds its lease, has rebuilt its
// engine and is consuming. A worker waiting for another's lease is not
// ready, and says whose.
func (w *Worker) Ready() error {
	for _, p := range w.parts {
		if !p.live.Load() {
			if h := p.waitingFor.Load(); h != nil {
				return fmt.Errorf("partition %d waits for its lease, held by %s", p.k, *h)
			}
			if !p.held.Load() {
				return fmt.Errorf("partition %d is acquiring its lease", p.k)
			}
			return fmt.Errorf("partition %d is rebuilding its state from the log", p.k)
		}
	}
	return nil
}

// Partitions returns the partitions this worker serves.
func (w *Worker) Partitions() []int { return w.o.Partitions }

// Holder returns the name this worker holds its leases under.
func (w *Worker) Holder() string { return w.o.Holder }

// Run serves every partition until ctx is cancelled, then returns nil.
// Inputs being processed at cancellation are not acked and come back to
// the next Run (of this or another worker) after the consumer's ack wait.
//
// With checkpoints enabled, Run first opens the checkpoint bucket (when
// Options.Checkpoints is nil), and every partition writes a last
// checkpoint when ctx ends between two batches.
func (w *Worker) Run(ctx context.Context) error {
	defer w.pub.Close()
	if w.o.CheckpointEvery > 0 && w.o.Checkpoints == nil {
		c, err := natsjs.OpenCheckpoints(ctx, w.o.JS, w.o.Topology)
		if err != nil {
			return fmt.Errorf("proximity: %w", err)
		}
		w.o.Checkpoints = c
	}
	leases, err := natsjs.OpenLeases(ctx, w.o.JS, w.o.Topology, w.o.LeaseTTL)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("proximity: %w", err)
	}
	if leases.TTL() != w.o.LeaseTTL {
		w.o.Log.Warn("the lease bucket's TTL applies, not this worker's (to change it, stop every worker and delete the bucket)",
			"bucket", leases.Bucket(), "bucket_ttl", leases.TTL(), "ttl", w.o.LeaseTTL)
	}
	for _, p := range w.parts {
		lo := natsjs.LeaseOptions{Holder: w.o.Holder}
		if w.renewHook != nil {
			lo.BeforeRenew = func() { w.renewHook(p.k) }
		}
		p.lease = leases.Lease(natsjs.PartitionLeaseKey(p.k), lo)
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range w.parts {
		g.Go(func() error { return p.run(ctx) })
	}
	return g.Wait()
}

// partition is one served partition: its subgraph and, while running, its
// engine. Only its own goroutine touches the engine.
type partition struct {
	w    *Worker
	k    int
	sub  *graph.Graph
	e    *game.Engine
	live atomic.Bool

	// lease is the partition's lease (set by Run before the partition's
	// goroutine starts): the partition is rebuilt and consumed only while
	// it is valid. For Ready: held while it is held, and waitingFor names
	// the holder this worker waits for (nil when not waiting).
	lease      *natsjs.Lease
	held       atomic.Bool
	waitingFor atomic.Pointer[string]

	// emit receives the outputs in the replay mode (see Replay).
	emit func(ev *eventpb.Event) error

	rd      event.Reader
	mv      event.Move
	claims  []game.Claimed
	out     event.Builder
	futures []*natsjs.Future
	ev      eventpb.Event
	hops    []inputHops // of the inputs of the batch being handled, live only

	// seqs says, per player, which move seqs were applied (game.SeqWindow):
	// a move applied already (a player's retry after an ingest crash, see
	// docs/pipeline.md) is skipped, live and in rebuilds alike; a move
	// stored after later moves of the same player (its batch published
	// again after a JetStream leader change) is applied.
	seqs map[string]game.SeqWindow

	// applied is the IN stream sequence of the last input applied to e:
	// an input at or below it (redelivered after a checkpoint that covers
	// it) is acked without being applied again.
	applied uint64
	// inLog holds, after a rebuild, the Nats-Msg-Ids found on the
	// partition's OUT subject of outputs of inputs after applied, up to
	// the input inLogTo: those inputs are applied again, but their
	// outputs stored already are not published again (readInLog). Nil
	// once applied has passed inLogTo.
	inLog   map[string]struct{}
	inLogTo uint64
	// unreadable watches the partition's consumer answering
	// "unavailable" to every lookup, for how long (After: stuckAfter).
	unreadable natsjs.StuckWatch
	// Checkpoints: the fingerprint of sub; when the last one was taken and
	// the sequence it covers; dirty while a batch is being handled (its
	// outputs are not all stored yet: no checkpoint may cover it); the
	// upload in flight, if any (nil otherwise), which delivers its error.
	// Moves of the input being applied that this partition cannot apply
	// (not its node), dead-lettered once the input is applied; and the
	// last time such a move was logged, with the count kept quiet since.
	foreign      []*eventpb.Event
	foreignIdx   []int
	foreignWhy   string
	foreignLogAt time.Time
	foreignQuiet int

	fingerprint uint32
	ckptAt      time.Time
	ckptSeq     uint64
	dirty       bool
	uploading   chan error
	// inputs is this partition's treasure_proximity_input_messages_total;
	// the others, its lease metrics.
	inputs                  prometheus.Counter
	leaseHeld, leaseWaiting prometheus.Gauge
	leaseLost               prometheus.Counter
}

func (p *partition) durable() string { return Durable(p.w.o.Topology, p.k) }

// Durable names the durable consumer of partition k's log subject, for
// operators and tools that read its backlog.
func Durable(t natsjs.Topology, k int) string { return t.Prefix + "-proximity-" + strconv.Itoa(k) }

// errLeaseLapsed is a partition's refusal to go on without a valid lease.
var errLeaseLapsed = errors.New("partition lease no longer valid")

// run serves the partition until ctx ends: it waits for the partition's
// lease, rebuilds and consumes while it holds it, and waits again when it
// loses it. At ctx's end it releases the lease, after the last
// checkpoint, so that a successor takes over at once.
func (p *partition) run(ctx context.Context) error {
	log := p.w.o.Log.With("partition", p.k)
	for {
		if err := p.acquire(ctx, log); err != nil {
			return nil // ctx ended
		}
		err := p.serve(ctx, log)
		p.live.Store(false)
		if ctx.Err() != nil {
			p.release(log)
			return nil
		}
		p.held.Store(false)
		p.leaseHeld.Set(0)
		p.leaseLost.Inc()
		log.Error("partition lease lost: stopped consuming; waiting for the lease again", "err", err, "holder", p.w.o.Holder)
	}
}

// acquire waits until the partition's lease is held, logging once per
// holder it waits for; it fails only when ctx ends.
func (p *partition) acquire(ctx context.Context, log *slog.Logger) error {
	t0 := time.Now()
	var waitingFor string
	failing := false
	err := p.lease.Acquire(ctx, func(st natsjs.LeaseState, err error) {
		if err != nil {
			if !failing {
				log.Warn("partition lease unreadable; trying again", "err", err)
			}
			failing = true
			return
		}
		failing = false
		if st.Holder == "" || st.Holder == waitingFor {
			return
		}
		waitingFor = st.Holder
		holder := st.Holder // Ready reads it from other goroutines
		p.waitingFor.Store(&holder)
		p.leaseWaiting.Set(1)
		log.Info("partition lease held by another worker; waiting until it is released or expires",
			"holder", st.Holder, "renewed", st.Renewed, "ttl", p.lease.TTL())
	})
	p.waitingFor.Store(nil)
	p.leaseWaiting.Set(0)
	if err != nil {
		return err
	}
	p.held.Store(true)
	p.leaseHeld.Set(1)
	log.Info("partition lease acquired", "holder", p.w.o.Holder, "waited", time.Since(t0).Round(time.Millisecond), "ttl", p.lease.TTL())
	return nil
}

// serve rebuilds and consumes the partition while its lease is renewed,
// until ctx ends (nil) or the lease is lost (an error wrapping
// natsjs.ErrLeaseLost). Consumption stops before serve returns; the lease
// stays renewed until then (the last checkpoint included).
func (p *partition) serve(ctx context.Context, log *slog.Logger) error {
	cctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	kctx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	kept := make(chan error, 1)
	go func() {
		err := p.lease.Keep(kctx)
		if err != nil {
			stop(err)
		}
		kept <- err
	}()
	p.consume(cctx, log)
	stopKeep()
	return <-kept
}

// consume rebuilds and consumes, again after every failure, until ctx
// ends.
func (p *partition) consume(ctx context.Context, log *slog.Logger) {
	var retry backoff.Backoff
	for {
		err := p.once(ctx)
		if ctx.Err() != nil {
			return
		}
		d := retry.Next()
		if errors.Is(err, errLeaseLapsed) {
			// Keep ends ctx in a moment (or renews, if a renewal's answer
			// was only late).
			log.Warn("partition lease lapsed; stopped consuming", "err", err)
		} else {
			log.Error("partition failed; rebuilding from the log", "err", err, "retry_in", d)
		}
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// release gives the partition's lease up (at a clean stop), so that a
// waiting worker takes over at once.
func (p *partition) release(log *slog.Logger) {
	p.held.Store(false)
	p.leaseHeld.Set(0)
	if p.w.noRelease {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.lease.Release(ctx); err != nil {
		log.Warn("partition lease not released: a successor waits until it expires", "err", err, "ttl", p.lease.TTL())
		return
	}
	log.Info("partition lease released")
}

// once creates (or finds) the durable consumer, rebuilds the engine up to
// its ack floor and consumes until a failure or ctx's end.
func (p *partition) once(ctx context.Context) error {
	p.live.Store(false)
	o := p.w.o
	t := o.Topology
	log := o.Log.With("partition", p.k)
	copts := natsjs.ConsumerOptions{
		Stream:     t.InStream(),
		Durable:    p.durable(),
		Subjects:   []string{t.InSubject(p.k)},
		Batch:      o.Batch,
		AckWait:    o.AckWait,
		MaxWait:    o.AckWait / 2, // a pull must end well within the ack wait (0: default)
		DeadLetter: t.DLQSubject(),
		Logger:     o.Log,
		Fence:      p.fence,
	}
	cons, err := natsjs.NewConsumer(ctx, o.JS, copts)
	p.unreadable.After = p.w.stuckAfter
	stuck, unreadableFor := p.unreadable.Observe(err, time.Now())
	if err != nil && !stuck {
		return fmt.Errorf("consumer: %w", err)
	}
	var floor uint64
	if !stuck {
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer info: %w", err)
		}
		floor = natsjs.AckFloor(info)
	}
	t0 := time.Now()
	p.e, p.seqs, p.applied = nil, nil, 0
	if err := p.loadCheckpoint(ctx, log); err != nil {
		return err
	}
	loaded := p.applied
	if p.e == nil {
		p.e = game.NewEngine(p.sub, o.Radius)
		p.seqs = make(map[string]game.SeqWindow)
	}
	if stuck {
		// What the consumer acked is unknown: the inputs after the
		// checkpoint come again, and readInLog keeps their outputs
		// stored already from being published twice.
		floor = p.applied
		log.Error("partition consumer unreadable: deleting it and creating it again after the newest checkpoint",
			"unreadable_for", unreadableFor.Round(time.Second), "from", p.applied+1, "err", err)
		if cons, err = natsjs.NewConsumerFrom(ctx, o.JS, copts, p.applied+1); err != nil {
			return fmt.Errorf("consumer: created again: %w", err)
		}
		p.unreadable.Reset()
		p.w.m.recreated.Inc()
	}
	if err := p.checkTrimmed(ctx, log, floor); err != nil {
		return err
	}
	// The partitions' checkpoints are spread over the interval (partition
	// k of K first writes k/K of an interval early), so that a process
	// holding several never copies and uploads them all at once: a burst
	// of uploads into the log's server delays everybody's moves.
	stagger := o.CheckpointEvery * time.Duration(p.k%max(o.Topology.Partitions, 1)) / time.Duration(max(o.Topology.Partitions, 1))
	p.ckptAt, p.ckptSeq, p.dirty = time.Now().Add(-stagger), p.applied, false
	// The tail: what the previous consumer acked after the checkpoint (or
	// everything it acked, without one). Redeliveries of what the
	// checkpoint covers beyond the ack floor are skipped by handle.
	var replayed uint64
	if floor > p.applied {
		err := natsjs.Replay(ctx, o.JS, natsjs.ReplayOptions{Stream: t.InStream(), Subjects: []string{t.InSubject(p.k)}, StartSeq: p.applied + 1}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if m.Seq > floor {
					return errCaughtUp
				}
				if err := p.apply(m, modeRebuild); err != nil {
					return err
				}
				p.applied = m.Seq
				replayed++
				p.w.m.replayed.Inc()
			}
			return nil
		})
		if err != nil && !errors.Is(err, errCaughtUp) {
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	if err := p.readInLog(ctx); err != nil {
		return err
	}
	p.w.m.rebuilds.Inc()
	p.w.m.rebuild.Observe(time.Since(t0).Seconds())
	log.Info("partition ready", "own_nodes", p.sub.Own, "halo_nodes", p.sub.NumNodes()-int(p.sub.Own),
		"checkpoint_seq", loaded, "replayed_messages", replayed, "replayed_to_seq", floor, "outputs_in_log_after", len(p.inLog),
		"active_treasures", p.e.Active(), "rebuild", time.Since(t0).Round(time.Millisecond))
	p.live.Store(true)

	// A failed batch ends this consumer run: the engine has applied inputs
	// whose outputs may not be stored, so it is rebuilt from the log.
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer p.waitUpload()
	// From p.applied, not from the floor Run would read again: a floor
	// that moved on since the rebuild read it (late acks of the run
	// before, a consumer leader elected meanwhile) would skip inputs the
	// engine never saw — a treasure they claimed would be claimed again.
	err = cons.RunAfter(rctx, p.applied, func(ctx context.Context, msgs []natsjs.Msg) error {
		if p.w.hook != nil {
			p.w.hook(p.k, hookBatch)
		}
		if err := p.fence(); err != nil {
			// Frozen past the lease's validity with this batch in hand:
			// not applied, not acked (the successor has it).
			cancel(err)
			return err
		}
		t0 := time.Now()
		p.dirty = true
		if err := p.handle(ctx, msgs); err != nil {
			cancel(err)
			return err
		}
		p.dirty = false
		p.inputs.Add(float64(len(msgs)))
		p.w.m.batch.Observe(time.Since(t0).Seconds())
		p.maybeCheckpoint(log)
		return nil
	})
	if cause := context.Cause(rctx); cause != nil && ctx.Err() == nil {
		return cause
	}
	if ctx.Err() != nil && !p.dirty && !p.w.noFinalCheckpoint && p.lease.Valid() {
		p.finalCheckpoint(log)
	}
	return err
}

// readInLog sets p.inLog to the ids of the outputs on the partition's
// OUT subject of inputs after p.applied: published before this rebuild
// (by the run before, or the lease's previous holder) for inputs whose
// acks the consumer does not have — sent but lost, or never sent — which
// come again and are applied again. JetStream's duplicate window drops
// such a copy as a rule, but not always: nats-server 2.9 lets a new
// stream leader take writes before it has applied everything it caught
// up with, and a copy of an output it holds but has not applied is
// stored twice (the R3 quorum test saw a result and a claim stored twice
// so). It reads the subject's headers from the time input p.applied was
// stored, less a margin for the servers' clocks: an output is stored
// after its input.
func (p *partition) readInLog(ctx context.Context) error {
	p.inLog, p.inLogTo = nil, 0
	o := p.w.o
	var since time.Time // the subject's first message: no input applied
	if p.applied > 0 {
		s, err := o.JS.Stream(ctx, o.Topology.InStream())
		if err != nil {
			return fmt.Errorf("outputs in the log: %w", err)
		}
		m, err := s.GetMsg(ctx, p.applied)
		switch {
		case err == nil:
			since = m.Time.Add(-inLogClockMargin)
		case errors.Is(err, jetstream.ErrMsgNotFound):
			// Removed by retention: read the subject from its start.
		default:
			return fmt.Errorf("outputs in the log: input %d: %w", p.applied, err)
		}
	}
	// Nothing stored on the subject since then (a clean restart, the
	// usual case): no scan, which would wait out an empty pull.
	out, err := o.JS.Stream(ctx, o.Topology.OutStream())
	if err != nil {
		return fmt.Errorf("outputs in the log: %w", err)
	}
	last, err := out.GetLastMsgForSubject(ctx, o.Topology.OutSubject(p.k))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("outputs in the log: last of %s: %w", o.Topology.OutSubject(p.k), err)
	case last.Time.Before(since):
		return nil
	}
	prefix := "out-" + strconv.Itoa(p.k) + "-"
	err = natsjs.MsgIDsSince(ctx, o.JS, o.Topology.OutStream(), o.Topology.OutSubject(p.k), since, func(id string) {
		rest, ok := strings.CutPrefix(id, prefix)
		if !ok {
			return
		}
		seqText, _, _ := strings.Cut(rest, "-")
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if err != nil || seq <= p.applied {
			return
		}
		if p.inLog == nil {
			p.inLog = make(map[string]struct{})
		}
		p.inLog[id] = struct{}{}
		p.inLogTo = max(p.inLogTo, seq)
	})
	if err != nil {
		return fmt.Errorf("outputs in the log: %w", err)
	}
	return nil
}

// inLogClockMargin is how much earlier than its input readInLog looks
// for an output: the IN and OUT streams' leaders may be different
// servers, whose clocks may differ a little.
const inLogClockMargin = 2 * time.Second

// fence refuses to go on once the partition's lease is no longer valid
// (natsjs.ConsumerOptions.Fence, and before every input applied).
func (p *partition) fence() error {
	if !p.lease.Valid() {
		return errLeaseLapsed
	}
	return nil
}

// loadCheckpoint sets p.e, p.seqs and p.applied from the newest
// checkpoint of the partition that passes every check, skipping (with a
// log line and treasure_proximity_checkpoint_invalid_total) each one that
// does not. It leaves p.e nil when checkpoints are off or none is usable,
// and fails only when the store cannot be listed.
func (p *partition) loadCheckpoint(ctx context.Context, log *slog.Logger) error {
	o := p.w.o
	if o.CheckpointEvery <= 0 || o.Checkpoints == nil {
		return nil
	}
	seqs, err := o.Checkpoints.Seqs(ctx, p.k)
	if err != nil {
		// natsjs bounds and retries the listing; the partition restarts.
		p.w.m.ckptUnreachable.Inc()
		return fmt.Errorf("list checkpoints: %w", err)
	}
	// A checkpoint beyond the log's end belongs to a log that was deleted.
	stream, err := o.JS.Stream(ctx, o.Topology.InStream())
	if err != nil {
		return fmt.Errorf("log stream: %w", err)
	}
	last := stream.CachedInfo().State.LastSeq
	for _, seq := range seqs {
		t0 := time.Now()
		var data []byte
		var err error
		if seq > last {
			err = fmt.Errorf("checkpoint at seq %d is beyond the log's last message %d (the log was recreated?)", seq, last)
		} else if data, err = o.Checkpoints.Get(ctx, p.k, seq); err != nil {
			// Bounded and retried by natsjs: timed out, deleted since the
			// listing, or unreachable. It is kept (the failure may be the
			// connection's) and the one before is tried.
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p.w.m.ckptUnreachable.Inc()
			p.w.m.ckptInvalid.Inc()
			log.Warn("checkpoint could not be read; trying the one before", "seq", seq, "err", err)
			continue
		}
		// A checkpoint read and refused, or beyond the log, is deleted: it
		// would be refused again at every start, and would take one of the
		// places pruning keeps. One that could not be read is kept (the
		// failure may be the connection's), and so is one of a format
		// version this build does not read: a newer build wrote it, and may
		// run again after a rollback (pruning removes it in time).
		var e *game.Engine
		var meta *game.CheckpointMeta
		drop := seq > last
		if err == nil {
			e, meta, err = game.ReadCheckpoint(data, p.sub, o.Radius, p.fingerprint)
			drop = !errors.Is(err, game.ErrCheckpointVersion)
		}
		if err == nil && (meta.Partition != uint32(p.k) || meta.Partitions != uint32(o.Topology.Partitions) || meta.Seq != seq) {
			err = fmt.Errorf("checkpoint of partition %d of %d at seq %d stored as partition %d of %d at seq %d",
				meta.Partition, meta.Partitions, meta.Seq, p.k, o.Topology.Partitions, seq)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p.w.m.ckptInvalid.Inc()
			log.Warn("checkpoint refused; trying the one before", "seq", seq, "deleted", drop, "err", err)
			if drop {
				if err := o.Checkpoints.Delete(ctx, p.k, seq); err != nil {
					log.Warn("refused checkpoint not deleted", "seq", seq, "err", err)
				}
			}
			continue
		}
		p.e, p.seqs, p.applied = e, meta.Players, seq
		p.w.m.ckptLoaded.Inc()
		p.w.m.ckptLoad.Observe(time.Since(t0).Seconds())
		return nil
	}
	if len(seqs) > 0 {
		log.Warn("no usable checkpoint; rebuilding from the start of the log", "refused", len(seqs))
	}
	return nil
}

// checkTrimmed logs an error and counts treasure_proximity_rebuilds_trimmed_log_total
// when the rebuild about to run needs messages the log no longer holds:
// the previous consumer acked inputs beyond what the loaded checkpoint (if
// any) covers, and the IN stream now begins after the checkpoint's
// sequence + 1 (retention or an operator removed its head). The partition
// then carries on from what the log still holds, as push does; its state
// misses what was removed. A partition whose consumer acked nothing
// beyond its checkpoint needs no old message (what comes next is
// delivered live), so a quiet partition with an old checkpoint is not
// reported.
func (p *partition) checkTrimmed(ctx context.Context, log *slog.Logger, floor uint64) error {
	if floor <= p.applied {
		return nil
	}
	stream, err := p.w.o.JS.Stream(ctx, p.w.o.Topology.InStream())
	if err != nil {
		return fmt.Errorf("log stream: %w", err)
	}
	first := stream.CachedInfo().State.FirstSeq
	if first <= p.applied+1 {
		return nil
	}
	p.w.m.trimmedRebuilds.Inc()
	log.Error("rebuilding from a trimmed log without a usable checkpoint that reaches its first message: the messages removed before it are missing from this partition's state",
		"first_seq", first, "checkpoint_seq", p.applied, "acked_to_seq", floor)
	return nil
}

// maybeCheckpoint, called between batches, encodes a checkpoint when
// CheckpointEvery has passed since the last one, inputs have been applied
// since, and the previous upload has finished; the upload runs in the
// background.
func (p *partition) maybeCheckpoint(log *slog.Logger) {
	o := p.w.o
	if o.CheckpointEvery <= 0 || o.Checkpoints == nil || p.applied <= p.ckptSeq || time.Since(p.ckptAt) < o.CheckpointEvery {
		return
	}
	if p.uploading != nil {
		select {
		case err := <-p.uploading:
			p.uploading = nil
			if err != nil {
				p.ckptSeq = 0 // not stored: the next one may cover the same inputs
			}
		default:
			return // still uploading: the next batch tries again
		}
	}
	seq, st := p.copyState()
	done := make(chan error, 1)
	p.uploading = done
	go func() { done <- p.writeCheckpoint(log, seq, st) }()
}

// finalCheckpoint writes a checkpoint of the current state, after the
// upload in flight, when it covers inputs the last one does not.
func (p *partition) finalCheckpoint(log *slog.Logger) {
	p.waitUpload()
	if p.w.o.CheckpointEvery <= 0 || p.w.o.Checkpoints == nil || p.applied <= p.ckptSeq {
		return
	}
	seq, st := p.copyState()
	p.writeCheckpoint(log, seq, st)
}

// waitUpload waits for the upload in flight, if any.
func (p *partition) waitUpload() {
	if p.uploading == nil {
		return
	}
	if err := <-p.uploading; err != nil {
		p.ckptSeq = 0
	}
	p.uploading = nil
}

// copyState copies the engine's state, which covers every input up to
// p.applied (their outputs are stored: it runs between batches only). The
// partition pauses for the copy only; the encoding runs in writeCheckpoint.
func (p *partition) copyState() (uint64, *game.CheckpointState) {
	t0 := time.Now()
	meta := game.CheckpointMeta{Partition: uint32(p.k), Partitions: uint32(p.w.o.Topology.Partitions), Seq: p.applied, Players: p.seqs}
	st := p.e.CheckpointState(&meta, p.fingerprint)
	p.w.m.ckptPause.Observe(time.Since(t0).Seconds())
	p.ckptAt, p.ckptSeq = time.Now(), p.applied
	return p.applied, st
}

// writeCheckpoint encodes and stores a checkpoint and prunes the old ones; it touches
// no partition state, so it may run beside the partition's goroutine.
func (p *partition) writeCheckpoint(log *slog.Logger, seq uint64, st *game.CheckpointState) error {
	o := p.w.o
	t0 := time.Now()
	data := st.Append(nil)
	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()
	if err := o.Checkpoints.Put(ctx, p.k, seq, data); err != nil {
		p.w.m.ckptFailed.Inc()
		log.Error("checkpoint not written", "seq", seq, "err", err)
		return err
	}
	p.w.m.ckptWritten.Inc()
	p.w.m.ckptBytes.Set(float64(len(data)))
	if err := o.Checkpoints.Prune(ctx, p.k, o.CheckpointKeep); err != nil {
		log.Warn("old checkpoints not pruned", "err", err) // the next write tries again
	}
	p.w.m.ckptWrite.Observe(time.Since(t0).Seconds())
	log.Debug("checkpoint written", "seq", seq, "bytes", len(data), "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

var errCaughtUp = errors.New("caught up with the ack floor")

// handle applies a batch of input messages and publishes their outputs,
// returning once every publish is acknowledged.
func (p *partition) handle(ctx context.Context, msgs []natsjs.Msg) error {
	p.futures = p.futures[:0]
	p.hops = p.hops[:0]
	for _, m := range msgs {
		if m.Seq <= p.applied {
			continue // covered by the checkpoint loaded: applied and published before
		}
		// Every input's outputs are published as it is applied: a worker
		// frozen mid-batch past its lease's validity applies and publishes
		// nothing more when it runs again.
		if err := p.fence(); err != nil {
			return err
		}
		if p.w.hook != nil {
			p.w.hook(p.k, hookApply)
		}
		if err := p.apply(m, modeLive); err != nil {
			return err
		}
		p.applied = m.Seq
		p.hops[len(p.hops)-1].futEnd = len(p.futures)
	}
	if p.inLog != nil && p.applied >= p.inLogTo {
		p.inLog = nil
	}
	// In input order: an input's results are published once its own
	// publishes are acked, whatever the later inputs of the batch wait for.
	done := 0
	for _, h := range p.hops {
		for _, f := range p.futures[done:h.futEnd] {
			if _, err := f.Wait(ctx); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
		}
		done = h.futEnd
		d := float64(time.Now().UnixNano()-h.consumed) / 1e9
		for range h.moves {
			p.w.m.consumedToResult.Observe(d)
		}
	}
	return nil
}

// mode says where apply sends the outputs of an input message.
type mode int

const (
	modeRebuild mode = iota // nowhere: the engine is catching up
	modeLive                // published (without waiting for the acks)
	modeReplay              // handed to p.emit, in order; nothing is published
)

// apply feeds one input message to the engine and sends its outputs
// where md says. The engine's state after it is the same in every mode.
func (p *partition) apply(m natsjs.Msg, md mode) error {
	publish := md == modeLive
	if err := p.rd.Reset(m.Data); err != nil {
		// A batch no reader accepts can never be applied: dead-letter it
		// by failing (the consumer gives up after MaxDeliver). During a
		// rebuild or a replay it was already skipped live, so skip it again.
		if !publish {
			return nil
		}
		return fmt.Errorf("input seq %d: %w", m.Seq, err)
	}
	o := p.w.o
	p.out.Reset()
	clear(p.foreign)
	p.foreign, p.foreignIdx, p.foreignWhy = p.foreign[:0], p.foreignIdx[:0], ""
	// Hop timestamps (live only): they travel in the output batches'
	// headers and feed the histograms; nothing computed depends on them.
	var published, consumed int64
	if publish {
		consumed = time.Now().UnixNano()
		if !m.Time.IsZero() {
			published = m.Time.UnixNano()
		}
		if err := p.out.SetHops(event.Hops{InputPublished: published, InputConsumed: consumed}); err != nil {
			return err // cannot happen: the batch is empty
		}
		p.hops = append(p.hops, inputHops{consumed: consumed})
	}
	outPart := 0
	var notices []*eventpb.Event
	flush := func() error {
		if !publish || p.out.Len() == 0 {
			return nil
		}
		id := "out-" + strconv.Itoa(p.k) + "-" + strconv.FormatUint(m.Seq, 10) + "-" + strconv.Itoa(outPart)
		if _, ok := p.inLog[id]; ok {
			// Stored before this rebuild (readInLog).
			p.w.m.inLog.Inc()
			p.out.Reset()
			outPart++
			return nil
		}
		f, err := p.w.pub.Publish(context.Background(), o.Topology.OutSubject(p.k), p.out.Bytes(), id) // copied
		if err != nil {
			return err
		}
		p.futures = append(p.futures, f)
		p.out.Reset()
		outPart++
		return nil
	}
	add := func(ev *eventpb.Event) error {
		if md == modeReplay {
			return p.emit(ev)
		}
		if !publish {
			return nil
		}
		err := p.out.Add(ev)
		if errors.Is(err, event.ErrFull) {
			if err := flush(); err != nil {
				return err
			}
			err = p.out.Add(ev)
		}
		return err
	}
	for p.rd.Next() {
		switch p.rd.Kind() {
		case event.KindMove:
			if err := p.rd.Move(&p.mv); err != nil {
				return fmt.Errorf("input seq %d event %d: %w", m.Seq, p.rd.Index(), err)
			}
			if len(p.mv.Path) == 0 {
				continue
			}
			if p.seqs[string(p.mv.Player)].Applied(p.mv.Seq) {
				continue
			}
			lastID := p.mv.Path[len(p.mv.Path)-1]
			last, ok := graph.Index(uint64(lastID), o.Graph.NumNodes())
			var prox game.Proximity
			var err error
			if ok {
				p.claims, prox, err = p.e.Move(last, p.claims[:0])
			}
			if !ok || err != nil {
				// Not a node of this graph, or not this partition's:
				// routed by another graph or partitioning (a mismatch
				// natsjs.CheckConfig refuses at start). Never dropped
				// silently: counted, logged and dead-lettered (live; a
				// rebuild or replay skips it again).
				if publish {
					why := "its last node %d is not in this worker's graph"
					if ok {
						why = "its last node %d is not owned by this partition"
					}
					p.unowned(m, fmt.Sprintf(why, lastID))
				}
				continue
			}
			player := string(p.mv.Player)
			w := p.seqs[player]
			w.Apply(p.mv.Seq)
			p.seqs[player] = w
			if md == modeRebuild {
				continue
			}
			pos := &eventpb.LogPosition{StreamSeq: m.Seq, Index: uint32(p.rd.Index())}
			if publish {
				p.w.m.moves.Inc()
				p.w.m.claims.Add(float64(len(p.claims)))
				if published != 0 {
					p.w.m.logWait.Observe(float64(consumed-published) / 1e9)
				}
				p.hops[len(p.hops)-1].moves++
			}
			for _, c := range p.claims {
				claim := &eventpb.Claim{Player: player, Seq: p.mv.Seq, Treasure: c.ID, Points: uint64(c.Points), Node: graph.ID(c.Node), Move: pos, PrevSeq: p.mv.PrevSeq}
				if err := add(&eventpb.Event{Kind: &eventpb.Event_Claim{Claim: claim}}); err != nil {
					return err
				}
				if publish {
					notices = append(notices, &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: claim}})
				}
			}
			pr := &eventpb.ProximityResult{Player: player, Seq: p.mv.Seq, Node: lastID, Move: pos, IngestUnixNanos: p.mv.IngestUnixNanos, PrevSeq: p.mv.PrevSeq}
			if prox.Found {
				pr.Treasure = &eventpb.NearestTreasure{Id: prox.ID, Node: graph.ID(prox.Node), Distance: uint64(prox.Distance)}
			}
			if err := add(&eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: pr}}); err != nil {
				return err
			}
		case event.KindDrop:
			if err := p.rd.Event(&p.ev); err != nil {
				return fmt.Errorf("input seq %d event %d: %w", m.Seq, p.rd.Index(), err)
			}
			d := p.ev.GetDrop()
			node, ok := graph.Index(uint64(d.GetNode()), o.Graph.NumNodes())
			if !ok || d.GetPoints() == 0 || d.GetPoints() > 1<<31-1 {
				continue
			}
			if p.e.Drop(game.Treasure{ID: d.GetId(), Node: node, Points: uint32(d.GetPoints())}) && publish {
				p.w.m.drops.Inc()
			}
		case event.KindClaim:
			if err := p.rd.Event(&p.ev); err != nil {
				return fmt.Errorf("input seq %d event %d: %w", m.Seq, p.rd.Index(), err)
			}
			if p.e.Claim(p.ev.GetClaim().GetTreasure()) && publish {
				p.w.m.notices.Inc()
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := p.deadLetterUnowned(m); err != nil {
		return err
	}
	if !publish || len(notices) == 0 {
		return nil
	}
	// Claim notices: every other partition learns of the claim through its
	// own ordered subject.
	data, err := event.AppendBatch(nil, notices)
	if err != nil {
		return err
	}
	for q := 0; q < o.Topology.Partitions; q++ {
		if q == p.k {
			continue
		}
		id := "claim-" + strconv.Itoa(p.k) + "-" + strconv.FormatUint(m.Seq, 10) + "-" + strconv.Itoa(q)
		f, err := p.w.pub.Publish(context.Background(), o.Topology.InSubject(q), data, id)
		if err != nil {
			return err
		}
		p.futures = append(p.futures, f)
	}
	return nil
}

// unowned records the move being read (p.mv, at p.rd.Index() of input m)
// as one this partition cannot apply, for deadLetterUnowned; it counts it
// and logs at most once every 10 s per partition, with the count kept
// quiet meanwhile.
func (p *partition) unowned(m natsjs.Msg, why string) {
	p.w.m.foreign.Inc()
	pm := &eventpb.MoveAccepted{}
	p.mv.Proto(pm)
	p.foreign = append(p.foreign, &eventpb.Event{Kind: &eventpb.Event_Move{Move: pm}})
	p.foreignIdx = append(p.foreignIdx, p.rd.Index())
	if p.foreignWhy == "" {
		p.foreignWhy = why
	}
	if now := time.Now(); now.Sub(p.foreignLogAt) >= 10*time.Second {
		p.w.o.Log.Error("move not owned by this partition: dead-lettered, not applied (is every service started with the same TREASURE_GRAPH and TREASURE_PARTITIONS?)",
			"partition", p.k, "input_seq", m.Seq, "player", pm.GetPlayer(), "seq", pm.GetSeq(), "why", why, "similar_not_logged", p.foreignQuiet)
		p.foreignLogAt, p.foreignQuiet = now, 0
	} else {
		p.foreignQuiet++
	}
}

// deadLetterUnowned publishes the moves of input m that unowned recorded
// to the dead-letter subject, one message for all of them, and waits for
// JetStream to store it (before m's ack: a worker killed in between
// dead-letters them again under the same Nats-Msg-Id).
func (p *partition) deadLetterUnowned(m natsjs.Msg) error {
	if len(p.foreign) == 0 {
		return nil
	}
	defer func() {
		clear(p.foreign)
		p.foreign, p.foreignIdx, p.foreignWhy = p.foreign[:0], p.foreignIdx[:0], ""
	}()
	data, err := event.AppendBatch(nil, p.foreign)
	if err != nil {
		return fmt.Errorf("input seq %d: dead letter: %w", m.Seq, err)
	}
	o := p.w.o
	reason := fmt.Sprintf("%d move(s) not applied by partition %d of %d: %s", len(p.foreign), p.k, o.Topology.Partitions, p.foreignWhy)
	return natsjs.DeadLetterEvents(context.Background(), o.JS, o.Topology.DLQSubject(), m, o.Topology.InStream(), p.durable(), p.foreignIdx, data, reason)
}
