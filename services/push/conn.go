package push

import (
	"bytes"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Limits of one socket's buffers.
const (
	// maxFrame is the size beyond which a resume backlog is split into
	// several frames (at message boundaries).
	maxFrame = 32 << 10
	// maxSpare is the largest queue buffer kept for reuse after a write;
	// a bigger one (after a burst) is left to the collector.
	maxSpare = 64 << 10
	// maxClientMessage is the read limit: clients send nothing but
	// control frames.
	maxClientMessage = 1 << 10
	// closeTimeout bounds the write of a close frame.
	closeTimeout = time.Second
)

// conn is one player's WebSocket. Its queue is a byte buffer of pending
// messages, each followed by '\n', bounded by a message count: the feed
// appends (never blocking) and the socket's writer goroutine takes the
// whole buffer and sends it as one frame, so a reader that keeps up gets
// one frame per wake-up and a burst travels in few frames. A queue that
// reaches its bound marks the socket slow: it is closed with code 1008
// and reason "slow", and its buffer freed. The pending leaderboard is
// not in the queue: a socket holds at most one (the newest replaces an
// unsent one) together with its place among the queued messages, so a
// slow reader never accumulates snapshots.
type conn struct {
	s      *Server
	ws     *websocket.Conn
	player string
	idx    int // position in its shard's list; guarded by the shard's lock

	wake       chan struct{} // capacity 1: something was queued
	done       chan struct{} // closed by kick
	writerDone chan struct{}

	mu     sync.Mutex
	buf    []byte // queued messages, each followed by '\n'
	spare  []byte // the writer's other buffer, swapped with buf
	n      int    // messages in buf
	lb     []byte // pending leaderboard message (shared, immutable), nil when none
	lbOff  int    // its place in buf: it goes before buf[lbOff:]
	kicked bool
	code   int // close code sent when kicked; 0: none (the peer is gone)
	reason string

	hops hopQueue // hop stamps of the queued proximity updates (feed.go); guarded by mu
}

func newConn(s *Server, ws *websocket.Conn, player string) *conn {
	return &conn{
		s: s, ws: ws, player: player, idx: -1,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// enqueue appends msg to the queue, or marks the socket slow when the
// queue is full. It never blocks.
func (c *conn) enqueue(msg []byte) {
	c.mu.Lock()
	if c.kicked {
		c.mu.Unlock()
		return
	}
	if c.n >= c.s.o.QueueSize {
		c.kickLocked(websocket.ClosePolicyViolation, "slow")
		c.buf, c.spare, c.n, c.lb = nil, nil, 0, nil
		c.mu.Unlock()
		c.s.m.slow.Inc()
		return
	}
	c.buf = append(c.buf, msg...)
	c.buf = append(c.buf, '\n')
	c.n++
	c.hops.add(c.s.hop.cur)
	c.mu.Unlock()
	c.signal()
}

// setLeaderboard makes msg the socket's pending leaderboard, placed after
// the messages queued so far.
func (c *conn) setLeaderboard(msg []byte) {
	c.mu.Lock()
	if c.kicked {
		c.mu.Unlock()
		return
	}
	c.lb, c.lbOff = msg, len(c.buf)
	c.mu.Unlock()
	c.signal()
}

// kick asks the socket to close with code and reason (code 0: without a
// close frame). The first kick wins; it never blocks.
func (c *conn) kick(code int, reason string) {
	c.mu.Lock()
	c.kickLocked(code, reason)
	c.mu.Unlock()
}

func (c *conn) kickLocked(code int, reason string) {
	if c.kicked {
		return
	}
	c.kicked, c.code, c.reason = true, code, reason
	close(c.done)
}

// writeLoop is the socket's writer: the backlog first, then queued
// messages as they come, pings every PingInterval, and the close frame
// when kicked. It closes the socket when it returns, which ends the
// reader too.
func (c *conn) writeLoop(backlog []byte) {
	defer close(c.writerDone)
	defer c.ws.Close()
	if err := c.writeBacklog(backlog); err != nil {
		c.kick(0, "")
		return
	}
	ping := time.NewTicker(c.s.o.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.wake:
			if d := c.s.o.WriteDelay; d > 0 {
				time.Sleep(d)
			}
			if err := c.flush(); err != nil {
				c.kick(0, "")
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.o.WriteTimeout)); err != nil {
				c.kick(0, "")
				return
			}
		case <-c.done:
			c.mu.Lock()
			code, reason := c.code, c.reason
			c.mu.Unlock()
			if code == websocket.CloseGoingAway {
				// Shutdown: what is queued still goes out.
				if err := c.flush(); err != nil {
					return
				}
			}
			if code != 0 {
				_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeTimeout))
			}
			return
		}
	}
}

// writeBacklog sends a resume backlog (messages joined by '\n') in
// frames of about maxFrame bytes at most.
func (c *conn) writeBacklog(b []byte) error {
	for len(b) > 0 {
		cut := len(b)
		if cut > maxFrame {
			if i := bytes.LastIndexByte(b[:maxFrame], '\n'); i > 0 {
				cut = i
			} else if i := bytes.IndexByte(b, '\n'); i > 0 {
				cut = i
			}
		}
		msgs := 1 + bytes.Count(b[:cut], []byte{'\n'})
		if err := c.writeFrame(b[:cut], nil, nil); err != nil {
			return err
		}
		c.s.m.frames.Inc()
		c.s.m.messages.Add(float64(msgs))
		if cut < len(b) {
			cut++ // the '\n'
		}
		b = b[cut:]
	}
	return nil
}

// flush sends everything queued as one frame.
func (c *conn) flush() error {
	c.mu.Lock()
	buf, n, lb, lbOff := c.buf, c.n, c.lb, c.lbOff
	hops := c.hops.take()
	c.buf, c.spare, c.n, c.lb = c.spare, nil, 0, nil
	c.mu.Unlock()
	if n == 0 && lb == nil {
		c.keep(buf)
		return nil
	}
	var err error
	switch {
	case lb == nil:
		err = c.writeFrame(buf[:len(buf)-1], nil, nil)
	case lbOff == len(buf):
		err = c.writeFrame(buf, lb, nil)
	default:
		err = c.writeFrame(buf[:lbOff], lb, buf[lbOff:len(buf)-1])
	}
	if err != nil {
		return err
	}
	c.s.hop.sent(hops)
	if lb != nil {
		n++
	}
	c.s.m.frames.Inc()
	c.s.m.messages.Add(float64(n))
	c.keep(buf)
	return nil
}

// keep returns a written buffer for reuse.
func (c *conn) keep(buf []byte) {
	if cap(buf) > maxSpare {
		return
	}
	c.mu.Lock()
	if !c.kicked && c.spare == nil {
		c.spare = buf[:0]
	}
	c.mu.Unlock()
}

// writeFrame writes head, lb and tail as one text message, with a '\n'
// between lb and tail (head, when not empty, already ends with one).
func (c *conn) writeFrame(head, lb, tail []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.s.o.WriteTimeout)); err != nil {
		return err
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	if lb != nil {
		if _, err := w.Write(lb); err != nil {
			return err
		}
		if len(tail) > 0 {
			if _, err := w.Write(newline); err != nil {
				return err
			}
			if _, err := w.Write(tail); err != nil {
				return err
			}
		}
	}
	return w.Close()
}

var newline = []byte{'\n'}

// readLoop reads until the peer goes away: it answers pings (the
// library does), extends the read deadline on every pong, and discards
// anything else the client sends. A client silent for longer than
// PongWait (no pong to our pings) is dropped.
func (c *conn) readLoop() {
	c.ws.SetReadLimit(maxClientMessage)
	wait := c.s.o.PongWait
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(wait)) })
	for {
		if _, _, err := c.ws.NextReader(); err != nil {
			return
		}
	}
}
