package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/backoff"
	"treasure/internal/graph"
)

// ringSize is how many sent moves a player tracks while their updates are
// due. A player has one move in flight, so the ring overflows only when
// updates lag more than ringSize moves behind the acks.
const ringSize = 32

// maxResyncs is how many stale_seq/discontinuous answers in a row a player
// takes before it gives up.
const maxResyncs = 64

// maxFrame bounds a frame the load generator reads.
const maxFrame = 1 << 20

// player is one simulated player: the ingest goroutine (moves) and the push
// goroutine (updates) share it.
type player struct {
	r      *run
	idx    int
	id     string        // the player id, the tokens' sub
	pushUp chan struct{} // closed once the push socket first opened

	mu   sync.Mutex
	ring [ringSize]slot // moves sent, waiting for their update
	// The latest proximity update's seq and node (wire id), for
	// resynchronising after discontinuous.
	pushSeq, pushNode uint64
}

// slot is a sent move waiting for its update: seq 0 is empty.
type slot struct {
	seq  uint64
	sent int64 // monotonic nanoseconds since the run's start
}

// now returns monotonic nanoseconds since the run started.
func (r *run) now() int64 { return int64(time.Since(r.c.start)) }

// sent records that move seq was written at t. A first send starts
// waiting for the move's update; a resend of the same seq only moves its
// start, and only while the update is still due (it may have arrived
// before a resend that follows a lost ack).
func (p *player) sent(seq uint64, t int64, first bool) {
	p.mu.Lock()
	s := &p.ring[seq%ringSize]
	switch {
	case s.seq == seq:
		s.sent = t
	case !first:
	default:
		if s.seq == 0 {
			p.r.c.pending.Add(1)
		} else { // an older move whose update never came: its sample is lost
			p.r.c.lost.Add(1)
		}
		*s = slot{seq: seq, sent: t}
	}
	p.mu.Unlock()
}

// forget removes move seq, rejected: no update will come.
func (p *player) forget(seq uint64) {
	p.mu.Lock()
	if s := &p.ring[seq%ringSize]; s.seq == seq {
		*s = slot{}
		p.r.c.pending.Add(-1)
	}
	p.mu.Unlock()
}

// updated takes move seq's slot on its proximity update at t (whose node
// is node) and returns its latency.
func (p *player) updated(seq, node uint64, t int64) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq > p.pushSeq {
		p.pushSeq, p.pushNode = seq, node
	}
	s := &p.ring[seq%ringSize]
	if s.seq != seq {
		return 0, false
	}
	d := time.Duration(t - s.sent)
	*s = slot{}
	p.r.c.pending.Add(-1)
	return d, true
}

// lastPushed returns the node (wire id) of the latest proximity update.
func (p *player) lastPushed() (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pushNode, p.pushSeq > 0
}

// conn is an open socket: closing it releases its context hook and its
// place in the open-socket gauge.
type conn struct {
	*websocket.Conn
	unhook func() bool
	gauge  *atomic.Int64
}

// close sends a normal close frame when polite, then closes.
func (c *conn) close(polite bool) {
	c.unhook()
	if polite {
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(100*time.Millisecond))
	}
	c.Conn.Close()
	c.gauge.Add(-1)
}

// dial opens a socket at u, retrying with backoff while the service cannot
// be reached or answers 5xx or 429. It returns nil when ctx ends, when
// stop (if not nil) is closed, or on a fatal answer (any other HTTP
// status: a wrong secret or URL), which it reports to Run. The socket is
// closed when ctx ends.
func (p *player) dial(ctx context.Context, stop <-chan struct{}, u string, gauge *atomic.Int64) *conn {
	r := p.r
	retry := backoff.Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second, Jitter: true}
	for {
		select {
		case r.dialSem <- struct{}{}:
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		}
		ws, resp, err := r.dialer.DialContext(ctx, u, nil)
		<-r.dialSem
		if err == nil {
			ws.SetReadLimit(maxFrame)
			gauge.Add(1)
			r.c.everUp.Add(1)
			c := &conn{Conn: ws, gauge: gauge}
			c.unhook = context.AfterFunc(ctx, func() {
				ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(100*time.Millisecond))
				ws.Close()
			})
			return c
		}
		if ctx.Err() != nil {
			return nil
		}
		if resp != nil && resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			r.fail(fmt.Errorf("loadgen: %s refused the socket: %s (is the secret the services' TREASURE_JWT_SECRET, and the URL right?)", redact(u), resp.Status))
			return nil
		}
		if resp != nil {
			err = fmt.Errorf("%w: %s", err, resp.Status)
		}
		r.mu.Lock()
		r.dialErr = fmt.Errorf("%s: %w", redact(u), err)
		r.mu.Unlock()
		r.c.countErr(iDial)
		r.o.Logger.Debug("dial failed", "url", redact(u), "err", err)
		if !backoff.SleepOr(ctx, stop, retry.Next()) {
			return nil
		}
	}
}

// token returns a query-escaped token of p valid for at least half the
// token ttl (auth.Minter): every dial, first or reconnect, takes a fresh
// one when the last is half-way to its expiry.
func (p *player) token() string {
	tok, err := p.r.minter.Token(p.id, "")
	if err != nil {
		return "" // not reached: Run signed p.id once before starting; the dial answers 401
	}
	return url.QueryEscape(tok)
}

// redact cuts the query (the token) off a URL for messages.
func redact(u string) string {
	for i := 0; i < len(u); i++ {
		if u[i] == '?' {
			return u[:i]
		}
	}
	return u
}

// readFrame reads the next text frame of c into buf[:0].
func readFrame(c *websocket.Conn, buf []byte) ([]byte, error) {
	for {
		typ, rd, err := c.NextReader()
		if err != nil {
			return buf[:0], err
		}
		if typ != websocket.TextMessage {
			continue // SPEC frames are text; a binary one is not ours to read
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := rd.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return buf[:0], err
			}
		}
	}
}

// updates runs the push socket until ctx ends: it reads updates, checks
// their ids and measures latencies, and reopens the socket with
// ?after=<last id> when it drops.
func (p *player) updates(ctx context.Context) {
	r, c := p.r, p.r.c
	var (
		last  uint64 // the last update id read
		buf   = make([]byte, 0, 512)
		first = true
	)
	for {
		ws := p.dial(ctx, nil, r.push+"?token="+p.token()+"&after="+strconv.FormatUint(last, 10), &c.pushUp)
		if ws == nil {
			return
		}
		if first {
			close(p.pushUp)
			first = false
		}
		for {
			var err error
			buf, err = readFrame(ws.Conn, buf)
			if err != nil {
				ws.close(false)
				if ctx.Err() != nil {
					return
				}
				c.countErr(iClosed)
				c.reconnects.Add(1)
				r.o.Logger.Debug("push socket dropped", "player", p.idx, "after", last, "err", err)
				break
			}
			eachLine(buf, func(line []byte) { p.update(line, &last) })
		}
	}
}

// update handles one line of the push socket.
func (p *player) update(line []byte, last *uint64) {
	c := p.r.c
	m, ok := parseMsg(line)
	if !ok {
		c.countErr(iBadMessage)
		return
	}
	switch m.kind {
	case kindProximity, kindClaim, kindScore:
		if !m.hasID || m.id == 0 || (m.kind != kindScore && !m.hasSeq) {
			c.countErr(iBadMessage)
			return
		}
		if m.id <= *last {
			c.dups.Add(1)
			return
		}
		if m.id > *last+1 {
			c.gaps.Add(m.id - *last - 1)
		}
		*last = m.id
	case kindLeaderboard:
		c.boards.Add(1)
		return
	default:
		return
	}
	switch m.kind {
	case kindProximity:
		c.updates.Add(1)
		if d, ok := p.updated(m.seq, m.node, p.r.now()); ok {
			c.record(p.idx, d)
		} else {
			c.unmatched.Add(1)
		}
	case kindClaim:
		c.claims.Add(1)
	case kindScore:
		c.scores.Add(1)
	}
}

// answer is the outcome of one send.
type answer uint8

const (
	answerAck answer = iota
	answerRetry
	answerStale
	answerDiscontinuous
	answerRejected
)

// moves runs the ingest socket: it sends the player's moves at the
// player's rate until r.stop closes or ctx ends (see the package doc for
// how each answer is handled).
func (p *player) moves(ctx context.Context) {
	r := p.r
	select {
	case <-p.pushUp:
	case <-ctx.Done():
		return
	case <-r.stop:
		return
	}
	m := &mover{
		p:    p,
		w:    newWalker(r.o.Graph, r.o.Seed, p.idx),
		seq:  1,
		step: 1,
		path: make([]uint64, 0, maxPath),
		buf:  make([]byte, 0, 256),
	}
	defer func() {
		if m.ws != nil {
			m.ws.close(ctx.Err() == nil)
		}
	}()
	// Open the ingest socket before the pace starts, so that a slow
	// connect does not make the first moves catch up.
	if m.ws = p.dial(ctx, r.stop, r.ingest+"?token="+p.token(), &r.c.ingestUp); m.ws == nil {
		return
	}
	// Spread the players' first moves over one interval.
	next := time.Now().Add(time.Duration(rand.Int64N(int64(r.interval) + 1)))
	for {
		if !backoff.SleepOr(ctx, r.stop, time.Until(next)) {
			return
		}
		if !m.deliver(ctx) {
			return
		}
		next = next.Add(r.interval)
		if now := time.Now(); next.Before(now) {
			next = now // fell behind: no catching up in a burst
		}
	}
}

// mover is the ingest side of a player, owned by its moves goroutine.
type mover struct {
	p       *player
	w       *walker
	ws      *conn
	seq     uint64   // of the move to send
	step    uint64   // the next stale_seq jump
	path    []uint64 // the move to send; empty: make one
	spawned bool     // the spawn move has been answered
	resent  bool     // the move is sent again after its socket dropped
	resyncs int      // stale_seq/discontinuous answers in a row
	sends   int      // of the move with this seq
	frame   []byte
	buf     []byte
}

// deliver sends the player's next move until it is accepted or rejected
// for good. It reports false when the player must stop: ctx ended, r.stop
// closed while the move waited to be resent, a fatal dial answer, or a
// player that gave up resynchronising.
func (m *mover) deliver(ctx context.Context) bool {
	p, r, c := m.p, m.p.r, m.p.r.c
	if len(m.path) == 0 {
		if m.spawned {
			m.path = m.w.next(m.path)
		} else {
			m.path = m.w.spawn(m.path)
		}
	}
	for {
		if m.ws == nil {
			if m.ws = p.dial(ctx, r.stop, r.ingest+"?token="+p.token(), &c.ingestUp); m.ws == nil {
				p.forget(m.seq)
				return false
			}
		}
		m.frame = appendMove(m.frame[:0], m.seq, m.path)
		p.sent(m.seq, r.now(), m.sends == 0)
		m.sends++
		m.ws.SetWriteDeadline(time.Now().Add(r.o.AckTimeout))
		err := m.ws.WriteMessage(websocket.TextMessage, m.frame)
		c.sent.Add(1)
		var (
			a     answer
			retry time.Duration
			text  []byte
		)
		if err == nil {
			a, retry, text, m.buf, err = p.await(m.ws.Conn, m.seq, m.buf)
		}
		if err != nil {
			m.ws.close(false)
			m.ws = nil
			if ctx.Err() != nil {
				p.forget(m.seq)
				return false
			}
			if errors.Is(err, errNoAnswer) {
				c.countErr(iAckTimeout)
			} else {
				c.countErr(iClosed)
			}
			c.reconnects.Add(1)
			r.o.Logger.Debug("ingest socket dropped", "player", p.idx, "seq", m.seq, "err", err)
			m.resent = true
			continue
		}
		switch a {
		case answerAck:
			c.acked.Add(1)
			m.accepted()
			return true
		case answerRetry:
			if !backoff.SleepOr(ctx, r.stop, retry) {
				p.forget(m.seq)
				return false
			}
		case answerStale:
			if !m.resync() {
				return false
			}
			if m.resent {
				// The first send was accepted and its ack lost with the
				// socket: the move stands, and its update is still due.
				c.acked.Add(1)
				m.accepted()
				return true
			}
			p.forget(m.seq)
			m.seq += m.step
			m.step *= 2
			m.sends, m.resent = 0, false
		case answerDiscontinuous:
			p.forget(m.seq)
			if !m.resync() {
				return false
			}
			v, ok := p.serverNode(text)
			if !ok {
				p.giveUp(m.seq)
				return false
			}
			m.w.place(v)
			m.path = m.w.next(m.path[:0])
			m.spawned = true
			m.sends, m.resent = 0, false
		default: // rejected for good: drop the move, keep its seq
			p.forget(m.seq)
			m.spawned, m.resent = true, false
			m.path = m.path[:0]
			m.sends = 0
			return true
		}
	}
}

// accepted moves the player to the end of the move and readies the next.
func (m *mover) accepted() {
	m.w.accept(m.path)
	m.path = m.path[:0]
	m.seq++
	m.step = 1
	m.sends = 0
	m.spawned, m.resent, m.resyncs = true, false, 0
}

// resync counts a stale_seq/discontinuous answer; false: give up.
func (m *mover) resync() bool {
	m.p.r.c.resyncs.Add(1)
	if m.resyncs++; m.resyncs > maxResyncs {
		m.p.giveUp(m.seq)
		return false
	}
	return true
}

// giveUp stops a player that cannot resynchronise.
func (p *player) giveUp(seq uint64) {
	p.forget(seq)
	p.r.c.countErr(iDesync)
	p.r.o.Logger.Debug("player gave up resynchronising", "player", p.idx, "seq", seq)
}

// serverNode returns the node index the server has the player on, after a
// discontinuous answer with message text: the node the message names,
// else the node of the latest proximity update.
func (p *player) serverNode(text []byte) (uint32, bool) {
	n := p.r.o.Graph.NumNodes()
	if id, ok := nodeInMessage(text); ok {
		if v, ok := graph.Index(id, n); ok {
			return v, true
		}
	}
	if id, ok := p.lastPushed(); ok {
		if v, ok := graph.Index(id, n); ok {
			return v, true
		}
	}
	return 0, false
}

// errNoAnswer is await's error when no answer came within AckTimeout.
var errNoAnswer = errors.New("no answer in time")

// await reads the ingest socket until the answer for seq. It returns the
// answer, the retry delay (answerRetry), the error message (for
// discontinuous; it aliases the returned buffer) and the buffer to reuse.
// An error means the socket is unusable.
func (p *player) await(ws *websocket.Conn, seq uint64, buf []byte) (answer, time.Duration, []byte, []byte, error) {
	c := p.r.c
	ws.SetReadDeadline(time.Now().Add(p.r.o.AckTimeout))
	for {
		var err error
		buf, err = readFrame(ws, buf)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				err = errNoAnswer
			}
			return 0, 0, nil, buf, err
		}
		var (
			found bool
			a     answer
			retry time.Duration
			text  []byte
		)
		eachLine(buf, func(line []byte) {
			m, ok := parseMsg(line)
			if !ok {
				c.countErr(iBadMessage)
				return
			}
			if (m.kind != kindAck && m.kind != kindError) || !m.hasSeq || m.seq != seq || found {
				c.countErr(iUnexpected)
				return
			}
			found = true
			if m.kind == kindAck {
				a = answerAck
				return
			}
			c.countErr(errIndex(m.code))
			switch string(m.code) {
			case "rate_limited", "unavailable":
				a, retry = answerRetry, time.Duration(max(m.retryAfterMs, 1))*time.Millisecond
				if m.retryAfterMs == 0 {
					c.countErr(iNoRetry)
				}
			case "stale_seq":
				a = answerStale
			case "discontinuous":
				a, text = answerDiscontinuous, m.message
			default:
				a = answerRejected
			}
		})
		if found {
			return a, retry, text, buf, nil
		}
	}
}

// appendMove appends {"type":"move","seq":S,"path":[…]}.
func appendMove(dst []byte, seq uint64, path []uint64) []byte {
	dst = append(dst, `{"type":"move","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"path":[`...)
	for i, v := range path {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, v, 10)
	}
	return append(dst, "]}"...)
}
