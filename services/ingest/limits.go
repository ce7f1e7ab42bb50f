package ingest

import (
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/game"
	"treasure/internal/httplimit"
)

// DefaultMaxSocketsPerPlayer is Options.MaxSocketsPerPlayer's default, the
// same as push's.
const DefaultMaxSocketsPerPlayer = 4

// limitRetry is the retry_after_ms of a request refused by the
// per-address cap: a place frees when one of the address's requests or
// sockets ends, which the server cannot predict.
const limitRetry = time.Second

// limitMetrics count what the access limits refused.
type limitMetrics struct {
	perAddr  prometheus.Counter
	replaced prometheus.Counter
	// Requests and sockets refused for their token: none, invalid
	// (forged, expired, not yet valid, wrong algorithm…), or not admin.
	noToken, badToken, notAdmin prometheus.Counter
}

func newLimitMetrics(r prometheus.Registerer) limitMetrics {
	m := limitMetrics{
		perAddr: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_conns_per_addr_rejected_total",
			Help: "Requests and sockets refused (429 rate_limited) because their client address had MaxConnsPerAddr in progress."}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_ingest_sockets_replaced_total",
			Help: "Move sockets closed (1008 \"replaced\") because their player opened more than MaxSocketsPerPlayer."}),
	}
	auth := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_ingest_unauthorized_total",
		Help: "Requests and sockets refused for their token (401, or 403 not_admin), by reason: no_token, invalid_token, not_admin."}, []string{"reason"})
	m.noToken, m.badToken, m.notAdmin = auth.WithLabelValues("no_token"), auth.WithLabelValues("invalid_token"), auth.WithLabelValues("not_admin")
	if r != nil {
		r.MustRegister(m.perAddr, m.replaced, auth)
	}
	return m
}

// rejectPerAddr answers a request over the per-address cap.
func (in *Ingest) rejectPerAddr(w http.ResponseWriter, _ *http.Request) {
	in.lm.perAddr.Inc()
	writeError(w, http.StatusTooManyRequests, 0, game.CodeRateLimited, "too many requests and sockets in progress from this address", limitRetry)
}

// playerSockets holds each player's open move sockets on this instance,
// oldest first, for MaxSocketsPerPlayer.
type playerSockets struct {
	mu sync.Mutex
	by map[string][]*wsConn
}

// addSocket records c as player's newest socket; when the player already
// has MaxSocketsPerPlayer, the oldest is closed with 1008 "replaced" (as
// push does): a client that reconnects before its old socket's loss is
// noticed is never locked out.
func (in *Ingest) addSocket(player string, c *wsConn) {
	s := &in.socks
	s.mu.Lock()
	if s.by == nil {
		s.by = make(map[string][]*wsConn)
	}
	list := s.by[player]
	var old *wsConn
	if len(list) >= in.o.MaxSocketsPerPlayer {
		old = list[0]
		list = append(list[:0:0], list[1:]...)
	}
	s.by[player] = append(list, c)
	s.mu.Unlock()
	if old != nil {
		in.lm.replaced.Inc()
		old.kick(websocket.ClosePolicyViolation, "replaced")
	}
}

// removeSocket forgets c (a no-op when it was replaced).
func (in *Ingest) removeSocket(player string, c *wsConn) {
	s := &in.socks
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.by[player]
	for i, x := range list {
		if x == c {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.by, player)
	} else {
		s.by[player] = list
	}
}

// kick closes the socket with a close frame of code and reason.
func (c *wsConn) kick(code int, reason string) {
	msg := websocket.FormatCloseMessage(code, reason)
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	c.close()
}

// perAddr builds the per-address cap of o.
func (in *Ingest) newPerAddr() *httplimit.PerAddr {
	return httplimit.NewPerAddr(in.o.MaxConnsPerAddr, in.rejectPerAddr)
}
