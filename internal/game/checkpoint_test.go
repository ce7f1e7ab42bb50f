package game

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"treasure/internal/graph"
	"treasure/internal/testgraph"
)

// ckptFixture is an engine over one partition of amsterdam after drops,
// claims decided here and elsewhere, and moves, with its players' seqs.
type ckptFixture struct {
	g, sub *graph.Graph
	part   []uint32
	e      *Engine
	meta   *CheckpointMeta
	fp     uint32
	rnd    *rand.Rand
}

const ckptRadius = 2000

var (
	amsOnce sync.Once
	amsG    *graph.Graph
	amsPart []uint32
	amsErr  error
)

func newCkptFixture(tb testing.TB, seed uint64, treasures int) *ckptFixture {
	tb.Helper()
	amsOnce.Do(func() {
		amsG, amsErr = graph.LoadDIMACS(testgraph.Path(tb, "amsterdam.gr.gz"))
		if amsErr == nil {
			amsPart, amsErr = graph.Partition(amsG, 3)
		}
	})
	if amsErr != nil {
		tb.Fatal(amsErr)
	}
	sub, err := graph.Subgraph(amsG, amsPart, 1, ckptRadius)
	if err != nil {
		tb.Fatal(err)
	}
	f := &ckptFixture{g: amsG, sub: sub, part: amsPart, e: NewEngine(sub, ckptRadius), rnd: rand.New(rand.NewPCG(seed, 99)),
		meta: &CheckpointMeta{Partition: 1, Partitions: 3, Seq: 12345, Players: map[string]SeqWindow{}}}
	f.fp = Fingerprint(sub)
	var ts []Treasure
	for i := range treasures {
		ts = append(ts, Treasure{ID: fmt.Sprintf("t%05d", f.rnd.IntN(3*treasures)), Node: f.rnd.Uint32N(uint32(amsG.NumNodes())), Points: uint32(1 + i%7)})
	}
	f.e.DropAll(ts[:treasures/2])
	f.steps(tb, f.e, nil, treasures, 0)
	return f
}

// steps applies n random operations (drops, claims from elsewhere, moves,
// a third of them onto treasures) to e, and to twin when not nil,
// failing when they answer differently.
func (f *ckptFixture) steps(tb testing.TB, e, twin *Engine, n int, salt int) {
	tb.Helper()
	var c1, c2 []Claimed
	for i := range n {
		switch op := f.rnd.IntN(10); {
		case op < 3:
			t := Treasure{ID: fmt.Sprintf("s%d-%05d", salt, f.rnd.IntN(3*n)), Node: f.rnd.Uint32N(uint32(f.g.NumNodes())), Points: 3}
			a := e.Drop(t)
			if twin != nil && twin.Drop(t) != a {
				tb.Fatalf("step %d: drop %v differs", i, t)
			}
		case op < 4:
			id := fmt.Sprintf("t%05d", f.rnd.IntN(3*n))
			a := e.Claim(id)
			if twin != nil && twin.Claim(id) != a {
				tb.Fatalf("step %d: claim %s differs", i, id)
			}
		default:
			v := f.sub.Global[f.rnd.Uint32N(f.sub.Own)]
			if op < 7 && len(e.at) > 0 {
				// onto an active treasure: a claim
				for local, s := range e.at {
					if local < f.sub.Own && len(s) > 0 {
						v = f.sub.Global[local]
						break
					}
				}
			}
			var p1, p2 Proximity
			var err error
			c1, p1, err = e.Move(v, c1[:0])
			if err != nil {
				tb.Fatal(err)
			}
			player := fmt.Sprintf("p%d", f.rnd.IntN(50))
			w := f.meta.Players[player]
			w.Apply(uint64(i + 1)) // with gaps: holes in the window
			f.meta.Players[player] = w
			if twin != nil {
				c2, p2, _ = twin.Move(v, c2[:0])
				if p1 != p2 || fmt.Sprint(c1) != fmt.Sprint(c2) {
					tb.Fatalf("step %d: move to %d: %v %+v, twin %v %+v", i, v, c1, p1, c2, p2)
				}
			}
		}
	}
}

// TestCheckpointRoundTrip: an engine read back from its checkpoint answers
// every own node exactly like the original, writes the same bytes again,
// and stays identical through further drops, claims and moves.
func TestCheckpointRoundTrip(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			f := newCkptFixture(t, seed, 400)
			if f.e.Active() == 0 || len(f.e.free) == 0 {
				t.Fatalf("fixture has %d active treasures and %d free slots: the check exercises one case only", f.e.Active(), len(f.e.free))
			}
			data := f.e.AppendCheckpoint(nil, f.meta, f.fp)
			e2, m2, err := ReadCheckpoint(data, f.sub, ckptRadius, f.fp)
			if err != nil {
				t.Fatal(err)
			}
			if m2.Seq != f.meta.Seq || m2.Partition != 1 || m2.Partitions != 3 || fmt.Sprint(m2.Players) != fmt.Sprint(f.meta.Players) {
				t.Fatalf("meta %+v, wrote %+v", m2, f.meta)
			}
			if again := e2.AppendCheckpoint(nil, m2, f.fp); !bytes.Equal(again, data) {
				t.Fatal("the loaded engine writes a different checkpoint")
			}
			compareEngines(t, f, f.e, e2)
			f.steps(t, f.e, e2, 3000, 1)
			compareEngines(t, f, f.e, e2)
		})
	}
}

// TestCheckpointV1Loads: a version 1 checkpoint (no field) still loads,
// its field rebuilt; the engine answers like the original, writes the
// same version 2 checkpoint (the rebuilt field equals the incremental one)
// and stays identical through further operations.
func TestCheckpointV1Loads(t *testing.T) {
	f := newCkptFixture(t, 7, 400)
	v1 := appendVersion(f.e, f.meta, f.fp, 1)
	e2, m2, err := ReadCheckpoint(v1, f.sub, ckptRadius, f.fp)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := ReadCheckpointHeader(v1); h.Version != 1 || h.FieldLen != 0 {
		t.Fatalf("header %+v", h)
	}
	if !bytes.Equal(e2.AppendCheckpoint(nil, m2, f.fp), f.e.AppendCheckpoint(nil, withoutHoles(f.meta), f.fp)) {
		t.Fatal("the engine loaded from version 1 writes another checkpoint than the original (without holes)")
	}
	compareEngines(t, f, f.e, e2)
	f.steps(t, f.e, e2, 3000, 1)
	compareEngines(t, f, f.e, e2)
}

func compareEngines(t *testing.T, f *ckptFixture, a, b *Engine) {
	t.Helper()
	if a.Active() != b.Active() {
		t.Fatalf("%d active treasures, loaded %d", a.Active(), b.Active())
	}
	found := 0
	for v := uint32(0); v < f.sub.Own; v++ {
		pa, err := a.Nearest(f.sub.Global[v])
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := b.Nearest(f.sub.Global[v])
		if pa != pb {
			t.Fatalf("node %d: %+v, loaded %+v", graph.ID(f.sub.Global[v]), pa, pb)
		}
		if pa.Found {
			found++
		}
	}
	if found == 0 || found == int(f.sub.Own) {
		t.Fatalf("%d of %d nodes see a treasure: the check exercises one case only", found, f.sub.Own)
	}
}

// TestCheckpointRefusesDamage: every truncation, a flipped byte anywhere
// (header, each section, each checksum), trailing bytes and a checkpoint of
// another graph or radius are refused with an error naming the problem.
func TestCheckpointRefusesDamage(t *testing.T) {
	for _, v := range []uint32{1, 2, 3} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) { testCheckpointRefusesDamage(t, v) })
	}
}

// withoutHoles returns m with every player's SeqWindow holes cleared: what
// a version 1 or 2 checkpoint of m reads back as.
func withoutHoles(m *CheckpointMeta) *CheckpointMeta {
	c := *m
	c.Players = make(map[string]SeqWindow, len(m.Players))
	for p, w := range m.Players {
		c.Players[p] = SeqWindow{Last: w.Last}
	}
	return &c
}

// TestCheckpointKeepsSeqWindows: version 3 keeps each player's holes;
// version 2 reads back the highest seq only (every seq below it applied).
func TestCheckpointKeepsSeqWindows(t *testing.T) {
	f := newCkptFixture(t, 5, 400)
	holes := 0
	for _, w := range f.meta.Players {
		if w.Holes != 0 {
			holes++
		}
	}
	if holes == 0 {
		t.Fatal("no player of the fixture has a hole: the check exercises one case only")
	}
	for _, v := range []uint32{2, 3} {
		_, m2, err := ReadCheckpoint(appendVersion(f.e, f.meta, f.fp, v), f.sub, ckptRadius, f.fp)
		if err != nil {
			t.Fatal(err)
		}
		want := f.meta
		if v < 3 {
			want = withoutHoles(f.meta)
		}
		if fmt.Sprint(m2.Players) != fmt.Sprint(want.Players) {
			t.Fatalf("version %d: players %v, want %v", v, m2.Players, want.Players)
		}
	}
}

// appendVersion writes e's checkpoint in format version v.
func appendVersion(e *Engine, m *CheckpointMeta, fp, v uint32) []byte {
	st := e.CheckpointState(m, fp)
	st.h.Version = v
	return st.Append(nil)
}

func testCheckpointRefusesDamage(t *testing.T, version uint32) {
	f := newCkptFixture(t, 4, 60)
	data := appendVersion(f.e, f.meta, f.fp, version)
	h, err := ReadCheckpointHeader(data)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != version || h.TreasuresLen == 0 || h.PlayersLen == 0 || (h.FieldLen == 0) != (version == 1) {
		t.Fatalf("version %d: sections %+v", version, h)
	}
	for n := range len(data) {
		_, _, err := ReadCheckpoint(data[:n], f.sub, ckptRadius, f.fp)
		if n >= len(ckptMagic) && !errors.Is(err, ErrCheckpointTruncated) || n < len(ckptMagic) && err == nil {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(data), err)
		}
	}
	tEnd := ckptHeaderSize + int(h.TreasuresLen)
	pEnd := tEnd + 4 + int(h.PlayersLen)
	fieldFlips := 0
	sectionOf := func(i int) string {
		switch {
		case i < len(ckptMagic):
			return "magic"
		case i < ckptHeaderSize:
			return "header"
		case i < tEnd:
			return "treasures section"
		case i < tEnd+4:
			return "treasures section" // its checksum
		case i < pEnd+4:
			return "players section" // with its checksum
		default:
			return "field section" // with its checksum
		}
	}
	bad := bytes.Clone(data)
	for i := range data {
		bad[i] ^= 0x20
		_, _, err := ReadCheckpoint(bad, f.sub, ckptRadius, f.fp)
		bad[i] = data[i]
		want := sectionOf(i)
		switch {
		case err == nil:
			t.Fatalf("byte %d (%s) flipped: accepted", i, want)
		case want == "magic":
			if !errors.Is(err, ErrNotCheckpoint) {
				t.Fatalf("byte %d flipped: %v", i, err)
			}
		case i >= 8 && i < 12:
			if !errors.Is(err, ErrCheckpointVersion) {
				t.Fatalf("byte %d (version) flipped: %v", i, err)
			}
		case want == "header":
			if !errors.Is(err, ErrCheckpointCorrupt) || !bytes.Contains([]byte(err.Error()), []byte("header")) {
				t.Fatalf("byte %d (header) flipped: %v", i, err)
			}
		default:
			if !errors.Is(err, ErrCheckpointCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(want)) {
				t.Fatalf("byte %d (%s) flipped: %v", i, want, err)
			}
			if want == "field section" {
				fieldFlips++
			}
		}
	}
	if (fieldFlips == 0) != (version == 1) {
		t.Fatalf("version %d: %d flips in the field section", version, fieldFlips)
	}
	if version == 2 {
		// A field that is not the treasures' field, with a valid checksum
		// (a writer's bug, not a flipped bit): refused by Restore's check.
		f0 := pEnd + 4
		for _, off := range []int{0, 4 * int(h.Nodes) / 2, 4 * int(h.Nodes), 8*int(h.Nodes) - 4} {
			bad := bytes.Clone(data)
			bad[f0+off]++
			binary.LittleEndian.PutUint32(bad[f0+int(h.FieldLen):], crc32.Checksum(bad[f0:f0+int(h.FieldLen)], castagnoli))
			if _, _, err := ReadCheckpoint(bad, f.sub, ckptRadius, f.fp); !errors.Is(err, ErrCheckpointCorrupt) || !bytes.Contains([]byte(err.Error()), []byte("field section: field: node")) {
				t.Fatalf("field byte %d changed, checksum fixed: %v", off, err)
			}
		}
	}
	if _, _, err := ReadCheckpoint(append(bytes.Clone(data), 0), f.sub, ckptRadius, f.fp); !errors.Is(err, ErrCheckpointCorrupt) {
		t.Fatalf("a trailing byte: %v", err)
	}
	if _, _, err := ReadCheckpoint(data, f.sub, ckptRadius+1, f.fp); !errors.Is(err, ErrCheckpointMismatch) {
		t.Fatalf("another radius: %v", err)
	}
	other, err := graph.Subgraph(f.g, f.part, 2, ckptRadius)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadCheckpoint(data, other, ckptRadius, Fingerprint(other)); !errors.Is(err, ErrCheckpointMismatch) {
		t.Fatalf("another partition's graph: %v", err)
	}
}

// FuzzReadCheckpoint: no input makes the reader panic, and whatever it
// accepts writes back to the same bytes.
func FuzzReadCheckpoint(f *testing.F) {
	fx := newCkptFixture(f, 5, 20)
	data := fx.e.AppendCheckpoint(nil, fx.meta, fx.fp)
	f.Add(data)
	f.Add(data[:ckptHeaderSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		e, m, err := ReadCheckpoint(b, fx.sub, ckptRadius, fx.fp)
		if err != nil {
			return
		}
		if again := e.AppendCheckpoint(nil, m, fx.fp); !bytes.Equal(again, b) {
			t.Fatal("accepted a checkpoint that writes back differently")
		}
	})
}

// city is a partition of the synthetic 2.3 M-node city
// (bin/treasure graph gen --nodes 2300000 --edges 6800000 --seed 1), cut in
// four (TREASURE_CITY_PARTITIONS), with 20,000 treasures over the whole city (those within the
// partition's subgraph held) and 35,000 players. TREASURE_CITY names the
// snapshot; default /work/cache/city.snap.
type city struct {
	sub  *graph.Graph
	e    *Engine
	meta *CheckpointMeta
	fp   uint32
	ts   []Treasure
}

var (
	cityOnce sync.Once
	cityFix  *city
	cityErr  error
)

func loadCity(b *testing.B) *city {
	b.Helper()
	path := os.Getenv("TREASURE_CITY")
	if path == "" {
		path = "/work/cache/city.snap"
	}
	if _, err := os.Stat(path); err != nil {
		b.Skipf("the synthetic city snapshot %s: %v", path, err)
	}
	cityOnce.Do(func() {
		g, err := graph.LoadSnapshot(path)
		if err != nil {
			cityErr = err
			return
		}
		k := 4
		if s := os.Getenv("TREASURE_CITY_PARTITIONS"); s != "" {
			if k, err = strconv.Atoi(s); err != nil {
				cityErr = err
				return
			}
		}
		part, err := graph.Partition(g, k)
		if err != nil {
			cityErr = err
			return
		}
		sub, err := graph.Subgraph(g, part, 0, 2000)
		if err != nil {
			cityErr = err
			return
		}
		r := rand.New(rand.NewPCG(1, 2))
		c := &city{sub: sub, e: NewEngine(sub, 2000), fp: Fingerprint(sub), meta: &CheckpointMeta{Partitions: uint32(k), Seq: 1e7, Players: map[string]SeqWindow{}}}
		for i := range 20000 {
			c.ts = append(c.ts, Treasure{ID: fmt.Sprintf("treasure-%05d", i), Node: r.Uint32N(uint32(g.NumNodes())), Points: 10})
		}
		t0 := time.Now()
		c.e.DropAll(c.ts)
		fmt.Fprintf(os.Stderr, "city partition 0: %d nodes (%d own), %d active treasures, DropAll %v\n", sub.NumNodes(), sub.Own, c.e.Active(), time.Since(t0))
		for i := range 35000 {
			c.meta.Players[fmt.Sprintf("player-%05d", i)] = SeqWindow{Last: uint64(1000 + i)}
		}
		cityFix = c
	})
	if cityErr != nil {
		b.Fatal(cityErr)
	}
	return cityFix
}

// BenchmarkCheckpointWrite: copying and encoding a city partition's
// checkpoint.
func BenchmarkCheckpointWrite(b *testing.B) {
	c := loadCity(b)
	var buf []byte
	for b.Loop() {
		buf = c.e.AppendCheckpoint(buf[:0], c.meta, c.fp)
	}
	b.ReportMetric(float64(len(buf)), "bytes")
}

// BenchmarkCheckpointCopy: the copy of the state a partition pauses for
// (the encoding runs beside it).
func BenchmarkCheckpointCopy(b *testing.B) {
	c := loadCity(b)
	for b.Loop() {
		c.e.CheckpointState(c.meta, c.fp)
	}
}

// BenchmarkCheckpointLoad: reading it back, the field rebuilt.
func BenchmarkCheckpointLoad(b *testing.B) {
	c := loadCity(b)
	data := c.e.AppendCheckpoint(nil, c.meta, c.fp)
	for b.Loop() {
		if _, _, err := ReadCheckpoint(data, c.sub, 2000, c.fp); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "bytes")
}

// BenchmarkCheckpointFingerprint: the per-start cost of identifying the
// subgraph.
func BenchmarkCheckpointFingerprint(b *testing.B) {
	c := loadCity(b)
	for b.Loop() {
		Fingerprint(c.sub)
	}
}
