// Package wire is the player-facing JSON of SPEC.md's wire contract: the
// parser of the moves players send (WebSocket frames and HTTP bodies), the
// parser of admin drop bodies, and append-style encoders for every message
// the servers send. It holds no state beyond reusable buffers and does no
// I/O.
//
// Move parsing decides the first three error codes of SPEC's order
// (bad_json, bad_request, path_too_long); the rest (unknown_node,
// stale_seq, discontinuous, not_adjacent) need the graph and the player and
// are game.ValidateMove's.
//
// The shape of a move line is decided as follows.
//
//   - bad_json: the line is not one JSON value, exactly as encoding/json
//     (json.Valid) judges it. Its seq is unknown, so the error carries
//     "seq":0: SPEC's error shape always has "seq", and 0 (never a valid
//     seq) keeps it an integer for clients that decode it into one.
//   - bad_request: valid JSON that is not an object; "type" missing or not
//     the string "move"; "seq" missing or not an integer literal in
//     1..MaxSeq; "path" missing, not an array, empty, or holding an element
//     that is not a non-negative integer literal. Integer literals are
//     JSON numbers without sign, fraction or exponent ("5.0", "1e3" and "-0"
//     are rejected, as encoding/json rejects them for a uint64).
//   - path_too_long: a well-formed move whose path has more than
//     game.MaxPath nodes.
//
// Keys are matched exactly (case-sensitive, after JSON unescaping); unknown
// keys are ignored; of a duplicated key the last one counts, as in
// encoding/json. A node id too large for a uint64 is still an integer: it
// parses as math.MaxUint64, which names no node (unknown_node). The seq of
// an error is the line's seq whenever the line is a JSON object whose "seq"
// is valid, even if something else is wrong, so that a client can match
// the error to its move; otherwise it is 0.
//
// A hand-written scanner takes the usual shape (the three keys, no
// escapes, no other keys) without allocating, about 150 ns for a 12-node
// move; every other line goes through encoding/json, which decides the
// errors. The fuzz tests hold both to an independent reading with
// encoding/json's generic decoder.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"treasure/internal/game"
)

// MaxSeq is the largest seq a move may carry: 2^53-1, the largest integer
// that every JSON client (JavaScript's numbers among them) represents
// exactly (RFC 7493, I-JSON). Larger seqs are bad_request.
const MaxSeq = 1<<53 - 1

// Item is one parsed move or the error that rejects it.
type Item struct {
	// Seq is the move's seq; for an error it is the seq when the line
	// carried a valid one, else 0.
	Seq uint64
	// Path holds the wire node ids (DIMACS ids). It points into the
	// Parser's buffer and stays valid until the Parser's next Parse call.
	// Nil when Err is set.
	Path []uint64
	// Err is nil for a well-formed move, else a bad_json, bad_request or
	// path_too_long error.
	Err *game.Error
}

// Parser parses player moves, reusing its buffers: once warm, a
// well-formed move costs no allocation. The zero value is ready to use.
// A Parser is not safe for concurrent use; use one per connection or per
// goroutine.
type Parser struct {
	paths []uint64          // every path of the current call, back to back
	raw   []json.RawMessage // slow path scratch
}

// ParseFrame parses a WebSocket text frame: JSON moves separated by "\n"
// (a "\r" before the "\n" is tolerated). Lines holding nothing but JSON
// whitespace are skipped. It appends one Item per remaining line, in
// order, to dst and returns it. The Items' paths stay valid until the next
// Parse call.
func (p *Parser) ParseFrame(frame []byte, dst []Item) []Item {
	p.paths = p.paths[:0]
	for len(frame) > 0 {
		line := frame
		frame = nil
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, frame = line[:i], line[i+1:]
		}
		if blank(line) {
			continue
		}
		dst = append(dst, p.parse(line))
	}
	return dst
}

// ParseMove parses one move object. Its Item's path stays valid until the
// next Parse call.
func (p *Parser) ParseMove(line []byte) Item {
	p.paths = p.paths[:0]
	return p.parse(line)
}

// ParseBody parses the body of POST /v1/moves: one move object, or an
// array of them. It appends the Items to dst and reports whether the body
// was a JSON array (so that the answer can take the same shape). A body
// that is not valid JSON gives a single bad_json Item and array false; an
// empty array gives no Item and array true (the caller answers
// bad_request). The Items' paths stay valid until the next Parse call.
func (p *Parser) ParseBody(body []byte, dst []Item) (items []Item, array bool) {
	p.paths = p.paths[:0]
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '[' {
		return append(dst, p.parse(body)), false
	}
	if !json.Valid(body) {
		return append(dst, p.slow(body)), false
	}
	// body is a valid array: walk its elements.
	i = skipSpace(body, i+1)
	if body[i] == ']' {
		return dst, true
	}
	for {
		end := skipValue(body, i)
		dst = append(dst, p.parse(body[i:end]))
		i = skipSpace(body, end)
		if body[i] == ']' {
			return dst, true
		}
		i = skipSpace(body, i+1) // the ','
	}
}

// parse parses one move: the fast path for the usual shape, the slow path
// (encoding/json) for everything else, errors included.
func (p *Parser) parse(line []byte) Item {
	start := len(p.paths)
	if seq, ok := p.fast(line); ok {
		end := len(p.paths)
		return Item{Seq: seq, Path: p.paths[start:end:end]}
	}
	p.paths = p.paths[:start]
	return p.slow(line)
}

// fast parses a line of the exact shape {"type":"move","seq":S,"path":[…]}
// (keys in any order, each once, JSON whitespace anywhere between tokens,
// no escapes, no other keys) holding a well-formed move, appending its
// path to p.paths. Whatever it accepts is valid JSON; anything else, valid
// or not, it leaves to the slow path by returning false.
func (p *Parser) fast(b []byte) (uint64, bool) {
	const (
		hasType = 1 << iota
		hasSeq
		hasPath
	)
	var (
		seen  int
		seq   uint64
		start = len(p.paths)
	)
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return 0, false
	}
	for {
		i = skipSpace(b, i+1)
		// key
		if i == len(b) || b[i] != '"' {
			return 0, false
		}
		k := i + 1
		for k < len(b) && b[k] >= 'a' && b[k] <= 'z' {
			k++
		}
		if k == len(b) || b[k] != '"' {
			return 0, false
		}
		key := b[i+1 : k]
		i = skipSpace(b, k+1)
		if i == len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipSpace(b, i+1)
		switch string(key) {
		case "type":
			if seen&hasType != 0 || len(b)-i < 6 || string(b[i:i+6]) != `"move"` {
				return 0, false
			}
			seen |= hasType
			i += 6
		case "seq":
			if seen&hasSeq != 0 || i == len(b) || b[i] < '1' || b[i] > '9' {
				return 0, false
			}
			seen |= hasSeq
			for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
				seq = seq*10 + uint64(b[i]-'0')
				if seq > MaxSeq {
					return 0, false
				}
			}
		case "path":
			if seen&hasPath != 0 || i == len(b) || b[i] != '[' {
				return 0, false
			}
			seen |= hasPath
			for {
				i = skipSpace(b, i+1)
				if i == len(b) || b[i] < '0' || b[i] > '9' || len(p.paths)-start == game.MaxPath {
					return 0, false
				}
				var v uint64
				if b[i] == '0' {
					i++
				} else {
					for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
						d := uint64(b[i] - '0')
						if v > (1<<64-1-d)/10 {
							return 0, false // saturates: the slow path's business
						}
						v = v*10 + d
					}
				}
				p.paths = append(p.paths, v)
				i = skipSpace(b, i)
				if i == len(b) {
					return 0, false
				}
				if b[i] == ']' {
					i++
					break
				}
				if b[i] != ',' {
					return 0, false
				}
			}
		default:
			return 0, false
		}
		i = skipSpace(b, i)
		if i == len(b) {
			return 0, false
		}
		if b[i] == '}' {
			break
		}
		if b[i] != ',' {
			return 0, false
		}
	}
	if skipSpace(b, i+1) != len(b) || seen != hasType|hasSeq|hasPath {
		return 0, false
	}
	return seq, true
}

// slow parses any line with encoding/json and decides its error, if any.
// It appends a valid path to p.paths.
func (p *Parser) slow(line []byte) Item {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Item{Err: game.Errorf(game.CodeBadJSON, "invalid JSON at byte %d: %s", se.Offset, se.Error())}
		}
		return Item{Err: game.Errorf(game.CodeBadRequest, "a move must be a JSON object")}
	}
	if m == nil { // the line was null
		return Item{Err: game.Errorf(game.CodeBadRequest, "a move must be a JSON object")}
	}
	var it Item
	seqRaw, hasSeq := m["seq"]
	seq, seqOK := integer(seqRaw)
	seqOK = seqOK && hasSeq && seq >= 1 && seq <= MaxSeq
	if seqOK {
		it.Seq = seq
	}
	var typ string
	if raw, ok := m["type"]; !ok || json.Unmarshal(raw, &typ) != nil || typ != "move" {
		it.Err = game.Errorf(game.CodeBadRequest, `type must be "move"`)
		return it
	}
	if !hasSeq {
		it.Err = game.Errorf(game.CodeBadRequest, "seq is missing")
		return it
	}
	if !seqOK {
		it.Err = game.Errorf(game.CodeBadRequest, "seq must be an integer from 1 to %d, got %s", MaxSeq, clip(seqRaw))
		return it
	}
	raw, ok := m["path"]
	if !ok {
		it.Err = game.Errorf(game.CodeBadRequest, "path is missing")
		return it
	}
	p.raw = p.raw[:0]
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &p.raw) != nil {
		it.Err = game.Errorf(game.CodeBadRequest, "path must be an array of node ids, got %s", clip(raw))
		return it
	}
	if len(p.raw) == 0 {
		it.Err = game.Errorf(game.CodeBadRequest, "path must hold at least one node")
		return it
	}
	start := len(p.paths)
	for i, el := range p.raw {
		v, ok := integer(el)
		if !ok {
			p.paths = p.paths[:start]
			it.Err = game.Errorf(game.CodeBadRequest, "path[%d] must be a non-negative integer node id, got %s", i, clip(el))
			return it
		}
		p.paths = append(p.paths, v)
	}
	if n := len(p.raw); n > game.MaxPath {
		p.paths = p.paths[:start]
		it.Err = game.Errorf(game.CodePathTooLong, "path has %d nodes, at most %d allowed", n, game.MaxPath)
		return it
	}
	end := len(p.paths)
	it.Path = p.paths[start:end:end]
	return it
}

// integer parses a JSON value that must be a non-negative integer literal
// (digits only, no leading zero). Values past a uint64 saturate at
// math.MaxUint64.
func integer(raw []byte) (v uint64, ok bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || len(raw) > 1 && raw[0] == '0' {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			v = 1<<64 - 1
			continue
		}
		v = v*10 + d
	}
	return v, true
}

// clip quotes at most 32 bytes of a JSON value for an error message.
func clip(raw []byte) string {
	raw = trimSpace(raw)
	if len(raw) > 32 {
		return strconv.Quote(string(raw[:32])) + "…"
	}
	return string(raw)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// skipSpace returns the index of the first non-whitespace byte of b at or
// after i, or len(b).
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func trimSpace(b []byte) []byte {
	i := skipSpace(b, 0)
	j := len(b)
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

func blank(b []byte) bool { return skipSpace(b, 0) == len(b) }

// skipValue returns the index just past the JSON value starting at b[i].
// b must be valid JSON (json.Valid) and b[i] the first byte of a value.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			i++
			for b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case '{', '[':
			depth++
			i++
			continue
		case '}', ']':
			depth--
			i++
		default:
			if isSpace(c) || c == ',' || c == ':' {
				i++
				continue
			}
			// a scalar: number, true, false, null
			for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != ']' && b[i] != '}' {
				i++
			}
		}
		if depth == 0 {
			return i
		}
	}
	return i
}
