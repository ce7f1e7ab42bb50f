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
// and reason "slow", and its buffer freed.
//
// Leaderboards are not queued: when the writer takes the queue it adds
// the hub's latest leaderboard to the frame if the socket is due one
// (see hub), at the leaderboard's place in the log among the frame's
// updates (mark), so a slow reader never accumulates snapshots and a
// leaderboard rides with the updates wherever there are some.
type conn struct {
	s      *Server
	ws     *websocket.Conn
	player string
	idx    int // position in its shard's list; guarded by the shard's lock

	wake       chan struct{} // capacity 1: something was queued
	done       chan struct{} // closed by kick
	writerDone chan struct{}

	// wmu is held by whoever writes to ws: the writer goroutine, the
	// feed for a direct write (TryLock: it never waits), the reader for
	// control replies. rest, the unwritten end of a direct write that
	// timed out, goes out first.
	wmu  sync.Mutex
	rest []byte

	mu     sync.Mutex
	buf    []byte // queued messages, each followed by '\n'
	spare  []byte // the writer's other buffer, swapped with buf
	n      int    // messages in buf
	kicked bool
	code   int // close code sent when kicked; 0: none (the peer is gone)
	reason string

	hops hopQueue // hop stamps of the queued proximity updates (feed.go); guarded by mu

	// Leaderboard state, guarded by mu.
	noBoard bool   // ?leaderboard=off: never send one; set before registration
	lbWake  bool   // send the latest at the next write even without updates
	lbVer   uint64 // version of the last leaderboard sent (or skipped as the same)
	lbLast  []byte // the last leaderboard sent (shared, immutable)
	lbNext  int64  // hub clock before which no other leaderboard goes out
	// mark is the leaderboard version current when the first message
	// of buf[markOff:] was queued: the messages before markOff came
	// earlier in the log than that version, those after it later.
	mark    uint64
	markOff int
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
// queue is full. boardVer is the hub's latest leaderboard version when
// msg was made (its place in the log relative to leaderboards). It
// never blocks.
func (c *conn) enqueue(msg []byte, boardVer uint64) {
	c.mu.Lock()
	if c.kicked {
		c.mu.Unlock()
		return
	}
	if c.n >= c.s.o.QueueSize {
		c.kickLocked(websocket.ClosePolicyViolation, "slow")
		c.buf, c.spare, c.n, c.lbWake = nil, nil, 0, false
		c.mu.Unlock()
		c.s.m.slow.Inc()
		return
	}
	if c.mark != boardVer {
		c.mark, c.markOff = boardVer, len(c.buf)
	}
	c.buf = append(c.buf, msg...)
	c.buf = append(c.buf, '\n')
	c.n++
	c.hops.add(c.s.hop.cur)
	c.mu.Unlock()
	c.signal()
}

// wakeBoard has the writer send the latest leaderboard (if due and
// newer) even when nothing else is queued.
func (c *conn) wakeBoard() {
	c.mu.Lock()
	wake := !c.kicked && !c.noBoard
	c.lbWake = c.lbWake || wake
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

// offerBoard is the ticker's visit: it wakes the writer when the socket
// is due a leaderboard (now, on the hub clock, is at least lbNext) and
// behind version ver.
func (c *conn) offerBoard(ver uint64, now int64) {
	c.mu.Lock()
	wake := !c.kicked && !c.noBoard && !c.lbWake && ver > c.lbVer && now >= c.lbNext
	if wake {
		c.lbWake = true
	}
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

// boardLocked returns the leaderboard to add to a frame whose queued
// part is end bytes long, and where it goes (before buf[off:]): the
// hub's latest, when the socket takes leaderboards, is due one, and the
// latest is newer than, and differs from, the last one it received.
// Otherwise lb is nil. Callers hold c.mu and write the frame next.
func (c *conn) boardLocked(end int) (lb []byte, off int) {
	if c.noBoard {
		return nil, end
	}
	b := c.s.hub.latest.Load()
	if b == nil || b.ver <= c.lbVer {
		return nil, end
	}
	now := c.s.hub.now()
	if now < c.lbNext {
		return nil, end
	}
	c.lbVer = b.ver
	if bytes.Equal(b.msg, c.lbLast) {
		return nil, end // back to the top this socket last received
	}
	c.lbLast, c.lbNext = b.msg, now+int64(boardInterval)
	if c.mark == b.ver && c.markOff <= end {
		return b.msg, c.markOff
	}
	return b.msg, end
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
	// The caller locked wmu before registering c: nothing overtakes the
	// backlog.
	err := c.writeBacklog(backlog)
	c.wmu.Unlock()
	if err != nil {
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
			if err := c.control(websocket.PingMessage, nil, time.Now().Add(c.s.o.WriteTimeout)); err != nil {
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
				_ = c.control(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeTimeout))
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

// take empties the queue: the frame to send is buf[:off], lb, then
// buf[off:] (lb nil: buf alone); n counts buf's messages, hops holds the
// stamps of its live proximity updates.
func (c *conn) take() (buf []byte, n int, lb []byte, off int, hops []hopStamp) {
	c.mu.Lock()
	buf, n = c.buf, c.n
	hops = c.hops.take()
	off = len(buf)
	if n > 0 || c.lbWake {
		lb, off = c.boardLocked(off)
	}
	c.buf, c.spare, c.n, c.markOff, c.lbWake = c.spare, nil, 0, 0, false
	c.mu.Unlock()
	return buf, n, lb, off, hops
}

// flush sends everything queued, and the leaderboard due, as one frame,
// after the rest of a direct write that timed out.
func (c *conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeRest(); err != nil {
		return err
	}
	buf, n, lb, lbOff, hops := c.take()
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
		c.s.m.boards.Inc()
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
	c.replyHandlers()
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
