package graph

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// ioTiny is dimacs-tiny.gr as a graph: 1-2 keeps the shorter duplicate
// (7), the self-loop at 3 is gone.
var ioTiny = &Graph{
	Offsets: []uint32{0, 1, 3, 5, 7, 8},
	Arcs: []Arc{
		{1, 7},
		{0, 7}, {2, 5},
		{1, 5}, {3, 2},
		{2, 2}, {4, 1},
		{3, 1},
	},
	Own: 5,
}

var (
	ioTinyX = []int32{0, 10, 10, 12, -2147483648}
	ioTinyY = []int32{0, 0, -5, -5, 2147483647}
)

func ioTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func ioGzip(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// ioAssertEqual fails unless got and want hold the same arrays, with the
// same presence of coordinates and Global.
func ioAssertEqual(tb testing.TB, got, want *Graph) {
	tb.Helper()
	if !slices.Equal(got.Offsets, want.Offsets) {
		tb.Fatalf("offsets %v, want %v", ioShort(got.Offsets), ioShort(want.Offsets))
	}
	if !slices.Equal(got.Arcs, want.Arcs) {
		tb.Fatalf("arcs %v, want %v", ioShort(got.Arcs), ioShort(want.Arcs))
	}
	if (got.X == nil) != (want.X == nil) || !slices.Equal(got.X, want.X) || !slices.Equal(got.Y, want.Y) {
		tb.Fatalf("coordinates %v/%v, want %v/%v", ioShort(got.X), ioShort(got.Y), ioShort(want.X), ioShort(want.Y))
	}
	if (got.Global == nil) != (want.Global == nil) || !slices.Equal(got.Global, want.Global) {
		tb.Fatalf("global %v, want %v", ioShort(got.Global), ioShort(want.Global))
	}
	if got.Own != want.Own {
		tb.Fatalf("own %d, want %d", got.Own, want.Own)
	}
}

func ioShort[T any](s []T) []T {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func ioWithCoords(g *Graph, x, y []int32) *Graph {
	c := *g
	c.X, c.Y = x, y
	return &c
}

func TestReadDIMACSTiny(t *testing.T) {
	gr := ioTestdata(t, "dimacs-tiny.gr")
	co := ioTestdata(t, "dimacs-tiny.co")
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }
	messy := []byte("\n  c indented comment\n\np\tsp  5\t7  \n" +
		"a 1 2 10\n\t a 2 1 7\na 2 3 5\na 3 3 4\n\na 3 4 2\na 1 2 12\na 4 5 1") // no final newline
	longComment := append([]byte("c "+strings.Repeat("x", 3*dimacsBufSize)+"\n"), gr...)
	tests := []struct {
		name   string
		gr, co []byte
		want   *Graph
	}{
		{"plain without coordinates", gr, nil, ioTiny},
		{"plain with coordinates", gr, co, ioWithCoords(ioTiny, ioTinyX, ioTinyY)},
		{"gzipped with coordinates", ioGzip(t, gr), ioGzip(t, co), ioWithCoords(ioTiny, ioTinyX, ioTinyY)},
		{"gzipped graph, plain coordinates", ioGzip(t, gr), co, ioWithCoords(ioTiny, ioTinyX, ioTinyY)},
		{"CRLF line endings", crlf(gr), crlf(co), ioWithCoords(ioTiny, ioTinyX, ioTinyY)},
		{"blanks, tabs and no final newline", messy, nil, ioTiny},
		{"comment longer than the buffer", longComment, nil, ioTiny},
		{"nodes without arcs", []byte("p sp 3 0\n"), nil,
			&Graph{Offsets: []uint32{0, 0, 0, 0}, Arcs: []Arc{}, Own: 3}},
		{"empty graph", []byte("p sp 0 0\n"), []byte("p aux sp co 0\n"),
			&Graph{Offsets: []uint32{0}, Arcs: []Arc{}, X: []int32{}, Y: []int32{}}},
		{"largest length", []byte("p sp 2 1\na 1 2 4294967295\n"), nil,
			&Graph{Offsets: []uint32{0, 1, 2}, Arcs: []Arc{{1, 1<<32 - 1}, {0, 1<<32 - 1}}, Own: 2}},
		{"leading zeros and plus signs", []byte("p sp 02 +1\na 01 +2 007\n"), nil,
			&Graph{Offsets: []uint32{0, 1, 2}, Arcs: []Arc{{1, 7}, {0, 7}}, Own: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var co *bytes.Reader
			if tt.co != nil {
				co = bytes.NewReader(tt.co)
			}
			var g *Graph
			var err error
			if co == nil {
				g, err = ReadDIMACS(bytes.NewReader(tt.gr), nil)
			} else {
				g, err = ReadDIMACS(bytes.NewReader(tt.gr), co)
			}
			if err != nil {
				t.Fatal(err)
			}
			ioAssertEqual(t, g, tt.want)
			if err := g.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReadDIMACSErrors(t *testing.T) {
	const ok2 = "p sp 2 1\na 1 2 3\n" // a valid two-node graph
	long := "p sp 2 1\na 1 2 " + strings.Repeat("7", dimacsBufSize) + "\n"
	gz := ioGzip(t, ioTestdata(t, "dimacs-tiny.gr"))
	badCRC := slices.Clone(gz)
	badCRC[len(badCRC)-6] ^= 0xff // the gzip trailer's CRC-32
	tests := []struct {
		name   string
		gr, co string
		want   string
	}{
		{"empty file", "", "", "dimacs: gr: missing p line"},
		{"only comments", "c one\nc two\n", "", "dimacs: gr: missing p line"},
		{"arc before p line", "c x\na 1 2 3\np sp 2 1\n", "", "dimacs: gr:2: arc before the p line"},
		{"duplicate p line", "p sp 2 1\nc\np sp 2 1\n", "", "gr:3: duplicate p line (the first is line 1)"},
		{"p line of another problem", "p max 2 1\n", "", `gr:1: malformed p line: want "p sp NODES ARCS"`},
		{"p line too short", "p sp 2\n", "", "gr:1: malformed p line"},
		{"p line too long", "p sp 2 1 1\n", "", "gr:1: malformed p line"},
		{"negative node count", "p sp -1 0\n", "", `gr:1: bad node count "-1" in the p line`},
		{"node count not a number", "p sp x 0\n", "", `gr:1: bad node count "x" in the p line`},
		{"negative arc count", "p sp 2 -1\n", "", `gr:1: bad arc count "-1" in the p line`},
		{"node count over the limit", "p sp 99999999999999999999999 0\n", "", "gr:1: p line declares 99999999999999999999999 nodes, more than the limit 268435456"},
		{"arc count over the limit", "p sp 2 3000000000\n", "", "gr:1: p line declares 3000000000 arcs, more than the limit 2147483647"},
		{"node id zero", "p sp 2 1\na 0 2 3\n", "", `gr:2: node id "0" out of range 1..2`},
		{"node id above N", "p sp 2 1\na 1 3 3\n", "", `gr:2: node id "3" out of range 1..2`},
		{"node id negative", "p sp 2 1\na -1 2 3\n", "", `gr:2: node id "-1" out of range 1..2`},
		{"node id overflowing int64", "p sp 2 1\na 1 99999999999999999999999 3\n", "", `gr:2: node id "99999999999999999999999" out of range 1..2`},
		{"zero length", "p sp 2 1\na 1 2 0\n", "", `gr:2: non-positive length "0"`},
		{"negative length", "p sp 2 1\na 1 2 -5\n", "", `gr:2: non-positive length "-5"`},
		{"length overflowing uint32", "p sp 2 1\na 1 2 4294967296\n", "", `gr:2: length "4294967296" overflows uint32`},
		{"length overflowing int64", "p sp 2 1\na 1 2 99999999999999999999999999\n", "", `gr:2: length "999999999999999999999999"… overflows uint32`},
		{"arc line missing a field", "p sp 2 1\na 1 2\n", "", `gr:2: malformed arc line: want "a U V LEN"`},
		{"arc line with an extra field", "p sp 2 1\na 1 2 3 4\n", "", "gr:2: malformed arc line"},
		{"arc line with a word", "p sp 2 1\na 1 two 3\n", "", "gr:2: malformed arc line"},
		{"arc line with a fraction", "p sp 2 1\na 1 2 3.5\n", "", "gr:2: malformed arc line"},
		{"type letter glued to a field", "p sp 2 1\na1 2 3\n", "", `gr:2: malformed line: unknown type "a1"`},
		{"unknown line type", "p sp 2 1\nn 1 s\na 1 2 3\n", "", `gr:2: malformed line: unknown type "n"`},
		{"coordinate line in a graph", "p sp 2 1\nv 1 2 3\n", "", `gr:2: malformed line: unknown type "v"`},
		{"fewer arcs than declared", "p sp 2 2\na 1 2 3\n", "", "gr:1: p line declares 2 arcs, the file has 1"},
		{"more arcs than declared", "p sp 2 1\na 1 2 3\na 2 1 3\n", "", "gr:3: more arc lines than the 1 the p line declares (line 1)"},
		{"line longer than the buffer", long, "", "gr:2: line longer than 262144 bytes"},
		{"bad gzip header", "\x1f\x8b\x07junkjunkjunk", "", "dimacs: gr: gzip header: gzip: invalid header"},
		{"bad gzip checksum", string(badCRC), "", "dimacs: gr:12: read: gzip: invalid checksum"},
		{"truncated gzip", string(gz[:len(gz)/2]), "", "read: unexpected EOF"},

		{"coordinates without p line", ok2, "c x\n", "dimacs: co: missing p line"},
		{"coordinates before p line", ok2, "v 1 0 0\n", "co:1: coordinate line before the p line"},
		{"duplicate coordinate p line", ok2, "p aux sp co 2\np aux sp co 2\n", "co:2: duplicate p line (the first is line 1)"},
		{"coordinate p line of a graph", ok2, "p sp 2 1\n", `co:1: malformed p line: want "p aux sp co NODES"`},
		{"coordinate node count negative", ok2, "p aux sp co -2\n", `co:1: bad node count "-2" in the p line`},
		{"coordinate node count over the limit", ok2, "p aux sp co 300000000\n", "co:1: p line declares 300000000 nodes, more than the limit"},
		{"coordinates for node zero", ok2, "p aux sp co 2\nv 0 1 1\n", `co:2: coordinates for node id "0" out of range 1..2`},
		{"coordinates for a node above N", ok2, "p aux sp co 2\nv 1 0 0\nv 3 1 1\n", `co:3: coordinates for node id "3" out of range 1..2`},
		{"duplicate coordinates", ok2, "p aux sp co 2\nv 1 0 0\nv 1 1 1\n", "co:3: duplicate coordinates for node id 1"},
		{"missing coordinates", ok2, "p aux sp co 2\nv 2 0 0\n", "co:1: p line declares 2 nodes, the file has coordinates for 1"},
		{"x overflowing int32", ok2, "p aux sp co 2\nv 1 2147483648 0\nv 2 0 0\n", `co:2: coordinate "2147483648" overflows int32`},
		{"y overflowing int32", ok2, "p aux sp co 2\nv 1 0 -2147483649\nv 2 0 0\n", `co:2: coordinate "-2147483649" overflows int32`},
		{"coordinate line missing a field", ok2, "p aux sp co 2\nv 1 0\n", `co:2: malformed coordinate line: want "v ID X Y"`},
		{"arc line in coordinates", ok2, "p aux sp co 2\na 1 2 3\n", `co:2: malformed line: unknown type "a"`},
		{"coordinates for another graph", ok2, "p aux sp co 3\nv 1 0 0\nv 2 0 0\nv 3 0 0\n", "co:1: p line declares 3 nodes, the graph has 2"},
		{"graph error wins over coordinates error", "p sp 2 1\n", "v 1 1 1\n", "gr:1: p line declares 1 arcs, the file has 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g *Graph
			var err error
			if tt.co == "" {
				g, err = ReadDIMACS(strings.NewReader(tt.gr), nil)
			} else {
				g, err = ReadDIMACS(strings.NewReader(tt.gr), strings.NewReader(tt.co))
			}
			if err == nil {
				t.Fatalf("read %d nodes, want error %q", g.NumNodes(), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to contain %q", err, tt.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError", err)
			}
		})
	}
}

func TestReadDIMACSReadErrorIsWrapped(t *testing.T) {
	boom := errors.New("boom")
	r := iotest.TimeoutReader(strings.NewReader("p sp 2 1\n"))
	_, err := ReadDIMACS(r, nil)
	if err == nil || !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("error %v, want one wrapping %v", err, iotest.ErrTimeout)
	}
	_, err = ReadDIMACS(strings.NewReader("p sp 2 1\na 1 2 3\n"), iotest.ErrReader(boom))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "dimacs: co:1: read: boom") {
		t.Fatalf("error %v, want co:1: read: boom", err)
	}
}

func TestReadDIMACSWithOptions(t *testing.T) {
	opt := DIMACSOptions{GrName: "city.gr", CoName: "city.co", MaxNodes: 4, MaxSegments: 2}
	_, err := ReadDIMACSWith(strings.NewReader("p sp 5 1\n"), nil, opt)
	if err == nil || err.Error() != "dimacs: city.gr:1: p line declares 5 nodes, more than the limit 4" {
		t.Fatalf("error %v", err)
	}
	_, err = ReadDIMACSWith(strings.NewReader("p sp 4 3\n"), nil, opt)
	if err == nil || err.Error() != "dimacs: city.gr:1: p line declares 3 arcs, more than the limit 2" {
		t.Fatalf("error %v", err)
	}
	_, err = ReadDIMACSWith(strings.NewReader("p sp 2 1\na 1 2 3\n"), strings.NewReader("p aux sp co 5\n"), opt)
	if err == nil || err.Error() != "dimacs: city.co:1: p line declares 5 nodes, more than the limit 4" {
		t.Fatalf("error %v", err)
	}
	g, err := ReadDIMACSWith(strings.NewReader("p sp 4 2\na 1 2 3\na 3 4 5\n"), nil, opt)
	if err != nil || g.NumArcs() != 4 {
		t.Fatalf("graph %v, error %v; want 4 arcs", g, err)
	}
}

// ioWriteFiles writes name→content into a fresh directory and returns it.
func ioWriteFiles(tb testing.TB, files map[string][]byte) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func TestLoadDIMACSFindsCoordinates(t *testing.T) {
	gr := ioTestdata(t, "dimacs-tiny.gr")
	co := ioTestdata(t, "dimacs-tiny.co")
	withXY := ioWithCoords(ioTiny, ioTinyX, ioTinyY)
	tests := []struct {
		name  string
		files map[string][]byte
		load  string
		want  *Graph
	}{
		{"plain pair", map[string][]byte{"c.gr": gr, "c.co": co}, "c.gr", withXY},
		{"gzipped pair", map[string][]byte{"c.gr.gz": ioGzip(t, gr), "c.co.gz": ioGzip(t, co)}, "c.gr.gz", withXY},
		{"gzipped graph, plain coordinates", map[string][]byte{"c.gr.gz": ioGzip(t, gr), "c.co": co}, "c.gr.gz", withXY},
		{"plain graph, gzipped coordinates", map[string][]byte{"c.gr": gr, "c.co.gz": ioGzip(t, co)}, "c.gr", withXY},
		{"no coordinates", map[string][]byte{"c.gr.gz": ioGzip(t, gr), "d.co.gz": []byte("junk")}, "c.gr.gz", ioTiny},
		{"gzip named as plain", map[string][]byte{"c.gr": ioGzip(t, gr), "c.co": ioGzip(t, co)}, "c.gr", withXY},
		{"plain named as gzip", map[string][]byte{"c.gr.gz": gr, "c.co.gz": co}, "c.gr.gz", withXY},
		{"other name: no coordinates looked for", map[string][]byte{"c.txt": gr, "c.co": []byte("junk")}, "c.txt", ioTiny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := ioWriteFiles(t, tt.files)
			g, err := LoadDIMACS(filepath.Join(dir, tt.load))
			if err != nil {
				t.Fatal(err)
			}
			ioAssertEqual(t, g, tt.want)
		})
	}
}

func TestLoadDIMACSErrorsNameTheFile(t *testing.T) {
	dir := ioWriteFiles(t, map[string][]byte{
		"bad.gr.gz": ioGzip(t, []byte("p sp 2 1\na 1 9 3\n")),
		"c.gr":      ioTestdata(t, "dimacs-tiny.gr"),
		"c.co.gz":   ioGzip(t, []byte("p aux sp co 5\nv 7 0 0\n")),
	})
	_, err := LoadDIMACS(filepath.Join(dir, "bad.gr.gz"))
	if want := "dimacs: " + filepath.Join(dir, "bad.gr.gz") + `:2: node id "9" out of range 1..2`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
	_, err = LoadDIMACS(filepath.Join(dir, "c.gr"))
	if want := "dimacs: " + filepath.Join(dir, "c.co.gz") + `:2: coordinates for node id "7" out of range 1..5`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
	_, err = LoadDIMACS(filepath.Join(dir, "missing.gr"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.gr") {
		t.Fatalf("error %v, want not-exist naming missing.gr", err)
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"42", 42, true}, {"-42", -42, true}, {"+7", 7, true},
		{"9223372036854775807", intClamp, true}, {"-99999999999999999999", -intClamp, true},
		{"", 0, false}, {"-", 0, false}, {"1e3", 0, false}, {"12a", 0, false}, {"--1", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseInt([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if tt.in == "" {
			continue // scanInt would skip to the next token
		}
		line := []byte("a \t" + tt.in + " 5")
		got, j, ok := scanInt(line, 1)
		if ok != tt.ok || (ok && (got != tt.want || string(line[j:]) != " 5")) {
			t.Errorf("scanInt(%q) = %d, rest %q, %v; want %d, \" 5\", %v", line, got, line[j:], ok, tt.want, tt.ok)
		}
	}
}
