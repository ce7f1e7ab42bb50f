package push

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/httplimit"
	"treasure/internal/ratelimit"
	"treasure/internal/wire"
)

// Defaults of the access limits (docs/operations.md "Limits and access").
const (
	// DefaultLeaderboardRate is the requests per second one client
	// address may make to GET /v1/leaderboard and GET /v1/players/{id}
	// together, with bursts of twice as many: ten times what the load
	// generator's poller asks (one every 100 ms).
	DefaultLeaderboardRate = 20
	// DefaultFallbackReads bounds the PostgreSQL reads the public
	// endpoints run at once while Redis is down; one more is answered
	// 503 unavailable at once rather than queued on the database.
	DefaultFallbackReads = 4
)

// errFallbackBusy: DefaultFallbackReads PostgreSQL reads are running.
var errFallbackBusy = errors.New("too many leaderboard reads on PostgreSQL at once")

// limitMetrics count what the access limits refused, by limit.
type limitMetrics struct {
	perAddr, rate, fallback, replaced prometheus.Counter
	// Sockets refused for their token: none, or invalid (forged,
	// expired, not yet valid, wrong algorithm…).
	noToken, badToken prometheus.Counter
}

func newLimitMetrics(r prometheus.Registerer) limitMetrics {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_push_limited_total",
		Help: "Requests refused by an access limit: conns_per_addr (429), leaderboard_rate (429), fallback_busy (503, PostgreSQL fallback reads at their cap)."},
		[]string{"limit"})
	m := limitMetrics{
		perAddr:  v.WithLabelValues("conns_per_addr"),
		rate:     v.WithLabelValues("leaderboard_rate"),
		fallback: v.WithLabelValues("fallback_busy"),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_sockets_replaced_total",
			Help: "Update sockets closed (1008 \"replaced\") because their player opened more than MaxSocketsPerPlayer."}),
	}
	auth := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_push_unauthorized_total",
		Help: "Update sockets refused (401) for their token, by reason: no_token, invalid_token."}, []string{"reason"})
	m.noToken, m.badToken = auth.WithLabelValues("no_token"), auth.WithLabelValues("invalid_token")
	if r != nil {
		r.MustRegister(v, m.replaced, auth)
	}
	return m
}

// initLimits builds s's limiters from its options (defaults applied).
func (s *Server) initLimits() error {
	s.lm = newLimitMetrics(s.o.Registerer)
	s.perAddr = httplimit.NewPerAddr(s.o.MaxConnsPerAddr, func(w http.ResponseWriter, _ *http.Request) {
		s.lm.perAddr.Inc()
		writeLimited(w, http.StatusTooManyRequests, "rate_limited", "too many requests and sockets in progress from this address", time.Second)
	})
	if s.o.LeaderboardRate > 0 {
		k, err := ratelimit.NewKeyed(ratelimit.Limit{Rate: s.o.LeaderboardRate, Burst: max(1, int(2*s.o.LeaderboardRate))})
		if err != nil {
			return err
		}
		s.boardLimit = k
	}
	s.fallback = make(chan struct{}, s.o.FallbackReads)
	s.hub.onReplace = s.lm.replaced.Inc
	return nil
}

// allowBoard applies the leaderboard rate limit to r, answering 429
// rate_limited and reporting false when r's address is over it.
func (s *Server) allowBoard(w http.ResponseWriter, r *http.Request) bool {
	if s.boardLimit == nil {
		return true
	}
	ok, wait := s.boardLimit.Allow(httplimit.Addr(r).String(), time.Now())
	if !ok {
		s.lm.rate.Inc()
		writeLimited(w, http.StatusTooManyRequests, "rate_limited", "too many leaderboard requests from this address", wait)
	}
	return ok
}

// fallbackSlot takes one of the PostgreSQL fallback's slots without
// waiting; release gives it back.
func (s *Server) fallbackSlot() (release func(), err error) {
	if s.fallback == nil {
		return func() {}, nil // a Server not built by New
	}
	select {
	case s.fallback <- struct{}{}:
		return func() { <-s.fallback }, nil
	default:
		s.lm.fallback.Inc()
		return nil, errFallbackBusy
	}
}

// writeLimited answers a refusal with the endpoints' error object plus
// retry_after_ms, and Retry-After in whole seconds (rounded up).
func writeLimited(w http.ResponseWriter, status int, code, msg string, retry time.Duration) {
	ms := wire.RetryAfterMs(retry)
	w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
	b := append([]byte(`{"code":`), wire.AppendString(nil, code)...)
	b = append(b, `,"message":`...)
	b = wire.AppendString(b, msg)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, ms, 10)
	writeJSON(w, status, append(b, '}'))
}
