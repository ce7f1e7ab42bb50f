// Package push is the player-facing update channel: it follows the whole
// OUT stream (proximity results, claims, the ranker's score changes and
// leaderboard snapshots) in order, numbers each player's updates 1, 2,
// 3, … in stream order, and sends them over one WebSocket per player; it
// also serves the leaderboard over HTTP from Redis, or from PostgreSQL
// when Redis is down (SPEC "Wire contract" → push, docs/pipeline.md
// "Push ids").
//
// # Ids and resume
//
// Every push instance reads P_OUT in order (natsjs.Replay), from its first
// message or from the newest push checkpoint (see Stream requirements), so
// every instance, and one restarted, gives each update the same id. Per player it keeps the next id and a ring of the RingSize most
// recent updates in a compact binary form (about 8 bytes for a proximity
// answer without a treasure, 15–25 with one, against about 100 as JSON),
// re-encoded to JSON only for a resume. Memory per player: a few hundred
// bytes of bookkeeping plus about 1.25 times the ring's records. Measured
// (TestRingMemory, -v): a full ring of 256 proximity answers naming a
// treasure costs about 5.4 KiB per player, so 35,000 players who all
// moved 256 times or more cost about 185 MiB; a player with few updates
// costs a few hundred bytes. RingSize trades that memory for how long a
// client may stay away and still resume without a gap.
//
// GET /v1/updates/ws?after=I first sends every retained update with an id
// above I, in order, then live ones. The socket joins its player's
// listeners and the retained updates are copied under the same lock, so
// the handover loses and repeats nothing. When the ring no longer holds
// I+1 (the client was away for more than RingSize updates) the socket
// gets what is retained: the first id it sees is then above I+1, and the
// client reads its current score from GET /v1/players/{id}. after=0 sends
// everything retained; without after the socket starts with live updates.
//
// # Leaderboards on the socket
//
// Every socket gets the latest leaderboard snapshot when it connects
// (after the backlog), then newer ones at most once a second and only
// when the top differs from the last one that socket received (SPEC):
// the feed only records the latest snapshot, each socket's writer adds
// it to the next frame of updates it writes once the socket is due (so
// it rides with them, at its place in the log among them), and one hub
// ticker, once a second, wakes the sockets that are due and behind but
// had no update to carry it. ?leaderboard=off on the socket's URL opts
// out (any value but on/off is a 400). No per-socket timer exists; the
// feed never visits every socket.
//
// # Fan-out
//
// The feed never waits for a socket. While it is caught up with the
// stream (a step holding the one message the stream had), it writes an
// update to a socket that is idle (no write in progress, nothing queued)
// itself, on the connection, with a deadline of about a millisecond;
// what such a write cannot finish in time goes to the socket's writer.
// That saves waking a goroutine per update when updates are few per
// socket. Otherwise (behind, or a write in progress) the update is
// queued. Each socket has a bounded queue
// (QueueSize messages, a plain byte buffer) drained by its own writer
// goroutine, which sends everything queued as one frame of newline-
// separated messages (optionally after WriteDelay, to gather more), with
// a write deadline. A socket whose queue fills up is closed with code
// 1008 and reason "slow" (a client that stops reading is closed that way
// once the TCP buffers to it are full; one whose writes stall past
// WriteTimeout is cut). Pings go out every PingInterval; a client that
// answers nothing for PongWait is dropped. Leaderboards are not queued:
// a socket only ever takes the newest one.
// Several sockets of one player all get its updates, up to
// MaxSocketsPerPlayer: a socket beyond that closes the player's oldest
// one (code 1008, reason "replaced").
//
// # Leaderboard endpoints
//
// GET /v1/leaderboard and GET /v1/players/{id} read Redis (redisstore)
// first. When Redis errors, times out (RedisTimeout), or says its board
// is not built, they answer from PostgreSQL (pgstore), and leave Redis
// alone for RedisRetry before trying it again. An answer from Redis is
// taken as it is (a player Redis does not know is a 404). They answer
// 503 only when both stores fail: never "n/a".
//
// # Stream requirements
//
// Ids are reproducible from P_OUT's first message, or from a push
// checkpoint (checkpoint.go, docs/pipeline.md "Push checkpoints") plus the
// messages after it: a starting instance loads the newest valid
// checkpoint and reads only the tail. One whose stream lost its head with
// no checkpoint reaching it gives different ids (logged as an error).
package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"treasure/internal/auth"
	"treasure/internal/backoff"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/httplimit"
	"treasure/internal/natsjs"
	"treasure/internal/pgstore"
	"treasure/internal/ratelimit"
	"treasure/internal/redisstore"
)

// Defaults of Options.
const (
	DefaultRingSize      = 256
	DefaultQueueSize     = 256
	DefaultMaxSockets    = 4
	DefaultWriteTimeout  = 10 * time.Second
	DefaultPingInterval  = 20 * time.Second
	DefaultRedisTimeout  = 250 * time.Millisecond
	DefaultRedisRetry    = time.Second
	DefaultFeedBatch     = 256
	defaultFeedRetryBase = 100 * time.Millisecond
)

// Options configures a Server. JS, Postgres and Verifier are required;
// zero values elsewhere take the defaults.
type Options struct {
	// Topology names the OUT stream the feed reads.
	Topology natsjs.Topology
	// NC is the connection JS uses; when set, Ready reports a lost
	// connection.
	NC *nats.Conn
	JS jetstream.JetStream
	// Redis holds the live leaderboard under RedisPrefix (redisstore);
	// nil means PostgreSQL alone.
	Redis       redis.UniversalClient
	RedisPrefix string
	// Postgres holds the durable scores (pgstore), the fallback.
	Postgres *pgxpool.Pool
	// Verifier checks the players' tokens.
	Verifier *auth.Verifier
	// RingSize is the number of recent updates kept per player for
	// resume (DefaultRingSize).
	RingSize int
	// QueueSize bounds the messages queued for one socket; a socket that
	// falls that far behind is closed as slow (DefaultQueueSize).
	QueueSize int
	// SendBuffer, when positive, sets each socket's kernel send buffer
	// (SO_SNDBUF, in bytes; Linux doubles it for its bookkeeping). A
	// client that stops reading is then closed as slow once that much
	// and QueueSize messages wait for it. 0 leaves the buffer to the
	// kernel's autotuning, which grows it up to net.ipv4.tcp_wmem's
	// maximum (4 MiB by default) for a reader that does not keep up —
	// on loopback at once: minutes of updates for one player, and that
	// much kernel memory per socket, before QueueSize counts at all.
	SendBuffer int
	// MaxSocketsPerPlayer bounds one player's sockets (DefaultMaxSockets).
	MaxSocketsPerPlayer int
	// MaxConnsPerAddr caps the requests in progress, open update sockets
	// included, per client address (httplimit): one more is answered 429
	// rate_limited. 0 means httplimit.DefaultMaxPerAddr, negative no cap.
	MaxConnsPerAddr int
	// LeaderboardRate is the requests per second (bursts of twice as
	// many) one client address may make to the leaderboard endpoints: one
	// more is answered 429 rate_limited with retry_after_ms. 0 means
	// DefaultLeaderboardRate, negative no limit.
	LeaderboardRate float64
	// FallbackReads bounds the PostgreSQL reads those endpoints run at
	// once while Redis is down (DefaultFallbackReads); one more is
	// answered 503 unavailable.
	FallbackReads int
	// WriteTimeout bounds every write to a socket (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// WriteDelay, when positive, has a socket's writer wait that long
	// after being woken before taking its queue, so that updates arriving
	// meanwhile share the frame: fewer, larger frames for that much more
	// latency. Zero (the default) sends as soon as the writer runs.
	WriteDelay time.Duration
	// PingInterval is the time between pings (DefaultPingInterval);
	// PongWait, how long a silent client is kept (default 2×PingInterval
	// + WriteTimeout).
	PingInterval, PongWait time.Duration
	// RedisTimeout bounds a Redis read (DefaultRedisTimeout); after a
	// failure Redis is left alone for RedisRetry (DefaultRedisRetry).
	RedisTimeout, RedisRetry time.Duration
	// FeedBatch caps the messages of one feed step (DefaultFeedBatch).
	FeedBatch int
	// Checkpoints stores the push checkpoints (docs/pipeline.md "Push
	// checkpoints"); nil means the topology's object-store bucket
	// (natsjs.OpenCheckpoints), opened by Run. CheckpointEvery is how
	// often one is written while messages arrive (and once at a clean
	// shutdown): 0 means DefaultCheckpointEvery, negative disables
	// checkpoints (the feed then starts at the stream's first message).
	// CheckpointKeep is how many of the newest are kept
	// (DefaultCheckpointKeep).
	Checkpoints     Checkpoints
	CheckpointEvery time.Duration
	CheckpointKeep  int
	// Graph, when set, is the road graph the live page draws (GET /v1/map)
	// and places the spectator feed's players and treasures on; nil
	// leaves the page without a map.
	Graph *graph.Graph
	// The spectator feed (GET /v1/spectate, docs/protocol.md): a frame at
	// most every SpectateInterval (DefaultSpectateInterval) with at most
	// SpectatePositions player positions (DefaultSpectatePositions), out
	// of at most SpectatePlayers players followed
	// (DefaultSpectatePlayers), to at most MaxSpectators sockets
	// (DefaultMaxSpectators).
	SpectateInterval                                  time.Duration
	SpectatePositions, SpectatePlayers, MaxSpectators int
	// Log receives start, failure and fallback lines; nil discards them.
	Log *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Server is the push service. Handler may serve before Run starts
// (sockets are refused with 503 until the feed has caught up); Run it
// once. Safe for concurrent use.
type Server struct {
	o     Options
	hub   *hub
	m     *metrics
	rs    *redisstore.Store // nil without Redis
	pg    *pgstore.Store
	up    websocket.Upgrader
	pool  sync.Pool // write buffers lent to the sockets
	ready atomic.Bool
	// pos is the feed's position: the last stream sequence applied and
	// the one it must reach to be ready.
	applied, target atomic.Uint64
	redisSkip       atomic.Int64 // unix nanos until which Redis is skipped
	redisDown       atomic.Bool
	// Access limits (limits.go).
	perAddr    *httplimit.PerAddr
	boardLimit *ratelimit.Keyed // nil: no leaderboard rate limit
	fallback   chan struct{}    // PostgreSQL fallback reads in progress
	lm         limitMetrics

	// The feed's reusable decoding state (the feed goroutine's own).
	rd        event.Reader
	ev        eventpb.Event
	u         update
	lbVersion uint64
	lbSeen    bool
	hop       feedHops // per-hop histograms and the current update's stamps (feed.go)

	// Checkpoints (ckptrun.go), the feed goroutine's own: the sequence of
	// the last one taken or loaded, when, and the upload in flight.
	ckpt      ckptMetrics
	ckptSeq   uint64
	ckptAt    time.Time
	uploading chan struct{}

	spec    *spectate // the spectator feed (spectate.go)
	liveMap liveMap   // GET /v1/map, built once (livemap.go)
}

type metrics struct {
	conns      prometheus.Gauge
	messages   prometheus.Counter
	frames     prometheus.Counter
	boards     prometheus.Counter
	direct     prometheus.Counter
	handoffs   prometheus.Counter
	slow       prometheus.Counter
	lag        prometheus.Gauge
	events     *prometheus.CounterVec
	byKind     [event.KindLeaderboard + 1]prometheus.Counter // events' children, by kind
	bad        prometheus.Counter
	boardReads *prometheus.CounterVec
	latency    prometheus.Histogram
}

func newMetrics(r prometheus.Registerer, h func() *hub) *metrics {
	m := &metrics{
		conns:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_push_connections", Help: "Open player WebSockets."}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_messages_sent_total", Help: "Messages written to player WebSockets."}),
		frames:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_frames_sent_total", Help: "WebSocket frames (messages of newline-joined updates) written."}),
		boards:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_leaderboards_sent_total", Help: "Leaderboard messages written to player WebSockets (at most one per socket per second)."}),
		direct:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_direct_writes_total", Help: "Frames the feed wrote to an idle socket itself, without waking its writer."}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_direct_handoffs_total", Help: "Direct writes that could not finish within about a millisecond and left their end to the socket's writer."}),
		slow:     prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_slow_disconnects_total", Help: "Sockets closed because their queue filled up."}),
		lag:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_push_feed_lag_messages", Help: "OUT stream messages not yet read by the feed, at its last step."}),
		events:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_push_feed_events_total", Help: "OUT events applied by the feed, by kind."}, []string{"kind"}),
		bad:      prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_feed_bad_events_total", Help: "OUT batches or events the feed could not decode and skipped."}),
		boardReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_push_board_reads_total", Help: "Leaderboard and player reads, by the store that answered (redis, postgres, none)."},
			[]string{"source"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_push_update_latency_seconds", Help: "From ingest accepting a move to its proximity answer being queued to the player's sockets (live only).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	for _, k := range []event.Kind{event.KindProximity, event.KindClaim, event.KindScore, event.KindLeaderboard} {
		m.byKind[k] = m.events.WithLabelValues(k.String())
	}
	for _, src := range []string{"redis", "postgres", "none"} {
		m.boardReads.WithLabelValues(src) // at 0 from the start, so that rate() and alerts see them
	}
	if r != nil {
		players := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "treasure_push_players", Help: "Players whose update state push holds."},
			func() float64 { n, _ := h().stats(); return float64(n) })
		r.MustRegister(m.conns, m.messages, m.frames, m.boards, m.direct, m.handoffs, m.slow, m.lag, m.events, m.bad, m.boardReads, m.latency, players)
	}
	return m
}

// New checks o and returns a Server; it does no I/O.
func New(o Options) (*Server, error) {
	if o.JS == nil || o.Postgres == nil || o.Verifier == nil {
		return nil, errors.New("push: JetStream, PostgreSQL pool and token verifier are required")
	}
	if err := o.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	if o.RingSize <= 0 {
		o.RingSize = DefaultRingSize
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxSocketsPerPlayer <= 0 {
		o.MaxSocketsPerPlayer = DefaultMaxSockets
	}
	if o.MaxConnsPerAddr == 0 {
		o.MaxConnsPerAddr = httplimit.DefaultMaxPerAddr
	}
	if o.LeaderboardRate == 0 {
		o.LeaderboardRate = DefaultLeaderboardRate
	}
	if o.FallbackReads <= 0 {
		o.FallbackReads = DefaultFallbackReads
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PongWait <= 0 {
		o.PongWait = 2*o.PingInterval + o.WriteTimeout
	}
	if o.RedisTimeout <= 0 {
		o.RedisTimeout = DefaultRedisTimeout
	}
	if o.RedisRetry <= 0 {
		o.RedisRetry = DefaultRedisRetry
	}
	if o.FeedBatch <= 0 {
		o.FeedBatch = DefaultFeedBatch
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.CheckpointKeep <= 0 {
		o.CheckpointKeep = DefaultCheckpointKeep
	}
	if o.CheckpointEvery < 0 {
		o.Checkpoints = nil
	}
	if o.SpectateInterval <= 0 {
		o.SpectateInterval = DefaultSpectateInterval
	}
	if o.SpectatePositions <= 0 {
		o.SpectatePositions = DefaultSpectatePositions
	}
	if o.SpectatePlayers <= 0 {
		o.SpectatePlayers = DefaultSpectatePlayers
	}
	if o.MaxSpectators <= 0 {
		o.MaxSpectators = DefaultMaxSpectators
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, pg: pgstore.New(o.Postgres), ckptAt: time.Now()}
	s.ckpt = newCkptMetrics(o.Registerer)
	s.m = newMetrics(o.Registerer, func() *hub { return s.hub })
	s.hop = newFeedHops(o.Registerer)
	s.hub = newHub(o.RingSize, o.MaxSocketsPerPlayer)
	s.spec = newSpectate(s, o)
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.hub.order.held, s.hub.order.forced)
	}
	if err := s.initLimits(); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	if o.Redis != nil {
		s.rs = redisstore.New(o.Redis, o.RedisPrefix)
	}
	s.up = websocket.Upgrader{
		ReadBufferSize:  maxClientMessage,
		WriteBufferSize: 4 << 10,
		// Write buffers are taken from the pool for each message and
		// returned after it: an idle socket holds none.
		WriteBufferPool: &s.pool,
		// Players authenticate with a token, not a cookie: a page of any
		// origin may open the socket.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return s, nil
}

// Ready returns nil once the feed has read the OUT stream up to the last
// message it held when Run started, while NATS is connected.
func (s *Server) Ready() error {
	if !s.ready.Load() {
		return fmt.Errorf("push feed catching up: at sequence %d of %d", s.applied.Load(), s.target.Load())
	}
	if s.o.NC != nil && !s.o.NC.IsConnected() {
		return errors.New("push: NATS disconnected")
	}
	return nil
}

// Run follows the OUT stream until ctx is cancelled, then closes every
// socket (code 1001, after sending what is queued), waits for their
// goroutines and returns nil. A failed read is retried from where it
// stopped, with a backoff; an error is returned only when the stream
// cannot be found at start.
func (s *Server) Run(ctx context.Context) error {
	defer s.hub.close(websocket.CloseGoingAway, "shutdown")
	bctx, stopBoards := context.WithCancel(ctx)
	boardsDone := make(chan struct{})
	go func() {
		defer close(boardsDone)
		s.hub.runBoards(bctx)
	}()
	defer func() { stopBoards(); <-boardsDone }()
	specDone := make(chan struct{})
	go func() {
		defer close(specDone)
		s.spec.run(bctx)
	}()
	defer func() { stopBoards(); <-specDone }()
	stream := s.o.Topology.OutStream()
	st, err := s.o.JS.Stream(ctx, stream)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("push: stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("push: stream %s: %w", stream, err)
	}
	if s.o.CheckpointEvery > 0 && s.o.Checkpoints == nil {
		c, err := natsjs.OpenCheckpoints(ctx, s.o.JS, s.o.Topology)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("push: %w", err)
		}
		s.o.Checkpoints = c
	}
	var from uint64
	if s.o.Checkpoints != nil {
		if from, err = s.loadCheckpoint(ctx, info.State.FirstSeq, info.State.LastSeq); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("push: checkpoints: %w", err)
		}
	}
	if from == 0 && info.State.FirstSeq > 1 {
		s.o.Log.Error("push feed starting after the stream's head was removed without a usable checkpoint: player ids restart and differ from other instances'",
			"first_seq", info.State.FirstSeq)
	}
	s.target.Store(info.State.LastSeq)
	if info.State.LastSeq == 0 || info.State.Msgs == 0 || from >= info.State.LastSeq {
		s.ready.Store(true)
	}
	defer s.finalCheckpoint()
	s.o.Log.Info("push feed starting", "stream", stream, "checkpoint_seq", from, "catch_up_to", info.State.LastSeq)
	retry := backoff.Backoff{Base: defaultFeedRetryBase}
	for {
		err := natsjs.Replay(ctx, s.o.JS, natsjs.ReplayOptions{
			Stream:   stream,
			StartSeq: s.applied.Load() + 1,
			Batch:    s.o.FeedBatch,
			Follow:   true,
		}, s.handle)
		if ctx.Err() != nil {
			return nil
		}
		d := retry.Next()
		s.o.Log.Error("push feed failed; resuming", "err", err, "at_seq", s.applied.Load(), "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

// handle applies one step of the feed.
func (s *Server) handle(_ context.Context, msgs []natsjs.Msg) error {
	// Caught up (this step is the one message the stream held): write
	// to idle sockets directly. Behind: queue, so that each socket's
	// writer gathers its updates and the writes spread over the cores.
	s.hub.direct = len(msgs) == 1 && msgs[0].Pending == 0
	for _, m := range msgs {
		if m.Seq <= s.applied.Load() {
			continue // already applied before a resumed read
		}
		s.applyStored(m.Data, m.Time)
		s.applied.Store(m.Seq)
	}
	s.spec.tap(msgs)
	last := msgs[len(msgs)-1]
	s.m.lag.Set(float64(last.Pending))
	if !s.ready.Load() && (last.Pending == 0 || last.Seq >= s.target.Load()) {
		s.ready.Store(true)
		s.o.Log.Info("push feed caught up", "seq", last.Seq)
	}
	s.maybeCheckpoint()
	return nil
}
