package ingest

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// errSlow ends a socket whose client does not read its replies.
var errSlow = errors.New("client too slow: replies not read")

// sendConn is the connection under a move socket's websocket.Conn. Its
// Write never blocks, so that whoever has replies ready — the socket's
// reader, or the completer writing the replies of many sockets in a row —
// can write them directly, without waking a writer goroutine, and a client
// that does not read never holds up anyone else's replies.
//
// Write hands the bytes to the kernel with one non-blocking write. What the
// kernel does not take at once (its send buffer is full: the client is not
// reading fast enough) is kept, in order, and a drain goroutine, started
// for that and gone once it has written everything, writes it with the
// connection's write deadline; later writes queue behind it. While the
// drain runs, stalled reports true and the socket stops reading moves
// (the replies of the moves already read still queue: at most MaxQueue of
// them); resume is called when the drain is done. A drain write that does not
// complete within WriteTimeout, or more than maxPending queued bytes,
// closes the connection; every later Write then fails.
//
// sendConn is safe for concurrent use; gorilla serializes its writes
// anyway.
type sendConn struct {
	net.Conn
	raw          syscall.RawConn // nil: every write goes through the drain
	writeTimeout time.Duration
	maxPending   int
	resume       func()
	onSlow       func()

	mu       sync.Mutex
	err      error  // sticky: the connection is unusable
	draining bool   // a drain goroutine owns the socket's writes
	pending  []byte // bytes for the drain, in order
	spare    []byte // the drain's previous buffer, for reuse
	drained  sync.WaitGroup

	// The non-blocking write's argument and result, guarded by raw's
	// write lock; wfn is bound once so that a write allocates nothing.
	wbuf []byte
	wn   int
	werr error
	wfn  func(fd uintptr) bool
}

func newSendConn(c net.Conn, writeTimeout time.Duration, maxPending int, resume, onSlow func()) *sendConn {
	s := &sendConn{Conn: c, writeTimeout: writeTimeout, maxPending: maxPending, resume: resume, onSlow: onSlow}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
		}
	}
	s.wfn = s.writeFD
	// No write deadline but the drain's (an http.Server's WriteTimeout
	// may have set one before the hijack).
	_ = c.SetWriteDeadline(time.Time{})
	return s
}

// Write takes all of p or fails; it never waits for the client.
func (s *sendConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	if s.draining {
		if len(s.pending)+len(p) > s.maxPending {
			s.mu.Unlock()
			s.fail(errSlow)
			return 0, errSlow
		}
		s.pending = append(s.pending, p...)
		s.mu.Unlock()
		return len(p), nil
	}
	n := 0
	if s.raw != nil {
		var err error
		if n, err = s.tryWrite(p); err != nil {
			s.err = err
			s.mu.Unlock()
			return n, err
		}
	}
	if n == len(p) {
		s.mu.Unlock()
		return n, nil
	}
	// The kernel's buffer is full: the rest goes to a drain.
	s.draining = true
	s.pending = append(s.pending[:0], p[n:]...)
	s.drained.Add(1)
	s.mu.Unlock()
	go s.drain()
	return len(p), nil
}

// tryWrite writes what the kernel takes of p without waiting.
func (s *sendConn) tryWrite(p []byte) (int, error) {
	s.wbuf, s.wn, s.werr = p, 0, nil
	if err := s.raw.Write(s.wfn); err != nil {
		s.wbuf = nil
		return 0, err // closed, or a deadline
	}
	n, err := s.wn, s.werr
	s.wbuf, s.werr = nil, nil
	return n, err
}

func (s *sendConn) writeFD(fd uintptr) bool {
	for len(s.wbuf) > s.wn {
		n, err := syscall.Write(int(fd), s.wbuf[s.wn:])
		if n > 0 {
			s.wn += n
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			s.werr = err
			return true
		case n == 0:
			return true
		}
	}
	return true
}

// drain writes the pending bytes, waiting for the client up to
// writeTimeout per write, until none are left.
func (s *sendConn) drain() {
	defer s.drained.Done()
	for {
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			return
		}
		if len(s.pending) == 0 {
			// No deadline again for the non-blocking writes.
			_ = s.Conn.SetWriteDeadline(time.Time{})
			s.draining = false
			s.mu.Unlock()
			s.resume()
			return
		}
		buf := s.pending
		s.pending, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		_ = s.Conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		if _, err := s.Conn.Write(buf); err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		if cap(buf) <= 4*maxOutFrame {
			s.spare = buf[:0]
		}
		s.mu.Unlock()
	}
}

// fail makes err sticky and closes the connection (which ends the drain
// and the socket's reader). A slow client is counted.
func (s *sendConn) fail(err error) {
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
	}
	s.mu.Unlock()
	if !first {
		return
	}
	if errors.Is(err, errSlow) || isTimeout(err) {
		s.onSlow()
	}
	_ = s.Conn.Close()
	s.resume() // a reader held back by stalled finds the socket closed
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// SetWriteDeadline is ignored: sendConn's writes do not wait, and the
// drain applies writeTimeout.
func (s *sendConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (see SetWriteDeadline).
func (s *sendConn) SetDeadline(t time.Time) error { return s.Conn.SetReadDeadline(t) }

// Close closes the connection; the drain, if any, ends.
func (s *sendConn) Close() error {
	s.mu.Lock()
	if s.err == nil {
		s.err = net.ErrClosed
	}
	s.mu.Unlock()
	return s.Conn.Close()
}

// stalled reports whether a drain is running on a connection still open.
func (s *sendConn) stalled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining && s.err == nil
}

// wait returns once no drain runs; call it after Close.
func (s *sendConn) wait() { s.drained.Wait() }

// hijacker hands the upgrader a sendConn instead of the raw connection.
type hijacker struct {
	http.ResponseWriter
	wrap func(net.Conn) net.Conn
}

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return h.wrap(c), brw, nil
}
