package fleet

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"treasure/internal/loadgen"
)

func TestSharesCoverEveryPlayerOnceAndEvenly(t *testing.T) {
	for _, c := range []struct{ first, players, workers int }{{0, 35_000, 4}, {7, 10, 3}, {0, 1, 1}, {5, 9_000, 1}} {
		sh := Shares(c.first, c.players, c.workers)
		next, lo, hi := c.first, c.players, 0
		for _, s := range sh {
			if s.First != next {
				t.Errorf("%+v: share %+v starts at %d, want %d", c, s, s.First, next)
			}
			next += s.Players
			lo, hi = min(lo, s.Players), max(hi, s.Players)
		}
		if next != c.first+c.players || hi-lo > 1 || len(sh) != c.workers {
			t.Errorf("%+v: shares %+v", c, sh)
		}
	}
}

func TestWorkersForKeepsEveryWorkerUnderItsShare(t *testing.T) {
	for _, c := range []struct{ players, per, want int }{{35_000, 0, 4}, {9_000, 0, 1}, {9_001, 0, 2}, {10, 3, 4}, {1, 0, 1}} {
		if got := WorkersFor(c.players, c.per); got != c.want {
			t.Errorf("WorkersFor(%d, %d) = %d, want %d", c.players, c.per, got, c.want)
		}
	}
}

func TestConfigsSplitTheRun(t *testing.T) {
	o := Options{
		Open: loadgen.OpenOptions{
			Ingest: []string{"ws://127.0.0.1:1", "ws://127.0.0.1:2"}, Push: []string{"ws://127.0.0.1:3", "ws://127.0.0.1:4", "ws://127.0.0.1:5"},
			Secret: "s", PlayerPrefix: "p-", FirstPlayer: 10, Players: 35_000, Seed: 9, Drain: time.Second,
			Schedule: loadgen.Schedule{Window: time.Second},
		},
		GraphPath: "city.snap",
	}
	cfgs, err := o.configs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 4 {
		t.Fatalf("%d workers for 35,000 players, want 4", len(cfgs))
	}
	for k, c := range cfgs {
		if c.Players > PlayersPerWorker || c.Seed != 9 || c.GraphPath != "city.snap" || c.Schedule.Window != time.Second || c.Drain != time.Second {
			t.Errorf("worker %d: %+v", k, c)
		}
		if want := "127.0.0." + strconv.Itoa(2+k); c.LocalAddr != want {
			t.Errorf("worker %d dials from %q, want %q", k, c.LocalAddr, want)
		}
		// RunOpen spreads player j over Ingest[j%n] whatever the split: the lists go as they are
		if !slices.Equal(c.Ingest, o.Open.Ingest) || !slices.Equal(c.Push, o.Open.Push) {
			t.Errorf("worker %d: ingest %v push %v, want the run's lists", k, c.Ingest, c.Push)
		}
	}

	o.Open.Ingest = []string{"ws://10.0.0.5:8081"}
	cfgs, err = o.configs()
	if err != nil {
		t.Fatal(err)
	}
	if cfgs[1].LocalAddr != "" {
		t.Errorf("a remote ingest got source address %q, want the kernel's choice", cfgs[1].LocalAddr)
	}
}

func TestConfigsRefuseWhatOneWorkerCannotHold(t *testing.T) {
	base := Options{Open: loadgen.OpenOptions{Ingest: []string{"ws://a"}, Push: []string{"ws://b"}, Players: 20_000}, GraphPath: "g"}
	for name, c := range map[string]struct {
		edit func(*Options)
		want string
	}{
		"too few workers":    {func(o *Options) { o.Workers = 2 }, "more than 9000 a worker"},
		"share over the max": {func(o *Options) { o.PerWorker = 12_000 }, "at most"},
		"no graph path":      {func(o *Options) { o.GraphPath = "" }, "no graph path"},
		"no players":         {func(o *Options) { o.Open.Players = 0 }, "at least 1"},
	} {
		t.Run(name, func(t *testing.T) {
			o := base
			c.edit(&o)
			if _, err := o.configs(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want it to say %q", err, c.want)
			}
		})
	}
}

func TestRateAtTravelsAsSteps(t *testing.T) {
	ramp := func(d time.Duration) float64 { return 1 + float64(d/(500*time.Millisecond)) } // +1/s every 500 ms
	w := wireSchedule(loadgen.Schedule{Duration: 3 * time.Second, RateAt: ramp})
	s := w.schedule()
	if s.RateAt == nil || s.Duration != 3*time.Second {
		t.Fatalf("schedule %+v lost its ramp", s)
	}
	for _, at := range []time.Duration{0, 499 * time.Millisecond, 500 * time.Millisecond, 2999 * time.Millisecond, 10 * time.Second} {
		want := ramp(min(at, 2990*time.Millisecond).Truncate(w.RateStep))
		if got := s.RateAt(at); got != want {
			t.Errorf("RateAt(%v) = %v, want %v", at, got, want)
		}
	}
	if st := wireSchedule(loadgen.Schedule{Rate: 2, Duration: time.Hour}); st.RateSamples != nil ||
		!slices.Equal([]float64{st.Rate}, []float64{2}) || st.schedule().RateAt != nil {
		t.Errorf("a steady schedule became %+v", st)
	}
}

// TestConfigsConnectTimeoutScalesWithAllPlayers: every worker connects
// while the others do, against the same services, so its default connect
// timeout is that of the whole run; an explicit one is kept.
func TestConfigsConnectTimeoutScalesWithAllPlayers(t *testing.T) {
	o := Options{
		Open: loadgen.OpenOptions{
			Ingest: []string{"ws://127.0.0.1:1"}, Push: []string{"ws://127.0.0.1:2"},
			Secret: "s", Players: 35_000, Schedule: loadgen.Schedule{Window: time.Second},
		},
		GraphPath: "city.snap",
	}
	cfgs, err := o.configs()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfgs {
		if c.ConnectTimeout != loadgen.ConnectTimeoutFor(35_000) {
			t.Fatalf("worker %d: connect timeout %v, want %v", c.Worker, c.ConnectTimeout, loadgen.ConnectTimeoutFor(35_000))
		}
	}
	o.Open.ConnectTimeout = 42 * time.Second
	if cfgs, err = o.configs(); err != nil || cfgs[0].ConnectTimeout != 42*time.Second {
		t.Fatalf("explicit timeout: %v, %v", cfgs[0].ConnectTimeout, err)
	}
}
