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
package proximity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

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
}

// Worker serves a set of partitions. Run it once.
type Worker struct {
	o     Options
	pub   *natsjs.Publisher
	parts []*partition
	m     metrics
}

type metrics struct {
	moves, claims, drops, notices prometheus.Counter
	rebuilds                      prometheus.Counter
	batch                         prometheus.Histogram
	// Per-hop latency of every move evaluated live (docs/operations.md):
	// from the log storing its input message to this worker beginning to
	// apply it (the queue), and from then to the JetStream ack of the
	// output batch holding its result.
	logWait, consumedToResult prometheus.Histogram
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
		moves:    prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_moves_total", Help: "Moves evaluated (live, not rebuilds)."}),
		claims:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_claims_total", Help: "Treasures claimed by moves ending on their node."}),
		drops:    prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_drops_total", Help: "Treasure drops applied."}),
		notices:  prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_claim_notices_total", Help: "Claims decided by other partitions applied here."}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_proximity_rebuilds_total", Help: "Partition engines rebuilt from the log after a failure or at start."}),
		batch:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_batch_seconds", Help: "Time to process one consumer batch, publishes included.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
		logWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_hop_log_wait_seconds",
			Help: "Per move: from JetStream storing its input message (published) to the worker beginning to apply it (consumed).", Buckets: hopBuckets}),
		consumedToResult: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_proximity_hop_consumed_to_result_seconds",
			Help: "Per move: from the worker beginning to apply its input message to JetStream acking the output batch with its result.", Buckets: hopBuckets}),
	}
	if r != nil {
		r.MustRegister(m.moves, m.claims, m.drops, m.notices, m.rebuilds, m.batch, m.logWait, m.consumedToResult)
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
	if len(o.Partitions) == 0 {
		for k := 0; k < o.Topology.Partitions; k++ {
			o.Partitions = append(o.Partitions, k)
		}
	}
	w := &Worker{o: o, m: newMetrics(o.Registerer)}
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
		w.parts = append(w.parts, &partition{w: w, k: k, sub: sub})
	}
	pub, err := natsjs.NewPublisher(o.NC, natsjs.PublisherOptions{})
	if err != nil {
		return nil, fmt.Errorf("proximity: %w", err)
	}
	w.pub = pub
	return w, nil
}

// Ready reports nil once every partition has rebuilt its engine and is
// consuming.
func (w *Worker) Ready() error {
	for _, p := range w.parts {
		if !p.live.Load() {
			return fmt.Errorf("partition %d is rebuilding its state from the log", p.k)
		}
	}
	return nil
}

// Partitions returns the partitions this worker serves.
func (w *Worker) Partitions() []int { return w.o.Partitions }

// Run serves every partition until ctx is cancelled, then returns nil.
// Inputs being processed at cancellation are not acked and come back to
// the next Run (of this or another worker) after the consumer's ack wait.
func (w *Worker) Run(ctx context.Context) error {
	defer w.pub.Close()
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

	// emit receives the outputs in the replay mode (see Replay).
	emit func(ev *eventpb.Event) error

	rd      event.Reader
	mv      event.Move
	claims  []game.Claimed
	out     event.Builder
	futures []*natsjs.Future
	ev      eventpb.Event
	hops    []inputHops // of the inputs of the batch being handled, live only

	// lastSeq is the seq of the last move applied per player: a move whose
	// seq is not above it is a duplicate (a player's retry after an ingest
	// crash, see docs/pipeline.md) and is skipped, live and in rebuilds
	// alike.
	lastSeq map[string]uint64
}

func (p *partition) durable() string { return Durable(p.w.o.Topology, p.k) }

// Durable names the durable consumer of partition k's log subject, for
// operators and tools that read its backlog.
func Durable(t natsjs.Topology, k int) string { return t.Prefix + "-proximity-" + strconv.Itoa(k) }

// run rebuilds and consumes, again after every failure, until ctx ends.
func (p *partition) run(ctx context.Context) error {
	log := p.w.o.Log.With("partition", p.k)
	backoff := 100 * time.Millisecond
	for {
		err := p.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Error("partition failed; rebuilding from the log", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// once creates (or finds) the durable consumer, rebuilds the engine up to
// its ack floor and consumes until a failure or ctx's end.
func (p *partition) once(ctx context.Context) error {
	p.live.Store(false)
	o := p.w.o
	t := o.Topology
	cons, err := natsjs.NewConsumer(ctx, o.JS, natsjs.ConsumerOptions{
		Stream:     t.InStream(),
		Durable:    p.durable(),
		Subjects:   []string{t.InSubject(p.k)},
		Batch:      o.Batch,
		AckWait:    o.AckWait,
		MaxWait:    o.AckWait / 2, // a pull must end well within the ack wait (0: default)
		DeadLetter: t.DLQSubject(),
		Logger:     o.Log,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	floor := info.AckFloor.Stream
	t0 := time.Now()
	p.e = game.NewEngine(p.sub, o.Radius)
	p.lastSeq = make(map[string]uint64)
	if floor > 0 {
		err := natsjs.Replay(ctx, o.JS, natsjs.ReplayOptions{Stream: t.InStream(), Subjects: []string{t.InSubject(p.k)}}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if m.Seq > floor {
					return errCaughtUp
				}
				if err := p.apply(m, modeRebuild); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errCaughtUp) {
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	p.w.m.rebuilds.Inc()
	o.Log.Info("partition ready", "partition", p.k, "own_nodes", p.sub.Own, "halo_nodes", p.sub.NumNodes()-int(p.sub.Own),
		"replayed_to_seq", floor, "active_treasures", p.e.Active(), "rebuild", time.Since(t0).Round(time.Millisecond))
	p.live.Store(true)

	// A failed batch ends this consumer run: the engine has applied inputs
	// whose outputs may not be stored, so it is rebuilt from the log.
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	err = cons.Run(rctx, func(ctx context.Context, msgs []natsjs.Msg) error {
		t0 := time.Now()
		if err := p.handle(ctx, msgs); err != nil {
			cancel(err)
			return err
		}
		p.w.m.batch.Observe(time.Since(t0).Seconds())
		return nil
	})
	if cause := context.Cause(rctx); cause != nil && ctx.Err() == nil {
		return cause
	}
	return err
}

var errCaughtUp = errors.New("caught up with the ack floor")

// handle applies a batch of input messages and publishes their outputs,
// returning once every publish is acknowledged.
func (p *partition) handle(ctx context.Context, msgs []natsjs.Msg) error {
	p.futures = p.futures[:0]
	p.hops = p.hops[:0]
	for _, m := range msgs {
		if err := p.apply(m, modeLive); err != nil {
			return err
		}
		p.hops[len(p.hops)-1].futEnd = len(p.futures)
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
		f, err := p.w.pub.Publish(context.Background(), o.Topology.OutSubject(p.k), append([]byte(nil), p.out.Bytes()...), id)
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
			if last, seen := p.lastSeq[string(p.mv.Player)]; seen && p.mv.Seq <= last {
				continue
			}
			lastID := p.mv.Path[len(p.mv.Path)-1]
			last, ok := graph.Index(uint64(lastID), o.Graph.NumNodes())
			if !ok {
				continue // ingest validated it; a foreign graph's move is skipped
			}
			var prox game.Proximity
			var err error
			p.claims, prox, err = p.e.Move(last, p.claims[:0])
			if err != nil {
				continue // not ours: routed by another partitioning
			}
			player := string(p.mv.Player)
			p.lastSeq[player] = p.mv.Seq
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
