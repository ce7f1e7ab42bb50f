package wire

import (
	"encoding/json"
	"errors"

	"treasure/internal/game"
)

// Drop is one treasure of an admin drop body, as sent: Node is a wire node
// id (DIMACS id) that the caller checks against the graph.
type Drop struct {
	ID     string
	Node   uint64
	Points uint32
}

// ParseDrop parses the body of POST /v1/admin/drops:
//
//	{"treasures":[{"id":"gold-1","node":42,"points":100},…]}
//
// Keys are matched exactly and unknown keys are ignored, as for moves. An
// id must be a JSON string accepted by game.CheckTreasure (1–64 characters
// of [A-Za-z0-9_-]); node a non-negative integer literal (saturating at
// math.MaxUint64, which names no node); points an integer literal from 1
// to 2^31-1. An empty "treasures" array is valid and yields no Drop; a
// repeated id is kept (the engine ignores a known id, so a drop is
// idempotent). It appends to dst and returns it, or returns a *game.Error:
// bad_json when the body is not valid JSON, bad_request naming the first
// faulty treasure otherwise; dst comes back as it was given on error.
func ParseDrop(body []byte, dst []Drop) ([]Drop, error) {
	n := len(dst)
	dst, err := parseDrop(body, dst)
	if err != nil {
		return dst[:n], err
	}
	return dst, nil
}

func parseDrop(body []byte, dst []Drop) ([]Drop, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return dst, game.Errorf(game.CodeBadJSON, "invalid JSON at byte %d: %s", se.Offset, se.Error())
		}
		return dst, game.Errorf(game.CodeBadRequest, `a drop must be a JSON object {"treasures":[…]}`)
	}
	raw, ok := top["treasures"]
	if top == nil || !ok {
		return dst, game.Errorf(game.CodeBadRequest, `a drop must be a JSON object {"treasures":[…]}`)
	}
	var list []json.RawMessage
	if raw = trimSpace(raw); len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return dst, game.Errorf(game.CodeBadRequest, "treasures must be an array, got %s", clip(raw))
	}
	for i, el := range list {
		var t map[string]json.RawMessage
		if err := json.Unmarshal(el, &t); err != nil || t == nil {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d] must be an object, got %s", i, clip(el))
		}
		var d Drop
		idRaw, ok := t["id"]
		if !ok || json.Unmarshal(idRaw, &d.ID) != nil {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d]: id must be a string", i)
		}
		nodeRaw, ok := t["node"]
		if !ok {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d]: node is missing", i)
		}
		if d.Node, ok = integer(nodeRaw); !ok {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d]: node must be a non-negative integer node id, got %s", i, clip(nodeRaw))
		}
		ptsRaw, ok := t["points"]
		if !ok {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d]: points is missing", i)
		}
		pts, ok := points(ptsRaw)
		if !ok {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d]: points must be an integer, got %s", i, clip(ptsRaw))
		}
		if err := game.CheckTreasure(d.ID, pts); err != nil {
			return dst, game.Errorf(game.CodeBadRequest, "treasures[%d]: %s", i, err.Error())
		}
		d.Points = uint32(pts)
		dst = append(dst, d)
	}
	return dst, nil
}

// points parses an integer literal that may be negative, clamped to the
// int64 range (CheckTreasure rejects anything out of range).
func points(raw []byte) (int64, bool) {
	raw = trimSpace(raw)
	neg := len(raw) > 0 && raw[0] == '-'
	if neg {
		raw = raw[1:]
	}
	v, ok := integer(raw)
	if !ok {
		return 0, false
	}
	if v > 1<<62 {
		v = 1 << 62
	}
	if neg {
		return -int64(v), true
	}
	return int64(v), true
}
