package loadgen

// # The open-loop engine (RunOpen)
//
// The final API (CONTRACTS.md, "The open-loop engine API"; fields and
// their contracts are documented where they are declared):
//
//	type OpenOptions struct {
//	    Ingest, Push []string                 // ws:// base URLs; player j uses Ingest[j%n], Push[j%m]
//	    Graph *graph.Graph; Secret string
//	    PlayerPrefix string; FirstPlayer, Players int   // ids PlayerPrefix+(FirstPlayer+i)
//	    Seed uint64; LocalAddr string; PushLeaderboard bool; Logger *slog.Logger
//	    Connected func(ctx) (t0 time.Time, err error)  // nil: t0 = now
//	    Schedule Schedule; Drain, ConnectTimeout time.Duration
//	    Progress func(connected int); Stop <-chan struct{} // Stop: end the schedule early, then drain
//	}
//	type Schedule struct { Rate float64; Duration, Window time.Duration; Waves int; RateAt func(time.Duration) float64 }
//	func (Schedule) At(seed, player, k, prev) int64; func (Schedule) End() time.Duration
//	type Result struct {                       // JSON round-trips; (*Result).Merge
//	    Players int; Sent, Retries, Acked, Rejected, Answered, Lost, LostUnanswered, LostNoUpdate,
//	    Duplicated, OutOfOrder, Reordered, Unexpected, Unsent, SentInWindow uint64
//	    Errors map[string]uint64; Ack, Update *hdr.Histogram (µs); Seconds []Second
//	    OutstandingPeak int64; DrainS, ElapsedS float64; Start time.Time
//	}
//	type Second struct { Index int; Offered, Sent, Acked, Answered, Errors uint64;
//	    Outstanding, InFlight int64; Ack, Update *hdr.Histogram }   // (*Second).Merge, Line
//	func RunOpen(ctx, OpenOptions, report func(Second)) (*Result, error)
//	func (*Result) Failed() bool               // lost, duplicated, out of order or unexpected
//	func NewSummary(scenario string, r *Result) Summary   // the --json object; Summary.Extra merges in
//	poll.go: LeaderboardPoller (Run, Stats), JetStreamBacklog + BacklogMonitor (Run, Last, Peak,
//	    ZeroAfter), PostDrop, RandomTreasures, HTTPBase — for a coordinator of several processes.
//
// # Open loop
//
// Every player sends on its own fixed schedule (Schedule) whether or not
// its earlier moves were answered: several moves may be in flight, each
// path continuing from the end of the previous path sent, seq+1 each. The
// first move is a spawn (a 1-node path on a random node). Every latency —
// ack and proximity update — runs from the move's scheduled send time, not
// from when it was written (as wrk2 and vegeta measure), so a late sender,
// a blocked player or a queue in the server all show in the figures.
//
// Cost: a few sender goroutines (shards), each owning a share of the
// players in a min-heap of next send times, sleeping on one timer and
// writing frames directly (several due moves of one player go in one
// frame); one reader goroutine per socket; per player a ring of openRing
// move slots and reusable buffers; no goroutine or allocation per move.
//
// # Accounting
//
// Every move sent must get exactly one answer (ack or SPEC error) on its
// ingest socket, and every acked move exactly one proximity update (by
// seq) on its push socket, where updates of a player come in move order
// with ids 1, 2, 3, … (SPEC). So:
//
//   - an answer for a move not awaiting one is Duplicated (a seq already
//     settled) or Unexpected (a seq never sent);
//   - a second proximity update for one seq is Duplicated; one for a seq
//     not sent, or rejected, is Unexpected; one whose seq is below the
//     player's latest update's counts Reordered (SPEC wants move order;
//     the update still counts as the move's answer; a failure too);
//   - an acked move without update at the end of the drain is Lost
//     (LostNoUpdate); a move without answer then is Lost (LostUnanswered);
//     a slot whose update is due is never reused, so a player with
//     openRing moves unsettled waits (its next moves are late, or Unsent);
//   - a push message (any type carrying an id) whose id is not the
//     socket's previous id + 1 counts OutOfOrder.
//
// # Errors
//
// An error answer blocks the player: it sends no new move (its schedule
// keeps running, so the moves it owes leave late, at once when it is
// unblocked, with latencies still from their schedule) until none of its
// moves awaits an answer. Then it resynchronises: the rejected moves after
// its last acked one form a chain (each path starting where the previous
// ended); if the first of them was answered rate_limited or unavailable and
// starts where the last acked move ended, the whole chain is sent again,
// same seqs and paths, after the longest retry_after_ms among them (Retries
// counts the resends; at most maxTries per move). Otherwise the chain is
// dropped (Rejected), and the player continues from its last acked node (or
// the node a discontinuous message names, or a new spawn when nothing was
// ever acked) with the next unused seq. Errors are counted by code.
//
// A socket that drops ends its player for the run ("closed" in Errors):
// its unsettled moves count as lost at the end and its remaining schedule
// as Unsent. There is no reconnect: in a measured run a dropped socket is a
// failure to report, not to hide.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/backoff"
	"treasure/internal/graph"
)

// OpenOptions are one process's share of an open-loop run.
type OpenOptions struct {
	// Ingest and Push are ws:// base URLs; player j = FirstPlayer+i uses
	// Ingest[j%len(Ingest)] and Push[j%len(Push)], so that the spread does
	// not depend on how the players are split over processes.
	Ingest, Push []string
	Graph        *graph.Graph
	Secret       string
	// TokenTTL is the life of the players' tokens; default
	// auth.DefaultTTL, at least 2 s. A token is checked when its socket
	// opens; the HTTP scenario's requests take a fresh one once the last
	// is half-way to its expiry (auth.Minter).
	TokenTTL time.Duration
	// PlayerPrefix starts every player id (default "open-"); ids are
	// PlayerPrefix+strconv.Itoa(FirstPlayer+i), i in [0, Players). Use new
	// ids every run: a player id's seqs and position persist in the
	// services.
	PlayerPrefix string
	FirstPlayer  int
	Players      int // 1..MaxPlayers
	// Seed makes spawns, walks and schedules reproducible; the schedule of
	// player FirstPlayer+i does not depend on how players are split over
	// processes.
	Seed uint64
	// LocalAddr is an optional source IP to dial from (e.g. 127.0.0.3), to
	// spread loopback ephemeral ports over several addresses.
	LocalAddr string
	// PushLeaderboard keeps the push sockets' leaderboard broadcasts; by
	// default they are opted out of (?leaderboard=off).
	PushLeaderboard bool
	Logger          *slog.Logger
	// Connected is called once every socket is open; it returns t0, the
	// instant the schedule starts (it may be in the future). nil: now.
	Connected func(ctx context.Context) (time.Time, error)
	Schedule  Schedule
	// Drain is how long after the schedule's end the run waits for the
	// answers and updates still due; default 10s. The run ends earlier
	// once every move sent is settled.
	Drain time.Duration
	// Progress is called while connecting, at most about 4 times a
	// second, and once with Players when all are connected.
	Progress func(connected int)
	// ConnectTimeout bounds the connection of all players; default
	// ConnectTimeoutFor(Players). Within it every failed dial (other than
	// a 4xx answer) is retried with backoff.
	ConnectTimeout time.Duration
	// Stop, when closed, ends the schedule early: no move scheduled after
	// that instant is sent, and the drain follows as at the schedule's
	// end (ramp stops this way once a step fails). nil: never.
	Stop <-chan struct{}
}

func (o *OpenOptions) check() error {
	switch {
	case len(o.Ingest) == 0 || len(o.Push) == 0:
		return errors.New("no ingest or push URL")
	case o.Graph == nil:
		return errors.New("no graph")
	case !hasEdge(o.Graph):
		return errors.New("the graph has no edge to walk on")
	case o.Players < 1 || o.Players > MaxPlayers:
		return fmt.Errorf("players must be from 1 to %d per process (two sockets each, under the open-files limit of 20,000), got %d", MaxPlayers, o.Players)
	case o.FirstPlayer < 0:
		return fmt.Errorf("negative first player %d", o.FirstPlayer)
	case o.Secret == "":
		return errors.New("no JWT secret (the services' TREASURE_JWT_SECRET)")
	case o.TokenTTL != 0 && o.TokenTTL < 2*time.Second:
		return fmt.Errorf("token ttl %v is shorter than 2s", o.TokenTTL)
	}
	if o.LocalAddr != "" && net.ParseIP(o.LocalAddr) == nil {
		return fmt.Errorf("local address %q is not an IP", o.LocalAddr)
	}
	for _, u := range o.Ingest {
		if _, err := wsURL(u, "/v1/moves/ws"); err != nil {
			return fmt.Errorf("ingest url: %w", err)
		}
	}
	for _, u := range o.Push {
		if _, err := wsURL(u, "/v1/updates/ws"); err != nil {
			return fmt.Errorf("push url: %w", err)
		}
	}
	if limit, ok := openFilesLimit(); ok && limit < uint64(2*o.Players+64) {
		return fmt.Errorf("%d players need %d sockets but this process may open %d files", o.Players, 2*o.Players, limit)
	}
	return o.Schedule.check()
}

const histShardsOpen = 8

// engine is one RunOpen.
type engine struct {
	o         OpenOptions
	t0        time.Time
	windowEnd int64
	players   []*oplayer
	shards    []*sender
	stopping  atomic.Bool
	endAt     atomic.Int64  // the schedule's end, ns after t0 (earlier after Stop)
	endCh     chan struct{} // closed on Stop

	sent, retries, acked, rejected, answered atomic.Uint64
	lostNoUpdate, duplicated, outOfOrder     atomic.Uint64
	unexpected, inWindow, reordered          atomic.Uint64
	inFlight, outstanding, remaining         atomic.Int64
	errs                                     [len(errNames)]atomic.Uint64
	hs                                       [histShardsOpen]histShard
	closedOnce                               sync.Once

	// Every socket is read from the moment its player is connected, so
	// that the services' pings are answered while the others connect and
	// a socket the server closes meanwhile is noticed; a frame read
	// before started (t0 set) waits for it, one read after aborted is
	// dropped.
	readers           sync.WaitGroup
	started, aborted  chan struct{}
	startOnce, noMore sync.Once

	minter *auth.Minter // the players' tokens
}

func (e *engine) now() int64 { return int64(time.Since(e.t0)) }

func (e *engine) countErr(name string)     { e.errs[errIndex([]byte(name))].Add(1) }
func (e *engine) countErrCode(code []byte) { e.errs[errIndex(code)].Add(1) }

func toMicros(d int64) int64 { return min(max(d/int64(time.Microsecond), 1), openHistMax) }

func (e *engine) recordAck(local int, d int64) {
	h := &e.hs[local%histShardsOpen]
	h.mu.Lock()
	h.ack.RecordValue(toMicros(d))
	h.mu.Unlock()
}

func (e *engine) recordUpdate(local int, d int64) {
	h := &e.hs[local%histShardsOpen]
	h.mu.Lock()
	h.update.RecordValue(toMicros(d))
	h.mu.Unlock()
}

// setDefaults fills in what o leaves zero for a run: the player prefix,
// a 10 s drain, the connect timeout and a logger that discards.
func (o *OpenOptions) setDefaults(prefix string, connectTimeout time.Duration) {
	if o.PlayerPrefix == "" {
		o.PlayerPrefix = prefix
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = connectTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// RunOpen runs one process's share of an open-loop run (see the comment at
// the top of this file): it connects every player (two sockets each),
// calls o.Connected for t0, sends on o.Schedule, waits up to o.Drain after
// the schedule's end for what is still due, closes every socket and
// returns the Result. report, if not nil, is called from one goroutine
// at the end of every second since t0 (and once for the last, partial
// one); it must not block for long.
//
// It returns an error (and no Result) when o is invalid, when a player
// cannot connect (a 4xx answer is not retried; other failures are, for up
// to o.ConnectTimeout) or when o.Connected fails. When ctx ends it stops
// sending, skips the drain and returns what it measured with ctx's error.
// It leaves no goroutine or socket behind.
func RunOpen(ctx context.Context, o OpenOptions, report func(Second)) (*Result, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	o.setDefaults("open-", ConnectTimeoutFor(o.Players))
	e := newEngine(o)
	defer e.abort() // no-op once started
	if err := e.connect(ctx); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if o.Connected != nil {
		var err error
		if t0, err = o.Connected(ctx); err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
	}
	e.t0 = t0
	e.startOnce.Do(func() { close(e.started) })
	o.Logger.Info("open-loop run starting", "players", o.Players, "first", o.FirstPlayer, "t0", t0, "schedule_end", o.Schedule.End())
	stopSenders := make(chan struct{})
	var senders sync.WaitGroup
	for _, sh := range e.shards {
		senders.Add(1)
		go func() { defer senders.Done(); sh.run(stopSenders) }()
	}
	stopReporter := make(chan struct{})
	reporterDone := make(chan struct{})
	rep := &reporter{e: e, total: newResult(o.Players)}
	go func() { defer close(reporterDone); rep.run(stopReporter, report) }()

	// Wait for the schedule's end, then for everything due, up to Drain.
	end := t0.Add(o.Schedule.End())
	var err error
	drained := time.Duration(-1)
	reached := waitUntil(ctx, end, o.Stop)
	if !reached && ctx.Err() == nil { // Stop
		now := e.now()
		e.endAt.Store(now)
		end = e.t0.Add(time.Duration(now))
		close(e.endCh)
		reached = true
	}
	if reached {
		deadline := end.Add(o.Drain)
		tick := time.NewTicker(5 * time.Millisecond)
		for {
			if e.inFlight.Load() == 0 && e.remaining.Load() == 0 {
				drained = max(time.Since(end), 0)
				break
			}
			if time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			if ctx.Err() != nil {
				break
			}
		}
		tick.Stop()
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	close(stopSenders)
	senders.Wait()
	e.stopping.Store(true)
	e.closeAll()
	e.readers.Wait()
	close(stopReporter)
	<-reporterDone

	r := rep.total
	e.totals(r)
	if drained >= 0 {
		r.DrainS = drained.Seconds()
	} else {
		r.DrainS = max(time.Since(end), 0).Seconds()
	}
	r.ElapsedS = time.Since(t0).Seconds()
	r.Start = t0
	o.Logger.Info("open-loop run done", "sent", r.Sent, "acked", r.Acked, "answered", r.Answered, "lost", r.Lost)
	return r, err
}

// newEngine builds the engine of o (valid, with defaults) and its players,
// not connected yet.
func newEngine(o OpenOptions) *engine {
	e := &engine{o: o, windowEnd: int64(o.Schedule.End()), endCh: make(chan struct{}),
		started: make(chan struct{}), aborted: make(chan struct{})}
	e.endAt.Store(int64(o.Schedule.End()))
	// check has vetted the secret and the ttl.
	e.minter, _ = auth.NewMinter(o.Secret, o.TokenTTL)
	for i := range e.hs {
		e.hs[i].ack, e.hs[i].update = newSecondHist(), newSecondHist()
	}
	nShards := min(4, o.Players)
	for i := range nShards {
		e.shards = append(e.shards, newSender(e, i))
	}
	e.players = make([]*oplayer, o.Players)
	for i := range e.players {
		idx := o.FirstPlayer + i
		p := &oplayer{idx: idx, local: i, sh: e.shards[i%nShards], nextSeq: 1}
		p.w = *newWalker(o.Graph, o.Seed, idx)
		e.players[i] = p
	}

	for _, p := range e.players {
		p.due = o.Schedule.At(o.Seed, p.idx, 0, 0)
		if p.due != noMore {
			e.remaining.Add(1)
		}
	}
	return e
}

// waitUntil sleeps until t; false when ctx ended or stop closed first.
func waitUntil(ctx context.Context, t time.Time, stop <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	return backoff.SleepOr(ctx, stop, d)
}

// next returns the time of player p's move k after prev, noMore past the
// (possibly early) end of the schedule.
func (e *engine) next(p *oplayer, k int, prev int64) int64 {
	t := e.o.Schedule.At(e.o.Seed, p.idx, k, prev)
	if t >= e.endAt.Load() {
		return noMore
	}
	return t
}

// ConnectTimeoutFor is the default OpenOptions.ConnectTimeout of a process
// connecting players: one minute plus 10 ms a player (2.5 minutes for
// 9,000), so that a loaded box connecting many players is not cut short
// while a hung one still fails.
func ConnectTimeoutFor(players int) time.Duration {
	return time.Minute + time.Duration(max(players, 0))*10*time.Millisecond
}

// abort ends a run that never started (connect or Connected failed):
// it closes every socket and waits for the readers. A no-op once started.
func (e *engine) abort() {
	e.startOnce.Do(func() {
		e.noMore.Do(func() { close(e.aborted) })
		e.stopping.Store(true)
		e.closeAll()
		e.readers.Wait()
	})
}

// startReaders starts p's two readers, once both its sockets are open.
func (e *engine) startReaders(p *oplayer) {
	e.readers.Add(2)
	go func() { defer e.readers.Done(); e.readIngest(p) }()
	go func() { defer e.readers.Done(); e.readPush(p) }()
}

// gate waits, before the first frame of a socket is handled, until the
// run started; false when it was aborted instead.
func (e *engine) gate() bool {
	select {
	case <-e.started:
		return true
	case <-e.aborted:
		return false
	}
}

// closeAll closes every socket (idempotent: net.Conn.Close is).
func (e *engine) closeAll() {
	for _, p := range e.players {
		if p.ingest != nil {
			p.ingest.NetConn().Close()
		}
		if p.push != nil {
			p.push.NetConn().Close()
		}
	}
}

// kill ends player p after a socket failure.
func (e *engine) kill(p *oplayer) {
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return
	}
	p.dead = true
	if p.due != noMore {
		e.remaining.Add(-1)
	}
	p.unsettle(e)
	p.mu.Unlock()
	e.countErr(errClosed)
	p.ingest.NetConn().Close()
	p.push.NetConn().Close()
	e.o.Logger.Debug("player socket dropped", "player", p.idx)
}

func (e *engine) readIngest(p *oplayer) {
	e.readSocket(p.ingest, true, func() { e.kill(p) }, p.answer)
}

func (e *engine) readPush(p *oplayer) {
	e.readSocket(p.push, true, func() { e.kill(p) }, p.update)
}

// readSocket reads ws until it fails, handing each message to handle;
// dropped is called on a failure unless the run is stopping. If gated,
// the first frame waits for the gate (engine.gate) and none is handled
// if it stays shut.
func (e *engine) readSocket(ws *websocket.Conn, gated bool, dropped func(), handle func(e *engine, m msg, ok bool, now int64)) {
	buf := make([]byte, 0, 512)
	for open := !gated; ; {
		var err error
		buf, err = readFrame(ws, buf)
		if err != nil {
			if !e.stopping.Load() {
				dropped()
			}
			return
		}
		if !open {
			if open = e.gate(); !open {
				return
			}
		}
		now := e.now()
		eachLine(buf, func(line []byte) {
			m, ok := parseMsg(line)
			handle(e, m, ok, now)
		})
	}
}

// connect opens every player's push then ingest socket, 64 at a time,
// and starts reading both as soon as they are open (see engine.readers).
func (e *engine) connect(ctx context.Context) error {
	o := e.o
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if o.LocalAddr != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.LocalAddr)}
		nd.Control = bindNoPort
	}
	token := func(_ int, p *oplayer) (string, error) {
		return e.minter.Token(o.PlayerPrefix+strconv.Itoa(p.idx), "")
	}
	return e.connectWith(ctx, nd, true, token, e.startReaders)
}

// connectWith opens every player's push socket, then its ingest socket
// if withIngest, 64 players at a time, through nd and with the token
// token(i, e.players[i]) gives; it calls opened (if not nil) once a
// player's sockets are open. Failed dials are retried (engine.dial)
// until o.ConnectTimeout.
func (e *engine) connectWith(ctx context.Context, nd *net.Dialer, withIngest bool,
	token func(i int, p *oplayer) (string, error), opened func(p *oplayer)) error {
	o := e.o
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	dialer := &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &bufferPool{},
	}
	var ingest []string
	if withIngest {
		ingest = make([]string, len(o.Ingest))
		for i, u := range o.Ingest {
			x, _ := wsURL(u, "/v1/moves/ws")
			ingest[i] = x.String()
		}
	}
	push := make([]string, len(o.Push))
	for i, u := range o.Push {
		x, _ := wsURL(u, "/v1/updates/ws")
		push[i] = x.String()
	}
	pushQuery := "&after=0"
	if !o.PushLeaderboard {
		pushQuery += "&leaderboard=off"
	}
	var next, connected atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for range min(64, o.Players) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(e.players) {
					return
				}
				p := e.players[i]
				tok, err := token(i, p)
				if err == nil {
					tok = url.QueryEscape(tok)
					p.push, err = e.dial(ctx, dialer, push[p.idx%len(push)]+"?token="+tok+pushQuery)
				}
				if err == nil && withIngest {
					p.ingest, err = e.dial(ctx, dialer, ingest[p.idx%len(ingest)]+"?token="+tok)
				}
				if err != nil {
					if ctx.Err() == nil { // else: reported below
						once.Do(func() { firstErr = err; cancel() })
					}
					return
				}
				if opened != nil {
					opened(p)
				}
				connected.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for wait := true; wait; {
		select {
		case <-done:
			wait = false
		case <-tick.C:
			if o.Progress != nil {
				o.Progress(int(connected.Load()))
			}
		}
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("connecting %d players: %w (%d connected; the connect timeout is %v)", o.Players, context.Cause(ctx), connected.Load(), o.ConnectTimeout)
	}
	if firstErr != nil {
		return fmt.Errorf("loadgen: %w", firstErr)
	}
	if o.Progress != nil {
		o.Progress(o.Players)
	}
	return nil
}

// totals adds the engine's counts, each player's settlement (Lost) and
// the socket errors to r, the reporter's total, once the readers are done.
func (e *engine) totals(r *Result) {
	r.Sent, r.Retries, r.Acked = e.sent.Load(), e.retries.Load(), e.acked.Load()
	r.Rejected, r.Answered = e.rejected.Load(), e.answered.Load()
	r.LostNoUpdate = e.lostNoUpdate.Load()
	r.Duplicated, r.OutOfOrder, r.Unexpected = e.duplicated.Load(), e.outOfOrder.Load(), e.unexpected.Load()
	r.SentInWindow, r.Reordered = e.inWindow.Load(), e.reordered.Load()
	for _, p := range e.players {
		p.settle(e, r)
	}
	r.Lost = r.LostUnanswered + r.LostNoUpdate
	for i := range e.errs {
		if n := e.errs[i].Load(); n > 0 {
			r.Errors[errNames[i]] = n
		}
	}
}

// dial opens one socket, retrying failures other than a 4xx answer with
// backoff until ctx ends.
func (e *engine) dial(ctx context.Context, d *websocket.Dialer, u string) (*websocket.Conn, error) {
	retry := backoff.Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		ws, resp, err := d.DialContext(ctx, u, nil)
		if err == nil {
			ws.SetReadLimit(maxFrame)
			return ws, nil
		}
		e.countErr(errDial)
		if resp != nil && resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			return nil, fmt.Errorf("%s refused the socket: %s (is the secret the services' TREASURE_JWT_SECRET, and the URL right?)", redact(u), resp.Status)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", redact(u), err)
		}
		e.o.Logger.Debug("dial failed", "url", redact(u), "err", err)
		if !retry.Wait(ctx) {
			return nil, fmt.Errorf("%s: %w", redact(u), err)
		}
	}
}

// reporter folds the run into Seconds, one per second since t0.
type reporter struct {
	e     *engine
	total *Result
	last  struct {
		sent, acked, answered, errs uint64
	}
}

func (r *reporter) run(stop <-chan struct{}, report func(Second)) {
	e := r.e
	t := time.NewTimer(time.Until(e.t0.Add(time.Second)))
	defer t.Stop()
	for sec := 0; ; sec++ {
		select {
		case <-stop:
			r.second(sec, report)
			return
		case <-t.C:
			r.second(sec, report)
			t.Reset(time.Until(e.t0.Add(time.Duration(sec+2) * time.Second)))
		}
	}
}

// second closes second sec.
func (r *reporter) second(sec int, report func(Second)) {
	e, tot := r.e, r.total
	s := Second{Index: sec, Ack: newSecondHist(), Update: newSecondHist()}
	for i := range e.hs {
		h := &e.hs[i]
		h.mu.Lock()
		s.Ack.Merge(h.ack)
		s.Update.Merge(h.update)
		h.ack.Reset()
		h.update.Reset()
		h.mu.Unlock()
	}
	tot.Ack.Merge(s.Ack)
	tot.Update.Merge(s.Update)
	sent, acked, answered := e.sent.Load(), e.acked.Load(), e.answered.Load()
	var errs uint64
	for i := range e.errs {
		errs += e.errs[i].Load()
	}
	errs -= e.errs[errIndex([]byte(errDial))].Load() // dials happen before t0
	s.Sent, s.Acked, s.Answered, s.Errors = sent-r.last.sent, acked-r.last.acked, answered-r.last.answered, errs-r.last.errs
	r.last.sent, r.last.acked, r.last.answered, r.last.errs = sent, acked, answered, errs
	s.Outstanding, s.InFlight = e.outstanding.Load(), e.inFlight.Load()
	s.Offered = e.o.Schedule.offered(e.o.Seed, e.o.FirstPlayer, e.o.Players, sec)
	tot.OutstandingPeak = max(tot.OutstandingPeak, s.Outstanding)
	tot.Seconds = append(tot.Seconds, s)
	if report != nil {
		report(s)
	}
}
