package proximity

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// leaseTTL is the lease TTL of these tests: short, so that a takeover
// after a kill or a freeze comes soon, and long enough that a loaded box
// renews within two thirds of it.
const leaseTTL = 2 * time.Second

// leaseWorker is a worker started by a lease test.
type leaseWorker struct {
	name string
	w    *Worker
	reg  *prometheus.Registry
	stop func()
}

// leaseWorkerOptions: kill makes the worker's stop a kill (no last
// checkpoint, no release); hook and renewHook are Worker's test hooks.
type leaseWorkerOptions struct {
	kill      bool
	hook      func(k int, at hookPoint)
	renewHook func(k int)
}

// startLeaseWorker starts a worker named name (its lease holder) for
// parts, with checkpoints every 500 ms and leaseTTL.
func startLeaseWorker(tb testing.TB, f fixture, topo natsjs.Topology, url, name string, parts []int, o leaseWorkerOptions) *leaseWorker {
	tb.Helper()
	nc := testenv.ConnectNATS(tb, url)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	lw := &leaseWorker{name: name, reg: prometheus.NewRegistry()}
	lw.w, err = New(Options{Graph: f.g, Part: f.part, Partitions: parts, Radius: f.radius, Topology: topo, NC: nc, JS: js, Batch: 8,
		AckWait: 2 * time.Second, Log: testLog().With("worker", name), Registerer: lw.reg, CheckpointEvery: 500 * time.Millisecond,
		LeaseTTL: leaseTTL, Holder: name})
	if err != nil {
		tb.Fatal(err)
	}
	lw.w.noFinalCheckpoint, lw.w.noRelease = o.kill, o.kill
	lw.w.hook, lw.w.renewHook = o.hook, o.renewHook
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lw.w.Run(ctx) }()
	var once sync.Once
	lw.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("worker %s: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				tb.Errorf("worker %s did not stop within 30 s", name)
			}
		})
	}
	tb.Cleanup(lw.stop)
	return lw
}

// metric sums the samples of a counter or gauge of the worker's registry.
func (lw *leaseWorker) metric(tb testing.TB, name string) float64 {
	tb.Helper()
	mfs, err := lw.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}

// waitReady waits until every partition of the worker is served.
func (lw *leaseWorker) waitReady(tb testing.TB) {
	tb.Helper()
	testenv.WaitFor(tb, 60*time.Second, func() string {
		if err := lw.w.Ready(); err != nil {
			return lw.name + ": " + err.Error()
		}
		return ""
	})
}

// waitWaiting waits until the worker waits for holder's lease on its one
// partition.
func (lw *leaseWorker) waitWaiting(tb testing.TB, holder string) {
	tb.Helper()
	want := fmt.Sprintf("partition %d waits for its lease, held by %s", lw.w.Partitions()[0], holder)
	testenv.WaitFor(tb, 60*time.Second, func() string {
		err := lw.w.Ready()
		if err == nil || err.Error() != want || lw.metric(tb, "treasure_proximity_partition_lease_waiting") != 1 {
			return fmt.Sprintf("%s: ready says %v, want %q and the waiting gauge at 1", lw.name, err, want)
		}
		return ""
	})
}

// applyLog records which worker applied each input of partition 0, in
// order (through Worker.hook).
type applyLog struct {
	mu     sync.Mutex
	owners []string
}

func (a *applyLog) hook(name string) func(k int, at hookPoint) {
	return func(k int, at hookPoint) {
		if k == 0 && at == hookApply {
			a.mu.Lock()
			a.owners = append(a.owners, name)
			a.mu.Unlock()
		}
	}
}

// runs returns the workers that applied partition 0's inputs, one entry
// per run of consecutive inputs applied by the same worker.
func (a *applyLog) runs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var r []string
	for _, o := range a.owners {
		if len(r) == 0 || r[len(r)-1] != o {
			r = append(r, o)
		}
	}
	return r
}

// TestTwoWorkersOnOnePartitionTakeTurns: two workers started for partition
// 0 under load. Only the lease holder consumes; the other waits (not
// ready, its waiting gauge at 1, naming the holder) and evaluates nothing.
// The holder's clean stop hands the partition over at once (release); a
// third worker then waits, and the second's kill (no release) hands it
// over when the lease expires. Partition 0's inputs were applied by A,
// then B, then C, never interleaved; every move has exactly one result
// and every claim one copy, equal to an uninterrupted run's.
func TestTwoWorkersOnOnePartitionTakeTurns(t *testing.T) {
	f := amsterdamFixture(t)
	ctx := context.Background()
	url := testenv.NATSURL()
	_, js, prefix := testenv.JetStream(t)
	topo := newTopo(prefix+"l", f.k)
	testenv.DeleteStreamsOnCleanup(t, js, topo.Prefix)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	var applied applyLog
	startLeaseWorker(t, f, topo, url, "rest", []int{1, 2}, leaseWorkerOptions{})
	a := startLeaseWorker(t, f, topo, url, "A", []int{0}, leaseWorkerOptions{hook: applied.hook("A")})
	a.waitReady(t)
	b := startLeaseWorker(t, f, topo, url, "B", []int{0}, leaseWorkerOptions{kill: true, hook: applied.hook("B")})
	b.waitWaiting(t, "A")

	third := len(f.moves) / 3
	publishDrops(t, ctx, js, topo, f)
	publishMoves(t, ctx, js, topo, f, f.moves[:third])
	waitOutputs(t, ctx, js, topo, third)
	if n := b.metric(t, "treasure_proximity_moves_total"); n != 0 {
		t.Fatalf("B evaluated %v moves while A held the lease", n)
	}
	// A clean stop with moves arriving: B takes over at once, and handles
	// what A left and what comes after.
	mid := third + third/2
	publishMoves(t, ctx, js, topo, f, f.moves[third:mid])
	t0 := time.Now()
	a.stop()
	b.waitReady(t)
	t.Logf("A stopped, B ready %v later (release)", time.Since(t0).Round(time.Millisecond))
	publishMoves(t, ctx, js, topo, f, f.moves[mid:2*third])
	c := startLeaseWorker(t, f, topo, url, "C", []int{0}, leaseWorkerOptions{hook: applied.hook("C")})
	c.waitWaiting(t, "B")
	waitOutputs(t, ctx, js, topo, 2*third)
	// B killed while it handles a sixth more: C takes over once B's
	// lease expires, and handles what B left and the rest.
	movesB := b.metric(t, "treasure_proximity_moves_total")
	last := 2*third + (len(f.moves)-2*third)/2
	publishMoves(t, ctx, js, topo, f, f.moves[2*third:last])
	testenv.WaitUntil(t, 30*time.Second, "B evaluating the last third", func() bool {
		return b.metric(t, "treasure_proximity_moves_total") > movesB
	})
	if n := c.metric(t, "treasure_proximity_moves_total"); n != 0 {
		t.Fatalf("C evaluated %v moves while B held the lease", n)
	}
	t0 = time.Now()
	b.stop()
	c.waitReady(t)
	t.Logf("B killed, C ready %v later (lease TTL %v)", time.Since(t0).Round(time.Millisecond), leaseTTL)
	publishMoves(t, ctx, js, topo, f, f.moves[last:])
	out := waitOutputs(t, ctx, js, topo, len(f.moves))
	waitIdle(t, ctx, js, topo)
	c.stop()

	if r := applied.runs(); fmt.Sprint(r) != "[A B C]" {
		t.Fatalf("partition 0's inputs were applied by %v in turn, want [A B C]: two workers consumed it at once", r)
	}
	for _, w := range []*leaseWorker{a, b, c} {
		if n := w.metric(t, "treasure_proximity_partition_lease_lost_total"); n != 0 {
			t.Fatalf("worker %s lost its lease %v times", w.name, n)
		}
	}
	checkLikeUninterrupted(t, ctx, js, url, f, topo, out)
}

// freezer stands for a SIGSTOP of a worker serving partition 0: once
// armed, its partition goroutine blocks at the hook point at, and from
// then on its lease renewals block too, until resume closes.
type freezer struct {
	at     hookPoint
	armed  atomic.Bool
	once   sync.Once
	frozen chan struct{} // closed once the partition goroutine is blocked
	resume chan struct{}
}

func newFreezer(at hookPoint) *freezer {
	return &freezer{at: at, frozen: make(chan struct{}), resume: make(chan struct{})}
}

func (z *freezer) hook(k int, at hookPoint) {
	if k != 0 || at != z.at || !z.armed.Load() {
		return
	}
	z.once.Do(func() {
		close(z.frozen)
		<-z.resume
	})
}

func (z *freezer) renew(k int) {
	select {
	case <-z.frozen:
		<-z.resume
	default:
	}
}

// streamMsgCount returns how many messages stream name holds.
func streamMsgCount(tb testing.TB, ctx context.Context, js jetstream.JetStream, name string) uint64 {
	tb.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// TestFrozenOwnerDoesNotPublishAfterItsLeaseLapsed: the owner of partition
// 0 freezes (its renewals and its partition goroutine stop, as under
// SIGSTOP) with a batch in hand, past the lease's TTL; the waiting worker
// takes over and handles everything. When the frozen one runs again:
//
//   - frozen before it looked at its lease: it applies nothing more and
//     publishes nothing;
//   - frozen after it looked, about to apply an input (the worst instant):
//     it applies that one input and publishes its outputs — under the same
//     Nats-Msg-Ids its successor already published them, so JetStream
//     stores none (OUT and IN hold as many messages as before) — and no
//     other.
//
// Either way it finds its lease lost, stops consuming and waits again;
// every move has exactly one result, as in an uninterrupted run.
func TestFrozenOwnerDoesNotPublishAfterItsLeaseLapsed(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   hookPoint
	}{
		{"before its lease check", hookBatch},
		{"after its lease check", hookApply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := amsterdamFixture(t)
			ctx := context.Background()
			url := testenv.NATSURL()
			_, js, prefix := testenv.JetStream(t)
			topo := newTopo(prefix+"z", f.k)
			testenv.DeleteStreamsOnCleanup(t, js, topo.Prefix)
			if err := topo.Ensure(ctx, js); err != nil {
				t.Fatal(err)
			}
			z := newFreezer(tc.at)
			startLeaseWorker(t, f, topo, url, "rest", []int{1, 2}, leaseWorkerOptions{})
			a := startLeaseWorker(t, f, topo, url, "A", []int{0}, leaseWorkerOptions{hook: z.hook, renewHook: z.renew})
			a.waitReady(t)
			b := startLeaseWorker(t, f, topo, url, "B", []int{0}, leaseWorkerOptions{})
			b.waitWaiting(t, "A")

			half := len(f.moves) / 2
			publishDrops(t, ctx, js, topo, f)
			publishMoves(t, ctx, js, topo, f, f.moves[:half])
			waitOutputs(t, ctx, js, topo, half)
			waitIdle(t, ctx, js, topo)

			z.armed.Store(true)
			publishMoves(t, ctx, js, topo, f, f.moves[half:])
			select {
			case <-z.frozen:
			case <-time.After(30 * time.Second):
				t.Fatal("A never took a batch after the freeze was armed")
			}
			movesA := a.metric(t, "treasure_proximity_moves_total")
			b.waitReady(t) // once A's lease expired
			out := waitOutputs(t, ctx, js, topo, len(f.moves))
			waitIdle(t, ctx, js, topo)
			outMsgs, inMsgs := streamMsgCount(t, ctx, js, topo.OutStream()), streamMsgCount(t, ctx, js, topo.InStream())

			close(z.resume)
			testenv.WaitFor(t, 30*time.Second, func() string {
				lost, waiting := a.metric(t, "treasure_proximity_partition_lease_lost_total"), a.metric(t, "treasure_proximity_partition_lease_waiting")
				if lost != 1 || waiting != 1 {
					return fmt.Sprintf("A: %v leases lost, waiting %v; want 1 and 1 (it waits for B's lease)", lost, waiting)
				}
				return ""
			})
			after := a.metric(t, "treasure_proximity_moves_total") - movesA
			t.Logf("A evaluated %v moves after it ran again", after)
			if tc.at == hookBatch && after != 0 {
				t.Fatalf("A, frozen before its lease check, evaluated %v moves after it ran again", after)
			}
			if got, got2 := streamMsgCount(t, ctx, js, topo.OutStream()), streamMsgCount(t, ctx, js, topo.InStream()); got != outMsgs || got2 != inMsgs {
				t.Fatalf("after A ran again OUT holds %d messages (%d before), IN %d (%d before): it stored outputs after losing its lease", got, outMsgs, got2, inMsgs)
			}
			if err := a.w.Ready(); err == nil {
				t.Fatal("A is ready without its lease")
			}
			if err := b.w.Ready(); err != nil {
				t.Fatalf("B: %v", err)
			}
			b.stop()
			a.waitReady(t) // B released: A takes over again
			a.stop()
			// Whatever A sent as it ran again has been answered by now.
			if got, got2 := streamMsgCount(t, ctx, js, topo.OutStream()), streamMsgCount(t, ctx, js, topo.InStream()); got != outMsgs || got2 != inMsgs {
				t.Fatalf("at the end OUT holds %d messages (%d before A ran again), IN %d (%d)", got, outMsgs, got2, inMsgs)
			}
			checkLikeUninterrupted(t, ctx, js, url, f, topo, out)
		})
	}
}
