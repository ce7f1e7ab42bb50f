package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"treasure/internal/graph"
)

const graphUsage = `Usage: treasure graph <gen|compile|partition|info> [flags]

  gen        generate a deterministic synthetic city (DIMACS-free, straight to a snapshot)
  compile    compile a DIMACS .gr/.gr.gz (+ .co beside it) into a snapshot
  partition  split a graph into K partitions with halos and report sizes
  info       load a graph and print its size
`

func runGraph(ctx context.Context, args []string, env Env, io IO) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(io.Stdout, graphUsage)
		if len(args) == 0 {
			return &UsageError{Msg: "graph needs a subcommand"}
		}
		return nil
	}
	switch args[0] {
	case "gen":
		return runGraphGen(args[1:], io)
	case "compile":
		return runGraphCompile(args[1:], io)
	case "partition":
		return runGraphPartition(args[1:], env, io)
	case "info":
		return runGraphInfo(args[1:], env, io)
	}
	return &UsageError{Msg: fmt.Sprintf("unknown graph subcommand %q\n%s", args[0], graphUsage)}
}

func runGraphGen(args []string, io IO) error {
	fs := newFlagSet("graph gen", "graph gen --nodes N --edges M --seed S --out FILE.snap", io.Stderr)
	nodes := fs.Int("nodes", 2300000, "nodes (junctions) of the city")
	edges := fs.Int("edges", 6800000, "undirected road segments")
	seed := fs.Uint64("seed", 1, "random seed: the same seed gives the same city")
	out := fs.String("out", "", "snapshot file to write (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return &UsageError{Msg: "--out is required"}
	}
	t0 := time.Now()
	g, err := graph.Generate(graph.GenOptions{Nodes: *nodes, Edges: *edges, Seed: *seed})
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	gen := time.Since(t0)
	if err := graph.SaveSnapshot(*out, g); err != nil {
		return err
	}
	fmt.Fprintf(io.Stdout, "generated %d nodes, %d edges (%d arcs), seed %d in %v; wrote %s in %v\n",
		g.NumNodes(), g.NumArcs()/2, g.NumArcs(), *seed, gen.Round(time.Millisecond), *out, (time.Since(t0) - gen).Round(time.Millisecond))
	return nil
}

func runGraphCompile(args []string, io IO) error {
	fs := newFlagSet("graph compile", "graph compile --in FILE.gr[.gz] --out FILE.snap", io.Stderr)
	in := fs.String("in", "", "DIMACS .gr or .gr.gz; the .co/.co.gz beside it is read when present (required)")
	out := fs.String("out", "", "snapshot file to write (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return &UsageError{Msg: "--in and --out are required"}
	}
	t0 := time.Now()
	g, err := graph.LoadDIMACS(*in)
	if err != nil {
		return &InputError{Err: err}
	}
	read := time.Since(t0)
	if err := graph.SaveSnapshot(*out, g); err != nil {
		return err
	}
	fmt.Fprintf(io.Stdout, "read %s (%d nodes, %d arcs, coordinates: %v) in %v; wrote %s in %v\n",
		*in, g.NumNodes(), g.NumArcs(), g.HasCoords(), read.Round(time.Millisecond), *out, (time.Since(t0) - read).Round(time.Millisecond))
	return nil
}

func runGraphPartition(args []string, env Env, io IO) error {
	fs := newFlagSet("graph partition", "graph partition --graph FILE --k 16 --radius 2000", io.Stderr)
	path := fs.String("graph", env("TREASURE_GRAPH"), "road graph: .gr, .gr.gz or .snap (env TREASURE_GRAPH)")
	k := fs.Int("k", 16, "number of partitions")
	radiusFlag := fs.Uint("radius", 0, "proximity radius: halos reach this far (env TREASURE_RADIUS, default 2000)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required"}
	}
	radius, err := radiusFrom(*radiusFlag, env)
	if err != nil {
		return err
	}
	g, err := graph.Open(*path)
	if err != nil {
		return &InputError{Err: err}
	}
	t0 := time.Now()
	part, err := graph.Partition(g, *k)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	took := time.Since(t0)
	st, err := graph.MeasurePartition(g, part, *k, radius)
	if err != nil {
		return err
	}
	method := "recursive coordinate bisection"
	if !g.HasCoords() {
		method = "regions grown over the graph (no coordinates)"
	}
	w := io.Stdout
	fmt.Fprintf(w, "%s: %d nodes, %d arcs; %d partitions by %s in %v; radius %d\n",
		*path, g.NumNodes(), g.NumArcs(), *k, method, took.Round(time.Millisecond), radius)
	fmt.Fprintf(w, "%5s %10s %10s %9s %11s\n", "part", "own", "halo", "halo/own", "arcs")
	for p, ps := range st.Parts {
		fmt.Fprintf(w, "%5d %10d %10d %8.1f%% %11d\n", p, ps.Own, ps.Halo, 100*ps.Overhead(), ps.Arcs)
	}
	fmt.Fprintf(w, "%s\n", strings.Repeat("-", 49))
	fmt.Fprintf(w, "%5s %10d %10d %8.1f%% %11d\n", "all", st.Own, st.Halo, 100*st.Overhead(), st.SubArcs)
	fmt.Fprintf(w, "replication: every node is held %.2f times on average over the partitions\n", st.Replication())
	return nil
}

func runGraphInfo(args []string, env Env, io IO) error {
	fs := newFlagSet("graph info", "graph info --graph FILE", io.Stderr)
	path := fs.String("graph", env("TREASURE_GRAPH"), "road graph: .gr, .gr.gz or .snap (env TREASURE_GRAPH)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return &UsageError{Msg: "--graph (or TREASURE_GRAPH) is required"}
	}
	t0 := time.Now()
	g, err := graph.Open(*path)
	if err != nil {
		return &InputError{Err: err}
	}
	fmt.Fprintf(io.Stdout, "%s: %d nodes, %d arcs (%d edges), coordinates: %v; loaded in %v; RSS %.1f MiB\n",
		*path, g.NumNodes(), g.NumArcs(), g.NumArcs()/2, g.HasCoords(), time.Since(t0).Round(time.Millisecond), mib(rssBytes()))
	return nil
}
