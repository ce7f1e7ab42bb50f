package push

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"treasure/internal/graph"
)

// Map geometry for the live page (GET /v1/map). The road graph is drawn
// from its node coordinates, downsampled to the page's resolution: the
// bounding box is cut into a grid of mapGrid × mapGrid cells, every edge
// becomes the segment between its two nodes' cells, edges inside one cell
// vanish and repeated segments are kept once. When that still leaves more
// than mapMaxSegments segments the grid is halved and the graph walked
// again (down to mapMinGrid). Amsterdam (76,718 edges) keeps about 40,000
// segments at 1024 cells; the 2.3 M-node synthetic city ends on a coarser
// grid. Built once, on the first request, and cached with its gzip form.
const (
	mapGrid        = 1024
	mapMinGrid     = 64
	mapMaxSegments = 60_000
)

// liveMap is the cached answer of GET /v1/map.
type liveMap struct {
	once       sync.Once
	plain, gz  []byte
	segments   int
	grid       int
	hasCoords  bool
	buildError string
}

// serveMap answers GET /v1/map: {"coords":true,"nodes":N,"edges":E,
// "bbox":[minX,minY,maxX,maxY],"grid":G,"segments":[x1,y1,x2,y2,…]}, the
// segments in grid cells (0..G) of the bounding box, or
// {"coords":false,"nodes":N,"message":M} for a graph without coordinates
// (or no graph).
func (s *Server) serveMap(w http.ResponseWriter, r *http.Request) {
	m := &s.liveMap
	m.once.Do(func() { m.plain = buildMap(s.o.Graph, m) })
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("Vary", "Accept-Encoding")
	body := m.plain
	if m.gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		h.Set("Content-Encoding", "gzip")
		body = m.gz
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// buildMap returns the JSON of GET /v1/map for g and fills m's figures
// and gzip form.
func buildMap(g *graph.Graph, m *liveMap) []byte {
	var b []byte
	switch {
	case g == nil:
		b = []byte(`{"coords":false,"nodes":0,"message":"this push instance has no graph (set TREASURE_GRAPH): no map to draw"}`)
	case !g.HasCoords():
		b = append([]byte(`{"coords":false,"nodes":`), strconv.Itoa(g.NumNodes())...)
		b = append(b, `,"message":"this graph has no node coordinates (a DIMACS .gr without its .co): no map to draw"}`...)
	default:
		m.hasCoords = true
		b = mapJSON(g, m)
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	_, _ = zw.Write(b)
	if zw.Close() == nil {
		m.gz = z.Bytes()
	}
	return b
}

func mapJSON(g *graph.Graph, m *liveMap) []byte {
	n := g.NumNodes()
	minX, minY, maxX, maxY := int64(0), int64(0), int64(0), int64(0)
	for v := range n {
		x, y := int64(g.X[v]), int64(g.Y[v])
		if v == 0 || x < minX {
			minX = x
		}
		if v == 0 || x > maxX {
			maxX = x
		}
		if v == 0 || y < minY {
			minY = y
		}
		if v == 0 || y > maxY {
			maxY = y
		}
	}
	span := max(maxX-minX, maxY-minY, 1)
	var keys []uint64
	grid := mapGrid
	for ; ; grid /= 2 {
		cell := func(v uint32) uint64 {
			cx := (int64(g.X[v]) - minX) * int64(grid) / span
			cy := (int64(g.Y[v]) - minY) * int64(grid) / span
			return uint64(cx)<<16 | uint64(cy)
		}
		keys = keys[:0]
		for u := range uint32(n) {
			cu := cell(u)
			for _, a := range g.Neighbors(u) {
				if a.To < u {
					continue // each edge once
				}
				cv := cell(a.To)
				if cu == cv {
					continue
				}
				if cu > cv {
					keys = append(keys, cv<<32|cu)
				} else {
					keys = append(keys, cu<<32|cv)
				}
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		if len(keys) <= mapMaxSegments || grid <= mapMinGrid {
			break
		}
	}
	m.grid, m.segments = grid, len(keys)
	b := make([]byte, 0, 128+len(keys)*18)
	b = append(b, `{"coords":true,"nodes":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"edges":`...)
	b = strconv.AppendInt(b, int64(g.NumArcs()/2), 10)
	b = append(b, `,"bbox":[`...)
	for i, v := range []int64{minX, minY, minX + span, minY + span} {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	b = append(b, `],"extent":[`...)
	b = strconv.AppendInt(b, maxX, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, maxY, 10)
	b = append(b, `],"grid":`...)
	b = strconv.AppendInt(b, int64(grid), 10)
	b = append(b, `,"segments":[`...)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		for j, c := range [2]uint64{k >> 32, k & 0xffffffff} {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, c>>16, 10)
			b = append(b, ',')
			b = strconv.AppendUint(b, c&0xffff, 10)
		}
	}
	return append(b, "]}"...)
}
