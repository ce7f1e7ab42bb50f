package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"

	"treasure/internal/game"
	"treasure/internal/graph"
)

const nearestSynopsis = `nearest [--graph FILE] --treasures T.csv [--radius R] < node-ids

Reads node ids from stdin, one per line, and writes one JSON line per node:
  {"node":V,"treasure":{"id":T,"node":N,"distance":D}}   or   {"node":V,"treasure":null}
following SPEC.md's proximity rule: the active treasure with the smallest
shortest-path distance within the radius, ties to the smaller id (byte order).
FILE is a DIMACS .gr/.gr.gz (with its .co beside it, if any) or a snapshot.
T.csv has the header id,node,points. An unknown node or a bad CSV line is an
error naming the line, exit status 2.`

func runNearest(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("nearest", nearestSynopsis, io.Stderr)
	graphPath := fs.String("graph", env("TREASURE_GRAPH"), "road graph: .gr, .gr.gz or .snap (env TREASURE_GRAPH)")
	treasures := fs.String("treasures", "", "treasure CSV with header id,node,points (required)")
	radius := fs.Uint("radius", 0, "proximity radius in the graph's length units (env TREASURE_RADIUS, default 2000)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *graphPath == "" {
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required"}
	}
	if *treasures == "" {
		return &UsageError{Msg: "--treasures is required"}
	}
	r, err := radiusFrom(*radius, env)
	if err != nil {
		return err
	}
	g, err := graph.Open(*graphPath)
	if err != nil {
		return &InputError{Err: err}
	}
	f, err := os.Open(*treasures)
	if err != nil {
		return &InputError{Err: err}
	}
	rows, err := game.ReadTreasureCSV(bufio.NewReader(f))
	f.Close()
	if err != nil {
		return &InputError{Err: fmt.Errorf("%s: %w", *treasures, err)}
	}
	ts := make([]game.Treasure, len(rows))
	for i, row := range rows {
		v, ok := graph.Index(row.NodeID, g.NumNodes())
		if !ok {
			return &InputError{Err: fmt.Errorf("%s: line %d: node %d does not exist (the graph has nodes 1..%d)", *treasures, row.Line, row.NodeID, g.NumNodes())}
		}
		ts[i] = game.Treasure{ID: row.ID, Node: v, Points: row.Points}
	}
	e := game.NewEngine(g, r)
	e.DropAll(ts)
	return answerNearest(ctx, e, io)
}

// answerNearest streams answers for the node ids on stdin. Lines answered
// before a bad line are written out before the error is returned.
func answerNearest(ctx context.Context, e *game.Engine, io IO) error {
	in := bufio.NewScanner(io.Stdin)
	out := bufio.NewWriterSize(io.Stdout, 64<<10)
	defer out.Flush()
	n := e.Graph().NumNodes()
	var buf []byte
	for line := 1; in.Scan(); line++ {
		if line%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		text := trimSpace(in.Bytes())
		if len(text) == 0 {
			continue
		}
		id, err := strconv.ParseUint(string(text), 10, 64)
		if err != nil {
			return &InputError{Err: fmt.Errorf("stdin line %d: %q is not a node id", line, text)}
		}
		v, ok := graph.Index(id, n)
		if !ok {
			return &InputError{Err: fmt.Errorf("stdin line %d: node %d does not exist (the graph has nodes 1..%d)", line, id, n)}
		}
		p, err := e.Nearest(v)
		if err != nil {
			return err
		}
		buf = appendNearestJSON(buf[:0], id, p)
		if _, err := out.Write(buf); err != nil {
			return err
		}
	}
	if err := in.Err(); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	return out.Flush()
}

// appendNearestJSON appends one answer line. Treasure ids are
// [A-Za-z0-9_-] by construction, so they need no escaping.
func appendNearestJSON(b []byte, node uint64, p game.Proximity) []byte {
	b = append(b, `{"node":`...)
	b = strconv.AppendUint(b, node, 10)
	if !p.Found {
		return append(b, `,"treasure":null}`+"\n"...)
	}
	b = append(b, `,"treasure":{"id":"`...)
	b = append(b, p.ID...)
	b = append(b, `","node":`...)
	b = strconv.AppendUint(b, uint64(graph.ID(p.Node)), 10)
	b = append(b, `,"distance":`...)
	b = strconv.AppendUint(b, uint64(p.Distance), 10)
	return append(b, "}}\n"...)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// radiusFrom returns the flag's radius, else TREASURE_RADIUS, else 2000.
func radiusFrom(flagValue uint, env Env) (uint32, error) {
	if flagValue > 0 {
		if flagValue > 1<<31 {
			return 0, &UsageError{Msg: fmt.Sprintf("--radius %d is too large", flagValue)}
		}
		return uint32(flagValue), nil
	}
	s := envOr(env, "TREASURE_RADIUS", "2000")
	r, err := strconv.ParseUint(s, 10, 31)
	if err != nil || r == 0 {
		return 0, &UsageError{Msg: fmt.Sprintf("TREASURE_RADIUS=%q is not a positive integer", s)}
	}
	return uint32(r), nil
}
