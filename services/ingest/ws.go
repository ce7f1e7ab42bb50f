package ingest

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/game"
	"treasure/internal/wire"
)

// maxOutFrame is the size past which the writer starts another frame.
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
// MaxQueue replies are outstanding the socket is not read. The server
// pings every PingInterval and closes a socket that has been silent for
// two of them, and one whose writes do not complete within WriteTimeout.
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
	ws, err := in.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := &wsConn{
		in:   in,
		ws:   ws,
		p:    p,
		done: make(chan struct{}),
		out:  newOutbox(in.o.MaxQueue),
	}
	in.connMu.Lock()
	if in.closing {
		in.connMu.Unlock()
		c.goAway()
		return
	}
	in.conns[c] = struct{}{}
	in.connMu.Unlock()
	in.m.conns.Inc()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	c.readLoop()
	c.close()
	<-writerDone
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
		w.Header().Set("WWW-Authenticate", `Bearer realm="treasure"`)
		writeError(w, http.StatusUnauthorized, 0, game.CodeUnauthorized, "a token is required: Authorization: Bearer <token> or ?token=<token>", 0)
		return auth.Claims{}, false
	}
	claims, err := in.verifier.Verify(tok)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="treasure", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, 0, game.CodeUnauthorized, "invalid token", 0)
		return auth.Claims{}, false
	}
	return claims, true
}

// wsConn is one move socket: the handler's goroutine reads, writeLoop
// writes.
type wsConn struct {
	in *Ingest
	ws *websocket.Conn
	p  *player

	out       *outbox
	done      chan struct{} // closed by close
	closeOnce sync.Once
}

// close ends the socket: both loops return.
func (c *wsConn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		_ = c.ws.Close()
	})
}

// goAway closes the socket with close code 1001, for a shutdown.
func (c *wsConn) goAway() {
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	c.close()
}

func (c *wsConn) readLoop() {
	in := c.in
	silence := 2 * in.o.PingInterval
	c.ws.SetReadLimit(MaxFrame)
	_ = c.ws.SetReadDeadline(time.Now().Add(silence))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(silence))
	})
	var (
		buf    = make([]byte, MaxFrame+1)
		parser wire.Parser
		items  []wire.Item
		sc     scratch
	)
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			return // closed, timed out, or over the read limit (1009 sent)
		}
		n, err := readAll(r, buf)
		if err != nil {
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(silence))
		if mt != websocket.TextMessage {
			slot, ok := c.out.reserve(c.done)
			if !ok {
				return
			}
			in.reject(c.out, slot, 0, game.CodeBadRequest, "frames must be text", 0)
			continue
		}
		items = parser.ParseFrame(buf[:n], items[:0])
		for _, it := range items {
			slot, ok := c.out.reserve(c.done)
			if !ok {
				return
			}
			if it.Err != nil {
				in.reject(c.out, slot, it.Seq, it.Err.Code, it.Err.Msg, 0)
				continue
			}
			in.submit(c.p, it.Seq, it.Path, c.out, slot, &sc)
		}
	}
}

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

func (c *wsConn) writeLoop() {
	in := c.in
	ping := time.NewTicker(in.o.PingInterval)
	defer ping.Stop()
	var frame []byte
	for {
		select {
		case <-c.out.wake:
			for {
				var more bool
				frame, more = c.out.take(frame[:0])
				if len(frame) > 0 {
					_ = c.ws.SetWriteDeadline(time.Now().Add(in.o.WriteTimeout))
					if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
						c.close()
						return
					}
				}
				if !more {
					break
				}
			}
			if cap(frame) > 4*maxOutFrame {
				frame = nil
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(in.o.WriteTimeout)); err != nil {
				c.close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// outbox holds a socket's replies in the order of the moves: a ring of
// slots, reserved by the reader in arrival order, filled in any order,
// taken by the writer from the oldest while filled. The ring starts small
// and doubles up to max slots.
type outbox struct {
	mu         sync.Mutex
	slots      []reply
	max        int
	head, next uint64        // slots [head, next) are reserved
	wake       chan struct{} // to the writer: the oldest slot is filled
	space      chan struct{} // to the reader: slots were freed
}

const initialSlots = 16

func newOutbox(max int) *outbox {
	return &outbox{slots: make([]reply, min(initialSlots, max)), max: max, wake: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// reserve returns the next slot, waiting while max slots are reserved;
// false when done closes first.
func (o *outbox) reserve(done <-chan struct{}) (uint64, bool) {
	for {
		o.mu.Lock()
		n := uint64(len(o.slots))
		if o.next-o.head == n && len(o.slots) < o.max {
			grown := make([]reply, min(2*len(o.slots), o.max))
			for id := o.head; id < o.next; id++ {
				grown[id%uint64(len(grown))] = o.slots[id%n]
			}
			o.slots, n = grown, uint64(len(grown))
		}
		if o.next-o.head < n {
			id := o.next
			o.next++
			o.mu.Unlock()
			return id, true
		}
		o.mu.Unlock()
		select {
		case <-o.space:
		case <-done:
			return 0, false
		}
	}
}

// deliver fills slot with r.
func (o *outbox) deliver(slot uint64, r reply) {
	r.done = true
	o.mu.Lock()
	o.slots[slot%uint64(len(o.slots))] = r
	ready := slot == o.head
	o.mu.Unlock()
	if ready {
		signal(o.wake)
	}
}

// take appends the filled replies from the oldest on, newline-separated,
// to dst, up to about maxOutFrame bytes; more reports that filled replies
// remain.
func (o *outbox) take(dst []byte) (frame []byte, more bool) {
	o.mu.Lock()
	n := uint64(len(o.slots))
	freed := false
	for o.head < o.next {
		s := &o.slots[o.head%n]
		if !s.done {
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
	o.mu.Unlock()
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
