// Package loadgen simulates players of treasure over real WebSockets: each
// one walks the road graph, sending moves to ingest and reading its updates
// from push, and the run reports throughput, move→update latency and
// errors every second.
//
// It has two engines. RunOpen (open.go) is the open-loop one, for figures:
// every player sends on a fixed schedule whatever the answers, latencies
// run from the scheduled send time, and every move is accounted for
// (`treasure loadgen steady|ramp|drop`). Run (this file) is the
// closed-loop one the demo uses (`treasure dev --players N`, and
// `treasure loadgen closed`): a player waits for each answer, so slow
// answers lower the offered load and hide queueing. The rest of this
// comment describes Run.
//
// # A simulated player
//
// Player i is PlayerPrefix+i, identified by an HS256 token signed with
// Secret (sub = the player id). It opens a push socket (GET
// /v1/updates/ws?token=…&after=0) and, once that is open, an ingest socket
// (GET /v1/moves/ws?token=…). Its first move is a spawn, a 1-node path on
// a random node that has a neighbour; every later move is a path of 6–12
// nodes continuing from the last node of its last accepted move, a random
// walk that steps back only where a node has no other neighbour. Seqs
// start at 1 and grow by 1 per accepted move.
//
// A player has one move in flight: it waits for the move's answer before it
// sends the next, and sends at most MovesPerSecond moves a second (a
// per-player timer; a player that falls behind does not catch up in a
// burst), so the offered rate is Players×MovesPerSecond at most and less
// when answers are slow. The answers (SPEC.md, "Wire contract"):
//
//   - ack: the player moves to the path's last node.
//   - rate_limited, unavailable: the same move is sent again after
//     retry_after_ms.
//   - stale_seq: if the move was being resent after its socket dropped, the
//     first send was accepted and only its ack was lost: the player counts
//     the move as accepted. Otherwise the server knows a later seq (an
//     earlier run under the same player id): the player raises its seq by
//     1, 2, 4, … until it is accepted.
//   - discontinuous: the server has the player elsewhere. The player moves
//     to the node the error message names ("… the player is at node N", as
//     game.ValidateMove words it) or, failing that, to the node of the
//     latest proximity update on its push socket, and sends a new path
//     from there with the same seq.
//   - any other error: counted; the move is dropped and the next one, with
//     the same seq, leaves at the next tick.
//
// After 64 stale_seq/discontinuous answers in a row a player gives up
// (counted as "desync"). A dropped ingest socket is reopened and the move
// in flight sent again; a dropped push socket is reopened with
// ?after=<last update id>, and ids must then continue without a gap
// (Stats.Gaps). Every frame is split on "\n": servers may batch messages.
//
// Player ids are expected to be new: with an id used before, the first
// push socket (after=0) replays that id's retained updates, which count
// as Unmatched, and as Gaps if the server kept only the newest of them.
//
// # Latency
//
// A move's latency runs from writing it (its last send, for a move sent
// again) to reading the proximity update that carries its seq; it is kept
// in HdrHistograms (1 µs to 10 min, 3 significant digits).
//
// # Bounds
//
// A run stops by itself: when Duration has passed or ctx ends, players stop
// sending, the run waits up to Drain for answers and updates of moves
// already sent, closes every socket and returns. It talks only to
// IngestURL and PushURL (and GET /v1/leaderboard on the push service's
// HTTP side). One process opens two sockets per player and holds at most
// about 19,900 (the machines' open-files limit is 20,000, and it cannot be
// raised), so a run takes at most MaxPlayers players; larger loads run
// several processes with different PlayerPrefix values. Per player the run
// keeps two goroutines (one per socket), a timer, a ring of 32 in-flight
// seqs and small reusable buffers; no goroutine per message.
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/game"
	"treasure/internal/graph"
)

// MaxPlayers is the most players one Run simulates: two sockets each stay
// under the 20,000 open files one process may hold (LIMITS.md), with room
// for the rest of the process.
const MaxPlayers = 9_900

// The range of Options.MovesPerSecond: from one move every 100 seconds to
// far above any rate limit a service would set.
const (
	MinRate = 0.01
	MaxRate = 1000
)

// Options configure a Run. IngestURL, PushURL, Graph, Players,
// MovesPerSecond and Secret are required; zero values of the others take
// the defaults they name.
type Options struct {
	// IngestURL and PushURL are the services' WebSocket base URLs
	// (ws:// or wss://, e.g. ws://127.0.0.1:8081); the paths of SPEC.md
	// are appended.
	IngestURL string
	PushURL   string
	// Graph is the road graph the services serve (the same file).
	Graph *graph.Graph
	// Players is the number of simulated players, 1..MaxPlayers.
	Players int
	// MovesPerSecond is the rate each player sends moves at, at most;
	// MinRate to MaxRate.
	MovesPerSecond float64
	// Secret is the services' JWT secret (TREASURE_JWT_SECRET).
	Secret string
	// TokenTTL is the life of the players' tokens (auth.Minter renews
	// them at half-life; every reconnect uses a fresh one); default
	// auth.DefaultTTL, at least 2 s.
	TokenTTL time.Duration
	// PlayerPrefix starts every player id; default "loadgen-". Give every
	// run and every process its own (see the package doc).
	PlayerPrefix string
	// Seed makes spawns and walks reproducible.
	Seed uint64
	// Duration bounds the run; 0 runs until ctx ends.
	Duration time.Duration
	// Logger receives connection problems at debug level and the run's
	// start and end at info level; nil discards.
	Logger *slog.Logger

	// AckTimeout is how long a player waits for a move's answer before it
	// drops the socket and reopens it; default 10s.
	AckTimeout time.Duration
	// Drain is how long the end of a run waits for the answers and updates
	// of moves already sent; default 3s.
	Drain time.Duration
	// ConnectTimeout fails the run when no socket at all could be opened
	// in that time (nothing listening, say); default 15s.
	ConnectTimeout time.Duration
	// ReportEvery is the reporting interval; default 1s.
	ReportEvery time.Duration
}

func (o Options) withDefaults() Options {
	if o.PlayerPrefix == "" {
		o.PlayerPrefix = "loadgen-"
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.Drain <= 0 {
		o.Drain = 3 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 15 * time.Second
	}
	if o.ReportEvery <= 0 {
		o.ReportEvery = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// check validates o, returning what is wrong in words for a person.
func (o Options) check() error {
	switch {
	case o.Graph == nil:
		return errors.New("no graph")
	case !hasEdge(o.Graph):
		return errors.New("the graph has no edge to walk on")
	case o.Players < 1:
		return fmt.Errorf("players must be at least 1, got %d", o.Players)
	case o.Players > MaxPlayers:
		return fmt.Errorf("%d players need %d sockets, but one process holds at most about 19,900 "+
			"(open-files limit 20,000): run at most %d players per process, "+
			"in several loadgen processes each with its own player prefix", o.Players, 2*o.Players, MaxPlayers)
	case !(o.MovesPerSecond >= MinRate && o.MovesPerSecond <= MaxRate):
		return fmt.Errorf("moves per second per player must be from %v to %v, got %v", MinRate, MaxRate, o.MovesPerSecond)
	case o.Secret == "":
		return errors.New("no JWT secret (the services' TREASURE_JWT_SECRET)")
	case o.TokenTTL != 0 && o.TokenTTL < 2*time.Second:
		return fmt.Errorf("token ttl %v is shorter than 2s", o.TokenTTL)
	case o.Duration < 0:
		return fmt.Errorf("negative duration %v", o.Duration)
	}
	if _, err := wsURL(o.IngestURL, "/v1/moves/ws"); err != nil {
		return fmt.Errorf("ingest url: %w", err)
	}
	if _, err := wsURL(o.PushURL, "/v1/updates/ws"); err != nil {
		return fmt.Errorf("push url: %w", err)
	}
	if limit, ok := openFilesLimit(); ok && limit < uint64(2*o.Players+64) {
		return fmt.Errorf("%d players need %d sockets but this process may open %d files: raise the limit (ulimit -n) or run fewer players per process",
			o.Players, 2*o.Players, limit)
	}
	return nil
}

// wsURL joins path to a ws:// or wss:// base URL.
func wsURL(base, path string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("%q: want a ws:// or wss:// URL", base)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", base)
	}
	u = u.JoinPath(path)
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// Run simulates o.Players players until o.Duration has passed or ctx ends
// (see the package doc), calling report from one goroutine about every
// o.ReportEvery and once more, with Final set, after every socket is
// closed. report must not block for long: a slow report delays the next.
// Run returns nil when the run ended as asked, or an error when o is
// invalid, when the services refuse the players (an HTTP 4xx answer to a
// socket upgrade: a wrong secret or URL) or when no socket could be opened
// within o.ConnectTimeout or before the run ended. It leaves no goroutine or socket behind.
func Run(ctx context.Context, o Options, report func(Stats)) error {
	if err := o.check(); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	o = o.withDefaults()
	ingest, _ := wsURL(o.IngestURL, "/v1/moves/ws")
	push, _ := wsURL(o.PushURL, "/v1/updates/ws")
	board, _ := wsURL(o.PushURL, "/v1/leaderboard")
	board.Scheme = map[string]string{"ws": "http", "wss": "https"}[board.Scheme]
	board.RawQuery = "limit=5"
	r := &run{
		o:        o,
		c:        newCollector(time.Now()),
		ingest:   ingest.String(),
		push:     push.String(),
		board:    board.String(),
		interval: time.Duration(float64(time.Second) / o.MovesPerSecond),
		dialer: &websocket.Dialer{
			HandshakeTimeout: 10 * time.Second,
			ReadBufferSize:   1024,
			WriteBufferSize:  512,
			WriteBufferPool:  &bufferPool{},
		},
		dialSem: make(chan struct{}, 32),
		fatal:   make(chan error, 1),
		stop:    make(chan struct{}),
	}
	minter, merr := auth.NewMinter(o.Secret, o.TokenTTL)
	if merr != nil {
		return fmt.Errorf("loadgen: %w", merr)
	}
	r.minter = minter
	players := make([]*player, o.Players)
	for i := range players {
		id := o.PlayerPrefix + strconv.Itoa(i)
		if _, err := minter.Token(id, ""); err != nil {
			return fmt.Errorf("loadgen: %w", err)
		}
		players[i] = &player{r: r, idx: i, id: id, pushUp: make(chan struct{})}
	}
	o.Logger.Info("loadgen starting", "players", o.Players, "moves_per_s_each", o.MovesPerSecond,
		"ingest", r.ingest, "push", r.push, "duration", o.Duration, "prefix", o.PlayerPrefix)

	// Sockets live in connCtx: cancelling it closes them all. It ends after
	// the drain, not with ctx.
	connCtx, closeConns := context.WithCancel(context.WithoutCancel(ctx))
	defer closeConns()
	var sockets, senders sync.WaitGroup
	for _, p := range players {
		sockets.Add(2)
		senders.Add(1)
		go func() {
			defer sockets.Done()
			p.updates(connCtx)
		}()
		go func() {
			defer sockets.Done()
			defer senders.Done()
			p.moves(connCtx)
		}()
	}
	sendersDone := make(chan struct{})
	go func() {
		senders.Wait()
		close(sendersDone)
	}()

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConns: 2}}
	defer client.CloseIdleConnections()
	lb := &leaderboard{client: client, url: r.board}
	reporterDone := make(chan struct{})
	stopReporter := make(chan struct{})
	go func() {
		defer close(reporterDone)
		t := time.NewTicker(o.ReportEvery)
		defer t.Stop()
		for {
			select {
			case <-stopReporter:
				return
			case now := <-t.C:
				st := r.c.stats(now, false)
				lb.fill(connCtx, &st)
				report(st)
			}
		}
	}()

	// Wait for the end.
	var end <-chan time.Time
	if o.Duration > 0 {
		t := time.NewTimer(o.Duration)
		defer t.Stop()
		end = t.C
	}
	connectCheck := time.NewTimer(o.ConnectTimeout)
	defer connectCheck.Stop()
	var err error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-end:
			break wait
		case err = <-r.fatal:
			break wait
		case <-connectCheck.C:
			if r.c.everUp.Load() == 0 {
				err = fmt.Errorf("loadgen: no socket opened in %v: %s", o.ConnectTimeout, r.lastDialError())
				break wait
			}
		}
	}

	// Stop sending; give answers and updates of moves in flight until the
	// end of the drain; then close everything.
	close(r.stop)
	if err == nil {
		r.drain(sendersDone)
	}
	closeConns()
	sockets.Wait()
	<-sendersDone
	close(stopReporter)
	<-reporterDone
	if err == nil && r.c.everUp.Load() == 0 {
		err = fmt.Errorf("loadgen: no socket opened: %s", r.lastDialError())
	}
	st := r.c.stats(time.Now(), true)
	lb.fill(context.WithoutCancel(ctx), &st) // the run is over, not the last report
	report(st)
	o.Logger.Info("loadgen done", "moves", st.TotalMoves, "errors", st.ErrorCount, "gaps", st.Gaps, "missing", st.Missing)
	return err
}

// run is what a Run's players share.
type run struct {
	o        Options
	minter   *auth.Minter
	c        *collector
	ingest   string // full URLs without query
	push     string
	board    string
	interval time.Duration // between a player's moves
	dialer   *websocket.Dialer
	dialSem  chan struct{} // bounds concurrent handshakes
	fatal    chan error    // the first fatal error; Run ends on it
	stop     chan struct{} // closed when players must stop sending

	mu      sync.Mutex
	dialErr error // the last failed dial, for ConnectTimeout's message
}

// drain waits until every player has stopped sending and every move sent
// has had its update, or until o.Drain has passed.
func (r *run) drain(senders <-chan struct{}) {
	deadline := time.NewTimer(r.o.Drain)
	defer deadline.Stop()
	select {
	case <-senders:
	case <-deadline.C:
		return
	}
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for r.c.pending.Load() > 0 {
		select {
		case <-poll.C:
		case <-deadline.C:
			return
		}
	}
}

// fail reports a fatal error to Run; only the first one counts.
func (r *run) fail(err error) {
	select {
	case r.fatal <- err:
	default:
	}
}

func (r *run) lastDialError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dialErr == nil {
		return "no dial completed"
	}
	return r.dialErr.Error()
}

// leaderboard fetches GET /v1/leaderboard?limit=5 for the reports.
type leaderboard struct {
	client *http.Client
	url    string
	last   []game.Entry
	ranked uint64
}

// fill sets st.Top, st.Ranked and, on failure, st.TopError.
func (l *leaderboard) fill(ctx context.Context, st *Stats) {
	if err := l.fetch(ctx); err != nil {
		st.TopError = err.Error()
	}
	st.Top, st.Ranked = l.last, l.ranked
	if st.Top == nil {
		st.Top = []game.Entry{}
	}
}

func (l *leaderboard) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url, nil)
	if err != nil {
		return fmt.Errorf("leaderboard: %w", err)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return fmt.Errorf("leaderboard: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("leaderboard: %s", resp.Status)
	}
	var body struct {
		Top     []game.Entry `json:"top"`
		Players uint64       `json:"players"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return fmt.Errorf("leaderboard: %w", err)
	}
	l.last, l.ranked = body.Top, body.Players
	return nil
}

// bufferPool shares write buffers between sockets (websocket.BufferPool):
// a socket holds one only while it writes.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() any  { return b.p.Get() }
func (b *bufferPool) Put(v any) { b.p.Put(v) }

var _ websocket.BufferPool = (*bufferPool)(nil)
