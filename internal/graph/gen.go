package graph

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// GenOptions sizes a synthetic city. Edges counts undirected road segments
// (the graph has twice as many arcs).
type GenOptions struct {
	Nodes int
	Edges int
	Seed  uint64
}

// ErrGenSize reports a node and edge count the generator cannot make
// road-like.
var ErrGenSize = errors.New("no road-like city of that size")

// Street layout of the synthetic city, in metres.
const (
	genSpacingMin  = 35   // usual distance between parallel streets
	genSpacingSpan = 31   // ... drawn uniformly from [min, min+span)
	genWideChance  = 20   // one street gap in this many is wide (a park, a rail yard)
	genWideMin     = 75   // wide gaps are drawn from [wideMin, wideMin+wideSpan)
	genWideSpan    = 46   //
	genJitter      = 7    // each junction moves up to this far in x and in y
	genWarp        = 45.0 // amplitude of the slow bend of the streets
	genWarpX       = 2600.0
	genWarpY       = 3100.0
	genDropFrac    = 0.06 // share of grid segments left out when the budget allows
)

// Per-node flags: which segments a node starts. A cell is the square whose
// top-left corner is the node.
const (
	genRight = 1 << iota // (r,c)-(r,c+1)
	genDown              // (r,c)-(r+1,c)
	genDiagB             // the cell's "\" diagonal (r,c)-(r+1,c+1)
	genDiagF             // the cell's "/" diagonal (r,c+1)-(r+1,c)
)

// genShape is the grid the generator lays out: cols columns, full rows
// complete rows and a last partial row of rem nodes (columns 0..rem-1).
type genShape struct {
	n, cols, full, rem int
}

func newGenShape(n int) genShape {
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	if cols < 1 {
		cols = 1
	}
	return genShape{n: n, cols: cols, full: n / cols, rem: n % cols}
}

// rows returns the number of rows, counting a partial last row.
func (s genShape) rows() int {
	if s.rem > 0 {
		return s.full + 1
	}
	return s.full
}

// gridEdges returns the number of horizontal and vertical segments.
func (s genShape) gridEdges() int {
	h := s.full*(s.cols-1) + max(s.rem-1, 0)
	v := max(s.full-1, 0)*s.cols + s.rem
	return h + v
}

// cells returns the number of cells with all four corners present.
func (s genShape) cells() int {
	return max(s.full-1, 0)*(s.cols-1) + max(s.rem-1, 0)
}

// GenLimits returns the range of edge counts Generate accepts for n nodes:
// at least a spanning tree (n-1), at most every grid segment plus one
// diagonal in every cell (about 3n, the most a planar graph can have).
func GenLimits(n int) (minEdges, maxEdges int) {
	if n < 1 {
		return 0, 0
	}
	s := newGenShape(n)
	return n - 1, s.gridEdges() + s.cells()
}

// Generate builds a deterministic synthetic city of exactly opt.Nodes nodes
// and opt.Edges edges from opt.Seed: the same options give identical
// arrays (one PCG stream from math/rand/v2, consumed in a fixed order; no
// maps, no goroutines).
//
// The city is a jittered street grid, numbered row-major (so neighbours are
// close in memory), with coordinates in metres: street gaps of 35–65 m with
// an occasional wide one (75–120 m), junctions moved by up to 7 m, and
// streets bent by a slow wave of 45 m amplitude. A random spanning tree of
// the grid (every node links to its upper or left neighbour) is always
// kept, so the city is one connected component; the remaining grid
// segments and one diagonal per cell (either direction, so the layout
// stays planar) are then chosen uniformly at random to meet the edge count
// exactly. Of the segments the full layout would have, half of those
// left out (up to 6 % of the grid) are grid segments and the rest
// diagonals, so blocks vary in shape. Lengths are the rounded Euclidean
// distances of the end coordinates, at least 1.
//
// Edges must lie in GenLimits(Nodes): fewer than Nodes-1 cannot be
// connected and more than about 3·Nodes cannot be road-like (planar); both
// return an error wrapping ErrGenSize. The original scale, 2.3 M nodes and
// 6.8 M edges (2.96 per node, a dense city), is within the limits (the
// maximum for 2.3 M nodes is 6,893,933): 1 % of its grid segments and 2 %
// of its diagonals are missing, so it is close to a triangulated grid.
func Generate(opt GenOptions) (*Graph, error) {
	n, m := opt.Nodes, opt.Edges
	if n < 1 || n > MaxNodes {
		return nil, fmt.Errorf("generate %d nodes: %w", n, ErrGenSize)
	}
	lo, hi := GenLimits(n)
	if m < lo || m > hi {
		return nil, fmt.Errorf("generate %d nodes, %d edges: want %d..%d edges: %w", n, m, lo, hi, ErrGenSize)
	}
	if 2*uint64(m) > math.MaxUint32 {
		return nil, fmt.Errorf("generate %d edges: more than 2^32-1 arcs: %w", m, ErrGenSize)
	}
	s := newGenShape(n)
	rng := rand.New(rand.NewPCG(opt.Seed, 0x7472656173757265)) // "treasure"
	x, y := genCoords(s, rng)
	flags := genEdges(s, m, rng)
	offsets, arcs := genCSR(s, flags, x, y, m)
	return &Graph{Offsets: offsets, Arcs: arcs, X: x, Y: y, Own: uint32(n)}, nil
}

// genCoords places the junctions: cumulative random street gaps per row and
// column, a slow bend, and a per-node jitter.
func genCoords(s genShape, rng *rand.Rand) (x, y []int32) {
	gap := func() float64 {
		if rng.IntN(genWideChance) == 0 {
			return float64(genWideMin + rng.IntN(genWideSpan))
		}
		return float64(genSpacingMin + rng.IntN(genSpacingSpan))
	}
	rows := s.rows()
	colX := make([]float64, s.cols)
	rowY := make([]float64, rows)
	for c := 1; c < s.cols; c++ {
		colX[c] = colX[c-1] + gap()
	}
	for r := 1; r < rows; r++ {
		rowY[r] = rowY[r-1] + gap()
	}
	px, py := rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi
	// Bend: a row is shifted sideways by a wave of its height, a column up
	// or down by a wave of its abscissa. Keep a margin so that coordinates
	// stay non-negative.
	shiftX := make([]float64, rows)
	for r := range shiftX {
		shiftX[r] = genWarp + genJitter + genWarp*math.Sin(2*math.Pi*rowY[r]/genWarpX+px)
	}
	shiftY := make([]float64, s.cols)
	for c := range shiftY {
		shiftY[c] = genWarp + genJitter + genWarp*math.Sin(2*math.Pi*colX[c]/genWarpY+py)
	}
	x = make([]int32, s.n)
	y = make([]int32, s.n)
	const span = 2*genJitter + 1
	for v := 0; v < s.n; v++ {
		r, c := v/s.cols, v%s.cols
		j := rng.Uint64()
		jx := float64(j%span) - genJitter
		jy := float64((j>>32)%span) - genJitter
		x[v] = int32(math.Round(colX[c] + shiftX[r] + jx))
		y[v] = int32(math.Round(rowY[r] + shiftY[c] + jy))
	}
	return x, y
}

// genEdges chooses the segments, as per-node flags: a random spanning tree,
// then exactly the number of further grid segments and diagonals that
// brings the total to m.
func genEdges(s genShape, m int, rng *rand.Rand) []uint8 {
	n, cols := s.n, s.cols
	flags := make([]uint8, n)
	// Spanning tree: every node but the first links up or left, to a node
	// earlier in row-major order, so the links form a tree.
	for v := 1; v < n; v++ {
		r, c := v/cols, v%cols
		switch {
		case r == 0:
			flags[v-1] |= genRight
		case c == 0:
			flags[v-cols] |= genDown
		case rng.Uint64()&1 == 0:
			flags[v-1] |= genRight
		default:
			flags[v-cols] |= genDown
		}
	}
	grid, cells := s.gridEdges(), s.cells()
	nonTree := grid - (n - 1)
	spare := grid + cells - m // segments of the full layout left out
	drop := min(int(math.Round(genDropFrac*float64(grid))), spare/2)
	drop = max(drop, spare-cells)
	keep := nonTree - drop         // non-tree grid segments to keep
	diag := cells - (spare - drop) // cells with a diagonal

	// Selection sampling (Knuth's algorithm S): each candidate is taken with
	// probability need/left, which takes exactly need of them, uniformly.
	left := nonTree
	take := func(need *int) bool {
		if *need == 0 {
			return false
		}
		ok := rng.Uint64N(uint64(left)) < uint64(*need)
		left--
		if ok {
			*need--
		}
		return ok
	}
	for v := 0; v < n && keep > 0; v++ {
		c := v % cols
		if c+1 < cols && v+1 < n && flags[v]&genRight == 0 && take(&keep) {
			flags[v] |= genRight
		}
		if v+cols < n && flags[v]&genDown == 0 && take(&keep) {
			flags[v] |= genDown
		}
	}
	left = cells
	for v := 0; v < n && diag > 0; v++ {
		if v%cols+1 >= cols || v+cols+1 >= n {
			continue // no complete cell here
		}
		if take(&diag) {
			if rng.Uint64()&1 == 0 {
				flags[v] |= genDiagB
			} else {
				flags[v] |= genDiagF
			}
		}
	}
	return flags
}

// genCSR writes the adjacency straight into its final arrays: one pass
// for the degrees, one for the arcs, in row-major order of neighbours so
// that every list comes out sorted.
func genCSR(s genShape, flags []uint8, x, y []int32, m int) ([]uint32, []Arc) {
	n, cols := s.n, s.cols
	offsets := make([]uint32, n+1)
	arcs := make([]Arc, 2*m)
	var nb [8]uint32
	list := func(v int) []uint32 {
		k := 0
		c := v % cols
		if v >= cols {
			if c > 0 && flags[v-cols-1]&genDiagB != 0 {
				nb[k] = uint32(v - cols - 1)
				k++
			}
			if flags[v-cols]&genDown != 0 {
				nb[k] = uint32(v - cols)
				k++
			}
			if flags[v-cols]&genDiagF != 0 {
				nb[k] = uint32(v - cols + 1)
				k++
			}
		}
		if c > 0 && flags[v-1]&genRight != 0 {
			nb[k] = uint32(v - 1)
			k++
		}
		if flags[v]&genRight != 0 {
			nb[k] = uint32(v + 1)
			k++
		}
		if c > 0 && flags[v-1]&genDiagF != 0 {
			nb[k] = uint32(v + cols - 1)
			k++
		}
		if flags[v]&genDown != 0 {
			nb[k] = uint32(v + cols)
			k++
		}
		if flags[v]&genDiagB != 0 {
			nb[k] = uint32(v + cols + 1)
			k++
		}
		return nb[:k]
	}
	w := uint32(0)
	for v := 0; v < n; v++ {
		offsets[v] = w
		xv, yv := float64(x[v]), float64(y[v])
		for _, u := range list(v) {
			dx, dy := float64(x[u])-xv, float64(y[u])-yv
			arcs[w] = Arc{To: u, Len: max(uint32(math.Round(math.Sqrt(dx*dx+dy*dy))), 1)}
			w++
		}
	}
	offsets[n] = w
	return offsets, arcs
}
