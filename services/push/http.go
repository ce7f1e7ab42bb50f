package push

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/game"
	"treasure/internal/pgstore"
	"treasure/internal/redisstore"
	"treasure/internal/wire"
)

// Leaderboard limits of GET /v1/leaderboard.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Handler returns the player-facing routes:
//
//	GET /v1/updates/ws?token=…[&after=I][&leaderboard=off]  the player's update socket
//	GET /v1/leaderboard?limit=N           {"top":[…],"players":M}
//	GET /v1/players/{id}                  {"player","score","rank"}
//	GET /                                 the live page (page.go), its files under /live/
//	GET /v1/spectate[?token=…]            the live page's spectator feed (spectate.go)
//	GET /v1/map                           the page's map geometry (livemap.go)
//
// Mount it at "/" for the page; under "/v1/" it serves the API alone.
// Errors are JSON {"code":C,"message":M} with the HTTP status: 400
// bad_request, 401 unauthorized, 404 not_found, 429 rate_limited (with
// "retry_after_ms" and Retry-After), 503 unavailable. The access limits
// (limits.go): MaxConnsPerAddr requests or sockets in progress per client
// address, LeaderboardRate requests a second per address on the two
// public endpoints, FallbackReads PostgreSQL reads at once.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/updates/ws", s.serveUpdates)
	mux.HandleFunc("GET /v1/leaderboard", s.serveLeaderboard)
	mux.HandleFunc("GET /v1/players/{id}", s.servePlayer)
	mux.HandleFunc("GET /v1/spectate", s.serveSpectate)
	mux.HandleFunc("GET /v1/map", s.serveMap)
	mux.HandleFunc("GET /{$}", servePage)
	mux.Handle("GET /live/", serveAssets())
	return s.perAddr.Wrap(mux)
}

// serveUpdates authenticates the player, upgrades, and runs the socket
// until either side closes it (this goroutine is its reader).
func (s *Server) serveUpdates(w http.ResponseWriter, r *http.Request) {
	tok, ok := auth.FromRequest(r)
	if !ok {
		s.lm.noToken.Inc()
		writeError(w, http.StatusUnauthorized, "unauthorized", "a token is required: Authorization: Bearer or ?token=")
		return
	}
	claims, err := s.o.Verifier.Verify(tok)
	if err != nil {
		s.lm.badToken.Inc()
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid token")
		return
	}
	var after uint64
	q := r.URL.Query()
	resume := q.Has("after")
	if resume {
		if after, err = strconv.ParseUint(q.Get("after"), 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "after must be a non-negative integer (an update id)")
			return
		}
	}
	var noBoard bool
	switch q.Get("leaderboard") {
	case "", "on":
	case "off":
		noBoard = true
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "leaderboard must be on or off")
		return
	}
	if err := s.Ready(); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	if s.o.SendBuffer > 0 {
		if tc, ok := ws.NetConn().(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(s.o.SendBuffer)
		}
	}
	c := newConn(s, ws, claims.Subject)
	c.noBoard = noBoard
	c.wmu.Lock() // released by the writer once the backlog is out
	backlog, ok := s.hub.register(c, after, resume)
	if !ok {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutdown"), time.Now().Add(closeTimeout))
		_ = ws.Close()
		return
	}
	s.m.conns.Inc()
	go c.writeLoop(backlog)
	c.readLoop()
	c.kick(0, "") // the peer is gone, or the writer closed the socket
	<-c.writerDone
	s.m.conns.Dec()
	s.hub.unregister(c)
}

// serveLeaderboard answers GET /v1/leaderboard?limit=N. A limit above
// MaxLimit is cut to it; one that is not a non-negative integer is a 400.
func (s *Server) serveLeaderboard(w http.ResponseWriter, r *http.Request) {
	if !s.allowBoard(w, r) {
		return
	}
	limit := DefaultLimit
	if v := r.URL.Query().Get("limit"); v != "" || r.URL.Query().Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit must be an integer from 0 to 1000")
			return
		}
		limit = min(n, MaxLimit)
	}
	top, players, err := s.Leaderboard(r.Context(), limit)
	if errors.Is(err, errFallbackBusy) {
		writeLimited(w, http.StatusServiceUnavailable, "unavailable", "leaderboard unavailable: Redis is down and PostgreSQL is answering as many reads as it may", time.Second)
		return
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "leaderboard unavailable: Redis and PostgreSQL both failed")
		return
	}
	writeJSON(w, http.StatusOK, wire.AppendTop(make([]byte, 0, 64+48*len(top)), top, uint64(players)))
}

// servePlayer answers GET /v1/players/{id}.
func (s *Server) servePlayer(w http.ResponseWriter, r *http.Request) {
	if !s.allowBoard(w, r) {
		return
	}
	id := r.PathValue("id")
	e, found, err := s.Player(r.Context(), id)
	switch {
	case errors.Is(err, errFallbackBusy):
		writeLimited(w, http.StatusServiceUnavailable, "unavailable", "player standing unavailable: Redis is down and PostgreSQL is answering as many reads as it may", time.Second)
	case err != nil:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "player standing unavailable: Redis and PostgreSQL both failed")
	case !found:
		writeError(w, http.StatusNotFound, "not_found", "no such player")
	default:
		writeJSON(w, http.StatusOK, wire.AppendPlayer(nil, e))
	}
}

// Leaderboard returns the first limit players and the number of players
// with a score: from Redis, else from PostgreSQL (see the package doc).
func (s *Server) Leaderboard(ctx context.Context, limit int) ([]game.Entry, int64, error) {
	if s.useRedis() {
		rctx, cancel := context.WithTimeout(ctx, s.o.RedisTimeout)
		top, n, err := s.rs.Leaderboard(rctx, limit)
		cancel()
		if err == nil {
			s.redisUp()
			s.m.boardReads.WithLabelValues("redis").Inc()
			return top, n, nil
		}
		s.redisFailed(ctx, err)
	}
	release, err := s.fallbackSlot()
	if err != nil {
		return nil, 0, err
	}
	top, n, err := s.pg.Leaderboard(ctx, limit)
	release()
	if err != nil {
		s.m.boardReads.WithLabelValues("none").Inc()
		s.o.Log.Warn("leaderboard read failed", "err", err)
		return nil, 0, err
	}
	s.m.boardReads.WithLabelValues("postgres").Inc()
	return top, n, nil
}

// Player returns a player's score and rank, found false for a player
// never seen: from Redis, else from PostgreSQL.
func (s *Server) Player(ctx context.Context, id string) (game.Entry, bool, error) {
	if id == "" || len(id) > pgstore.MaxID {
		return game.Entry{}, false, nil // no such player can exist
	}
	if s.useRedis() {
		rctx, cancel := context.WithTimeout(ctx, s.o.RedisTimeout)
		e, found, err := s.rs.Player(rctx, id)
		cancel()
		if err == nil {
			s.redisUp()
			s.m.boardReads.WithLabelValues("redis").Inc()
			return e, found, nil
		}
		s.redisFailed(ctx, err)
	}
	release, err := s.fallbackSlot()
	if err != nil {
		return game.Entry{}, false, err
	}
	e, found, err := s.pg.Player(ctx, id)
	release()
	if err != nil {
		s.m.boardReads.WithLabelValues("none").Inc()
		s.o.Log.Warn("player read failed", "err", err)
		return game.Entry{}, false, err
	}
	s.m.boardReads.WithLabelValues("postgres").Inc()
	return e, found, nil
}

// useRedis reports whether to ask Redis: there is one, and it has not
// failed within the last RedisRetry.
func (s *Server) useRedis() bool {
	return s.rs != nil && time.Now().UnixNano() >= s.redisSkip.Load()
}

// redisFailed leaves Redis alone for RedisRetry, logging the first
// failure of a run of them. A request cancelled by its client is not
// Redis's fault.
func (s *Server) redisFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	s.redisSkip.Store(time.Now().Add(s.o.RedisRetry).UnixNano())
	if !s.redisDown.Swap(true) {
		if errors.Is(err, redisstore.ErrNotBuilt) {
			s.o.Log.Warn("redis leaderboard not built; answering from PostgreSQL")
		} else {
			s.o.Log.Warn("redis failed; answering from PostgreSQL", "err", err)
		}
	}
}

func (s *Server) redisUp() {
	if s.redisDown.Swap(false) {
		s.o.Log.Info("redis answers again")
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b := append([]byte(`{"code":`), wire.AppendString(nil, code)...)
	b = append(b, `,"message":`...)
	b = wire.AppendString(b, msg)
	writeJSON(w, status, append(b, '}'))
}
