package graph

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Limits applied by the DIMACS reader when DIMACSOptions leaves them zero.
// They only bound what a p line may declare, so that a forged header cannot
// make the reader allocate without bound; the largest real road networks
// (USA: 24 M nodes, 58 M arcs) sit far below them.
const (
	DefaultMaxNodes    = 1 << 28
	DefaultMaxSegments = 1<<31 - 1
)

// dimacsBufSize is the reader's buffer size and so the longest line it
// accepts (comment lines may be longer: their rest is skipped).
const dimacsBufSize = 256 << 10

// DIMACSOptions tunes ReadDIMACSWith. The zero value is ready to use.
type DIMACSOptions struct {
	// GrName and CoName name the inputs in errors; "gr" and "co" when empty.
	GrName, CoName string
	// MaxNodes and MaxSegments bound the node and arc-line counts a p line
	// may declare; zero means DefaultMaxNodes and DefaultMaxSegments.
	MaxNodes, MaxSegments int
}

// ParseError is a problem in a DIMACS input: the file, the 1-based line
// (0 when the problem is not tied to one line) and what is wrong. Err is the
// underlying error when there is one (a read or gzip failure).
type ParseError struct {
	File string
	Line int
	Msg  string
	Err  error
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("dimacs: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *ParseError) Unwrap() error { return e.Err }

// ReadDIMACS reads a graph in DIMACS 9th-challenge shortest-path format from
// gr (`c` comments, one `p sp N M` line, M lines `a U V LEN`) and, when co is
// not nil, its coordinates (`p aux sp co N`, one `v ID X Y` per node). Either
// input may be plain text or gzip, detected by its magic bytes.
//
// Node ids 1..N become indices 0..N-1. Every `a` line is a two-way segment:
// self-loops are dropped and of duplicate segments the shortest is kept (see
// FromEdges). Lengths must be in 1..2^32-1 and coordinates fit int32; the
// number of `a` lines must equal M and every node must have exactly one `v`
// line. Any violation is a *ParseError naming the input, the line and the
// problem. ReadDIMACS reads co concurrently with gr and does not close
// either reader.
func ReadDIMACS(gr, co io.Reader) (*Graph, error) {
	return ReadDIMACSWith(gr, co, DIMACSOptions{})
}

// ReadDIMACSWith is ReadDIMACS with names for errors and explicit limits.
func ReadDIMACSWith(gr, co io.Reader, opt DIMACSOptions) (*Graph, error) {
	if opt.GrName == "" {
		opt.GrName = "gr"
	}
	if opt.CoName == "" {
		opt.CoName = "co"
	}
	if opt.MaxNodes <= 0 || opt.MaxNodes > MaxNodes {
		opt.MaxNodes = min(DefaultMaxNodes, MaxNodes)
	}
	if opt.MaxSegments <= 0 || opt.MaxSegments > DefaultMaxSegments {
		opt.MaxSegments = DefaultMaxSegments
	}

	var coDone chan coords
	if co != nil {
		coDone = make(chan coords, 1)
		go func() { coDone <- readCo(co, opt.CoName, opt.MaxNodes) }()
	}
	n, edges, err := readGr(gr, opt.GrName, opt.MaxNodes, opt.MaxSegments)
	var c coords
	if coDone != nil {
		c = <-coDone
	}
	if err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	if co != nil && c.n != n {
		return nil, &ParseError{File: opt.CoName, Line: c.pLine,
			Msg: fmt.Sprintf("p line declares %d nodes, the graph has %d", c.n, n)}
	}
	g, err := FromEdges(n, edges, c.x, c.y)
	if err != nil {
		return nil, &ParseError{File: opt.GrName, Msg: "build graph", Err: err}
	}
	return g, nil
}

// LoadDIMACS reads the DIMACS graph at grPath (plain or gzipped) and the
// coordinate file beside it when there is one: for NAME.gr.gz or NAME.gr,
// the first of NAME.co.gz and NAME.co that exists (NAME.co first for a
// plain NAME.gr). See ReadDIMACS.
func LoadDIMACS(grPath string) (*Graph, error) {
	gf, err := os.Open(grPath)
	if err != nil {
		return nil, fmt.Errorf("dimacs: %w", err)
	}
	defer gf.Close()
	coPath, err := coordPath(grPath)
	if err != nil {
		return nil, fmt.Errorf("dimacs: %w", err)
	}
	opt := DIMACSOptions{GrName: grPath, CoName: coPath}
	if coPath == "" {
		return ReadDIMACSWith(gf, nil, opt)
	}
	cf, err := os.Open(coPath)
	if err != nil {
		return nil, fmt.Errorf("dimacs: %w", err)
	}
	defer cf.Close()
	return ReadDIMACSWith(gf, cf, opt)
}

// coordPath returns the coordinate file beside grPath, or "" when there is
// none (or grPath does not end in .gr or .gr.gz).
func coordPath(grPath string) (string, error) {
	stem, gz := strings.CutSuffix(grPath, ".gz")
	stem, ok := strings.CutSuffix(stem, ".gr")
	if !ok {
		return "", nil
	}
	cands := []string{stem + ".co", stem + ".co.gz"}
	if gz {
		cands[0], cands[1] = cands[1], cands[0]
	}
	for _, p := range cands {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		if st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", nil
}

// lineScanner yields the lines of a DIMACS input, transparently gunzipped.
type lineScanner struct {
	name string
	br   *bufio.Reader
	line int // number of the line last returned
}

func newLineScanner(r io.Reader, name string) (*lineScanner, error) {
	br := bufio.NewReaderSize(r, dimacsBufSize)
	// A Peek error (short or failing input) is reported by the first read.
	if m, _ := br.Peek(2); len(m) == 2 && m[0] == 0x1f && m[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, &ParseError{File: name, Msg: "gzip header", Err: err}
		}
		br = bufio.NewReaderSize(zr, dimacsBufSize)
	}
	return &lineScanner{name: name, br: br}, nil
}

func (s *lineScanner) errorf(format string, args ...any) error {
	return &ParseError{File: s.name, Line: s.line, Msg: fmt.Sprintf(format, args...)}
}

// next returns the next non-blank line with leading blanks removed (its
// first byte is never blank), or io.EOF after the last one. The slice is
// valid until the following call.
func (s *lineScanner) next() ([]byte, error) {
	for {
		b, err := s.br.ReadSlice('\n')
		switch err {
		case nil:
		case io.EOF:
			if len(b) == 0 {
				return nil, io.EOF
			}
		case bufio.ErrBufferFull:
			s.line++
			i := skipBlanks(b, 0)
			if i == len(b) || b[i] != 'c' {
				return nil, s.errorf("line longer than %d bytes", dimacsBufSize)
			}
			for err == bufio.ErrBufferFull { // skip the rest of a long comment
				_, err = s.br.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return nil, &ParseError{File: s.name, Line: s.line, Msg: "read", Err: err}
			}
			continue
		default:
			return nil, &ParseError{File: s.name, Line: s.line + 1, Msg: "read", Err: err}
		}
		s.line++
		if i := skipBlanks(b, 0); i < len(b) {
			return b[i:], nil
		}
	}
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

func skipBlanks(b []byte, i int) int {
	for i < len(b) && isBlank(b[i]) {
		i++
	}
	return i
}

// token returns the blank-separated token at or after b[i] (empty at the
// end of the line) and the index just after it.
func token(b []byte, i int) ([]byte, int) {
	i = skipBlanks(b, i)
	j := i
	for j < len(b) && !isBlank(b[j]) {
		j++
	}
	return b[i:j], j
}

// intClamp is where parseInt saturates: beyond every limit the reader
// checks, so a clamped value is always reported as out of range.
const intClamp = 1 << 62

// parseInt parses a decimal integer with an optional sign. Magnitudes
// beyond intClamp saturate there. ok is false when tok is not an integer.
func parseInt(tok []byte) (v int64, ok bool) {
	neg := false
	if len(tok) > 0 && (tok[0] == '-' || tok[0] == '+') {
		neg = tok[0] == '-'
		tok = tok[1:]
	}
	if len(tok) == 0 {
		return 0, false
	}
	for _, c := range tok {
		d := c - '0'
		if d > 9 {
			return 0, false
		}
		if v < intClamp/16 {
			v = v*10 + int64(d)
		} else {
			v = intClamp
		}
	}
	if neg {
		v = -v
	}
	return v, true
}

// quote renders a token from the input for an error message, shortened.
func quote(tok []byte) string {
	if len(tok) > 24 {
		return strconv.Quote(string(tok[:24])) + "…"
	}
	return strconv.Quote(string(tok))
}

// lineKind checks that line starts with a one-letter type followed by a
// blank or the end and returns that letter, or 0.
func lineKind(line []byte) byte {
	if len(line) > 1 && !isBlank(line[1]) {
		return 0
	}
	return line[0]
}

// readGr reads a .gr input: the node count and the edges (0-based), exactly
// as many as the p line declares.
func readGr(r io.Reader, name string, maxN, maxM int) (int, []Edge, error) {
	s, err := newLineScanner(r, name)
	if err != nil {
		return 0, nil, err
	}
	var (
		n, m  int64
		pLine int
		edges []Edge
	)
	for {
		line, err := s.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, nil, err
		}
		if line[0] == 'c' {
			continue
		}
		switch lineKind(line) {
		case 'a':
			if pLine == 0 {
				return 0, nil, s.errorf("arc before the p line")
			}
			if int64(len(edges)) == m {
				return 0, nil, s.errorf("more arc lines than the %d the p line declares (line %d)", m, pLine)
			}
			e, err := parseArc(s, line, n)
			if err != nil {
				return 0, nil, err
			}
			edges = append(edges, e)
		case 'p':
			if pLine != 0 {
				return 0, nil, s.errorf("duplicate p line (the first is line %d)", pLine)
			}
			toks, ok := fields(line, 4)
			if !ok || string(toks[1]) != "sp" {
				return 0, nil, s.errorf("malformed p line: want \"p sp NODES ARCS\"")
			}
			if n, ok = parseInt(toks[2]); !ok || n < 0 {
				return 0, nil, s.errorf("bad node count %s in the p line", quote(toks[2]))
			}
			if n > int64(maxN) {
				return 0, nil, s.errorf("p line declares %s nodes, more than the limit %d", toks[2], maxN)
			}
			if m, ok = parseInt(toks[3]); !ok || m < 0 {
				return 0, nil, s.errorf("bad arc count %s in the p line", quote(toks[3]))
			}
			if m > int64(maxM) {
				return 0, nil, s.errorf("p line declares %s arcs, more than the limit %d", toks[3], maxM)
			}
			pLine = s.line
			edges = make([]Edge, 0, min(m, 1<<21))
		default:
			tok, _ := token(line, 0)
			return 0, nil, s.errorf("malformed line: unknown type %s", quote(tok))
		}
	}
	if pLine == 0 {
		return 0, nil, &ParseError{File: name, Msg: "missing p line"}
	}
	if int64(len(edges)) != m {
		return 0, nil, &ParseError{File: name, Line: pLine,
			Msg: fmt.Sprintf("p line declares %d arcs, the file has %d", m, len(edges))}
	}
	return int(n), edges, nil
}

// fields splits line into exactly k tokens; ok is false when it has more
// or fewer.
func fields(line []byte, k int) ([][]byte, bool) {
	toks := make([][]byte, 0, k)
	for i := 0; ; {
		tok, j := token(line, i)
		if len(tok) == 0 {
			break
		}
		if len(toks) == k {
			return nil, false
		}
		toks = append(toks, tok)
		i = j
	}
	return toks, len(toks) == k
}

// parseArc parses "a U V LEN" in a graph of n nodes. It is the hot loop of
// the reader: one pass over the bytes, no allocation unless the line is bad.
func parseArc(s *lineScanner, line []byte, n int64) (Edge, error) {
	u, i, oku := scanInt(line, 1)
	v, i, okv := scanInt(line, i)
	l, i, okl := scanInt(line, i)
	if !oku || !okv || !okl || skipBlanks(line, i) != len(line) {
		return Edge{}, s.errorf("malformed arc line: want \"a U V LEN\"")
	}
	if u < 1 || u > n || v < 1 || v > n || l <= 0 || l > 1<<32-1 {
		return Edge{}, arcRangeError(s, line, n)
	}
	return Edge{U: uint32(u - 1), V: uint32(v - 1), Len: uint32(l)}, nil
}

// arcRangeError names what is out of range on a well-formed arc line.
func arcRangeError(s *lineScanner, line []byte, n int64) error {
	tu, i := token(line, 1)
	tv, i := token(line, i)
	tl, _ := token(line, i)
	u, _ := parseInt(tu)
	v, _ := parseInt(tv)
	l, _ := parseInt(tl)
	switch {
	case u < 1 || u > n:
		return s.errorf("node id %s out of range 1..%d", quote(tu), n)
	case v < 1 || v > n:
		return s.errorf("node id %s out of range 1..%d", quote(tv), n)
	case l <= 0:
		return s.errorf("non-positive length %s", quote(tl))
	default:
		return s.errorf("length %s overflows uint32", quote(tl))
	}
}

// coordRangeError names what is out of range on a well-formed "v" line.
func coordRangeError(s *lineScanner, line []byte, n int64) error {
	tid, i := token(line, 1)
	tx, i := token(line, i)
	ty, _ := token(line, i)
	id, _ := parseInt(tid)
	x, _ := parseInt(tx)
	switch {
	case id < 1 || id > n:
		return s.errorf("coordinates for node id %s out of range 1..%d", quote(tid), n)
	case x < -1<<31 || x > 1<<31-1:
		return s.errorf("coordinate %s overflows int32", quote(tx))
	default:
		return s.errorf("coordinate %s overflows int32", quote(ty))
	}
}

// scanInt parses the blank-separated integer at or after b[i] in one pass,
// as parseInt would parse its token, and returns the index after it. ok is
// false when there is no token or it is not an integer.
func scanInt(b []byte, i int) (v int64, j int, ok bool) {
	i = skipBlanks(b, i)
	neg := false
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		neg = b[i] == '-'
		i++
	}
	start := i
	for ; i < len(b); i++ {
		d := b[i] - '0'
		if d > 9 {
			if !isBlank(b[i]) {
				return 0, i, false
			}
			break
		}
		if v < intClamp/16 {
			v = v*10 + int64(d)
		} else {
			v = intClamp
		}
	}
	if i == start {
		return 0, i, false
	}
	if neg {
		v = -v
	}
	return v, i, true
}

// coords is what readCo found: the node count its p line declares (and
// that line's number) and one coordinate pair per node.
type coords struct {
	n, pLine int
	x, y     []int32
	err      error
}

// readCo reads a .co input.
func readCo(r io.Reader, name string, maxN int) coords {
	fail := func(err error) coords { return coords{err: err} }
	s, err := newLineScanner(r, name)
	if err != nil {
		return fail(err)
	}
	var (
		c     coords
		n     int64
		count int64
		seen  []uint64 // bitset of ids already given
	)
	for {
		line, err := s.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(err)
		}
		if line[0] == 'c' {
			continue
		}
		switch lineKind(line) {
		case 'v':
			if c.pLine == 0 {
				return fail(s.errorf("coordinate line before the p line"))
			}
			id, i, okid := scanInt(line, 1)
			x, i, okx := scanInt(line, i)
			y, i, oky := scanInt(line, i)
			if !okid || !okx || !oky || skipBlanks(line, i) != len(line) {
				return fail(s.errorf("malformed coordinate line: want \"v ID X Y\""))
			}
			if id < 1 || id > n || x < -1<<31 || x > 1<<31-1 || y < -1<<31 || y > 1<<31-1 {
				return fail(coordRangeError(s, line, n))
			}
			v := id - 1
			if seen[v>>6]&(1<<(v&63)) != 0 {
				return fail(s.errorf("duplicate coordinates for node id %d", id))
			}
			seen[v>>6] |= 1 << (v & 63)
			c.x[v], c.y[v] = int32(x), int32(y)
			count++
		case 'p':
			if c.pLine != 0 {
				return fail(s.errorf("duplicate p line (the first is line %d)", c.pLine))
			}
			toks, ok := fields(line, 5)
			if !ok || string(toks[1]) != "aux" || string(toks[2]) != "sp" || string(toks[3]) != "co" {
				return fail(s.errorf("malformed p line: want \"p aux sp co NODES\""))
			}
			if n, ok = parseInt(toks[4]); !ok || n < 0 {
				return fail(s.errorf("bad node count %s in the p line", quote(toks[4])))
			}
			if n > int64(maxN) {
				return fail(s.errorf("p line declares %s nodes, more than the limit %d", toks[4], maxN))
			}
			c.pLine = s.line
			c.x, c.y = make([]int32, n), make([]int32, n)
			seen = make([]uint64, (n+63)/64)
		default:
			tok, _ := token(line, 0)
			return fail(s.errorf("malformed line: unknown type %s", quote(tok)))
		}
	}
	if c.pLine == 0 {
		return fail(&ParseError{File: name, Msg: "missing p line"})
	}
	if count != n {
		return fail(&ParseError{File: name, Line: c.pLine,
			Msg: fmt.Sprintf("p line declares %d nodes, the file has coordinates for %d", n, count)})
	}
	c.n = int(n)
	return c
}
