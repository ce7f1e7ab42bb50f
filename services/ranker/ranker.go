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
package ranker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
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
	scoresKey   string // redisstore's keys, for the batched rank counts
	builtKey    string

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
	lastTop     []pgstore.Entry
	lastPlayers int64
	haveTop     bool
	dirty       bool
	lastSnap    time.Time
	seen        map[string]struct{}

	rd  event.Reader
	ev  eventpb.Event
	out event.Builder

	// hook, when set (tests), is called at named points of a batch; an
	// error fails the batch there.
	hook func(stage string) error
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
	if r != nil {
		r.MustRegister(m.claims, m.duplicates, m.events, m.invalid, m.seen, m.snapshots, m.rebuilds, m.batchClaims, m.apply, m.redisUp,
			m.inputs, m.batchMsgs, m.commit)
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
	pub, err := natsjs.NewPublisher(o.NC, natsjs.PublisherOptions{})
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
		scoresKey:   o.RedisPrefix + "{lb}:scores",
		builtKey:    o.RedisPrefix + "{lb}:built",
		now:         map[string]int64{},
		seen:        map[string]struct{}{},
		out:         event.Builder{MaxBytes: outMaxBytes, MaxEvents: outMaxEvents},
		readyEr:     errors.New("starting"),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(natsjs.NewBacklogCollector(o.JS, natsjs.BacklogOptions{Stream: o.Topology.OutStream(),
			Durables: []string{r.Durable()}, Namespace: "treasure_ranker"}))
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
	backoff := 100 * time.Millisecond
	for {
		var err error
		if cons, err = r.start(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		r.setStarting(err)
		r.log.Error("ranker start failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	r.ready.Store(true)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cons.Run(gctx, r.handle) })
	g.Go(func() error { r.maintain(gctx); return nil })
	return g.Wait()
}

// start runs the start-up steps once.
func (r *Ranker) start(ctx context.Context) (*natsjs.Consumer, error) {
	t0 := time.Now()
	if err := pgstore.Migrate(ctx, r.o.Pool); err != nil {
		return nil, err
	}
	t := r.o.Topology
	cons, err := natsjs.NewConsumer(ctx, r.o.JS, natsjs.ConsumerOptions{
		Stream:     t.OutStream(),
		Durable:    r.Durable(),
		Subjects:   []string{t.Prefix + ".out.*"},
		Batch:      r.o.Batch,
		AckWait:    r.o.AckWait,
		MaxWait:    r.o.MaxWait,
		MaxDeliver: math.MaxInt32, // every failure is transient: poison is dead-lettered by the handler
		DeadLetter: t.DLQSubject(),
		Logger:     r.log,
	})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	floor := info.AckFloor.Stream
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.recover(ctx, floor); err != nil {
		return nil, err
	}
	r.rebuild(ctx, true)
	r.log.Info("ranker ready", "stream", t.OutStream(), "consumer", r.Durable(), "ack_floor", floor,
		"published_through", r.published, "claims_ahead", len(r.ahead), "redis", r.redisOK, "took", time.Since(t0).Round(time.Millisecond))
	return cons, nil
}

// recover loads what lies beyond the consumer's ack floor: the claims a
// predecessor stored without getting its batch acked, and how far its
// published events reach (the last message on P.out.rank).
func (r *Ranker) recover(ctx context.Context, floor uint64) error {
	if err := r.reloadAhead(ctx, floor+1); err != nil {
		return err
	}

	r.published, r.lastVersion, r.haveTop, r.dirty = 0, 0, false, true
	return r.readPublished(ctx)
}

// readPublished reads the last message on P.out.rank and raises
// r.published and r.lastVersion to what its id says is stored (ids.go);
// a snapshot there also becomes the last top published.
func (r *Ranker) readPublished(ctx context.Context) error {
	st, err := r.o.JS.Stream(ctx, r.o.Topology.OutStream())
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.o.Topology.OutStream(), err)
	}
	last, err := st.GetLastMsgForSubject(ctx, r.rankSubject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		r.pubUnsure = false
		return nil
	case err != nil:
		return fmt.Errorf("last message on %s: %w", r.rankSubject, err)
	}
	r.pubUnsure = false
	published, lastVersion, board, ok := resumePoint(last.Header.Get(jetstream.MsgIDHeader))
	if !ok {
		return nil
	}
	r.published, r.lastVersion = max(r.published, published), max(r.lastVersion, lastVersion)
	if board {
		var b eventpb.Batch
		if event.Decode(last.Data, &b) == nil && len(b.Events) == 1 && b.Events[0].GetLeaderboard() != nil {
			s := b.Events[0].GetLeaderboard()
			top := make([]pgstore.Entry, 0, len(s.Top))
			for _, e := range s.Top {
				top = append(top, pgstore.Entry{Player: e.Player, Score: int64(e.Score), Rank: int64(e.Rank)})
			}
			r.lastTop, r.lastPlayers, r.haveTop = top, int64(s.Players), true
		}
	}
	return nil
}

// batchClaim is one valid claim of the current batch.
type batchClaim struct {
	pgstore.Claim
	msgSeq uint64
	cause  *eventpb.LogPosition
}

// batch is what one handler call decoded.
type batch struct {
	claims  []batchClaim
	players []string // players seen for the first time in this process
	fresh   map[string]struct{}
	lastSeq uint64
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

// decode adds the claims and new players of message m to b. A message that
// is not an event batch is dead-lettered and skipped; an event that can
// never be applied is skipped.
func (r *Ranker) decode(ctx context.Context, m natsjs.Msg, b *batch) error {
	if m.Subject == r.rankSubject {
		return nil // our own output
	}
	if err := r.rd.Reset(m.Data); err != nil {
		r.m.invalid.Inc()
		if err := r.deadLetter(ctx, m, err); err != nil {
			return err
		}
		r.log.Warn("dead-lettered an input that is not an event batch", "seq", m.Seq, "subject", m.Subject, "reason", err)
		return nil
	}
	for r.rd.Next() {
		switch r.rd.Kind() {
		case event.KindClaim:
			if err := r.rd.Event(&r.ev); err != nil {
				r.skip(m, err)
				continue
			}
			c := r.ev.GetClaim()
			if err := checkClaim(c); err != nil {
				r.skip(m, err)
				continue
			}
			var cause *eventpb.LogPosition
			if c.Move != nil {
				cause = &eventpb.LogPosition{StreamSeq: c.Move.StreamSeq, Index: c.Move.Index}
			}
			b.claims = append(b.claims, batchClaim{
				Claim: pgstore.Claim{
					Treasure: c.Treasure, Player: c.Player, Points: int64(c.Points),
					Node: c.Node, Seq: c.Seq, Pos: position(m.Seq, r.rd.Index()),
				},
				msgSeq: m.Seq,
				cause:  cause,
			})
		case event.KindProximity:
			p, ok := proximityPlayer(r.rd.Raw())
			if !ok || !validID(p) {
				r.skip(m, errors.New("proximity result without a valid player"))
				continue
			}
			if _, known := r.seen[string(p)]; known {
				continue
			}
			if _, known := b.fresh[string(p)]; known {
				continue
			}
			if b.fresh == nil {
				b.fresh = map[string]struct{}{}
			}
			s := string(p)
			b.fresh[s] = struct{}{}
			b.players = append(b.players, s)
		}
	}
	return nil
}

func (r *Ranker) skip(m natsjs.Msg, err error) {
	r.m.invalid.Inc()
	r.log.Warn("skipped an input event that can never be applied", "seq", m.Seq, "index", r.rd.Index(), "err", err)
}

func validID(s []byte) bool {
	return len(s) > 0 && len(s) <= pgstore.MaxID && utf8.Valid(s) && !strings.ContainsRune(string(s), 0)
}

func checkClaim(c *eventpb.Claim) error {
	switch {
	case !validID([]byte(c.Treasure)):
		return fmt.Errorf("claim: bad treasure id %q", c.Treasure)
	case !validID([]byte(c.Player)):
		return fmt.Errorf("claim of %s: bad player id %q", c.Treasure, c.Player)
	case c.Points == 0 || c.Points > maxPoints:
		return fmt.Errorf("claim of %s: points %d outside 1..%d", c.Treasure, c.Points, maxPoints)
	case c.Seq > math.MaxInt64:
		return fmt.Errorf("claim of %s: seq %d beyond int64", c.Treasure, c.Seq)
	}
	return nil
}

// proximityPlayer returns the player of an encoded Event holding a
// ProximityResult without decoding the rest (the ranker reads nothing else
// of the busiest event), with proto's rules: the last player field of the
// last proximity member wins. It aliases raw.
func proximityPlayer(raw []byte) ([]byte, bool) {
	const fieldProximity, fieldPlayer = 4, 1
	var player []byte
	found := false
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == fieldProximity && typ == protowire.BytesType {
			msg, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			for f := msg; len(f) > 0; {
				fnum, ftyp, fn := protowire.ConsumeTag(f)
				if fn < 0 {
					return nil, false
				}
				f = f[fn:]
				vn := protowire.ConsumeFieldValue(fnum, ftyp, f)
				if vn < 0 {
					return nil, false
				}
				if fnum == fieldPlayer && ftyp == protowire.BytesType {
					player, _ = protowire.ConsumeBytes(f)
					found = true
				}
				f = f[vn:]
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return player, found
}

// applyClaims stores b's claims, finds which of them count (the claim
// PostgreSQL holds for its treasure), merges those into r.ahead with their
// players' current scores, and returns those players' standings for Redis.
func (r *Ranker) applyClaims(ctx context.Context, b *batch, effective *[]int) ([]redisstore.ScoreChange, error) {
	claims := make([]pgstore.Claim, len(b.claims))
	for i := range b.claims {
		claims[i] = b.claims[i].Claim
	}
	// Until the claims stored here are recorded in r.ahead, a failure
	// leaves r.ahead short of what PostgreSQL holds.
	r.aheadStale = true
	for lo := 0; lo < len(claims); lo += r.o.MaxClaims {
		chunk := claims[lo:min(lo+r.o.MaxClaims, len(claims))]
		t0 := time.Now()
		if _, err := r.pg.ApplyClaims(ctx, chunk); err != nil {
			return nil, err
		}
		r.m.commit.Observe(time.Since(t0).Seconds())
		r.m.claims.Add(float64(len(chunk)))
		r.m.batchClaims.Observe(float64(len(chunk)))
	}
	if err := r.callHook("stored"); err != nil {
		return nil, err
	}
	treasures := make([]string, len(claims))
	for i, c := range claims {
		treasures[i] = c.Treasure
	}
	rows, err := lookupClaims(ctx, r.o.Pool, treasures)
	if err != nil {
		return nil, err
	}
	held := make(map[string]*storedClaim, len(rows))
	for i := range rows {
		held[rows[i].treasure] = &rows[i]
	}
	var (
		changes []redisstore.ScoreChange
		added   []stored
		player  = map[string]bool{}
	)
	for i, c := range b.claims {
		h := held[c.Treasure]
		if h == nil || h.pos != c.Pos || h.player != c.Player {
			r.m.duplicates.Inc()
			continue
		}
		*effective = append(*effective, i)
		added = append(added, h.stored)
		r.now[h.player] = h.score
		if !player[h.player] {
			player[h.player] = true
			changes = append(changes, redisstore.ScoreChange{Player: h.player, Score: h.score, ReachedPos: h.reachedPos})
		}
	}
	sortStored(added) // already in log order; cheap insurance
	r.ahead = mergeStored(r.ahead, added)
	r.aheadStale = false
	return changes, nil
}

// reloadAhead replaces r.ahead and r.now with the claims PostgreSQL holds
// from input seq on (the first input not accepted yet). It scans the
// claims table, so it runs at start and after a failed call only.
func (r *Ranker) reloadAhead(ctx context.Context, seq uint64) error {
	rows, err := claimsFrom(ctx, r.o.Pool, position(seq, 0))
	if err != nil {
		return err
	}
	r.ahead = r.ahead[:0]
	clear(r.now)
	var changes []redisstore.ScoreChange
	for _, c := range rows {
		r.ahead = append(r.ahead, c.stored)
		if _, dup := r.now[c.player]; !dup {
			changes = append(changes, redisstore.ScoreChange{Player: c.player, Score: c.score, ReachedPos: c.reachedPos})
		}
		r.now[c.player] = c.score
	}
	sortStored(r.ahead)
	r.aheadStale = false
	// Redis may have missed these players' scores (the failed call stored
	// them in PostgreSQL only); the ranks counted in Redis need them.
	if r.redisOK {
		if err := r.rs.Apply(ctx, changes); err != nil {
			r.redisDown(ctx, err)
		}
	}
	return nil
}

// scoreEvents returns the ScoreChanged events of the effective claims of b
// whose input has no published events yet, in log order, each with the
// input sequence it belongs to.
func (r *Ranker) scoreEvents(ctx context.Context, b *batch, effective []int) ([]outEvent, error) {
	var want, from []int // indices into r.ahead and b.claims
	for _, i := range effective {
		c := b.claims[i]
		if c.msgSeq <= r.published {
			continue
		}
		j, found := findStored(r.ahead, c.Pos)
		if !found {
			return nil, fmt.Errorf("claim of %s at %d missing from the claims ahead", c.Treasure, c.Pos)
		}
		want = append(want, j)
		from = append(from, i)
	}
	if len(want) == 0 {
		return nil, nil
	}
	st, err := standings(r.ahead, r.now, want, r.countAbove(ctx))
	if err != nil {
		return nil, err
	}
	events := make([]outEvent, len(want))
	for k, i := range from {
		c := b.claims[i]
		events[k] = outEvent{msgSeq: c.msgSeq, ev: &eventpb.Event{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{
			Player: c.Player,
			Score:  uint64(st[k].score),
			Rank:   uint64(st[k].rank),
			Cause:  &eventpb.ClaimRef{Treasure: c.Treasure, Move: c.cause},
		}}}}
	}
	return events, nil
}

func findStored(s []stored, pos uint64) (int, bool) {
	lo, hi := 0, len(s)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if s[mid].pos < pos {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(s) && s[lo].pos == pos
}

// countAbove returns the function standings asks the board with: Redis
// when it is in step with PostgreSQL, else PostgreSQL.
func (r *Ranker) countAbove(ctx context.Context) func([]int64) ([]int64, error) {
	return func(scores []int64) ([]int64, error) {
		if r.redisOK {
			counts, err := r.redisCounts(ctx, scores)
			if err == nil {
				return counts, nil
			}
			r.redisDown(ctx, err)
		}
		ranks, err := r.pg.Ranks(ctx, scores)
		if err != nil {
			return nil, err
		}
		for i := range ranks {
			ranks[i]--
		}
		return ranks, nil
	}
}

// redisCounts answers, for each score, the number of players with a
// strictly higher score with one pipelined ZCOUNT per distinct score on
// redisstore's scores set (its documented key layout; redisstore has no
// batched rank call yet), and ErrNotBuilt when the board is not built.
func (r *Ranker) redisCounts(ctx context.Context, scores []int64) ([]int64, error) {
	pipe := r.o.Redis.Pipeline()
	built := pipe.Exists(ctx, r.builtKey)
	cmds := make(map[int64]*redis.IntCmd, len(scores))
	for _, s := range scores {
		if cmds[s] == nil {
			cmds[s] = pipe.ZCount(ctx, r.scoresKey, "("+strconv.FormatInt(s, 10), "+inf")
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("redis ranks: %w", err)
	}
	if built.Val() == 0 {
		return nil, redisstore.ErrNotBuilt
	}
	out := make([]int64, len(scores))
	for i, s := range scores {
		out[i] = cmds[s].Val()
	}
	return out, nil
}

// outEvent is an output event and the input it belongs to.
type outEvent struct {
	msgSeq uint64
	ev     *eventpb.Event
}

// publishEvents publishes events to P.out.rank in as few messages as fit,
// cut only between inputs (or, for an input whose events alone do not fit,
// into parts starting with its first event). Each message is published once
// the previous one is stored, so what JetStream holds is always a prefix
// whose extent the last message's id names (see ids.go), and r.published
// follows it. After a failure, whose message may have been stored without
// its ack arriving, r.pubUnsure has the next call read the subject's last
// message again. lastSeq is the last input of the call.
func (r *Ranker) publishEvents(ctx context.Context, events []outEvent, lastSeq uint64) error {
	if len(events) == 0 {
		return nil
	}
	r.out.Reset()
	flush := func(id string, covered uint64) error {
		if r.out.Len() == 0 {
			return nil
		}
		f, err := r.pub.Publish(ctx, r.rankSubject, append([]byte(nil), r.out.Bytes()...), id)
		if err == nil {
			_, err = f.Wait(ctx)
		}
		if err == nil {
			err = r.callHook("ack") // tests: an ack lost after the store
		}
		if err != nil {
			r.pubUnsure = true
			return err
		}
		r.published = max(r.published, covered)
		r.out.Reset()
		return nil
	}
	for i := 0; i < len(events); {
		seq := events[i].msgSeq
		j := i
		size := 0
		for j < len(events) && events[j].msgSeq == seq {
			size += eventSize(events[j].ev)
			j++
		}
		if r.out.Size()+size > r.out.MaxBytes || r.out.Len()+j-i > r.out.MaxEvents {
			if err := flush(rankID(seq-1), seq-1); err != nil {
				return err
			}
		}
		part := 0
		for _, e := range events[i:j] {
			err := r.out.Add(e.ev)
			if errors.Is(err, event.ErrFull) {
				if err := flush(rankPartID(seq, part), seq-1); err != nil {
					return err
				}
				part++
				err = r.out.Add(e.ev)
			}
			if err != nil {
				return fmt.Errorf("encode score event: %w", err)
			}
		}
		i = j
	}
	return flush(rankID(lastSeq), lastSeq)
}

// eventSize is the bytes ev adds to a batch.
func eventSize(ev *eventpb.Event) int {
	n := proto.Size(ev)
	return protowire.SizeTag(2) + protowire.SizeBytes(n)
}

// trimAhead forgets the claims of inputs up to seq, now accepted.
func (r *Ranker) trimAhead(seq uint64) {
	cut := position(seq+1, 0)
	i := 0
	for i < len(r.ahead) && r.ahead[i].pos < cut {
		i++
	}
	if i == 0 {
		return
	}
	r.ahead = append(r.ahead[:0], r.ahead[i:]...)
	keep := make(map[string]bool, len(r.ahead))
	for _, s := range r.ahead {
		keep[s.player] = true
	}
	for p := range r.now {
		if !keep[p] {
			delete(r.now, p)
		}
	}
}

// noteSeen remembers players recorded as seen, clearing the set when it
// reaches its cap.
func (r *Ranker) noteSeen(players []string) {
	if len(r.seen)+len(players) > r.o.SeenCap {
		clear(r.seen)
	}
	for _, p := range players {
		r.seen[p] = struct{}{}
	}
	r.m.seen.Add(float64(len(players)))
}

// deadLetter publishes m to the dead-letter subject with natsjs's headers
// and waits for it to be stored.
func (r *Ranker) deadLetter(ctx context.Context, m natsjs.Msg, reason error) error {
	t := r.o.Topology
	out := nats.NewMsg(t.DLQSubject())
	out.Data = m.Data
	out.Header.Set(natsjs.HeaderDLQReason, reason.Error())
	out.Header.Set(natsjs.HeaderDLQStream, t.OutStream())
	out.Header.Set(natsjs.HeaderDLQConsumer, r.Durable())
	out.Header.Set(natsjs.HeaderDLQSubject, m.Subject)
	out.Header.Set(natsjs.HeaderDLQSeq, strconv.FormatUint(m.Seq, 10))
	out.Header.Set(natsjs.HeaderDLQDelivered, strconv.FormatUint(m.Delivered, 10))
	out.Header.Set(natsjs.HeaderDLQTime, m.Time.UTC().Format(time.RFC3339Nano))
	out.Header.Set(jetstream.MsgIDHeader, "dlq."+t.OutStream()+"."+r.Durable()+"."+strconv.FormatUint(m.Seq, 10))
	if _, err := r.o.JS.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("dead letter seq %d: %w", m.Seq, err)
	}
	return nil
}
