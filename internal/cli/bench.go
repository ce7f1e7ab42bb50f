package cli

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"treasure/internal/game"
	"treasure/internal/graph"
)

const benchSynopsis = `bench-core --graph FILE [--radius R] [--treasures N] [--seconds S] [--players P] [--redrop]

Measures treasure's hot core in this process, the way BENCHMARKS.md reports
it: graph load time and RSS, nearest-treasure field build for N treasures
(one bulk build and N incremental drops), then a move loop for S seconds on
one goroutine (6-12 node paths validated, claims checked, proximity
answered) with moves/s, allocations per move, GC CPU share and the longest
GC pause over the loop.`

func runBenchCore(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("bench-core", benchSynopsis, io.Stderr)
	graphPath := fs.String("graph", env("TREASURE_GRAPH"), "road graph: .gr, .gr.gz or .snap (env TREASURE_GRAPH)")
	radiusFlag := fs.Uint("radius", 0, "proximity radius (env TREASURE_RADIUS, default 2000)")
	nTreasures := fs.Int("treasures", 1000, "treasures dropped before the move loop")
	seconds := fs.Float64("seconds", 10, "length of the move loop")
	players := fs.Int("players", 35000, "simulated players (round-robin moves)")
	seed := fs.Uint64("seed", 1, "random seed for treasures and walks")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the move loop to this file")
	redrop := fs.Bool("redrop", false, "drop a new treasure for every one claimed during the loop (keeps the field churning, as a live game does)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *graphPath == "" {
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required"}
	}
	radius, err := radiusFrom(*radiusFlag, env)
	if err != nil {
		return err
	}
	out := io.Stdout
	fmt.Fprintf(out, "go %s, GOMAXPROCS %d, %s\n", runtime.Version(), runtime.GOMAXPROCS(0), cpuModel())

	rssBefore := rssBytes()
	t0 := time.Now()
	g, err := graph.Open(*graphPath)
	if err != nil {
		return &InputError{Err: err}
	}
	load := time.Since(t0)
	runtime.GC()
	fmt.Fprintf(out, "graph %s: %d nodes, %d arcs; load %v; RSS %.1f MiB (%.1f MiB before load)\n",
		*graphPath, g.NumNodes(), g.NumArcs(), load.Round(time.Millisecond), mib(rssBytes()), mib(rssBefore))

	r := rand.New(rand.NewPCG(*seed, 7))
	ts := make([]game.Treasure, *nTreasures)
	for i := range ts {
		ts[i] = game.Treasure{ID: "t" + strconv.Itoa(i), Node: uint32(r.IntN(g.NumNodes())), Points: 10}
	}
	e := game.NewEngine(g, radius)
	t0 = time.Now()
	e.DropAll(ts)
	bulk := time.Since(t0)
	inc := game.NewEngine(g, radius)
	t0 = time.Now()
	for _, t := range ts {
		inc.Drop(t)
	}
	incr := time.Since(t0)
	inc = nil
	fmt.Fprintf(out, "field for %d treasures, radius %d: bulk build %v, %d incremental drops %v (%v each)\n",
		len(ts), radius, bulk.Round(time.Microsecond), len(ts), incr.Round(time.Microsecond), (incr / time.Duration(max(1, len(ts)))).Round(time.Microsecond))

	w := game.NewWorkload(g, *players, max(*players*4, 200000), *seed)
	c := game.NewCore(e, w.Players)
	runtime.GC()
	debug.FreeOSMemory()
	fmt.Fprintf(out, "engine + %d players + %d prepared moves: RSS %.1f MiB\n", w.Players, w.Moves(), mib(rssBytes()))

	samples := []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/gc/pauses:seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/allocs:objects"},
	}
	metrics.Read(samples)
	gc0, cpu0, cyc0, obj0 := samples[0].Value.Float64(), samples[1].Value.Float64(), samples[3].Value.Uint64(), samples[4].Value.Uint64()
	pauses0 := samples[2].Value.Float64Histogram()
	counts0 := append([]uint64(nil), pauses0.Counts...)

	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	t0 = time.Now()
	moves, redrops := 0, 0
	for j := 0; ; j++ {
		if j == w.Moves() {
			j = 0
			c.Reset()
		}
		before := c.Claims
		c.Step(w.Player[j], w.Seq[j], w.Path(j))
		moves++
		if *redrop {
			for k := before; k < c.Claims; k++ {
				redrops++
				e.Drop(game.Treasure{ID: "n" + strconv.Itoa(redrops), Node: uint32(r.IntN(g.NumNodes())), Points: 10})
			}
		}
		if moves&0xffff == 0 && (time.Now().After(deadline) || ctx.Err() != nil) {
			break
		}
	}
	elapsed := time.Since(t0)
	metrics.Read(samples)
	gcCPU := samples[0].Value.Float64() - gc0
	allCPU := samples[1].Value.Float64() - cpu0
	pauses := samples[2].Value.Float64Histogram()
	maxPause := 0.0
	for i, n := range pauses.Counts {
		if n > counts0[i] {
			maxPause = pauses.Buckets[i+1] // upper bound of the bucket
		}
	}
	fmt.Fprintf(out, "move loop: %d moves in %v = %.0f moves/s on one goroutine; %d accepted, %d rejected, %d claims, %d with a treasure in range\n",
		moves, elapsed.Round(time.Millisecond), float64(moves)/elapsed.Seconds(), c.Accepted, c.Rejected, c.Claims, c.Found)
	if *redrop {
		fmt.Fprintf(out, "re-dropped %d treasures during the loop (one per claim)\n", redrops)
	}
	fmt.Fprintf(out, "allocations: %.4f objects/move; GC: %d cycles, %.3f%% of CPU, longest pause <= %s\n",
		float64(samples[4].Value.Uint64()-obj0)/float64(moves), samples[3].Value.Uint64()-cyc0,
		100*gcCPU/max(allCPU, 1e-9), fmtPause(maxPause))
	fmt.Fprintf(out, "RSS at end: %.1f MiB\n", mib(rssBytes()))
	return nil
}

func fmtPause(s float64) string {
	if s == 0 {
		return "none"
	}
	return time.Duration(s * float64(time.Second)).String()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// rssBytes reads the process's resident set size from /proc (Linux); 0
// elsewhere.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
		}
	}
	return runtime.GOARCH
}
