package push

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

// directTimeout bounds the feed's direct write to an idle socket: a
// write that cannot finish that fast (the path to the client is full)
// leaves its unwritten end to the socket's writer, so the feed never
// waits longer than this for one socket.
const directTimeout = time.Millisecond

// send hands msg, the JSON of one update, to the socket: written at once
// by the calling feed goroutine when the feed is caught up (hub.direct)
// and the socket is idle (no write in progress, nothing queued), else
// queued for its writer goroutine.
// boardVer is as for enqueue. frame is the feed's scratch buffer. With
// a WriteDelay every update is queued (the delay gathers them).
//
// A direct write skips waking the writer (a goroutine switch and often a
// futex wake-up per update). It writes the WebSocket frame itself on the
// underlying connection, with a deadline of directTimeout: gorilla's
// writer treats every timeout as fatal, but the net.Conn does not, so
// a direct write that times out hands its unwritten end (rest) to the
// writer, which sends it with the full WriteTimeout before anything else.
// Every other write to the socket holds wmu too, gorilla's control frames
// included, so frames never interleave. (One exception: gorilla's reader
// answers a client's protocol violation or oversized message with a close
// frame of its own, without wmu; that client is being dropped anyway.)
func (c *conn) send(msg []byte, boardVer uint64, frame *[]byte) {
	if !c.s.hub.direct || c.s.o.WriteDelay > 0 || !c.wmu.TryLock() {
		c.enqueue(msg, boardVer)
		return
	}
	c.mu.Lock()
	if c.kicked || c.n > 0 || c.lbWake || len(c.rest) > 0 {
		c.mu.Unlock()
		c.wmu.Unlock()
		c.enqueue(msg, boardVer)
		return
	}
	// msg comes after leaderboard version boardVer (the latest) in the
	// log: a leaderboard due goes before it.
	lb, _ := c.boardLocked(0)
	c.mark, c.markOff = boardVer, 0
	c.mu.Unlock()

	size := len(msg)
	if lb != nil {
		size += len(lb) + 1
	}
	f := appendHeader((*frame)[:0], size)
	if lb != nil {
		f = append(append(f, lb...), '\n')
	}
	f = append(f, msg...)
	*frame = f
	raw := c.ws.NetConn()
	err := raw.SetWriteDeadline(time.Now().Add(directTimeout))
	n := 0
	if err == nil {
		n, err = raw.Write(f)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.rest = append(c.rest[:0], f[n:]...)
		err = nil
	}
	handOff := len(c.rest) > 0
	c.wmu.Unlock()
	if err != nil {
		c.kick(0, "")
		return
	}
	if handOff {
		c.s.m.handoffs.Inc()
		c.signal()
	}
	if st := [1]hopStamp{c.s.hop.cur}; st[0].result != 0 {
		c.s.hop.sent(st[:])
	}
	c.s.m.direct.Inc()
	c.s.m.frames.Inc()
	c.s.m.messages.Inc()
	if lb != nil {
		c.s.m.messages.Inc()
		c.s.m.boards.Inc()
	}
}

// appendHeader appends the header of an unmasked, final text frame of
// size bytes (RFC 6455 5.2), as a server sends it.
func appendHeader(dst []byte, size int) []byte {
	const finText = 0x80 | websocket.TextMessage
	switch {
	case size < 126:
		return append(dst, finText, byte(size))
	case size < 1<<16:
		return append(dst, finText, 126, byte(size>>8), byte(size))
	default:
		dst = append(dst, finText, 127)
		for i := 7; i >= 0; i-- {
			dst = append(dst, byte(uint64(size)>>(8*i)))
		}
		return dst
	}
}

// writeRest sends the unwritten end of a direct write, with the full
// WriteTimeout. Callers hold wmu.
func (c *conn) writeRest() error {
	if len(c.rest) == 0 {
		return nil
	}
	raw := c.ws.NetConn()
	if err := raw.SetWriteDeadline(time.Now().Add(c.s.o.WriteTimeout)); err != nil {
		return err
	}
	_, err := raw.Write(c.rest)
	c.rest = c.rest[:0]
	if cap(c.rest) > maxSpare {
		c.rest = nil
	}
	return err
}

// control writes a control frame under wmu, after any rest.
func (c *conn) control(typ int, data []byte, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeRest(); err != nil {
		return err
	}
	return c.ws.WriteControl(typ, data, deadline)
}

// replyHandlers makes the reader's automatic answers (pong to a ping,
// close to a close) go through control, like every other write.
func (c *conn) replyHandlers() {
	c.ws.SetPingHandler(func(data string) error {
		err := c.control(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	c.ws.SetCloseHandler(func(code int, _ string) error {
		_ = c.control(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
}
