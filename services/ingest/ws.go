package ingest

import (
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/game"
	"treasure/internal/wire"
)

// maxOutFrame is the size past which flush starts another frame.
const maxOutFrame = 16 << 10

// serveWS is GET /v1/moves/ws: a player's move socket.
//
// The token comes as ?token= or Authorization: Bearer; without a valid one
// the answer is 401 before any upgrade, with the error object
// {"type":"error","seq":0,"code":"unauthorized",…} as body. The player's
// state is read from Redis before the upgrade (503 when Redis fails).
//
// On the socket, each text frame holds one or more moves separated by
// "\n"; each move gets one reply, {"type":"ack","seq":S} or
// {"type":"error","seq":S,"code":C,"message":M[,"retry_after_ms":R]}, and
// replies go out in the order the moves came in, several per frame
// (newline-separated) when ready together. A binary frame is answered with
// one bad_request (seq 0). A frame over MaxFrame bytes closes the socket
// with close code 1009; nothing else the client sends does. While
// MaxQueue replies are outstanding, or the kernel holds as many of the
// socket's bytes as it will take, the socket is not read. The server
// pings every PingInterval and closes a socket that has been silent for
// about two of them (at least 15/16 of two), and one whose client has not
// taken its replies within WriteTimeout (no close frame then; the close
// is counted in treasure_ingest_slow_disconnects_total).
// On shutdown every socket is closed with code 1001 (going away).
func (in *Ingest) serveWS(w http.ResponseWriter, r *http.Request) {
	claims, ok := in.authenticate(w, r)
	if !ok {
		return
	}
	if !in.enter() {
		writeError(w, http.StatusServiceUnavailable, 0, game.CodeUnavailable, "ingest is not running", in.o.RetryAfter)
		return
	}
	defer in.leave()
	p, err := in.players.attach(r.Context(), claims.Subject)
	if err != nil {
		in.o.Log.Warn("player state unavailable", "err", err)
		writeError(w, http.StatusServiceUnavailable, 0, game.CodeUnavailable, "player state unavailable", in.o.RetryAfter)
		return
	}
	defer in.players.release(p)
	c := &wsConn{in: in, p: p, done: make(chan struct{}), out: newOutbox(in.o.MaxQueue)}
	ws, err := in.upgrader.Upgrade(hijacker{w, c.wrap}, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c.ws = ws
	// Armed once c.ping is set: pingNow uses it.
	c.ping = time.AfterFunc(time.Duration(math.MaxInt64), c.pingNow)
	c.ping.Reset(in.o.PingInterval)
	in.connMu.Lock()
	if in.closing {
		in.connMu.Unlock()
		c.goAway()
		c.sc.wait()
		return
	}
	in.conns[c] = struct{}{}
	in.connMu.Unlock()
	in.m.conns.Inc()
	in.addSocket(claims.Subject, c)
	c.readLoop()
	c.close()
	c.sc.wait()
	in.removeSocket(claims.Subject, c)
	in.connMu.Lock()
	delete(in.conns, c)
	in.connMu.Unlock()
	in.m.conns.Dec()
}

// sockets returns the number of sockets being served.
func (in *Ingest) sockets() int {
	in.connMu.Lock()
	defer in.connMu.Unlock()
	return len(in.conns)
}

// authenticate returns the claims of r's token, or answers 401 and
// reports false.
func (in *Ingest) authenticate(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	tok, ok := auth.FromRequest(r)
	if !ok {
		in.lm.noToken.Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="treasure"`)
		writeError(w, http.StatusUnauthorized, 0, game.CodeUnauthorized, "a token is required: Authorization: Bearer <token> or ?token=<token>", 0)
		return auth.Claims{}, false
	}
	claims, err := in.verifier.Verify(tok)
	if err != nil {
		in.lm.badToken.Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="treasure", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, 0, game.CodeUnauthorized, "invalid token", 0)
		return auth.Claims{}, false
	}
	return claims, true
}

// wsConn is one move socket. The handler's goroutine reads; replies are
// written by whoever makes them ready (flush): the reader for the replies
// it gives at once, the completer for acks and failures. Only one of them
// writes at a time (outbox.writing), the others leave their replies to it.
// Writes never wait for the client (sendConn); a ping timer pings.
type wsConn struct {
	in *Ingest
	ws *websocket.Conn
	sc *sendConn
	p  *player

	out       *outbox
	frame     []byte // the frame being written; owned by the outbox's writer
	ping      *time.Timer
	done      chan struct{} // closed by close
	closeOnce sync.Once
}

// wrap puts a sendConn under the socket, at the upgrade.
func (c *wsConn) wrap(nc net.Conn) net.Conn {
	in := c.in
	c.sc = newSendConn(nc, in.o.WriteTimeout, maxPendingBytes(in.o.MaxQueue),
		func() { signal(c.out.space) }, in.m.slow.Inc)
	c.out.blocked = c.sc.stalled
	return c.sc
}

// maxPendingBytes bounds what a socket keeps for a client that does not
// read: every outstanding reply (the socket is not read meanwhile) at the
// largest reply's size, plus room for control frames.
func maxPendingBytes(maxQueue int) int { return maxQueue*maxReply + 4<<10 }

// maxReply is more than the longest reply: an error with the longest
// message the package gives.
const maxReply = 256

// close ends the socket: the reader returns, the ping timer stops.
func (c *wsConn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.ping.Stop()
		_ = c.ws.Close()
	})
}

// goAway closes the socket with close code 1001, for a shutdown.
func (c *wsConn) goAway() {
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	c.close()
}

// pingNow pings the client and arms the next ping.
func (c *wsConn) pingNow() {
	select {
	case <-c.done:
		return
	default:
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.in.o.WriteTimeout)); err != nil {
		c.close()
		return
	}
	c.ping.Reset(c.in.o.PingInterval)
}

// deliver fills slot with r; see sink.
func (c *wsConn) deliver(slot uint64, r reply) bool { return c.out.deliver(slot, r) }

// flush writes the ready replies, several per frame, unless another
// goroutine is writing this socket's replies: that one writes these too.
// It never waits for the client (sendConn); a failed write closes the
// socket.
func (c *wsConn) flush() {
	o := c.out
	o.mu.Lock()
	if o.writing || !o.readyLocked() {
		o.mu.Unlock()
		return
	}
	o.writing = true
	for {
		var more bool
		c.frame, more = o.takeLocked(c.frame[:0])
		o.mu.Unlock()
		if len(c.frame) > 0 {
			if err := c.ws.WriteMessage(websocket.TextMessage, c.frame); err != nil {
				c.close()
			}
		}
		if cap(c.frame) > 4*maxOutFrame {
			c.frame = nil
		}
		o.mu.Lock()
		if o.dead || !more && !o.readyLocked() {
			break
		}
	}
	o.writing = false
	dead := o.dead
	o.mu.Unlock()
	if dead {
		c.close()
	}
}

// reserve takes the outbox's next slot for a move of the frame being
// read, first writing what is ready when the outbox is full.
func (c *wsConn) reserve() (uint64, bool) {
	if slot, ok := c.out.tryReserve(); ok {
		return slot, true
	}
	c.flush()
	return c.out.reserve(c.done)
}

func (c *wsConn) readLoop() {
	in := c.in
	silence := 2 * in.o.PingInterval
	c.ws.SetReadLimit(MaxFrame)
	// The read deadline moves to silence after the last frame or pong,
	// but at most every silence/16: moving it costs a timer update, more
	// than the rest of reading a frame. So a silent socket is closed after
	// between 15/16 and all of silence.
	var deadline time.Time
	extend := func() error {
		now := time.Now()
		if deadline.Sub(now) > silence-silence/16 {
			return nil
		}
		deadline = now.Add(silence)
		return c.ws.SetReadDeadline(deadline)
	}
	_ = extend()
	c.ws.SetPongHandler(func(string) error { return extend() })
	var (
		parser wire.Parser
		items  []wire.Item
		sc     scratch
	)
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			return // closed, timed out, or over the read limit (1009 sent)
		}
		// The frame's buffer is held only while the frame is read and
		// parsed: an idle socket costs none (35,000 of them 160 MB less).
		buf := frameBufs.Get().(*[]byte)
		n, err := readAll(r, *buf)
		if err == nil && mt == websocket.TextMessage {
			items = parser.ParseFrame((*buf)[:n], items[:0]) // paths live in parser
		}
		frameBufs.Put(buf)
		if err != nil {
			return
		}
		_ = extend()
		if mt != websocket.TextMessage {
			slot, ok := c.reserve()
			if !ok {
				return
			}
			in.reject(c, slot, 0, game.CodeBadRequest, "frames must be text", 0)
			c.flush()
			continue
		}
		for _, it := range items {
			slot, ok := c.reserve()
			if !ok {
				return
			}
			if it.Err != nil {
				in.reject(c, slot, it.Seq, it.Err.Code, it.Err.Msg, 0)
				continue
			}
			in.submit(c.p, it.Seq, it.Path, c, slot, &sc)
		}
		c.flush()
	}
}

// frameBufs holds the sockets' frame buffers (*[]byte of MaxFrame+1).
var frameBufs = sync.Pool{New: func() any {
	b := make([]byte, MaxFrame+1)
	return &b
}}

// readAll reads one message into buf, which has room for more than the
// read limit.
func readAll(r io.Reader, buf []byte) (int, error) {
	n := 0
	for {
		if n == len(buf) {
			return n, errors.New("frame larger than the read limit")
		}
		k, err := r.Read(buf[n:])
		n += k
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// outbox holds a socket's replies in the order of the moves: a ring of
// slots, reserved by the reader in arrival order, filled in any order,
// taken by the socket's current writer (see wsConn.flush) from the oldest
// while filled. The ring starts small and doubles up to max slots.
type outbox struct {
	mu         sync.Mutex
	slots      []reply
	max        int
	head, next uint64        // slots [head, next) are reserved
	writing    bool          // a goroutine is in wsConn.flush
	dead       bool          // the oldest reply is unanswered: close the socket
	space      chan struct{} // to the reader: slots were freed, or writes resumed
	// blocked, when set, holds reservations back while it reports true
	// (the client is not reading its replies).
	blocked func() bool
}

const initialSlots = 16

func newOutbox(max int) *outbox {
	return &outbox{slots: make([]reply, min(initialSlots, max)), max: max, space: make(chan struct{}, 1)}
}

// tryReserve returns the next slot unless max slots are reserved or
// blocked reports true.
func (o *outbox) tryReserve() (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := uint64(len(o.slots))
	if o.next-o.head == n && len(o.slots) < o.max {
		grown := make([]reply, min(2*len(o.slots), o.max))
		for id := o.head; id < o.next; id++ {
			grown[id%uint64(len(grown))] = o.slots[id%n]
		}
		o.slots, n = grown, uint64(len(grown))
	}
	if o.next-o.head < n && (o.blocked == nil || !o.blocked()) {
		id := o.next
		o.next++
		return id, true
	}
	return 0, false
}

// reserve returns the next slot, waiting while tryReserve refuses; false
// when done closes first.
func (o *outbox) reserve(done <-chan struct{}) (uint64, bool) {
	for {
		if id, ok := o.tryReserve(); ok {
			return id, true
		}
		select {
		case <-o.space:
		case <-done:
			return 0, false
		}
	}
}

// deliver fills slot with r and reports whether the oldest reply is now
// ready to write.
func (o *outbox) deliver(slot uint64, r reply) bool {
	r.done = true
	o.mu.Lock()
	o.slots[slot%uint64(len(o.slots))] = r
	ready := slot == o.head
	o.mu.Unlock()
	return ready
}

// readyLocked reports whether the oldest reserved reply is filled.
func (o *outbox) readyLocked() bool {
	return o.head < o.next && o.slots[o.head%uint64(len(o.slots))].done
}

// take is takeLocked with o.mu taken.
func (o *outbox) take(dst []byte) (frame []byte, more bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.takeLocked(dst)
}

// takeLocked appends the filled replies from the oldest on,
// newline-separated, to dst, up to about maxOutFrame bytes; more reports
// that filled replies remain. It wakes a reader waiting for slots.
func (o *outbox) takeLocked(dst []byte) (frame []byte, more bool) {
	n := uint64(len(o.slots))
	freed := false
	for o.head < o.next {
		s := &o.slots[o.head%n]
		if !s.done {
			break
		}
		if s.unanswered {
			// No reply may be written for this move, nor (in order) for
			// any after it: the socket is closed (wsConn.flush).
			o.dead = true
			break
		}
		if len(dst) >= maxOutFrame {
			more = true
			break
		}
		if len(dst) > 0 {
			dst = append(dst, '\n')
		}
		dst = appendReply(dst, s)
		*s = reply{}
		o.head++
		freed = true
	}
	if freed {
		signal(o.space)
	}
	return dst, more
}

func appendReply(dst []byte, r *reply) []byte {
	if r.code == "" {
		return wire.AppendAck(dst, r.seq)
	}
	return wire.AppendError(dst, r.seq, r.code, r.msg, r.retry)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sinkList is the completer's list of sinks with replies ready to write.
type sinkList struct {
	mu    sync.Mutex
	sinks []sink
	spare []sink
}

func (l *sinkList) add(s sink) {
	l.mu.Lock()
	l.sinks = append(l.sinks, s)
	l.mu.Unlock()
}

// flushReady writes the replies that the completer's last round made
// ready, socket by socket; none of these writes waits for a client.
func (in *Ingest) flushReady() {
	l := &in.flushq
	l.mu.Lock()
	sinks := l.sinks
	l.sinks = l.spare[:0]
	l.mu.Unlock()
	for _, s := range sinks {
		s.flush()
	}
	clear(sinks)
	l.mu.Lock()
	l.spare = sinks[:0]
	l.mu.Unlock()
}
