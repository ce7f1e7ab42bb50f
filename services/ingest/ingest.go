// Package ingest is the player-facing entry of the pipeline
// (docs/pipeline.md, "Ingest: player state" and "Routing"): it takes moves
// over WebSocket (GET /v1/moves/ws) and HTTP (POST /v1/moves), validates
// each against the whole graph and the player's state, appends the accepted
// ones to JetStream in per-partition batches, and acknowledges a move once
// JetStream has stored its batch (the player's new state is written to
// Redis first when Redis answers; see "Player state"). It also takes the
// admin's treasure drops (POST /v1/admin/drops) and appends them to every
// partition's subject.
//
// # A move's way through
//
// For each move of a frame or body, in order:
//
//  1. the per-player rate limit (ratelimit.Keyed): rate_limited with
//     retry_after_ms, nothing else happens;
//  2. game.ValidateMove against the player's optimistic state — the state
//     as if every move accepted so far had been stored — in SPEC's code
//     order. A move whose seq is the last accepted one and whose path is
//     the same (a retry after a lost ack) is acknowledged again without a
//     second publish, once the original is durable; any other old seq is
//     stale_seq;
//  3. the MoveAccepted event joins the batch of the partition owning the
//     path's last node (graph.Partition). A batch is published when it
//     holds BatchEvents events or FlushInterval after it started, with
//     Nats-Msg-Id = instance + partition + batch number;
//  4. when JetStream acks the batch, the moves of each player are released
//     in the player's order: their new state is written to Redis (one HSET
//     per round of completions; when that fails or Redis is down, the
//     states are written back later, state.go), then each is acked.
//
// A rejected move does not use up its seq and changes no state. A move
// in the log is never answered with an error, and a move answered with an
// error is never in the log: a move is published only once every earlier
// move of its player is stored, or in the same batch (it is held back
// meanwhile, Ingest.send), so a refused batch — answered unavailable with
// retry_after_ms — fails its moves and every later move of their players,
// none of which is in the log, and a batch whose outcome is unknown gets
// no answer until it is known (batch.go). Nothing is acked that is not
// durable, and the log never holds a move without the one before it.
//
// # Player state
//
// The state of a player (seq and end node of the last acked move, and a
// 64-bit hash of its path) lives in memory while the player is connected or
// has moves in flight, shared by all their sockets and requests on this
// instance (one lock per player), then among the remembered states (up to
// RememberPlayers), and in the Redis hash <prefix>players (field = player
// id, value "seq node hash": decimal seq, the end node's wire id, 16 hex
// digits of FNV-1a over the path's wire ids). It is read from Redis when a
// player connects and on each HTTP request while the player has no move
// in flight, so a player finds their state after an ingest restart and on
// any other instance. While Redis is down a player in memory keeps
// playing; one unknown here is answered unavailable (state.go). An
// instance that dies with moves stored in JetStream but not yet in Redis
// leaves them to the others: every instance registers in Redis and
// answers a liveness subject, and the moves of a dead one are read back
// from the log before its players are served (orphans.go).
//
// # Replies
//
// Every move gets exactly one reply, and the replies of one socket go out
// in the order its moves came in, several per frame (newline-separated)
// when they are ready together. See the handlers' doc comments for the wire
// details, status codes and bounds.
//
// # Lock order
//
//	player.mu → partition.mu
//	player.mu → registry shard mu
//	player.mu → outbox.mu / collector.mu
//	player.mu → dirtyMu (the states to write back, state.go)
//	outbox.mu → sendConn.mu
//	recheckMu → registry shard mu, player.mu (recheckDead; taken with no player lock held)
//	partition.mu → openMu (a leaf: the open batches, orphans.go)
//	Ingest.connMu is never held with another lock.
//
// No goroutine runs per move or per message: per socket one reader (the
// handler's goroutine), which also writes the replies it gives at once;
// per Ingest one flusher and one completer, started by Run, the completer
// writing the acks of each round straight to the sockets. A socket's
// writes never wait for its client: what the kernel does not take at once
// goes to a drain goroutine that lives only while the client lags
// (sendConn), and the socket is not read meanwhile.
package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"treasure/internal/auth"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/httplimit"
	"treasure/internal/natsjs"
	"treasure/internal/ratelimit"
)

// Defaults of Options.
const (
	DefaultFlushInterval   = time.Millisecond
	DefaultBatchEvents     = 256
	DefaultMaxInFlight     = 256
	DefaultRetryAfter      = time.Second
	DefaultStoreTimeout    = 5 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultPingInterval    = 30 * time.Second
	DefaultMaxQueue        = 1024
	DefaultShutdownTimeout = 10 * time.Second

	// MaxFrame is the largest WebSocket frame a client may send; a larger
	// one closes the connection with close code 1009 (SPEC: "a frame over
	// 4 KiB does").
	MaxFrame = 4 << 10
	// MaxMovesBody caps the body of POST /v1/moves.
	MaxMovesBody = 64 << 10
	// MaxDropBody caps the body of POST /v1/admin/drops.
	MaxDropBody = 1 << 20
)

// Options configures an Ingest. Graph, Part, Topology, NC, Redis and a
// Verifier or JWTSecret are required; every other field has a default.
type Options struct {
	// Graph is the whole road graph; Part its partition assignment,
	// graph.Partition(Graph, Topology.Partitions).
	Graph *graph.Graph
	Part  []uint32
	// Topology names the subjects; its streams must exist (Topology.Ensure).
	Topology natsjs.Topology
	// NC carries the publishes. Ingest never closes it.
	NC *nats.Conn
	// JS, when set, lets Run check at start that the IN stream exists, and
	// lets ingest learn the outcome of a batch JetStream left unanswered
	// past the duplicate window (by searching the log); without it such
	// moves stay unanswered until shutdown. Set it in production.
	JS jetstream.JetStream
	// Redis holds the player states and the set of dropped treasure ids
	// under RedisPrefix ("<prefix>players", "<prefix>drops"). Ingest never
	// closes it.
	Redis       redis.UniversalClient
	RedisPrefix string
	// Verifier checks tokens; when nil, one is made from JWTSecret.
	Verifier  *auth.Verifier
	JWTSecret string
	// RateLimit is the per-player move limit; zero means
	// ratelimit.Default (20/s, bursts of 40).
	RateLimit ratelimit.Limit
	// Instance names this ingest in Nats-Msg-Ids and logs; a random suffix
	// is always added, so that a restarted instance never reuses an id
	// inside JetStream's duplicate window. Default "ingest".
	Instance string
	// FlushInterval is the longest a move waits in its partition's batch
	// (default 1 ms); BatchEvents publishes a batch at once when it holds
	// that many events (default 256).
	FlushInterval time.Duration
	BatchEvents   int
	// MaxInFlight bounds the batches awaiting their JetStream ack (default
	// 256); AckTimeout fails a publish whose ack has not come (default
	// natsjs's).
	MaxInFlight int
	AckTimeout  time.Duration
	// RetryAfter is the retry_after_ms of an unavailable that JetStream
	// did not size (a Redis failure, a shutdown); default 1 s.
	RetryAfter time.Duration
	// StoreTimeout bounds each Redis call (default 5 s).
	StoreTimeout time.Duration
	// WriteTimeout bounds how long a socket waits for its client to take
	// replies the kernel could not buffer (default 10 s): a client that
	// does not read is disconnected, and never delays other sockets. PingInterval is the WebSocket
	// ping period (default 30 s); a socket silent for about two of them
	// (no frame, no pong) is closed.
	WriteTimeout time.Duration
	PingInterval time.Duration
	// MaxQueue bounds the replies a socket may have outstanding (moves
	// read but not yet handed to the kernel); the socket stops reading
	// while it is full, and while its client lags behind the kernel's
	// buffer (default 1024).
	MaxQueue int
	// ShutdownTimeout bounds Run's shutdown (default 10 s).
	ShutdownTimeout time.Duration
	// RememberPlayers bounds how many player states this instance keeps
	// in memory after the player's last socket or request ended (default
	// DefaultRememberPlayers, about 100 bytes each): while Redis is down a
	// remembered player keeps playing here; one not remembered gets
	// unavailable until Redis answers. RedisCheckInterval is how often
	// Redis is checked and failed writes are written back (default 1 s).
	RememberPlayers    int
	RedisCheckInterval time.Duration
	// MaxConnsPerAddr caps the requests in progress, open move sockets
	// included, per client address (httplimit): one more is answered 429
	// rate_limited. 0 means httplimit.DefaultMaxPerAddr, negative no cap.
	MaxConnsPerAddr int
	// MaxSocketsPerPlayer caps one player's move sockets on this
	// instance: a newer one closes the oldest (1008 "replaced").
	// Default DefaultMaxSocketsPerPlayer.
	MaxSocketsPerPlayer int
	// Log receives start, shutdown and failure lines; nil discards.
	Log *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Ingest is the ingest service. Build it with New, serve Handler, and run
// Run once: moves are only processed while Run runs (Handler answers 503
// before and after). Its methods are safe for concurrent use.
type Ingest struct {
	o        Options
	verifier *auth.Verifier
	limiter  *ratelimit.Keyed
	pub      *natsjs.Publisher
	instance string
	stateKey string
	dropsKey string

	// instancesKey is the Redis hash where running instances register,
	// and open the batches published whose moves' states are not yet
	// written: its oldest is the registration's watermark (orphans.go).
	instancesKey string
	openMu       sync.Mutex
	open         map[*batch]struct{}
	// recheckMu serializes recheckDead; lastRecheck is when its last
	// look ended.
	recheckMu   sync.Mutex
	lastRecheck time.Time

	parts    []*partition
	players  registry
	m        metrics
	upgrader websocket.Upgrader
	// stateKeyArg is stateKey boxed once, for the completer's HSETs.
	stateKeyArg any
	// Reused by serveMoves: submit's scratch, the answer's body.
	scratches, bodies sync.Pool
	// heldMoves holds *heldMove for the moves held back (Ingest.send);
	// cev is the completer's event scratch for releasing them.
	heldMoves sync.Pool
	cev       eventpb.MoveAccepted

	started atomic.Bool
	running atomic.Bool
	// redisDown is set by a failed Redis call and cleared by checkRedis
	// once Redis answers and the dirty states are written back; redisErr
	// holds the last failure (nil: healthy). dirty holds the states whose
	// write failed or was skipped, by player id (state.go).
	redisDown     atomic.Bool
	redisErr      atomic.Pointer[error]
	dirtyMu       sync.Mutex
	dirty         map[string]state
	knownPerShard int

	// Completed publishes, handed from the publisher's ack goroutine to
	// the completer.
	cmu   sync.Mutex
	cq    []completion
	cwake chan struct{}
	// Republishes of batches with no answer (partition.retryLoop): one
	// goroutine per partition with unresolved batches, counted by
	// retries; retryCtx ends them at shutdown.
	retries     sync.WaitGroup
	retryMu     sync.Mutex // guards retryClosed and retries.Add
	retryClosed bool
	dupWindow   time.Duration // the IN stream's duplicate window
	retryCtx    context.Context
	cancelRetry context.CancelFunc
	// Sockets with replies ready after a completer round.
	flushq sinkList

	// Access limits (limits.go).
	perAddr *httplimit.PerAddr
	socks   playerSockets
	lm      limitMetrics

	// Sockets and requests being served.
	connMu  sync.Mutex
	closing bool
	conns   map[*wsConn]struct{}
	active  sync.WaitGroup

	dropMu sync.Mutex
	dropNo uint64

	logMu      sync.Mutex
	lastFailAt time.Time
	failsQuiet int
}

// New checks o and builds an Ingest. It does no I/O.
func New(o Options) (*Ingest, error) {
	if o.Graph == nil || o.NC == nil || o.Redis == nil {
		return nil, errors.New("ingest: graph, NATS connection and Redis client are required")
	}
	if err := o.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if len(o.Part) != o.Graph.NumNodes() {
		return nil, fmt.Errorf("ingest: partition assignment for %d nodes, graph has %d", len(o.Part), o.Graph.NumNodes())
	}
	for v, k := range o.Part {
		if int(k) >= o.Topology.Partitions {
			return nil, fmt.Errorf("ingest: node %d in partition %d, topology has %d", graph.ID(uint32(v)), k, o.Topology.Partitions)
		}
	}
	v := o.Verifier
	if v == nil {
		var err error
		if v, err = auth.NewVerifier(o.JWTSecret); err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
	}
	if o.RateLimit == (ratelimit.Limit{}) {
		o.RateLimit = ratelimit.Default
	}
	lim, err := ratelimit.NewKeyed(o.RateLimit)
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if o.Instance == "" {
		o.Instance = "ingest"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.FlushInterval, DefaultFlushInterval)
	def(&o.RetryAfter, DefaultRetryAfter)
	def(&o.StoreTimeout, DefaultStoreTimeout)
	dupWindow := o.Topology.In.Duplicates
	if dupWindow <= 0 {
		dupWindow = natsjs.DefaultDuplicates
	}
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.PingInterval, DefaultPingInterval)
	def(&o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.BatchEvents <= 0 {
		o.BatchEvents = DefaultBatchEvents
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.RememberPlayers <= 0 {
		o.RememberPlayers = DefaultRememberPlayers
	}
	def(&o.RedisCheckInterval, time.Second)
	if o.MaxConnsPerAddr == 0 {
		o.MaxConnsPerAddr = httplimit.DefaultMaxPerAddr
	}
	if o.MaxSocketsPerPlayer <= 0 {
		o.MaxSocketsPerPlayer = DefaultMaxSocketsPerPlayer
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("ingest: instance id: %w", err)
	}
	pub, err := natsjs.NewPublisher(o.NC, natsjs.PublisherOptions{MaxInFlight: o.MaxInFlight, AckTimeout: o.AckTimeout, RetryAfter: o.RetryAfter})
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	retryCtx, cancelRetry := context.WithCancel(context.Background())
	in := &Ingest{
		retryCtx:      retryCtx,
		dupWindow:     dupWindow,
		cancelRetry:   cancelRetry,
		o:             o,
		verifier:      v,
		limiter:       lim,
		pub:           pub,
		instance:      o.Instance + "-" + hex.EncodeToString(suffix[:]),
		stateKey:      o.RedisPrefix + "players",
		dropsKey:      o.RedisPrefix + "drops",
		instancesKey:  o.RedisPrefix + "ingests",
		open:          make(map[*batch]struct{}),
		m:             newMetrics(o.Registerer),
		lm:            newLimitMetrics(o.Registerer),
		cwake:         make(chan struct{}, 1),
		dirty:         make(map[string]state),
		knownPerShard: max(1, o.RememberPlayers/numShards),
		conns:         make(map[*wsConn]struct{}),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  MaxFrame,
			WriteBufferPool: &sync.Pool{},
			// Tokens travel in the URL or a header, never in cookies, so a
			// page of another origin gains nothing by opening a socket.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	in.stateKeyArg = in.stateKey
	in.perAddr = in.newPerAddr()
	in.scratches.New = func() any { return new(scratch) }
	in.bodies.New = func() any { return new([]byte) }
	in.heldMoves.New = func() any { return new(heldMove) }
	in.players.init(in)
	for k := 0; k < o.Topology.Partitions; k++ {
		in.parts = append(in.parts, newPartition(in, k))
	}
	if o.Registerer != nil {
		// How full the log is: the burst absorber's room (docs/operations.md, "Burst policy").
		o.Registerer.MustRegister(natsjs.NewStreamCollector(o.JS, o.Topology.InStream(), "treasure_ingest_log"))
	}
	return in, nil
}

// Instance returns the name this Ingest gives itself in Nats-Msg-Ids:
// Options.Instance plus a random suffix.
func (in *Ingest) Instance() string { return in.instance }

// Ready reports nil while Run serves and the NATS connection is up. Redis
// is not needed: while it is down, moves go on from the player states in
// memory (RedisErr says whether it answers).
func (in *Ingest) Ready() error {
	if !in.running.Load() {
		return errors.New("ingest is not running")
	}
	if s := in.o.NC.Status(); s != nats.CONNECTED {
		return fmt.Errorf("NATS connection is %v", s)
	}
	return nil
}

// RedisErr returns the last Redis failure while Redis is considered down
// (nil: it answers and every player state is written).
func (in *Ingest) RedisErr() error {
	if !in.redisDown.Load() {
		return nil
	}
	if p := in.redisErr.Load(); p != nil {
		return *p
	}
	return errRedisDown
}

// Run processes moves until ctx is cancelled, then shuts down within
// ShutdownTimeout: it stops taking sockets and requests, closes every
// WebSocket (close code 1001), lets the requests in flight get their
// replies, publishes what is batched, waits for the last acks and their
// Redis writes, and returns. It returns nil after a clean shutdown, an
// error when the IN stream is missing at start (with JS set) or the
// shutdown ran out of time. Run may be called once.
func (in *Ingest) Run(ctx context.Context) error {
	if !in.started.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	defer in.pub.Close()
	if in.o.JS != nil {
		if _, err := in.o.JS.Stream(ctx, in.o.Topology.InStream()); err != nil {
			return fmt.Errorf("ingest: stream %s: %w", in.o.Topology.InStream(), err)
		}
	}
	stopFlush := make(chan struct{})
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		in.flushLoop(stopFlush)
	}()
	stopComplete := make(chan struct{})
	completeDone := make(chan struct{})
	go func() {
		defer close(completeDone)
		in.completeLoop(stopComplete)
	}()
	stopCheck := make(chan struct{})
	checkDone := make(chan struct{})
	go func() {
		defer close(checkDone)
		in.writeBackLoop(stopCheck, in.o.RedisCheckInterval)
	}()
	defer func() { close(stopCheck); <-checkDone }()
	// Register, and recover the moves dead instances stored without
	// acking them, before serving anyone (orphans.go): a player of a dead
	// instance must find their last stored move in Redis.
	live, err := in.o.NC.Subscribe(in.liveSubject(in.instance), func(m *nats.Msg) { _ = m.Respond(nil) })
	if err != nil {
		return fmt.Errorf("ingest: subscribe %s: %w", in.liveSubject(in.instance), err)
	}
	// Unsubscribed last, after the registration is updated: an instance
	// without a responder is taken for dead.
	defer func() { _ = live.Unsubscribe() }()
	if err := in.heartbeat(ctx); err != nil {
		in.o.Log.Warn("could not register this ingest instance; a crash would leave its stored, unacked moves unknown to Redis", "err", err)
	} else if err := in.recoverDead(ctx); err != nil {
		in.o.Log.Warn("recovering the moves of dead ingest instances failed; trying again every check interval", "err", err)
	}
	stopOrphans := make(chan struct{})
	orphansDone := make(chan struct{})
	go func() {
		defer close(orphansDone)
		in.orphanLoop(stopOrphans, in.o.RedisCheckInterval)
	}()
	orphansStopped := false
	stopOrphanLoop := func() {
		if !orphansStopped {
			orphansStopped = true
			close(stopOrphans)
			<-orphansDone
		}
	}
	defer stopOrphanLoop()
	in.running.Store(true)
	in.o.Log.Info("ingest running", "instance", in.instance, "partitions", len(in.parts), "rate_limit", in.o.RateLimit.String(),
		"subjects", in.o.Topology.InSubject(0)+"…", "redis_key", in.stateKey)
	<-ctx.Done()

	in.running.Store(false)
	deadline := time.Now().Add(in.o.ShutdownTimeout)
	// Republishes of unresolved batches end at the deadline at the latest.
	stopRetry := time.AfterFunc(time.Until(deadline), in.cancelRetry)
	defer stopRetry.Stop()
	var errs []error
	// Stop taking sockets and requests; close the sockets.
	in.connMu.Lock()
	in.closing = true
	conns := make([]*wsConn, 0, len(in.conns))
	for c := range in.conns {
		conns = append(conns, c)
	}
	in.connMu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	// Requests in flight get their replies: the flusher and the completer
	// still run.
	if !waitTimeout(&in.active, time.Until(deadline)) {
		errs = append(errs, errors.New("requests still in flight"))
	}
	close(stopFlush)
	<-flushDone
	fctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	if err := in.pub.Flush(fctx); err != nil {
		errs = append(errs, err)
	}
	cancel()
	// Unresolved batches had their chance until the deadline (the final
	// flush waited for them); then they are answered unavailable.
	in.cancelRetry()
	in.retryMu.Lock()
	in.retryClosed = true
	in.retryMu.Unlock()
	in.retries.Wait()
	in.pub.Close() // fails what is still pending, so that the completer can finish
	close(stopComplete)
	<-completeDone
	// No heartbeat may follow the registration's last update.
	stopOrphanLoop()
	in.unregister()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ingest: shutdown: %w", err)
	}
	in.o.Log.Info("ingest stopped", "instance", in.instance)
	return nil
}

// waitTimeout waits for wg for at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// enter registers a socket or request; false when shutting down or not
// yet running.
func (in *Ingest) enter() bool {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	if in.closing || !in.running.Load() {
		return false
	}
	in.active.Add(1)
	return true
}

func (in *Ingest) leave() { in.active.Done() }

// retryAfter is the wait an unavailable for err carries.
func (in *Ingest) retryAfter(err error) time.Duration {
	if d, ok := natsjs.RetryAfter(err); ok && d > 0 {
		return d
	}
	return in.o.RetryAfter
}

// logFailure logs a failed publish or store, at most once a second, with
// the number of failures it kept quiet.
func (in *Ingest) logFailure(msg string, err error, moves int) {
	in.logMu.Lock()
	now := time.Now()
	if now.Sub(in.lastFailAt) < time.Second {
		in.failsQuiet++
		in.logMu.Unlock()
		return
	}
	quiet := in.failsQuiet
	in.lastFailAt, in.failsQuiet = now, 0
	in.logMu.Unlock()
	in.o.Log.Warn(msg, "err", err, "moves", moves, "similar_failures_not_logged", quiet)
}

type metrics struct {
	accepted   prometheus.Counter
	duplicates prometheus.Counter
	// republished counts republishes of batches whose publish had no
	// answer; unknown counts moves left unanswered at shutdown with their
	// batch's outcome unknown; searched counts outcomes learned by
	// searching the log after the duplicate window; held counts moves
	// held back behind an earlier move of their player in a batch not yet
	// settled (Ingest.send).
	republished prometheus.Counter
	unknown     prometheus.Counter
	searched    prometheus.Counter
	held        prometheus.Counter
	rejected    map[game.Code]prometheus.Counter
	batch       prometheus.Histogram
	publish     prometheus.Histogram
	store       prometheus.Histogram
	conns       prometheus.Gauge
	slow        prometheus.Counter
	drops       prometheus.Counter
	hops        hopMetrics
	// Redis (state.go).
	redisUp     prometheus.Gauge
	dirty       prometheus.Gauge
	writtenBack prometheus.Counter
	unknownDown prometheus.Counter
	// recovered counts player states moved on to a move a dead instance
	// stored without acking it (orphans.go).
	recovered prometheus.Counter
}

var allCodes = []game.Code{
	game.CodeBadJSON, game.CodeBadRequest, game.CodePathTooLong, game.CodeUnknownNode, game.CodeStaleSeq,
	game.CodeDiscontinous, game.CodeNotAdjacent, game.CodeRateLimited, game.CodeUnauthorized, game.CodeUnavailable,
}

func newMetrics(r prometheus.Registerer) metrics {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_ingest_moves_rejected_total", Help: "Moves answered with an error, by code."}, []string{"code"})
	m := metrics{
		accepted:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_moves_accepted_total", Help: "Moves acked: durable in JetStream (their state written to Redis, or to be written back)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_moves_duplicate_total", Help: "Retries of the last accepted move, acked again without a publish."}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_batch_republishes_total",
			Help: "Republishes (same Nats-Msg-Id) of batches whose publish had no answer from JetStream."}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_moves_outcome_unknown_total",
			Help: "Moves left without an answer at shutdown because JetStream never answered for their batch (they may be stored; the client's resend finds out)."}),
		searched: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_batch_outcome_searches_total",
			Help: "Batches whose outcome was learned by searching the log for their Nats-Msg-Id after the duplicate window."}),
		held: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_moves_held_total",
			Help: "Moves held back, unpublished, until the batch holding an earlier move of their player (another batch) was stored or refused."}), rejected: make(map[game.Code]prometheus.Counter, len(allCodes)),
		batch:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ingest_batch_events", Help: "Moves per published batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ingest_publish_seconds", Help: "From a batch's publish to its JetStream ack.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		store:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_ingest_state_write_seconds", Help: "Redis write of the states released by one round of acks.", Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)}),
		conns:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_ingest_connections", Help: "Open move WebSockets."}),
		slow:    prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_slow_disconnects_total", Help: "Move WebSockets closed because the client did not read its replies (WriteTimeout, or too much pending)."}),
		drops:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_treasures_dropped_total", Help: "Treasures new to a drop, published to every partition."}),
		hops:    newHopMetrics(),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_ingest_redis_up",
			Help: "1 while Redis answers and every player state is written to it, 0 while moves go on from memory."}),
		dirty: prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_ingest_state_writeback_pending",
			Help: "Player states acked but not yet in Redis (Redis down or a write failed), written back when it answers."}),
		writtenBack: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_state_written_back_total",
			Help: "Player states written back to Redis after it failed, restarted or lost them."}),
		unknownDown: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_state_unknown_total",
			Help: "Connections and requests answered unavailable: Redis down and the player not in this instance's memory."}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_dead_instance_states_recovered_total",
			Help: "Player states moved on, in Redis, to a move that a dead ingest instance stored in the log without acking it."}),
	}
	m.redisUp.Set(1)
	for _, c := range allCodes {
		m.rejected[c] = rejected.WithLabelValues(string(c))
	}
	if r != nil {
		r.MustRegister(m.accepted, m.duplicates, m.republished, m.unknown, m.searched, m.held, m.recovered, rejected, m.batch, m.publish, m.store, m.conns, m.slow, m.drops, m.hops.receivedToPublished,
			m.redisUp, m.dirty, m.writtenBack, m.unknownDown)
	}
	return m
}

func (m *metrics) reject(code game.Code) {
	if c, ok := m.rejected[code]; ok {
		c.Inc()
	}
}
