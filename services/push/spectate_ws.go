package push

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
)

// Roles of the tokens that open the spectator feed's treasure view.
const (
	RoleSpectator = "spectator"
	RoleAdmin     = "admin"
)

// specConn is one spectator socket: a queue of at most spectateQueue
// frames (shared, immutable) drained by its writer goroutine.
type specConn struct {
	ws     *websocket.Conn
	full   bool        // the treasure view
	q      chan []byte // frames to write
	resync atomic.Bool // send a snapshot next (new, or missed frames)
	done   chan struct{}
	closed atomic.Bool
}

// offer queues frame without blocking; false when the queue is full.
func (c *specConn) offer(frame []byte) bool {
	select {
	case c.q <- frame:
		return true
	default:
		return false
	}
}

func (c *specConn) kick() {
	if c.closed.CompareAndSwap(false, true) {
		close(c.done)
	}
}

// serveSpectate is GET /v1/spectate[?token=…]: the live page's feed
// (docs/protocol.md, "Spectator feed"). Without a token it is the public
// view; a token whose role is spectator or admin adds the active
// treasures. A token that does not verify is a 401, a valid one of
// another role (a player's) a 403.
func (s *Server) serveSpectate(w http.ResponseWriter, r *http.Request) {
	full := false
	if tok, ok := auth.FromRequest(r); ok {
		claims, err := s.o.Verifier.Verify(tok)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid token")
			return
		}
		if claims.Role != RoleSpectator && claims.Role != RoleAdmin {
			writeError(w, http.StatusForbidden, "forbidden", "the treasure view needs a token whose role is spectator or admin; connect without a token for the public view")
			return
		}
		full = true
	}
	if err := s.Ready(); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	t := s.spec
	t.mu.Lock()
	if t.shut || len(t.socks) >= t.maxSocks {
		t.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "too many spectators on this push instance (at most "+strconv.Itoa(t.maxSocks)+")")
		return
	}
	// Reserve the place before the upgrade.
	c := &specConn{full: full, q: make(chan []byte, spectateQueue), done: make(chan struct{})}
	c.resync.Store(true)
	if full {
		// Counted before any tick can see c: the tick that sends c its
		// first snapshot has started the drop follower.
		t.full.Add(1)
		defer t.full.Add(-1)
	}
	t.socks[c] = struct{}{}
	t.watching.Store(true)
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()
	defer t.unregister(c)

	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c.ws = ws
	t.m.spectators.Inc()
	defer t.m.spectators.Dec()
	// The hello goes out first: the writer, which takes the queue (the
	// snapshot), starts after it.
	_ = ws.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, t.hello(full)); err != nil {
		_ = ws.Close()
		return
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer ws.Close()
		s.specWriter(c)
	}()
	ws.SetReadLimit(maxClientMessage)
	_ = ws.SetReadDeadline(time.Now().Add(s.o.PongWait))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(s.o.PongWait)) })
	for {
		if _, _, err := ws.NextReader(); err != nil {
			break // the peer left, or the writer closed the socket
		}
	}
	c.kick()
	<-writerDone
}

// hello is the first message of a spectator socket: its view and the
// sampling in force.
func (t *spectate) hello(full bool) []byte {
	b := append([]byte(`{"type":"hello","view":`), strconv.Quote(view(full))...)
	b = append(b, `,"interval_ms":`...)
	b = strconv.AppendInt(b, t.interval.Milliseconds(), 10)
	b = append(b, `,"max_positions":`...)
	b = strconv.AppendInt(b, int64(t.maxPos), 10)
	b = append(b, `,"max_players":`...)
	b = strconv.AppendInt(b, int64(t.maxPlay), 10)
	b = append(b, `,"map":`...)
	b = strconv.AppendBool(b, t.g != nil && t.g.HasCoords())
	return append(b, '}')
}

func view(full bool) string {
	if full {
		return "treasures"
	}
	return "public"
}

// specWriter writes c's frames until it is kicked or a write fails, then
// sends a close frame (1001 at shutdown).
func (s *Server) specWriter(c *specConn) {
	ping := time.NewTicker(s.o.PingInterval)
	defer ping.Stop()
	for {
		select {
		case f := <-c.q:
			_ = c.ws.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
				c.kick()
				return
			}
			s.spec.m.frames.Inc()
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.o.WriteTimeout)); err != nil {
				c.kick()
				return
			}
		case <-c.done:
			s.spec.mu.Lock()
			shut := s.spec.shut
			s.spec.mu.Unlock()
			if shut {
				_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutdown"), time.Now().Add(closeTimeout))
			}
			return
		}
	}
}

// unregister removes c; the last spectator out stops the feed's handover.
func (t *spectate) unregister(c *specConn) {
	c.kick()
	t.mu.Lock()
	delete(t.socks, c)
	if len(t.socks) == 0 {
		t.watching.Store(false)
	}
	t.mu.Unlock()
}

// close refuses new spectators, closes every socket (code 1001) and waits
// for their goroutines.
func (t *spectate) close() {
	t.mu.Lock()
	t.shut = true
	for c := range t.socks {
		c.kick()
	}
	t.mu.Unlock()
	t.wg.Wait()
}
