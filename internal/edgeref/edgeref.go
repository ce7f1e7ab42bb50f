// Package edgeref is the bare socket edge: a gorilla/websocket server that
// speaks only SPEC's two player sockets, with nothing behind them, so
// that the load generator can measure the floor of what one move costs
// at the edge on a box (issue 6, item 10; shared/LIMITS.md "The socket
// floor").
//
// On GET /v1/moves/ws (ingest's socket) it reads a frame, parses its
// moves with wire.Parser (so a move costs its parse, as at ingest), and
// answers each on that socket: {"type":"ack","seq":S} for a well-formed
// move, SPEC's error message (bad_json, bad_request, path_too_long) for
// one that is not. For every acked move it sends
// {"type":"proximity","id":I,"seq":S,"node":V,"treasure":null} (V the
// path's last node, I counting from 1 per player) on each of the
// player's GET /v1/updates/ws sockets (push's socket). Several moves in
// one frame get one frame of answers on each side. Every write is made
// directly by the goroutine that read the frame, under the target
// socket's lock: no writer goroutine, no queue. Nothing else is
// checked: no graph, no sequence, no rate limit, no retention (?after= is
// accepted and ignored: a client that reconnects loses what was sent
// while it was away).
//
// So that the load generator's scenarios run unchanged it also answers
// POST /v1/admin/drops (admin token; 202 {"accepted":N}, N the treasures
// in the body) and GET /v1/leaderboard ({"top":[],"players":0}).
package edgeref

import (
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/auth"
	"treasure/internal/game"
	"treasure/internal/wire"
)

// Limits of the sockets.
const (
	// MaxFrame is the largest frame a client may send; a larger one
	// closes the socket (SPEC: a frame over 4 KiB does).
	MaxFrame = 4 << 10
	// MaxDropBody bounds POST /v1/admin/drops.
	MaxDropBody = 1 << 20
	// DefaultWriteTimeout bounds every write.
	DefaultWriteTimeout = 10 * time.Second
	nShards             = 64
)

// Options configures a Server. Verifier is required.
type Options struct {
	Verifier *auth.Verifier
	// WriteTimeout bounds every socket write (DefaultWriteTimeout); a
	// socket whose write fails or times out is closed.
	WriteTimeout time.Duration
	// Log receives failures; nil discards them.
	Log *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Server is the bare edge. Its handlers are safe for concurrent use;
// Close ends every socket.
type Server struct {
	o    Options
	up   websocket.Upgrader
	seed maphash.Seed
	sh   [nShards]shard

	mu     sync.Mutex
	closed bool
	socks  map[*websocket.Conn]struct{}
	wg     sync.WaitGroup

	moves, sockets prometheus.Counter
	open           prometheus.Gauge
}

type shard struct {
	mu      sync.Mutex
	players map[string]*player
}

// player is one player's update state: the id of its next update and its
// push sockets. mu is the lock of those sockets' writes: it is held while
// updates are numbered and written to every socket, so that each socket
// gets the ids in order even when the player has several move sockets.
type player struct {
	mu    sync.Mutex
	next  uint64
	conns []*websocket.Conn
	buf   []byte // the frame being written
}

// New returns a Server; it does no I/O.
func New(o Options) (*Server, error) {
	if o.Verifier == nil {
		return nil, errors.New("edgeref: a token verifier is required")
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		o:     o,
		seed:  maphash.MakeSeed(),
		socks: make(map[*websocket.Conn]struct{}),
		up: websocket.Upgrader{
			ReadBufferSize:  MaxFrame,
			WriteBufferSize: 4 << 10,
			CheckOrigin:     func(*http.Request) bool { return true },
		},
		moves:   prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_edgeref_moves_total", Help: "Moves acknowledged."}),
		sockets: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_edgeref_sockets_opened_total", Help: "WebSockets opened, both kinds."}),
		open:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_edgeref_sockets", Help: "Open WebSockets, both kinds."}),
	}
	for i := range s.sh {
		s.sh[i].players = make(map[string]*player)
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.moves, s.sockets, s.open)
	}
	return s, nil
}

// IngestHandler serves the ingest side: GET /v1/moves/ws and
// POST /v1/admin/drops.
func (s *Server) IngestHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/moves/ws", s.serveMoves)
	mux.HandleFunc("POST /v1/admin/drops", s.serveDrops)
	return mux
}

// PushHandler serves the push side: GET /v1/updates/ws and
// GET /v1/leaderboard.
func (s *Server) PushHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/updates/ws", s.serveUpdates)
	mux.HandleFunc("GET /v1/leaderboard", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, wire.AppendTop(nil, nil, 0))
	})
	return mux
}

// Close closes every socket (without a close frame) and waits for their
// handlers to return; sockets opened afterwards are closed at once.
// http.Server.Shutdown does not close hijacked connections: call Close
// from its OnShutdown hook.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for ws := range s.socks {
		_ = ws.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// upgrade authenticates the request, upgrades it and tracks the socket;
// ok false when it has answered with an error (or the server is closed).
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) (ws *websocket.Conn, sub string, ok bool) {
	claims, ok := s.authenticate(w, r)
	if !ok {
		return nil, "", false
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return nil, "", false // the upgrader has answered
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ws.Close()
		return nil, "", false
	}
	s.socks[ws] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.sockets.Inc()
	s.open.Inc()
	return ws, claims.Subject, true
}

func (s *Server) release(ws *websocket.Conn) {
	_ = ws.Close()
	s.mu.Lock()
	delete(s.socks, ws)
	s.mu.Unlock()
	s.open.Dec()
	s.wg.Done()
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	tok, ok := auth.FromRequest(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, game.CodeUnauthorized, "a token is required: Authorization: Bearer or ?token=")
		return auth.Claims{}, false
	}
	claims, err := s.o.Verifier.Verify(tok)
	if err != nil {
		writeError(w, http.StatusUnauthorized, game.CodeUnauthorized, "invalid token")
		return auth.Claims{}, false
	}
	return claims, true
}

func (s *Server) player(id string) *player {
	sh := &s.sh[maphash.String(s.seed, id)%nShards]
	sh.mu.Lock()
	p := sh.players[id]
	if p == nil {
		p = &player{next: 1}
		sh.players[id] = p
	}
	sh.mu.Unlock()
	return p
}

// serveMoves runs one move socket: this goroutine reads every frame and
// writes its answers, so the socket needs no lock (it is its only
// writer; gorilla's pong replies use WriteControl, which is safe
// alongside).
func (s *Server) serveMoves(w http.ResponseWriter, r *http.Request) {
	ws, sub, ok := s.upgrade(w, r)
	if !ok {
		return
	}
	defer s.release(ws)
	ws.SetReadLimit(MaxFrame)
	p := s.player(sub)
	var (
		parser wire.Parser
		items  []wire.Item
		acks   []byte
		frame  []byte
	)
	for {
		_, rd, err := ws.NextReader()
		if err != nil {
			return
		}
		frame, err = readAll(rd, frame[:0])
		if err != nil {
			return // over MaxFrame, or the peer went away
		}
		items = parser.ParseFrame(frame, items[:0])
		if len(items) == 0 {
			continue
		}
		acks = acks[:0]
		good := 0
		for i := range items {
			it := &items[i]
			if len(acks) > 0 {
				acks = append(acks, '\n')
			}
			if it.Err != nil {
				acks = wire.AppendError(acks, it.Seq, it.Err.Code, it.Err.Msg, 0)
				continue
			}
			acks = wire.AppendAck(acks, it.Seq)
			good++
		}
		_ = ws.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, acks); err != nil {
			return
		}
		if good > 0 {
			s.moves.Add(float64(good))
			s.update(p, items)
		}
	}
}

// update numbers the proximity answers of items' well-formed moves and
// writes them as one frame to each of p's push sockets. A socket whose
// write fails is closed (its handler then drops it).
func (s *Server) update(p *player, items []wire.Item) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.buf[:0]
	for i := range items {
		it := &items[i]
		if it.Err != nil {
			continue
		}
		if len(b) > 0 {
			b = append(b, '\n')
		}
		b = wire.AppendProximity(b, wire.Proximity{ID: p.next, Seq: it.Seq, Node: it.Path[len(it.Path)-1]})
		p.next++
	}
	p.buf = b
	for _, ws := range p.conns {
		_ = ws.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
			_ = ws.Close()
		}
	}
}

// serveUpdates runs one push socket: it joins the player's sockets, and
// this goroutine reads (pongs, close) until the peer goes away.
func (s *Server) serveUpdates(w http.ResponseWriter, r *http.Request) {
	ws, sub, ok := s.upgrade(w, r)
	if !ok {
		return
	}
	defer s.release(ws)
	p := s.player(sub)
	p.mu.Lock()
	p.conns = append(p.conns, ws)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for i, c := range p.conns {
			if c == ws {
				p.conns = append(p.conns[:i], p.conns[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
	}()
	ws.SetReadLimit(MaxFrame)
	for {
		if _, _, err := ws.NextReader(); err != nil {
			return
		}
	}
}

// serveDrops accepts a drop without storing it: 202 {"accepted":N}.
func (s *Server) serveDrops(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if !claims.Admin {
		writeError(w, http.StatusForbidden, game.CodeUnauthorized, "dropping treasures needs an admin token")
		return
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, MaxDropBody), nil)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, game.CodeBadRequest, "the body is too large or unreadable")
		return
	}
	drops, err := wire.ParseDrop(body, nil)
	if err != nil {
		var ge *game.Error
		if errors.As(err, &ge) {
			writeError(w, http.StatusBadRequest, ge.Code, ge.Msg)
		} else {
			writeError(w, http.StatusBadRequest, game.CodeBadRequest, err.Error())
		}
		return
	}
	writeJSON(w, http.StatusAccepted, wire.AppendAccepted(nil, uint64(len(drops))))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, code game.Code, msg string) {
	writeJSON(w, status, wire.AppendError(nil, 0, code, msg, 0))
}

// readAll appends everything r holds to dst.
func readAll(r io.Reader, dst []byte) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
