package loadgen

import (
	"bytes"
	"encoding/json"
)

// kind is the "type" of a server message.
type kind uint8

const (
	kindOther kind = iota // a type the load generator does not read
	kindAck
	kindError
	kindProximity
	kindClaim
	kindScore
	kindLeaderboard
)

var kinds = [...]string{
	kindAck:         "ack",
	kindError:       "error",
	kindProximity:   "proximity",
	kindClaim:       "claim",
	kindScore:       "score",
	kindLeaderboard: "leaderboard",
}

// msg holds what the load generator reads of one server message (SPEC.md,
// "Wire contract"). Code and Message alias the frame they were parsed from.
type msg struct {
	kind         kind
	hasID        bool
	hasSeq       bool
	id, seq      uint64
	node         uint64
	retryAfterMs uint64
	code         []byte
	message      []byte
}

// eachLine calls fn for every non-blank line of frame, in order: servers
// may batch several newline-separated messages into one frame. A "\r"
// before the "\n" is dropped.
func eachLine(frame []byte, fn func(line []byte)) {
	for len(frame) > 0 {
		line := frame
		frame = nil
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, frame = line[:i], line[i+1:]
		}
		line = bytes.TrimRight(line, "\r")
		if skipSpace(line, 0) == len(line) {
			continue
		}
		fn(line)
	}
}

// parseMsg reads one message line without allocating (unless a string
// value holds escapes). It reports false when the line is not a JSON
// object or when a field it reads has the wrong type: "type", "code" and
// "message" must be strings; "id", "seq", "node" and "retry_after_ms"
// non-negative integers without sign, fraction or exponent that fit a
// uint64. Of a repeated key the last counts, as in encoding/json; other
// keys are skipped whatever they hold. The scan is lenient about the
// syntax of values it skips: it is a client reading its own servers, not a
// validator.
func parseMsg(line []byte) (msg, bool) {
	var m msg
	i := skipSpace(line, 0)
	if i == len(line) || line[i] != '{' {
		return m, false
	}
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return m, skipSpace(line, i+1) == len(line)
	}
	for {
		if i == len(line) || line[i] != '"' {
			return m, false
		}
		end := skipString(line, i)
		if end < 0 {
			return m, false
		}
		key, ok := stringValue(line[i:end])
		if !ok {
			return m, false
		}
		i = skipSpace(line, end)
		if i == len(line) || line[i] != ':' {
			return m, false
		}
		i = skipSpace(line, i+1)
		end = skipValue(line, i)
		if end < 0 {
			return m, false
		}
		val := line[i:end]
		if !m.set(key, val) {
			return m, false
		}
		i = skipSpace(line, end)
		if i == len(line) {
			return m, false
		}
		if line[i] == '}' {
			return m, skipSpace(line, i+1) == len(line)
		}
		if line[i] != ',' {
			return m, false
		}
		i = skipSpace(line, i+1)
	}
}

// set stores the value of key when the load generator reads it.
func (m *msg) set(key, val []byte) bool {
	switch string(key) {
	case "type":
		s, ok := stringValue(val)
		if !ok {
			return false
		}
		m.kind = kindOther
		for k, name := range kinds {
			if name != "" && string(s) == name {
				m.kind = kind(k)
			}
		}
	case "code":
		s, ok := stringValue(val)
		m.code = s
		return ok
	case "message":
		s, ok := stringValue(val)
		m.message = s
		return ok
	case "id":
		v, ok := uintValue(val)
		m.id, m.hasID = v, ok
		return ok
	case "seq":
		v, ok := uintValue(val)
		m.seq, m.hasSeq = v, ok
		return ok
	case "node":
		v, ok := uintValue(val)
		m.node = v
		return ok
	case "retry_after_ms":
		v, ok := uintValue(val)
		m.retryAfterMs = v
		return ok
	}
	return true
}

// stringValue returns the contents of a JSON string value, unescaped.
func stringValue(val []byte) ([]byte, bool) {
	if len(val) < 2 || val[0] != '"' {
		return nil, false
	}
	s := val[1 : len(val)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return s, true
	}
	var out string
	if json.Unmarshal(val, &out) != nil {
		return nil, false
	}
	return []byte(out), true
}

// uintValue parses a non-negative integer literal that fits a uint64.
func uintValue(val []byte) (uint64, bool) {
	if len(val) == 0 || (val[0] == '0' && len(val) > 1) {
		return 0, false
	}
	var v uint64
	for _, c := range val {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the JSON string starting at
// b[i] == '"', or -1 when it is not closed or holds a control character.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			i++
		case c < 0x20:
			return -1
		}
	}
	return -1
}

// skipValue returns the index just past the JSON value starting at b[i],
// or -1. Strings, objects and arrays are matched; a scalar is everything
// up to the next delimiter, checked only by the callers that read it.
func skipValue(b []byte, i int) int {
	if i == len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end := skipString(b, i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	case ',', '}', ']', ':':
		return -1
	}
	start := i
	for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
		i++
	}
	if i == start {
		return -1
	}
	return i
}

// nodeInMessage reads the node a discontinuous error says the player is
// at: the integer after the last "at node " in the message, as
// game.ValidateMove words it ("path starts at node A but the player is at
// node B"). It is a fallback for resynchronising (see Options): SPEC does
// not fix the message's text.
func nodeInMessage(message []byte) (uint64, bool) {
	i := bytes.LastIndex(message, []byte("at node "))
	if i < 0 {
		return 0, false
	}
	rest := message[i+len("at node "):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	return uintValue(rest[:end])
}
