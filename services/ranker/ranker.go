// Package ranker is the ranker service: it consumes the claims and
// proximity results the workers publish to P_OUT, keeps the durable scores
// in PostgreSQL and the live ranks in Redis, and publishes every player's
// score changes and a throttled leaderboard snapshot back into P_OUT on
// P.out.rank, for push (docs/pipeline.md).
//
// # What a batch does
//
// A durable consumer on P.out.* hands the ranker the messages that have
// arrived, up to Options.Batch per call (a light load is applied at once, a
// heavy one in large batches). For each call the ranker
//
//  1. decodes the batches: every Claim becomes a pgstore.Claim whose
//     position is the event's place in P_OUT (stream sequence << 20 | index
//     in the batch) — "who reached that score first" is a log position;
//     every ProximityResult names a player seen, recorded once per process;
//     the ranker's own events on P.out.rank are skipped;
//  2. stores the claims with pgstore.ApplyClaims, one statement per up to
//     Options.MaxClaims claims (a treasure counts once however often its
//     claim is delivered), then reads back which claim PostgreSQL holds for
//     each treasure and its player's score;
//  3. applies those scores to Redis (monotonic, idempotent);
//  4. publishes one ScoreChanged per claim that counts: the player's score
//     right after that claim and the rank right after it. The rank is read
//     once the whole batch is applied (from Redis, or PostgreSQL) and then
//     taken back to the claim's log position by subtracting the claims
//     that follow it (see standings), so a claim early in a batch is not
//     ranked against claims made after it. The events go out in one
//     message per call with Nats-Msg-Id rank-<last input sequence> (more
//     messages when they pass 512 KiB, cut between inputs; see ids.go);
//  5. returns once JetStream has stored them, and the consumer acks.
//
// A claim delivered again — a redelivery after a crash, a duplicate in the
// log — is stored once, and its ScoreChanged is computed again identically
// (step 2 tells a redelivery, which is published again, from a duplicate at
// another position, which is not); a ranker that starts again learns from
// the last message on P.out.rank which inputs already have their events
// stored and publishes nothing for those. So the ScoreChanged events are a
// pure function of the log: the same on a replay however it is batched.
//
// # Redis
//
// Redis is a cache of PostgreSQL. It is rebuilt from PostgreSQL at start;
// every second the ranker checks that it is still built (a flushed or
// restarted Redis) and rebuilds it if not, pausing the batches meanwhile.
// When Redis fails or is unreachable, batches carry on against PostgreSQL
// alone (ranks from pgstore.Ranks) and Redis is rebuilt once it answers:
// no change is lost, since PostgreSQL holds them all.
//
// # Snapshots
//
// At most once per Options.SnapshotEvery (default 500 ms), when claims have
// been applied and the top has changed, the ranker publishes a
// LeaderboardSnapshot of the top Options.TopN with a version that strictly
// increases, across restarts too (see versionShift).
//
// # Files
//
// The code follows a batch's path: ranker.go (Run, the handler), decode.go,
// apply.go with standing.go, publish.go with ids.go; recover.go is what a
// start reads back, board.go the snapshots and the Redis watch. The SQL is
// pgstore's, the Redis key layout redisstore's, the dead letter natsjs's.
package ranker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"treasure/internal/backoff"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
)

// Defaults of Options.
const (
	DefaultTopN          = 10
	DefaultSnapshotEvery = 500 * time.Millisecond
	DefaultRedisCheck    = time.Second
	DefaultBatch         = 256
	DefaultMaxClaims     = 5000
	DefaultSeenCap       = 1 << 20

	maxPoints    = 1<<31 - 1 // what the game accepts for a treasure (proximity's bound)
	outMaxBytes  = 512 << 10 // an output message, well under NATS's 1 MiB max_payload
	outMaxEvents = 1 << 16
	redisTimeout = 2 * time.Second
)

// Options configures a Ranker. Topology, NC, JS, Pool and Redis are
// required; zero values elsewhere take the defaults.
type Options struct {
	Topology natsjs.Topology
	NC       *nats.Conn
	JS       jetstream.JetStream
	// Pool is the PostgreSQL pool; the ranker migrates its schema at start.
	Pool *pgxpool.Pool
	// Redis holds the live board under RedisPrefix (redisstore's layout);
	// push must read it under the same prefix.
	Redis       redis.UniversalClient
	RedisPrefix string
	// TopN is the length of the leaderboard snapshots (default 10).
	TopN int
	// SnapshotEvery is the least time between two snapshots (default
	// 500 ms: "at most twice a second").
	SnapshotEvery time.Duration
	// RedisCheck is how often the ranker checks that Redis still holds the
	// board, or whether an unreachable Redis is back (default 1 s).
	RedisCheck time.Duration
	// Batch caps the input messages of one handler call (default 256).
	Batch int
	// MaxClaims caps the claims of one PostgreSQL statement (default 5000);
	// a call holding more runs several, each idempotent.
	MaxClaims int
	// AckWait is the consumer's ack wait (default natsjs's).
	AckWait time.Duration
	// MaxWait bounds one pull of the consumer (default natsjs's).
	MaxWait time.Duration
	// SeenCap bounds the set of players already recorded as seen; when it
	// fills it is cleared (recording a player again is harmless).
	SeenCap int
	// Logger receives start-up, rebuild and failure lines; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Ranker is the ranker service. Create it with New and Run it once; Ready
// and Durable are safe to call from any goroutine meanwhile. It does not
// own the connections, pool or client in its Options.
type Ranker struct {
	o           Options
	pg          *pgstore.Store
	rs          *redisstore.Store
	pub         *natsjs.Publisher
	log         *slog.Logger
	m           metrics
	rankSubject string

	started atomic.Bool
	ready   atomic.Bool
	readyMu sync.Mutex
	readyEr error

	// mu is held by a handler call, a snapshot and a Redis rebuild: they
	// never overlap, so a rebuild pauses the batches and a snapshot never
	// sees half a batch.
	mu sync.Mutex
	// redisOK says Redis holds every change PostgreSQL holds; when false
	// the batches skip Redis until a rebuild.
	redisOK bool
	// ahead holds, sorted by position, every claim stored in PostgreSQL
	// beyond the last input the consumer has accepted (a batch being
	// retried, or what a killed predecessor stored), and now the current
	// score of each of their players: what standings needs.
	ahead []stored
	now   map[string]int64
	// aheadStale: a call failed after storing claims and before recording
	// them in ahead; the next call reloads ahead from PostgreSQL.
	aheadStale bool
	// published: the events of every input up to this stream sequence are
	// stored in P.out.rank. pubUnsure: a publish failed, and may have been
	// stored all the same; the next call reads the subject again.
	published uint64
	pubUnsure bool
	// Snapshot state: the last version, the last top published, and
	// whether claims have been applied since.
	lastVersion uint64
	lastTop     []game.Entry
	lastPlayers int64
	haveTop     bool
	dirty       bool
	lastSnap    time.Time
	seen        map[string]struct{}

	rd  event.Reader
	ev  eventpb.Event
	out event.Builder

	// hook, when set (tests), is called at named points of a batch (an
	// error fails the batch there) and of a snapshot ("snapshot-throttled",
	// "snapshot-same", "snapshot-published"; its error is ignored).
	hook func(stage string) error
	// clock is the snapshots' time: time.Now, or a test's.
	clock func() time.Time
	// stuck watches the consumer's "temporarily unavailable" answers at
	// start (After: consumerStuckAfter; tests shorten it).
	stuck natsjs.StuckWatch
	// newConsumer is natsjs.NewConsumer (tests: one answering
	// "temporarily unavailable").
	newConsumer func(context.Context, jetstream.JetStream, natsjs.ConsumerOptions) (*natsjs.Consumer, error)
}

type metrics struct {
	claims, duplicates, events, invalid prometheus.Counter
	seen, snapshots, rebuilds           prometheus.Counter
	batchClaims                         prometheus.Histogram
	apply                               prometheus.Histogram
	redisUp                             prometheus.Gauge
	// inputs counts the OUT messages handled (the processing rate);
	// batchMsgs the messages per handler call; commit one PostgreSQL
	// claims statement.
	inputs    prometheus.Counter
	batchMsgs prometheus.Histogram
	commit    prometheus.Histogram
	// recreated counts consumers deleted and created again after
	// answering "temporarily unavailable" for consumerStuckAfter.
	recreated prometheus.Counter
}

func newMetrics(r prometheus.Registerer) metrics {
	m := metrics{
		claims:      prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_claims_applied_total", Help: "Claims sent to PostgreSQL (redeliveries included; each treasure counts once in the scores)."}),
		duplicates:  prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_claims_duplicate_total", Help: "Claims of a treasure already claimed at another log position (not counted)."}),
		events:      prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_score_events_total", Help: "ScoreChanged events published."}),
		invalid:     prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_invalid_events_total", Help: "Input events or messages skipped because they can never be applied (dead-lettered messages included)."}),
		seen:        prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_players_seen_total", Help: "Players recorded as seen (once per process)."}),
		snapshots:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_snapshots_total", Help: "Leaderboard snapshots published."}),
		rebuilds:    prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_redis_rebuilds_total", Help: "Rebuilds of the Redis board from PostgreSQL."}),
		batchClaims: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ranker_batch_claims", Help: "Claims per PostgreSQL statement.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		apply:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ranker_apply_seconds", Help: "Time to apply one handler call: PostgreSQL, Redis and the publish of its events.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		redisUp:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_ranker_redis_up", Help: "1 while Redis holds the board in step with PostgreSQL, 0 while the ranker runs on PostgreSQL alone."}),
	}
	m.inputs = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_input_messages_total", Help: "OUT messages handled and acknowledged (the processing rate, in log messages)."})
	m.batchMsgs = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ranker_batch_messages", Help: "OUT messages per handler call (one batch).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ranker_commit_seconds", Help: "One PostgreSQL statement storing a batch's claims (its commit included).", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)})
	m.recreated = prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ranker_consumer_recreated_total", Help: "Times the ranker's durable consumer, answering 'JetStream system temporarily unavailable' at every start for 30 s, was deleted and created again after the last input whose events are published."})
	if r != nil {
		r.MustRegister(m.claims, m.duplicates, m.events, m.invalid, m.seen, m.snapshots, m.rebuilds, m.batchClaims, m.apply, m.redisUp,
			m.inputs, m.batchMsgs, m.commit, m.recreated)
	}
	return m
}

// New checks o and returns a Ranker; it does no I/O beyond creating the
// publisher on o.NC.
func New(o Options) (*Ranker, error) {
	if o.NC == nil || o.JS == nil || o.Pool == nil || o.Redis == nil {
		return nil, errors.New("ranker: NATS connection, JetStream, PostgreSQL pool and Redis client are required")
	}
	if err := o.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("ranker: %w", err)
	}
	if o.TopN <= 0 {
		o.TopN = DefaultTopN
	}
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = DefaultSnapshotEvery
	}
	if o.RedisCheck <= 0 {
		o.RedisCheck = DefaultRedisCheck
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.MaxClaims <= 0 {
		o.MaxClaims = DefaultMaxClaims
	}
	if o.SeenCap <= 0 {
		o.SeenCap = DefaultSeenCap
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Every publish carries a Nats-Msg-Id: one whose ack is lost as
	// P_OUT's leader leaves is sent again rather than failed.
	pub, err := natsjs.NewPublisher(o.NC, natsjs.ResendOptions(o.Topology.Out.Duplicates))
	if err != nil {
		return nil, fmt.Errorf("ranker: %w", err)
	}
	r := &Ranker{
		o:           o,
		pg:          pgstore.New(o.Pool),
		rs:          redisstore.New(o.Redis, o.RedisPrefix),
		pub:         pub,
		log:         o.Logger,
		m:           newMetrics(o.Registerer),
		rankSubject: o.Topology.RankSubject(),
		now:         map[string]int64{},
		seen:        map[string]struct{}{},
		out:         event.Builder{MaxBytes: outMaxBytes, MaxEvents: outMaxEvents},
		readyEr:     errors.New("starting"),
		clock:       time.Now,
		stuck:       natsjs.StuckWatch{After: consumerStuckAfter},
		newConsumer: natsjs.NewConsumer,
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(natsjs.NewBacklogCollector(o.JS, natsjs.BacklogOptions{Stream: o.Topology.OutStream(),
			Durables: []string{r.Durable()}, Namespace: "treasure_ranker"}))
		o.Registerer.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "treasure_ranker_publish_resends_total",
			Help: "Score changes and leaderboard snapshots sent again under their Nats-Msg-Id after an attempt's ack did not come (a stream leader leaving) or no stream listened."},
			func() float64 { return float64(pub.Resends()) }))
	}
	return r, nil
}

// Durable returns the name of the ranker's durable consumer on P_OUT.
func (r *Ranker) Durable() string { return r.o.Topology.Prefix + "-ranker" }

// Ready returns nil once the ranker consumes: schema migrated, consumer in
// place, its state recovered. A Redis that is down does not make it
// unready (PostgreSQL answers); the metric treasure_ranker_redis_up shows it.
func (r *Ranker) Ready() error {
	if r.ready.Load() {
		return nil
	}
	r.readyMu.Lock()
	defer r.readyMu.Unlock()
	return fmt.Errorf("ranker: %w", r.readyEr)
}

func (r *Ranker) setStarting(err error) {
	r.readyMu.Lock()
	r.readyEr = err
	r.readyMu.Unlock()
}

// Run migrates the schema, creates (or resumes) the durable consumer,
// recovers what a predecessor left half done, rebuilds Redis and then
// consumes until ctx is cancelled, when it returns nil. Start-up steps that
// fail (PostgreSQL or NATS not there yet) are retried with backoff until
// ctx ends. A batch being applied at cancellation is not acked; it comes
// again to the next Run, which applies it once.
func (r *Ranker) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("ranker: Run called twice")
	}
	defer r.pub.Close()
	var cons *natsjs.Consumer
	var retry backoff.Backoff
	for {
		var err error
		if cons, err = r.start(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		r.setStarting(err)
		d := retry.Next()
		r.log.Error("ranker start failed; retrying", "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
	r.ready.Store(true)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cons.Run(gctx, r.handle) })
	g.Go(func() error { r.maintain(gctx); return nil })
	return g.Wait()
}

// consumerStuckAfter is how long the ranker's start waits for its
// durable consumer to stop answering "JetStream system temporarily
// unavailable" (an election takes seconds) before it deletes it and
// creates it again (recreateFrom): nats-server 2.9.10 can leave a
// consumer created shortly before two of three nodes crashed without a
// leader for good.
const consumerStuckAfter = 30 * time.Second

// consumerOptions are the options of the ranker's durable consumer.
func (r *Ranker) consumerOptions() natsjs.ConsumerOptions {
	t := r.o.Topology
	return natsjs.ConsumerOptions{
		Stream:     t.OutStream(),
		Durable:    r.Durable(),
		Subjects:   []string{t.Prefix + ".out.*"},
		Batch:      r.o.Batch,
		AckWait:    r.o.AckWait,
		MaxWait:    r.o.MaxWait,
		MaxDeliver: math.MaxInt32, // every failure is transient: poison is dead-lettered by the handler
		DeadLetter: t.DLQSubject(),
		Logger:     r.log,
	}
}

// start runs the start-up steps once.
//
// A consumer that has answered "temporarily unavailable" to every start
// for consumerStuckAfter (r.stuck) is deleted and created again at
// recreateFrom. That is reached only here: once Run consumes, a consumer
// losing its leader makes natsjs.Consumer.Run retry its fetches for as
// long as it lasts (the ranker stays ready with a growing backlog), and
// only a restart of the process comes back here.
func (r *Ranker) start(ctx context.Context) (*natsjs.Consumer, error) {
	t0 := time.Now()
	if err := pgstore.Migrate(ctx, r.o.Pool); err != nil {
		return nil, err
	}
	t := r.o.Topology
	copts := r.consumerOptions()
	var floor uint64
	cons, err := r.newConsumer(ctx, r.o.JS, copts)
	if err == nil {
		var info *jetstream.ConsumerInfo
		if info, err = cons.Info(ctx); err == nil {
			floor = natsjs.AckFloor(info)
		}
	}
	stuck, unavailable := r.stuck.Observe(err, time.Now())
	if err != nil && !stuck {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if stuck {
		from, perr := r.recreateFrom(ctx)
		if perr != nil {
			return nil, fmt.Errorf("consumer unreadable (%w); reading where to create it again: %w", err, perr)
		}
		r.log.Error("ranker consumer unreadable: deleting it and creating it again after the last input whose events are published",
			"unreadable_for", unavailable.Round(time.Second), "from", from, "err", err)
		if cons, err = r.recreate(ctx, from); err != nil {
			return nil, err
		}
		floor = from - 1
	}
	if err := r.recover(ctx, floor); err != nil {
		return nil, err
	}
	r.rebuild(ctx, true)
	r.log.Info("ranker ready", "stream", t.OutStream(), "consumer", r.Durable(), "ack_floor", floor,
		"published_through", r.published, "claims_ahead", len(r.ahead), "redis", r.redisOK, "took", time.Since(t0).Round(time.Millisecond))
	return cons, nil
}

// recreateFrom returns the OUT sequence from which a consumer created
// again (its ack floor unknown) must deliver: the one after the last
// input whose events the last message on P.out.rank says are stored
// (resumePoint; 1 when there is none). It is safe: the ranker publishes an
// input's events only after its claims are in PostgreSQL (and its players
// seen), and moves that mark only over inputs it handled, so every input
// up to it has its whole effect stored. From any later sequence, inputs a
// predecessor stored but did not publish (killed between the two) would
// never have their events published; PostgreSQL's last claim position is
// such a later one. What comes again beyond the mark — up to the old
// consumer's ack floor and past it — is applied once: a claim stored at
// its position already is a redelivery (recover loads it into ahead, and
// its events are published once, as after a kill), a player is seen again
// harmlessly. A poison message in between is dead-lettered again, under
// the same Nats-Msg-Id (JetStream drops it within the duplicate window).
// The cost is a replay from the mark: at most the inputs since the last
// publish, unless P.out.rank holds nothing the ranker wrote, when it is
// the whole of OUT.
func (r *Ranker) recreateFrom(ctx context.Context) (uint64, error) {
	r.published, r.lastVersion, r.pubUnsure = 0, 0, false
	if err := r.readPublished(ctx); err != nil {
		return 0, err
	}
	return r.published + 1, nil
}

// recreate deletes the ranker's consumer and creates it again delivering
// from OUT sequence from (natsjs.NewConsumerFrom), and resets r.stuck.
func (r *Ranker) recreate(ctx context.Context, from uint64) (*natsjs.Consumer, error) {
	cons, err := natsjs.NewConsumerFrom(ctx, r.o.JS, r.consumerOptions(), from)
	if err != nil {
		return nil, fmt.Errorf("consumer created again from %d: %w", from, err)
	}
	r.stuck.Reset()
	r.m.recreated.Inc()
	return cons, nil
}

// handle applies one group of input messages; see the package doc.
func (r *Ranker) handle(ctx context.Context, msgs []natsjs.Msg) error {
	t0 := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pubUnsure {
		if err := r.readPublished(ctx); err != nil {
			return err
		}
	}
	if r.aheadStale {
		// A call failed between storing claims and recording them: read
		// back what PostgreSQL holds beyond the accepted inputs.
		if err := r.reloadAhead(ctx, msgs[0].Seq); err != nil {
			return err
		}
	}
	b := batch{lastSeq: msgs[len(msgs)-1].Seq}
	for _, m := range msgs {
		if err := r.decode(ctx, m, &b); err != nil {
			return err
		}
	}
	if len(b.players) > 0 {
		if err := r.pg.SeePlayers(ctx, b.players); err != nil {
			return err
		}
	}
	var changes []redisstore.ScoreChange
	effective := make([]int, 0, len(b.claims)) // indices into b.claims
	if len(b.claims) > 0 {
		var err error
		if changes, err = r.applyClaims(ctx, &b, &effective); err != nil {
			return err
		}
	}
	if r.redisOK {
		if err := r.rs.Seen(ctx, b.players); err != nil {
			r.redisDown(ctx, err)
		} else if err := r.rs.Apply(ctx, changes); err != nil {
			r.redisDown(ctx, err)
		}
	}
	if err := r.callHook("applied"); err != nil {
		return err
	}
	events, err := r.scoreEvents(ctx, &b, effective)
	if err != nil {
		return err
	}
	if err := r.publishEvents(ctx, events, b.lastSeq); err != nil {
		return err
	}
	if err := r.callHook("published"); err != nil {
		return err
	}
	// Accepted: the consumer acks on return.
	r.published = max(r.published, b.lastSeq)
	r.trimAhead(b.lastSeq)
	r.noteSeen(b.players)
	if len(effective) > 0 {
		r.dirty = true
	}
	r.m.events.Add(float64(len(events)))
	r.m.apply.Observe(time.Since(t0).Seconds())
	r.m.inputs.Add(float64(len(msgs)))
	r.m.batchMsgs.Observe(float64(len(msgs)))
	return nil
}

func (r *Ranker) callHook(stage string) error {
	if r.hook == nil {
		return nil
	}
	return r.hook(stage)
}
