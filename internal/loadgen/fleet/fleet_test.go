package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the test binary as a worker process when FLEET_TEST_WORKER
// names a fake engine (the subprocess tests start it so), and otherwise
// runs the tests, failing them when a goroutine outlives them.
func TestMain(m *testing.M) {
	if mode := os.Getenv("FLEET_TEST_WORKER"); mode != "" {
		os.Exit(testWorkerMain(mode))
	}
	goleak.VerifyTestMain(m)
}

func testWorkerMain(mode string) int {
	ctx := context.Background()
	var run runShare
	switch mode {
	case "fake":
		run = fakeEngine(fakeOptions{seconds: 3})
	case "until-stopped":
		run = fakeEngine(fakeOptions{seconds: 1 << 20})
	case "fail":
		run = fakeEngine(fakeOptions{seconds: 1, failAfter: true})
	case "hang": // ignores stop messages: must be killed
		run = func(ctx context.Context, c Config, h hooks) (any, error) {
			fmt.Fprintf(os.Stderr, "hanging worker %d\n", c.Worker)
			h.progress(c.Players)
			if _, err := h.connected(ctx); err != nil {
				return nil, err
			}
			select {}
		}
	case "engine":
		if err := Worker(ctx, os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 1
		}
		return 0
	case "exit3": // dies without a word on stdout
		fmt.Fprintln(os.Stderr, "worker about to exit 3")
		return 3
	default:
		fmt.Fprintf(os.Stderr, "unknown FLEET_TEST_WORKER %q\n", mode)
		return 2
	}
	if err := serveWorker(ctx, os.Stdin, os.Stdout, run); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

// fakeResult and fakeSecond stand in for the engine's result and second.
type fakeResult struct {
	Players int              `json:"players"`
	Sent    uint64           `json:"sent"`
	Errors  map[string]int   `json:"errors"`
	T0s     []int64          `json:"t0s"`
	Workers []int            `json:"workers"`
	Stopped bool             `json:"stopped"`
	Ended   int              `json:"ended"`
	Extra   map[string]int64 `json:"extra,omitempty"`
}

type fakeSecond struct {
	Sent    uint64 `json:"sent"`
	Workers []int  `json:"workers"`
}

var fakeCodec = codec[fakeResult, fakeSecond]{
	mergeResult: func(dst, src *fakeResult) {
		dst.Players += src.Players
		dst.Sent += src.Sent
		for k, v := range src.Errors {
			if dst.Errors == nil {
				dst.Errors = map[string]int{}
			}
			dst.Errors[k] += v
		}
		dst.T0s = append(dst.T0s, src.T0s...)
		dst.Workers = append(dst.Workers, src.Workers...)
		dst.Stopped = dst.Stopped || src.Stopped
		dst.Ended += src.Ended
	},
	mergeSecond: func(dst, src *fakeSecond) {
		dst.Sent += src.Sent
		dst.Workers = append(dst.Workers, src.Workers...)
	},
}

type fakeOptions struct {
	seconds   int           // seconds to "run" after t0
	tick      time.Duration // between seconds; default 1 ms
	failAfter bool          // return an error instead of a result
	readyGate *atomic.Int32 // counts workers that reached connected
}

// fakeEngine reports progress, becomes ready, and then sends one second per
// tick: worker k sends k+1 moves per player a second.
func fakeEngine(o fakeOptions) runShare {
	if o.tick == 0 {
		o.tick = time.Millisecond
	}
	return func(ctx context.Context, c Config, h hooks) (any, error) {
		h.progress(c.Players / 2)
		h.progress(c.Players)
		if o.readyGate != nil {
			o.readyGate.Add(1)
		}
		t0, err := h.connected(ctx)
		if err != nil {
			return nil, err
		}
		r := fakeResult{Players: c.Players, T0s: []int64{t0.UnixNano()}, Workers: []int{c.Worker},
			Errors: map[string]int{"timeout": 1, fmt.Sprintf("w%d", c.Worker): 1}}
		t := time.NewTicker(o.tick)
		defer t.Stop()
	loop:
		for i := 0; i < o.seconds; i++ {
			select {
			case <-ctx.Done():
				r.Stopped = true
				break loop
			case <-h.end:
				r.Ended = 1
				break loop
			case <-t.C:
			}
			sent := uint64(c.Players * (c.Worker + 1))
			r.Sent += sent
			h.second(i, fakeSecond{Sent: sent, Workers: []int{c.Worker}})
		}
		if o.failAfter {
			return nil, errors.New("the sky fell on worker " + fmt.Sprint(c.Worker))
		}
		return r, nil
	}
}

func configs(players ...int) []Config {
	var cs []Config
	first := 0
	for k, p := range players {
		cs = append(cs, Config{Worker: k, FirstPlayer: first, Players: p, PlayerPrefix: "t-"})
		first += p
	}
	return cs
}

// pipes starts workers in-process, run(k) for worker k.
func pipes(run func(k int) runShare) starter {
	return func(k int) (proc, error) { return startPipe(run(k)), nil }
}

func TestCoordinateMergesEveryWorkersResultAndSeconds(t *testing.T) {
	var gate atomic.Int32
	const n = 3
	var connectedCalls int
	fixed := time.Unix(1_700_000_000, 0)
	var progress []int
	var mu sync.Mutex
	var seconds []int
	var secondSent []uint64
	res, err := coordinate(context.Background(), coordOptions{
		configs: configs(10, 20, 30),
		start:   pipes(func(int) runShare { return fakeEngine(fakeOptions{seconds: 5, readyGate: &gate}) }),
		connected: func(context.Context) (time.Time, error) {
			connectedCalls++
			if g := gate.Load(); g != n {
				t.Errorf("connected called when %d of %d workers were ready", g, n)
			}
			return fixed, nil
		},
		startDelay: 50 * time.Millisecond,
		progress:   func(c int) { progress = append(progress, c) },
	}, fakeCodec, func(i int, s *fakeSecond) {
		mu.Lock()
		defer mu.Unlock()
		seconds = append(seconds, i)
		secondSent = append(secondSent, s.Sent)
		if len(s.Workers) != n {
			t.Errorf("second %d reported with workers %v, want all %d", i, s.Workers, n)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if connectedCalls != 1 {
		t.Errorf("connected called %d times, want 1", connectedCalls)
	}
	if res.Players != 60 {
		t.Errorf("players %d, want 60", res.Players)
	}
	// per second: 10×1 + 20×2 + 30×3 = 140
	if res.Sent != 5*140 {
		t.Errorf("sent %d, want %d", res.Sent, 5*140)
	}
	if !slices.Equal(res.Workers, []int{0, 1, 2}) {
		t.Errorf("results merged in order %v, want worker order", res.Workers)
	}
	if res.Errors["timeout"] != 3 || res.Errors["w0"] != 1 || res.Errors["w2"] != 1 {
		t.Errorf("errors %v, want timeout:3 and one per worker", res.Errors)
	}
	want := fixed.Add(50 * time.Millisecond).UnixNano()
	for _, t0 := range res.T0s {
		if t0 != want {
			t.Errorf("a worker started at %d, want t0+delay %d", t0, want)
		}
	}
	if !slices.Equal(seconds, []int{0, 1, 2, 3, 4}) {
		t.Errorf("seconds reported %v, want 0..4 in order", seconds)
	}
	for i, s := range secondSent {
		if s != 140 {
			t.Errorf("second %d: sent %d, want 140", i, s)
		}
	}
	if len(progress) == 0 || progress[len(progress)-1] != 60 || len(slices.Compact(slices.Clone(progress))) != len(progress) {
		t.Errorf("progress %v: want it to end at 60, each total once", progress)
	}
}

func TestCoordinateFailsWhenAWorkerFails(t *testing.T) {
	_, err := coordinate(context.Background(), coordOptions{
		configs: configs(5, 5, 5),
		start: pipes(func(k int) runShare {
			if k == 1 {
				return fakeEngine(fakeOptions{seconds: 2, failAfter: true})
			}
			return fakeEngine(fakeOptions{seconds: 1 << 20}) // runs until killed
		}),
	}, fakeCodec, nil)
	if err == nil {
		t.Fatal("a failing worker did not fail the run")
	}
	for _, want := range []string{"worker 1", "players 5 to 9", "the sky fell on worker 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestCoordinateFailsWhenConnectedFails(t *testing.T) {
	_, err := coordinate(context.Background(), coordOptions{
		configs:   configs(5, 5),
		start:     pipes(func(int) runShare { return fakeEngine(fakeOptions{seconds: 1}) }),
		connected: func(context.Context) (time.Time, error) { return time.Time{}, errors.New("drop refused: 401") },
	}, fakeCodec, nil)
	if err == nil || !strings.Contains(err.Error(), "drop refused: 401") {
		t.Fatalf("err %v, want the connected hook's error", err)
	}
}

func TestCoordinateFailsWhenAWorkerCannotStart(t *testing.T) {
	started := 0
	_, err := coordinate(context.Background(), coordOptions{
		configs: configs(5, 5, 5),
		start: func(k int) (proc, error) {
			if k == 2 {
				return nil, errors.New("no such file")
			}
			started++
			return startPipe(fakeEngine(fakeOptions{seconds: 1 << 20})), nil
		},
	}, fakeCodec, nil)
	if err == nil || !strings.Contains(err.Error(), "starting worker 2: no such file") {
		t.Fatalf("err %v, want worker 2's start error", err)
	}
	if started != 2 {
		t.Errorf("started %d workers before the failure, want 2", started)
	}
}

func TestCancelStopsEveryWorkerAndMergesWhatTheySent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var reported atomic.Int32
	res, err := coordinate(ctx, coordOptions{
		configs: configs(4, 4),
		start:   pipes(func(int) runShare { return fakeEngine(fakeOptions{seconds: 1 << 20}) }),
	}, fakeCodec, func(i int, s *fakeSecond) {
		if reported.Add(1) == 3 {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stopped || res.Players != 8 || res.Sent == 0 {
		t.Errorf("result %+v: want both workers stopped early, with moves", res)
	}
}

func TestCancelBeforeEveryWorkerIsReady(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	_, err := coordinate(ctx, coordOptions{
		configs: configs(4, 4),
		start: pipes(func(k int) runShare {
			if k == 0 {
				return fakeEngine(fakeOptions{seconds: 1})
			}
			return func(ctx context.Context, c Config, h hooks) (any, error) {
				cancel() // the user gives up while players connect
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
		}),
	}, fakeCodec, nil)
	if err == nil || !strings.Contains(err.Error(), errStopped.Error()) {
		t.Fatalf("err %v: want the run to fail with the stop (no result to merge)", err)
	}
}

func TestEndingTheScheduleEndsEveryWorker(t *testing.T) {
	end := make(chan struct{})
	var once sync.Once
	res, err := coordinate(context.Background(), coordOptions{
		configs: configs(3, 3, 3),
		start:   pipes(func(int) runShare { return fakeEngine(fakeOptions{seconds: 1 << 20}) }),
		end:     end,
	}, fakeCodec, func(i int, s *fakeSecond) {
		if i == 2 {
			once.Do(func() { close(end) }) // ramp: a step failed
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ended != 3 || res.Stopped || res.Players != 9 {
		t.Errorf("result %+v: want every worker ended (not stopped)", res)
	}
}
