package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"treasure/internal/graph"
	"treasure/internal/testenv"
	"treasure/services/proximity"
)

// worker is one proximity worker run in this process as its own process
// would run it: its own NATS connection, registry and partitions.
type worker struct {
	parts  []int
	w      *proximity.Worker
	reg    *prometheus.Registry
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// startWorker starts a proximity worker serving parts of p's partitions,
// checkpointing every 500 ms.
func startWorker(t *testing.T, p inproc, url string, parts []int) *worker {
	t.Helper()
	g := p.d.g
	part, err := graph.Partition(g, p.topo.Partitions)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w, err := proximity.New(proximity.Options{Graph: g, Part: part, Partitions: parts, Radius: p.d.radius, Topology: p.topo,
		NC: nc, JS: js, Registerer: reg, CheckpointEvery: 500 * time.Millisecond})
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wk := &worker{parts: parts, w: w, reg: reg, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { wk.done <- w.Run(ctx) }()
	t.Cleanup(func() { wk.stop(t) })
	return wk
}

// stop cancels the worker (a clean stop: it writes a last checkpoint per
// partition) and waits until its Run has returned nil; a second stop does
// nothing.
func (wk *worker) stop(t *testing.T) {
	t.Helper()
	if wk.cancel == nil {
		return
	}
	wk.cancel()
	wk.cancel = nil
	select {
	case err := <-wk.done:
		if err != nil {
			t.Errorf("worker %v: %v", wk.parts, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("worker %v did not stop within 30 s", wk.parts)
	}
	wk.nc.Close()
}

// counter sums the samples of a counter (or a gauge) in the worker's
// registry.
func (wk *worker) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := wk.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return v
}

// k8sProximityLayout reads deploy/k8s: TREASURE_PARTITIONS of the
// treasure-env ConfigMap and the --partitions list of every proximity
// StatefulSet, in file order.
func k8sProximityLayout(t *testing.T) (int, [][]int) {
	t.Helper()
	root := "../.."
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(root, "deploy/k8s/configmap.yaml")), &cm); err != nil {
		t.Fatal(err)
	}
	k, err := strconv.Atoi(cm.Data["TREASURE_PARTITIONS"])
	if err != nil {
		t.Fatalf("deploy/k8s/configmap.yaml: TREASURE_PARTITIONS: %v", err)
	}
	var layout [][]int
	for _, doc := range bytes.Split(readFile(t, filepath.Join(root, "deploy/k8s/proximity.yaml")), []byte("\n---")) {
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				Replicas *int `json:"replicas"`
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Kind != "StatefulSet" {
			continue
		}
		if obj.Spec.Replicas == nil || *obj.Spec.Replicas != 1 {
			t.Fatalf("deploy/k8s/proximity.yaml: a StatefulSet of %v replicas; a worker's partitions must have one owner", obj.Spec.Replicas)
		}
		for _, c := range obj.Spec.Template.Spec.Containers {
			i := slices.Index(c.Args, "--partitions")
			if len(c.Args) == 0 || c.Args[0] != "proximity" || i < 0 || i+1 >= len(c.Args) {
				t.Fatalf("deploy/k8s/proximity.yaml: args %q, want proximity --partitions LIST", c.Args)
			}
			layout = append(layout, parsePartitionList(t, c.Args[i+1], k))
		}
	}
	return k, layout
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parsePartitionList reads "0,1" or "0-3" as `treasure proximity
// --partitions` does.
func parsePartitionList(t *testing.T, s string, k int) []int {
	t.Helper()
	var out []int
	for _, f := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a || b >= k {
			t.Fatalf("partition list %q: %q is not a partition or range below %d", s, f, k)
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	return out
}

// TestProximityWorkersScaleByPartitionsUnderLoad: under an open-loop load,
// the proximity partitions go from one worker owning all of them, to the
// layout of deploy/k8s/proximity.yaml, to one worker per partition, and
// back to one worker. Each change hands the partitions over as a rolling
// deploy does: the workers of the new layout start beside the old ones and
// wait for their partitions' leases (not ready, lease_waiting at their
// partition count, no move evaluated); then every worker of the old
// layout stops (a clean stop writes each partition's checkpoint and then
// releases its lease), and each new worker takes its partitions' leases,
// resumes their durable consumers and rebuilds its engines from those
// checkpoints. Nothing is lost or doubled (the load generator's
// accounting, OUT, PostgreSQL), every new worker loaded a checkpoint for
// each of its partitions, and the workers together evaluated every acked
// move (some twice: those of a batch in hand at a stop, whose outputs
// JetStream stores once).
func TestProximityWorkersScaleByPartitionsUnderLoad(t *testing.T) {
	k, deployLayout := k8sProximityLayout(t)
	all := make([]int, k)
	for i := range all {
		all[i] = i
	}
	var each [][]int
	for i := range k {
		each = append(each, []int{i})
	}
	steps := []struct {
		name   string
		layout [][]int
	}{
		{"1 worker", [][]int{all}},
		{fmt.Sprintf("deploy/k8s: %d workers %v", len(deployLayout), deployLayout), deployLayout},
		{fmt.Sprintf("%d workers, one partition each", k), each},
		{"1 worker again", [][]int{all}},
	}
	for _, s := range steps {
		owned := slices.Concat(s.layout...)
		slices.Sort(owned)
		if !slices.Equal(owned, all) {
			t.Fatalf("%s: the workers own %v, want every partition of %d exactly once", s.name, owned, k)
		}
	}

	url := testenv.NATSURL()
	p, _ := startPipelineOn(t, pipeOptions{url: url, partitions: k, noProximity: true})
	var workers []*worker
	waitReady := func() {
		testenv.WaitUntil(t, 60*time.Second, "proximity workers ready", func() bool {
			for _, wk := range workers {
				if wk.w.Ready() != nil {
					return false
				}
			}
			return true
		})
	}
	for _, parts := range steps[0].layout {
		workers = append(workers, startWorker(t, p, url, parts))
	}
	waitReady()
	points := dropTreasures(t, p.d)
	l := startLoad(t, p.d, 200, 1, "scale-")
	l.waitMore(t, 600, "load under way")
	var moves float64
	for i, s := range steps[1:] {
		var next []*worker
		for _, parts := range s.layout {
			next = append(next, startWorker(t, p, url, parts))
		}
		testenv.WaitFor(t, 60*time.Second, func() string {
			for _, wk := range next {
				if n := wk.counter(t, "treasure_proximity_partition_lease_waiting"); n != float64(len(wk.parts)) {
					return fmt.Sprintf("%s: new worker %v waits for %v leases, want all %d of its partitions' (held by the old layout)", s.name, wk.parts, n, len(wk.parts))
				}
			}
			return ""
		})
		for _, wk := range next {
			if wk.w.Ready() == nil || wk.counter(t, "treasure_proximity_moves_total") != 0 {
				t.Fatalf("%s: new worker %v ready or evaluating moves while the old layout holds its leases", s.name, wk.parts)
			}
		}
		t0 := time.Now()
		for _, wk := range workers {
			wk.stop(t)
			moves += wk.counter(t, "treasure_proximity_moves_total")
		}
		workers = next
		l.mark("handover to " + s.name)
		waitReady()
		l.mark(s.name + " ready")
		t.Logf("handover to %s: old workers stopped and new ones ready in %v", s.name, time.Since(t0).Round(time.Millisecond))
		for _, wk := range workers {
			// Every partition rebuilt from the checkpoint its previous
			// owner left (and the tail of the log after it).
			if got := wk.counter(t, "treasure_proximity_checkpoint_loads_total"); got != float64(len(wk.parts)) {
				t.Errorf("step %d (%s): worker %v loaded %v checkpoints, want one per partition", i+1, s.name, wk.parts, got)
			}
		}
		l.waitMore(t, 600, s.name+": moves flowing")
	}
	r := l.finish(t)
	for _, wk := range workers {
		wk.stop(t)
		moves += wk.counter(t, "treasure_proximity_moves_total")
	}
	logFigures(t, l, r)
	out := checkExactlyOnce(t, p, r, points)
	t.Logf("%d proximity results, %d claims in OUT; the workers evaluated %.0f moves", len(out.prox), len(out.claims), moves)
	// A move whose batch was being handled when its worker stopped is
	// evaluated again by the next owner (its outputs stored once: same
	// Nats-Msg-Ids); none may be skipped.
	if moves < float64(r.Acked) {
		t.Errorf("the workers evaluated %.0f moves live, %d were acked", moves, r.Acked)
	}
}
