package wire

import (
	"strconv"
	"time"
	"unicode/utf8"

	"treasure/internal/game"
)

// The encoders below append one JSON document to dst and return the
// extended slice, without a trailing newline (the caller joins messages of
// one frame with "\n"). With a dst of enough capacity they allocate
// nothing. Strings (player ids, treasure ids, messages) are escaped exactly
// as encoding/json does with HTML escaping off: quotes, backslashes and
// control characters are escaped, U+2028 and U+2029 too, and every byte of
// invalid UTF-8 becomes \ufffd, so the output is always valid UTF-8 (a
// WebSocket text frame must be). Node ids are wire ids (DIMACS ids).

// AppendAck appends {"type":"ack","seq":S}.
func AppendAck(dst []byte, seq uint64) []byte {
	dst = append(dst, `{"type":"ack","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '}')
}

// AppendError appends {"type":"error","seq":S,"code":C,"message":M}, with
// "retry_after_ms" added for rate_limited and unavailable: retryAfter
// rounded up to whole milliseconds, at least 1, so that a client that
// waits that long finds the condition gone. seq is 0 when the move's seq is
// unknown (bad_json).
func AppendError(dst []byte, seq uint64, code game.Code, msg string, retryAfter time.Duration) []byte {
	dst = append(dst, `{"type":"error","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"code":`...)
	dst = AppendString(dst, string(code))
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, msg)
	if code == game.CodeRateLimited || code == game.CodeUnavailable {
		dst = append(dst, `,"retry_after_ms":`...)
		dst = strconv.AppendInt(dst, RetryAfterMs(retryAfter), 10)
	}
	return append(dst, '}')
}

// RetryAfterMs is d in whole milliseconds, rounded up, at least 1.
func RetryAfterMs(d time.Duration) int64 {
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond > 0 {
		ms++
	}
	return max(ms, 1)
}

// Proximity is a proximity update: the nearest active treasure to the
// last node of the move (Player's seq), or none.
type Proximity struct {
	ID   uint64 // per-player update id
	Seq  uint64
	Node uint64
	// Found is false when no active treasure is within the radius
	// ("treasure":null); the three fields below are then ignored.
	Found        bool
	Treasure     string
	TreasureNode uint64
	Distance     uint64
}

// AppendProximity appends
// {"type":"proximity","id":I,"seq":S,"node":V,"treasure":{"id":T,"node":N,"distance":D}|null}.
func AppendProximity(dst []byte, m Proximity) []byte {
	dst = append(dst, `{"type":"proximity","id":`...)
	dst = strconv.AppendUint(dst, m.ID, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, `,"node":`...)
	dst = strconv.AppendUint(dst, m.Node, 10)
	if !m.Found {
		return append(dst, `,"treasure":null}`...)
	}
	dst = append(dst, `,"treasure":{"id":`...)
	dst = AppendString(dst, m.Treasure)
	dst = append(dst, `,"node":`...)
	dst = strconv.AppendUint(dst, m.TreasureNode, 10)
	dst = append(dst, `,"distance":`...)
	dst = strconv.AppendUint(dst, m.Distance, 10)
	return append(dst, "}}"...)
}

// AppendClaim appends {"type":"claim","id":I,"seq":S,"treasure":T,"points":P}.
func AppendClaim(dst []byte, id, seq uint64, treasure string, points uint64) []byte {
	dst = append(dst, `{"type":"claim","id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"treasure":`...)
	dst = AppendString(dst, treasure)
	dst = append(dst, `,"points":`...)
	dst = strconv.AppendUint(dst, points, 10)
	return append(dst, '}')
}

// AppendScore appends {"type":"score","id":I,"score":X,"rank":R}.
func AppendScore(dst []byte, id uint64, score int64, rank uint64) []byte {
	dst = append(dst, `{"type":"score","id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"score":`...)
	dst = strconv.AppendInt(dst, score, 10)
	dst = append(dst, `,"rank":`...)
	dst = strconv.AppendUint(dst, rank, 10)
	return append(dst, '}')
}

// AppendLeaderboard appends {"type":"leaderboard","top":[{"player":P,"score":X,"rank":R},…]}.
func AppendLeaderboard(dst []byte, top []game.Entry) []byte {
	dst = append(dst, `{"type":"leaderboard","top":`...)
	dst = appendEntries(dst, top)
	return append(dst, '}')
}

// AppendTop appends the body of GET /v1/leaderboard:
// {"top":[{"player":P,"score":X,"rank":R},…],"players":M}.
func AppendTop(dst []byte, top []game.Entry, players uint64) []byte {
	dst = append(dst, `{"top":`...)
	dst = appendEntries(dst, top)
	dst = append(dst, `,"players":`...)
	dst = strconv.AppendUint(dst, players, 10)
	return append(dst, '}')
}

// AppendPlayer appends the body of GET /v1/players/{id}:
// {"player":P,"score":X,"rank":R}.
func AppendPlayer(dst []byte, e game.Entry) []byte {
	dst = append(dst, `{"player":`...)
	dst = AppendString(dst, e.Player)
	dst = append(dst, `,"score":`...)
	dst = strconv.AppendInt(dst, e.Score, 10)
	dst = append(dst, `,"rank":`...)
	dst = strconv.AppendInt(dst, e.Rank, 10)
	return append(dst, '}')
}

// AppendAccepted appends the body of a drop's 202: {"accepted":N}.
func AppendAccepted(dst []byte, n uint64) []byte {
	dst = append(dst, `{"accepted":`...)
	dst = strconv.AppendUint(dst, n, 10)
	return append(dst, '}')
}

func appendEntries(dst []byte, top []game.Entry) []byte {
	dst = append(dst, '[')
	for i, e := range top {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendPlayer(dst, e)
	}
	return append(dst, ']')
}

// safe marks the ASCII bytes that go into a JSON string as they are.
var safe = func() (t [utf8.RuneSelf]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string, escaped as encoding/json does
// with HTML escaping off (see the encoders above).
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
