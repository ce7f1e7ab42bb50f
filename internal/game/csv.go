package game

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// TreasureRow is one row of a treasure CSV: the node is a wire id.
type TreasureRow struct {
	ID     string
	NodeID uint64
	Points uint32
	Line   int
}

// ReadTreasureCSV reads a treasure list with the header `id,node,points`
// (columns in any order, extra columns ignored). Each row is checked by
// CheckTreasure; the node must be a positive integer. Errors name the line.
// Whether the node exists is for the caller to check against its graph.
func ReadTreasureCSV(r io.Reader) ([]TreasureRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	head, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("line 1: empty file, want the header id,node,points")
	}
	if err != nil {
		return nil, fmt.Errorf("line 1: %w", err)
	}
	col := map[string]int{"id": -1, "node": -1, "points": -1}
	for i, h := range head {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if _, ok := col[h]; ok {
			col[h] = i
		}
	}
	for _, k := range []string{"id", "node", "points"} {
		if col[k] < 0 {
			return nil, fmt.Errorf("line 1: header %q lacks column %q (want id,node,points)", strings.Join(head, ","), k)
		}
	}
	need := max(col["id"], col["node"], col["points"]) + 1
	var rows []TreasureRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("line %d: %v", pe.StartLine, pe.Err)
			}
			return nil, err
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		if len(rec) < need {
			return nil, fmt.Errorf("line %d: %d fields, want id,node,points", line, len(rec))
		}
		id := strings.TrimSpace(rec[col["id"]])
		node, err := strconv.ParseUint(strings.TrimSpace(rec[col["node"]]), 10, 64)
		if err != nil || node == 0 {
			return nil, fmt.Errorf("line %d: node %q is not a positive integer", line, rec[col["node"]])
		}
		pts, err := strconv.ParseInt(strings.TrimSpace(rec[col["points"]]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: points %q is not an integer", line, rec[col["points"]])
		}
		if err := CheckTreasure(id, pts); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		rows = append(rows, TreasureRow{ID: id, NodeID: node, Points: uint32(pts), Line: line})
	}
}
