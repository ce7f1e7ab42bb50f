package loadgen

// # The HTTP burst (RunHTTP)
//
// RunHTTP sends the players' moves as POST /v1/moves requests (one move
// object per request, Authorization: Bearer <the player's token>) through
// vegeta's Attacker at a constant total rate (vegeta.Rate) for a duration,
// while every player holds its push socket open, and counts everything in
// the open-loop engine's accounting (open.go): the same oplayer, answer,
// update, resync and settle code, the same Result.
//
//	type HTTPOptions struct { OpenOptions; Rate int; Duration, Timeout time.Duration }
//	type HTTPResult struct { *Result; Requests uint64; StatusCodes map[string]int;
//	    Vegeta *vegeta.Metrics; StartLag *hdr.Histogram }
//	func RunHTTP(ctx, HTTPOptions, report func(Second)) (*HTTPResult, error)
//	func (*HTTPResult) Extra() map[string]any   // for Summary.Extra
//
// # Schedule
//
// vegeta's pacer owns the schedule: hit n (from 0) is due (n+1)/Rate after
// the attack began. vegeta's Result.Timestamp is not that time but the
// instant a worker started the hit, which is later when vegeta falls behind
// (a sleeping pacer, a worker to spawn, a busy CPU). So every latency here —
// the ack (the HTTP answer) and the proximity update — runs from the
// scheduled time of the tick that produced the move: the targeter's n-th
// call (in the order calls reach it) takes t0 + (n+1)/Rate, t0 taken just
// before vegeta's start. The n-th call comes after at least n+1 ticks were
// handed out, so after tick n's due time: the schedule is never later than
// the send. StartLag records how late the targeter ran after it (vegeta's
// own lag, plus any wait for a free player).
//
// # Players
//
// A player has at most one request in flight: two requests of one player
// on two connections could reach ingest in either order and be rejected
// (stale_seq, discontinuous) for the client's fault, where the socket
// keeps them in order. So each tick takes the next free player, first in
// first out: one not waiting for an answer, not blocked by an error, whose
// next move's slot is free. With P players, a total rate R and answers in
// L seconds a player is free as long as R×L is well under P; when none is,
// the tick waits for one (the open loop holds: its latencies still run from
// the tick's schedule, and StartLag shows the wait). Keep R/P under
// ingest's per-player limit (20 moves/s by default).
//
// Moves are built as the engine builds them: seq+1 each, the first a
// spawn, each path continuing from the end of the previous one sent.
//
// # Answers and errors
//
// The answer's body is the ack or the error object (docs/protocol.md,
// POST /v1/moves), read as a socket line is, and handed to the engine's
// answer: acks, rate_limited/unavailable resends after retry_after_ms
// (same seq and path: Retries), other errors dropped (Rejected) with a
// resynchronisation from the last acked node, all counted by code. A
// resend is posted by this package with the same client when its wait is
// over, not on one of vegeta's ticks: the ticks pace new moves (Sent), as
// a player's schedule does over the socket, and a resend must not wait
// for a tick that may never come (the attack over). An
// error object whose seq is 0 (a 503 while ingest starts or cannot read
// the player's state, a 401) answers the request's own move. An answer
// whose status disagrees with its body (an ack without 202, an error with
// it) also counts "bad_status".
//
// A request that gets no HTTP answer (a transport error or no answer within
// Timeout: "http" in Errors), or an answer that is not an ack or error
// object ("bad_message"), ends its player for the run as a dropped socket
// does: its unsettled moves count as lost. A tick that finds no player
// until the end of the drain (or after every player ended) sends nothing
// and counts Unsent.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// HTTPOptions are an HTTP burst's settings. Of the embedded OpenOptions,
// Schedule is ignored (vegeta paces: Rate and Duration); Ingest holds the
// ingest services' ws:// base URLs as for the other scenarios, player j
// posting to the same host's http://…/v1/moves of Ingest[j%n].
type HTTPOptions struct {
	OpenOptions
	// Rate is the total number of moves (requests) per second:
	// vegeta.Rate{Freq: Rate, Per: time.Second}.
	Rate int
	// Duration is how long vegeta attacks.
	Duration time.Duration
	// Timeout bounds one request, answer included; default 10s.
	Timeout time.Duration
}

// HTTPResult is RunHTTP's measure: the engine's Result and what vegeta
// saw.
type HTTPResult struct {
	*Result
	// Requests counts requests sent (Sent + Retries).
	Requests uint64
	// StatusCodes counts answers by HTTP status ("0": no answer),
	// resends included.
	StatusCodes map[string]int
	// Vegeta is vegeta's own summary of its hits (the first send of each
	// move; resends are not vegeta's): latency from each hit's start
	// (Result.Timestamp, taken before the targeter runs, so a wait for a
	// free player is in it) to its answer, as vegeta reports it — not
	// from the schedule.
	Vegeta *vegeta.Metrics
	// StartLag holds, in µs, how late after its scheduled time each
	// move was handed to vegeta.
	StartLag *hdr.Histogram
}

// Extra returns the figures a Summary does not hold, for Summary.Extra.
func (r *HTTPResult) Extra() map[string]any {
	x := map[string]any{
		"requests":          r.Requests,
		"status_codes":      r.StatusCodes,
		"start_lag_p99_ms":  quantileMs(r.StartLag, 99),
		"start_lag_max_ms":  maxMs(r.StartLag),
		"vegeta_p50_ms":     0.0,
		"vegeta_p99_ms":     0.0,
		"vegeta_success":    0.0,
		"vegeta_throughput": 0.0,
	}
	if v := r.Vegeta; v != nil {
		x["vegeta_p50_ms"] = float64(v.Latencies.P50.Microseconds()) / 1000
		x["vegeta_p99_ms"] = float64(v.Latencies.P99.Microseconds()) / 1000
		x["vegeta_success"] = v.Success
		x["vegeta_throughput"] = v.Throughput
	}
	return x
}

// Client-side error names of the HTTP burst (besides the engine's).
const (
	errHTTP      = "http"
	errBadStatus = "bad_status"
)

// errNoPlayer is the targeter's answer to a tick that found no player.
var errNoPlayer = errors.New("loadgen: no player free to send")

// httpRun is one RunHTTP.
type httpRun struct {
	e        *engine
	o        HTTPOptions
	interval int64 // ns between ticks
	moveURL  []string
	header   []atomic.Pointer[authHeader] // per player: headerFor

	ticks   atomic.Uint64
	unsent  atomic.Uint64
	alive   atomic.Int64
	free    chan int32
	inQueue []atomic.Bool
	quit    chan struct{}
	quitMu  sync.Once

	mu       sync.Mutex
	lag      *hdr.Histogram
	errs     map[string]uint64
	codes    map[string]int
	timers   []*time.Timer
	resends  sync.WaitGroup
	client   *http.Client
	stopped  bool
	firstErr string
}

// RunHTTP runs an HTTP burst (see the comment at the top of this file):
// it connects every player's push socket, attacks POST /v1/moves for
// o.Duration at o.Rate, waits up to o.Drain after that for the answers and
// updates still due, closes everything and returns the measure. report is
// as for RunOpen. Errors are as RunOpen's; when ctx ends it stops the
// attack, skips the drain and returns what it measured with ctx's error.
// It leaves no goroutine or connection behind.
func RunHTTP(ctx context.Context, o HTTPOptions, report func(Second)) (*HTTPResult, error) {
	if o.Rate < 1 || o.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: http: rate (%d/s) and duration (%v) must be positive", o.Rate, o.Duration)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	oo := o.OpenOptions
	oo.Schedule = Schedule{Rate: float64(o.Rate) / float64(max(oo.Players, 1)), Duration: o.Duration}
	if err := oo.check(); err != nil {
		return nil, fmt.Errorf("loadgen: http: %w", err)
	}
	oo.setDefaults("http-", 2*time.Minute)
	o.OpenOptions = oo

	e := newEngine(oo)
	e.remaining.Store(0)
	for _, p := range e.players {
		p.due = noMore // vegeta paces, not the players' schedules
	}
	h := &httpRun{
		e: e, o: o, interval: int64(time.Second) / int64(o.Rate),
		free: make(chan int32, oo.Players), inQueue: make([]atomic.Bool, oo.Players),
		quit: make(chan struct{}), lag: newSecondHist(), errs: map[string]uint64{}, codes: map[string]int{},
	}
	for _, u := range oo.Ingest {
		x, _ := wsURL(u, "/v1/moves") // checked
		x.Scheme = strings.Replace(x.Scheme, "ws", "http", 1)
		h.moveURL = append(h.moveURL, x.String())
	}
	h.header = make([]atomic.Pointer[authHeader], oo.Players)
	for i := range e.players {
		if _, err := h.headerFor(i); err != nil {
			return nil, fmt.Errorf("loadgen: http: %w", err)
		}
	}
	h.alive.Store(int64(oo.Players))
	defer e.closeAll()
	if err := h.connect(ctx); err != nil {
		return nil, err
	}
	if oo.Connected != nil {
		t, err := oo.Connected(ctx)
		if err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
		if !waitUntil(ctx, t, nil) {
			return nil, fmt.Errorf("loadgen: %w", ctx.Err())
		}
	}

	tr := &http.Transport{
		DialContext:         h.dialer().DialContext,
		MaxIdleConnsPerHost: 10_000,
		IdleConnTimeout:     30 * time.Second,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	h.client = client
	atk := vegeta.NewAttacker(vegeta.Client(client), vegeta.MaxBody(64<<10))

	// Go: t0 just before vegeta's own start.
	e.t0 = time.Now()
	oo.Logger.Info("http burst starting", "players", oo.Players, "rate", o.Rate, "duration", o.Duration)
	var wg sync.WaitGroup
	for _, p := range e.players {
		wg.Add(1)
		go func() { defer wg.Done(); h.readPush(p) }()
		h.push(p.local)
	}
	stopWake := make(chan struct{})
	var wakers sync.WaitGroup
	for _, sh := range e.shards {
		wakers.Add(1)
		go func() { defer wakers.Done(); h.relay(sh, stopWake) }()
	}
	stopReporter := make(chan struct{})
	reporterDone := make(chan struct{})
	rep := &reporter{e: e, total: newResult(oo.Players)}
	go func() { defer close(reporterDone); rep.run(stopReporter, report) }()

	end := e.t0.Add(o.Duration)
	// The ticks still waiting for a player give up at the end of the
	// drain, or when ctx ends or Stop closes.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		t := time.NewTimer(time.Until(end.Add(oo.Drain)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-oo.Stop:
		case <-h.quit:
			return
		}
		atk.Stop()
		h.giveUp()
	}()

	metrics := &vegeta.Metrics{}
	for res := range atk.Attack(h.target, vegeta.Rate{Freq: o.Rate, Per: time.Second}, o.Duration, "treasure-http") {
		h.handle(res, metrics)
	}
	metrics.Close()

	// The drain: every answer is in; wait for the updates still due.
	drained := time.Duration(-1)
	if ctx.Err() == nil {
		deadline := end.Add(oo.Drain)
		tick := time.NewTicker(5 * time.Millisecond)
		for ctx.Err() == nil {
			if e.inFlight.Load() == 0 {
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
		}
		tick.Stop()
	}
	h.giveUp()
	<-watchDone
	h.mu.Lock()
	h.stopped = true
	for _, t := range h.timers {
		t.Stop()
	}
	h.mu.Unlock()
	h.resends.Wait()
	e.stopping.Store(true)
	e.closeAll()
	wg.Wait()
	close(stopWake)
	wakers.Wait()
	close(stopReporter)
	<-reporterDone

	// The totals, as RunOpen makes them.
	r := rep.total
	e.totals(r)
	r.Unsent += h.unsent.Load()
	h.mu.Lock()
	for k, n := range h.errs {
		r.Errors[k] += n
	}
	if h.firstErr != "" {
		oo.Logger.Warn("requests without an answer", "first", h.firstErr, "count", h.errs[errHTTP])
	}
	h.mu.Unlock()
	if drained >= 0 {
		r.DrainS = drained.Seconds()
	} else {
		r.DrainS = max(time.Since(end), 0).Seconds()
	}
	r.ElapsedS = time.Since(e.t0).Seconds()
	r.Start = e.t0
	oo.Logger.Info("http burst done", "sent", r.Sent, "acked", r.Acked, "answered", r.Answered, "lost", r.Lost)
	return &HTTPResult{Result: r, Requests: r.Sent + r.Retries, StatusCodes: h.codes, Vegeta: metrics, StartLag: h.lag}, ctx.Err()
}

func (h *httpRun) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if h.o.LocalAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(h.o.LocalAddr)}
	}
	return d
}

// giveUp releases the ticks waiting for a player (idempotent).
func (h *httpRun) giveUp() { h.quitMu.Do(func() { close(h.quit) }) }

// push queues player local as possibly free (at most once in the queue).
func (h *httpRun) push(local int) {
	if !h.inQueue[local].Swap(true) {
		h.free <- int32(local) // never blocks: each player is queued at most once
	}
}

// relay turns the engine's wake-ups of sender sh (a player whose next
// slot was freed, or that resynchronised) into pushes.
func (h *httpRun) relay(sh *sender, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-sh.wakeCh:
		}
		sh.mu.Lock()
		woken := sh.woken
		sh.woken, sh.spare = sh.spare[:0], woken
		sh.mu.Unlock()
		for _, i := range woken {
			h.push(int(i))
		}
	}
}

// target is the vegeta.Targeter: the tick's move, from the first free
// player (see "Players" above), waiting for one if need be.
func (h *httpRun) target(t *vegeta.Target) error {
	e := h.e
	sched := int64(h.ticks.Add(1)) * h.interval
	for {
		var local int32
		select {
		case local = <-h.free:
		case <-h.quit:
			h.unsent.Add(1)
			return errNoPlayer
		}
		h.inQueue[local].Store(false)
		p := e.players[local]
		now := e.now()
		body, seq, ok := h.take(p, now, sched)
		if !ok {
			continue // not free after all: whatever frees it queues it again
		}
		h.mu.Lock()
		h.lag.RecordValue(toMicros(now - sched))
		h.mu.Unlock()
		t.Method = http.MethodPost
		t.URL = h.moveURL[p.idx%len(h.moveURL)] + "#" + strconv.Itoa(p.local) + "." + strconv.FormatUint(seq, 10)
		t.Header, _ = h.headerFor(int(local)) // signed once at the start: no error
		t.Body = body
		return nil
	}
}

// take builds player p's next new move at now for a tick scheduled at
// sched, as oplayer.fill builds them. It reports false when p is not free.
func (h *httpRun) take(p *oplayer, now, sched int64) ([]byte, uint64, bool) {
	e := h.e
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead || p.awaiting > 0 || p.resend {
		return nil, 0, false
	}
	if p.blocked {
		return nil, 0, false
	}
	seq, path, ok := p.take(e, now, sched)
	if !ok {
		return nil, 0, false
	}
	return appendMoveIdx(nil, seq, path), seq, true
}

// takeResend builds the request of player p's next move waiting to be
// sent again (as oplayer.fill does); false when there is none.
func (h *httpRun) takeResend(p *oplayer) ([]byte, uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead || !p.resend {
		return nil, 0, false
	}
	var s *oslot
	more := false
	for seq := p.lowSeq(); seq < p.nextSeq; seq++ {
		x := p.slot(seq)
		if x.seq != seq || x.state != stResend {
			continue
		}
		if s != nil {
			more = true
			break
		}
		s = x
	}
	if !more {
		p.resend, p.blocked = false, false
	}
	if s == nil {
		return nil, 0, false
	}
	s.state = stAwait
	p.awaiting++
	h.e.retries.Add(1)
	return appendMoveIdx(nil, s.seq, s.path[:s.plen]), s.seq, true
}

// resend posts player local's move waiting to be sent again, outside
// vegeta's ticks (they pace new moves only), and handles its answer.
func (h *httpRun) resend(client *http.Client, local int) {
	p := h.e.players[local]
	body, seq, ok := h.takeResend(p)
	if !ok {
		return
	}
	u := h.moveURL[p.idx%len(h.moveURL)] + "#" + strconv.Itoa(local) + "." + strconv.FormatUint(seq, 10)
	res := vegeta.Result{URL: u, Method: http.MethodPost, Timestamp: time.Now()}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err == nil {
		hd, _ := h.headerFor(local)
		req.Header = hd.Clone()
		var resp *http.Response
		if resp, err = client.Do(req); err == nil {
			res.Code = uint16(resp.StatusCode)
			res.Body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if err != nil {
				res.Code = 0
			}
		}
	}
	res.Latency = time.Since(res.Timestamp)
	if err != nil {
		res.Error = err.Error()
	}
	h.handle(&res, nil)
}

// handle accounts one answer (a vegeta result, or a resend's): the answer
// to one move. metrics, if not nil, gets res.
func (h *httpRun) handle(res *vegeta.Result, metrics *vegeta.Metrics) {
	e := h.e
	if res.Error == errNoPlayer.Error() && res.URL == "" {
		return // counted Unsent
	}
	if metrics != nil {
		metrics.Add(res)
	}
	h.mu.Lock()
	h.codes[strconv.Itoa(int(res.Code))]++
	h.mu.Unlock()
	local, seq, ok := fragment(res.URL, len(e.players))
	if !ok {
		h.count(errBadMessage)
		return
	}
	p := e.players[local]
	now := int64(res.End().Sub(e.t0))
	if res.Code == 0 {
		h.mu.Lock()
		if h.firstErr == "" {
			h.firstErr = res.Error
		}
		h.mu.Unlock()
		h.kill(p, errHTTP)
		return
	}
	m, ok := parseMsg(bytes.TrimSpace(res.Body))
	if !ok || (m.kind != kindAck && m.kind != kindError) {
		h.kill(p, errBadMessage)
		return
	}
	if m.kind == kindError && m.seq == 0 {
		m.seq, m.hasSeq = seq, true // the request's move
	}
	if (m.kind == kindAck) != (res.Code == http.StatusAccepted) {
		h.count(errBadStatus)
	}
	p.answer(e, m, true, now)

	p.mu.Lock()
	resend, at, dead := p.resend, p.resendAt, p.dead
	p.mu.Unlock()
	if dead {
		return
	}
	if !resend {
		h.push(local)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	h.timers = append(h.timers, time.AfterFunc(max(time.Duration(at-e.now()), 0), func() {
		h.mu.Lock()
		if h.stopped {
			h.mu.Unlock()
			return
		}
		h.resends.Add(1)
		h.mu.Unlock()
		defer h.resends.Done()
		h.resend(h.client, local)
	}))
}

// fragment reads "…#local.seq" back from a target's URL.
func fragment(u string, players int) (int, uint64, bool) {
	i := strings.LastIndexByte(u, '#')
	if i < 0 {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(u[i+1:], ".")
	if !ok {
		return 0, 0, false
	}
	local, err1 := strconv.Atoi(a)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || local < 0 || local >= players {
		return 0, 0, false
	}
	return local, seq, true
}

func (h *httpRun) count(name string) {
	h.mu.Lock()
	h.errs[name]++
	h.mu.Unlock()
}

// kill ends player p for the run, as engine.kill does for a dropped
// socket: its unsettled moves stop holding up the drain (settle counts
// them lost). name is the error counted, "" for none.
func (h *httpRun) kill(p *oplayer, name string) {
	e := h.e
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return
	}
	p.dead = true
	p.unsettle(e)
	p.mu.Unlock()
	if name != "" {
		h.count(name)
	}
	if p.push != nil {
		p.push.NetConn().Close()
	}
	if h.alive.Add(-1) == 0 {
		h.giveUp()
	}
	e.o.Logger.Debug("player ended", "player", p.idx, "why", name)
}

// readPush reads player p's push socket (engine.readPush, for a player
// without ingest socket, read only once the run starts).
func (h *httpRun) readPush(p *oplayer) {
	h.e.readSocket(p.push, false, func() { h.kill(p, errClosed) }, p.update)
}

// authHeader is a player's request header and the token it carries.
type authHeader struct {
	tok string
	h   http.Header
}

// headerFor returns the request header of player local, with a token
// valid for at least half the token ttl: a new header once the engine's
// Minter renews the token, the same one (shared, read-only) until then.
func (h *httpRun) headerFor(local int) (http.Header, error) {
	o := h.e.o
	tok, err := h.e.minter.Token(o.PlayerPrefix+strconv.Itoa(h.e.players[local].idx), "")
	if err != nil {
		return nil, err
	}
	if a := h.header[local].Load(); a != nil && a.tok == tok {
		return a.h, nil
	}
	a := &authHeader{tok: tok, h: http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}}
	h.header[local].Store(a)
	return a.h, nil
}

// connect opens every player's push socket, 64 at a time (engine.connect
// without the ingest sockets), with the token of its Authorization header.
func (h *httpRun) connect(ctx context.Context) error {
	token := func(i int, _ *oplayer) (string, error) {
		hd, err := h.headerFor(i)
		return strings.TrimPrefix(hd.Get("Authorization"), "Bearer "), err
	}
	return h.e.connectWith(ctx, h.dialer(), false, token, nil)
}
