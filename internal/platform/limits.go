package platform

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The environment variables of the player-facing limits
// (docs/operations.md "Limits and access"). Each is optional; unset or
// empty keeps the default.
const (
	// EnvHTTPReadHeaderTimeout and EnvHTTPReadTimeout: HTTPServer's read
	// timeouts (Go durations).
	EnvHTTPReadHeaderTimeout = "TREASURE_HTTP_READ_HEADER_TIMEOUT"
	EnvHTTPReadTimeout       = "TREASURE_HTTP_READ_TIMEOUT"
	// EnvMaxConnsPerAddr caps the requests in progress and open sockets
	// per client address on ingest and on push (each instance); 0 turns
	// the cap off.
	EnvMaxConnsPerAddr = "TREASURE_MAX_CONNS_PER_ADDR"
	// EnvMaxSocketsPerPlayer caps one player's sockets on ingest and on
	// push (each instance): a newer socket closes the oldest.
	EnvMaxSocketsPerPlayer = "TREASURE_MAX_SOCKETS_PER_PLAYER"
	// EnvLeaderboardRate is the requests per second one client address
	// may make to push's public leaderboard endpoints, with bursts of
	// twice as many; 0 turns the limit off.
	EnvLeaderboardRate = "TREASURE_LEADERBOARD_RATE"
)

// Limits are the player-facing limits read from the environment. A zero
// field means "the service's default"; Off (-1) turns a cap off.
type Limits struct {
	ReadHeaderTimeout, ReadTimeout time.Duration
	MaxConnsPerAddr                int
	MaxSocketsPerPlayer            int
	LeaderboardRate                float64
}

// Off in a Limits field turns that cap off.
const Off = -1

// LimitsFromEnv reads the limits through getenv; the error names every
// variable that is wrong.
func LimitsFromEnv(getenv func(string) string) (Limits, error) {
	var l Limits
	var errs []error
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{EnvHTTPReadHeaderTimeout, &l.ReadHeaderTimeout}, {EnvHTTPReadTimeout, &l.ReadTimeout}} {
		if s := strings.TrimSpace(getenv(d.env)); s != "" {
			v, err := time.ParseDuration(s)
			if err != nil || v <= 0 {
				errs = append(errs, fmt.Errorf("%s: want a positive duration like 10s, got %q", d.env, s))
				continue
			}
			*d.dst = v
		}
	}
	if s := strings.TrimSpace(getenv(EnvMaxConnsPerAddr)); s != "" {
		n, err := strconv.Atoi(s)
		switch {
		case err != nil || n < 0:
			errs = append(errs, fmt.Errorf("%s: want a non-negative integer (0: no cap), got %q", EnvMaxConnsPerAddr, s))
		case n == 0:
			l.MaxConnsPerAddr = Off
		default:
			l.MaxConnsPerAddr = n
		}
	}
	if s := strings.TrimSpace(getenv(EnvMaxSocketsPerPlayer)); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1024 {
			errs = append(errs, fmt.Errorf("%s: want an integer from 1 to 1024, got %q", EnvMaxSocketsPerPlayer, s))
		} else {
			l.MaxSocketsPerPlayer = n
		}
	}
	if s := strings.TrimSpace(getenv(EnvLeaderboardRate)); s != "" {
		r, err := strconv.ParseFloat(s, 64)
		switch {
		case err != nil || r < 0 || r > 1e6 || r != r:
			errs = append(errs, fmt.Errorf("%s: want requests per second from 0 (no limit) to 1e6, got %q", EnvLeaderboardRate, s))
		case r == 0:
			l.LeaderboardRate = Off
		default:
			l.LeaderboardRate = r
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Limits{}, fmt.Errorf("config: %w", err)
	}
	return l, nil
}

// Apply sets s's read timeouts from l (zero fields keep s's).
func (l Limits) Apply(s *HTTPServer) {
	if l.ReadHeaderTimeout > 0 {
		s.ReadHeaderTimeout = l.ReadHeaderTimeout
	}
	if l.ReadTimeout > 0 {
		s.ReadTimeout = l.ReadTimeout
	}
}
