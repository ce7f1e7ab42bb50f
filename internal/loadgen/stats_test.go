package loadgen

import (
	"encoding/json"
	"testing"
	"time"

	"treasure/internal/game"
)

// within reports whether got is v to HdrHistogram's 3 significant digits.
func within(got, v time.Duration) bool {
	d := got - v
	if d < 0 {
		d = -d
	}
	return d <= v/500+time.Microsecond
}

func TestCollectorPerIntervalAndCumulative(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	c := newCollector(start)

	// Interval 1: 100 moves acked, latencies 1..100 ms spread over players
	// (and so over shards).
	for i := 1; i <= 100; i++ {
		c.record(i, time.Duration(i)*time.Millisecond)
	}
	c.acked.Add(100)
	c.countErr(errIndex([]byte("rate_limited")))
	c.countErr(errIndex([]byte("rate_limited")))
	c.countErr(iClosed)
	c.countErr(errIndex([]byte("no_such_code")))
	s1 := c.stats(start.Add(2*time.Second), false)
	if s1.Moves != 100 || s1.TotalMoves != 100 || s1.MovesPerSecond != 50 || s1.Interval != 2*time.Second || s1.Elapsed != 2*time.Second {
		t.Fatalf("interval 1: moves %d total %d rate %v interval %v elapsed %v; want 100, 100, 50/s over 2s",
			s1.Moves, s1.TotalMoves, s1.MovesPerSecond, s1.Interval, s1.Elapsed)
	}
	if s1.Latency.Count != 100 || !within(s1.Latency.P50, 50*time.Millisecond) || !within(s1.Latency.P99, 99*time.Millisecond) || !within(s1.Latency.Max, 100*time.Millisecond) {
		t.Fatalf("interval 1 latency %+v, want 100 samples, p50 50ms, p99 99ms, max 100ms", s1.Latency)
	}
	if s1.TotalLatency != s1.Latency {
		t.Fatalf("after one interval the cumulative latency %+v differs from the interval's %+v", s1.TotalLatency, s1.Latency)
	}
	if s1.ErrorCount != 4 || s1.Errors["rate_limited"] != 2 || s1.Errors["closed"] != 1 || s1.Errors["other"] != 1 || len(s1.Errors) != 3 {
		t.Fatalf("errors %v (count %d), want rate_limited 2, closed 1, other 1", s1.Errors, s1.ErrorCount)
	}

	// Interval 2: 10 moves at 500 ms each.
	for i := range 10 {
		c.record(i, 500*time.Millisecond)
	}
	c.acked.Add(10)
	s2 := c.stats(start.Add(3*time.Second), false)
	if s2.Moves != 10 || s2.TotalMoves != 110 || s2.MovesPerSecond != 10 {
		t.Fatalf("interval 2: moves %d total %d rate %v; want 10, 110, 10/s", s2.Moves, s2.TotalMoves, s2.MovesPerSecond)
	}
	if s2.Latency.Count != 10 || !within(s2.Latency.P50, 500*time.Millisecond) || !within(s2.Latency.Max, 500*time.Millisecond) {
		t.Fatalf("interval 2 latency %+v, want 10 samples at 500ms", s2.Latency)
	}
	if s2.TotalLatency.Count != 110 || !within(s2.TotalLatency.P50, 55*time.Millisecond) || !within(s2.TotalLatency.Max, 500*time.Millisecond) {
		t.Fatalf("cumulative latency %+v, want 110 samples, p50 55ms, max 500ms", s2.TotalLatency)
	}

	// Interval 3: nothing happened.
	s3 := c.stats(start.Add(4*time.Second), true)
	if !s3.Final || s3.Moves != 0 || s3.MovesPerSecond != 0 || s3.Latency.Count != 0 || s3.TotalLatency.Count != 110 {
		t.Fatalf("empty final interval: %+v", s3)
	}
}

func TestCollectorClampsLatencies(t *testing.T) {
	t.Parallel()
	c := newCollector(time.Unix(0, 0))
	c.record(0, -time.Second) // a clock step: counts as 1 µs
	c.record(1, 2*time.Hour)  // beyond the histogram: counts as its top
	c.record(2, time.Nanosecond)
	s := c.stats(time.Unix(1, 0), false)
	if s.Latency.Count != 3 || s.Latency.Max < 9*time.Minute {
		t.Fatalf("latency %+v, want 3 samples, max about 10 min", s.Latency)
	}
}

func TestStatsJSON(t *testing.T) {
	t.Parallel()
	s := Stats{
		Final: true, Elapsed: 1500 * time.Millisecond, Interval: time.Second, Moves: 7,
		Latency: Latency{Count: 7, P50: 3100 * time.Microsecond, P99: 9800 * time.Microsecond, Max: 12 * time.Millisecond},
		Errors:  map[string]uint64{"rate_limited": 2}, Top: []game.Entry{{Player: "alice", Score: 50, Rank: 1}},
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	lat, _ := back["latency"].(map[string]any)
	top, _ := back["top"].([]any)
	if back["final"] != true || back["elapsed_s"] != 1.5 || back["moves"] != 7.0 || lat["p50_ms"] != 3.1 || lat["p99_ms"] != 9.8 ||
		len(top) != 1 || back["errors"].(map[string]any)["rate_limited"] != 2.0 {
		t.Fatalf("Stats as JSON: %s", b)
	}
}

func TestRingAccounting(t *testing.T) {
	t.Parallel()
	c := newCollector(time.Unix(0, 0))
	p := &player{r: &run{c: c}}
	p.sent(1, 100, true)
	p.sent(1, 250, false) // resent: the latency runs from here
	p.sent(2, 300, true)
	if got := c.pending.Load(); got != 2 {
		t.Fatalf("pending %d after two moves, want 2", got)
	}
	if d, ok := p.updated(1, 55, 1250); !ok || d != 1000 {
		t.Fatalf("update of seq 1: %v, %v; want 1000ns from the resend", d, ok)
	}
	if _, ok := p.updated(1, 55, 1300); ok {
		t.Fatal("a second update of seq 1 matched")
	}
	p.sent(1, 1400, false) // a resend after the update came: nothing is due
	if got := c.pending.Load(); got != 1 {
		t.Fatalf("pending %d, want 1 (seq 2)", got)
	}
	p.forget(2)
	if got := c.pending.Load(); got != 0 {
		t.Fatalf("pending %d after forgetting seq 2, want 0", got)
	}
	// A move ringSize later evicts one whose update never came.
	p.sent(3, 0, true)
	p.sent(3+ringSize, 0, true)
	if c.lost.Load() != 1 || c.pending.Load() != 1 {
		t.Fatalf("lost %d pending %d, want 1 and 1", c.lost.Load(), c.pending.Load())
	}
	if n, ok := p.lastPushed(); !ok || n != 55 {
		t.Fatalf("last pushed node %d, %v; want 55", n, ok)
	}
}
