package loadgen

import (
	"strings"
	"testing"
	"time"

	"treasure/internal/game"
)

func TestLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		s    Stats
		want string
	}{
		{"busy second", Stats{
			MovesPerSecond: 1234.4,
			Latency:        Latency{Count: 1234, P50: 3100 * time.Microsecond, P99: 9800 * time.Microsecond},
			Top:            []game.Entry{{Player: "alice", Score: 50, Rank: 1}, {Player: "bob", Score: 40, Rank: 2}},
			Ranked:         7,
		}, "moves/s 1234 | p50 3.1 ms p99 9.8 ms | errors 0 | top: alice 50, bob 40, …"},
		{"quiet second, everyone listed", Stats{
			Top: []game.Entry{{Player: "alice", Score: 50, Rank: 1}}, Ranked: 1, ErrorCount: 3,
		}, "moves/s 0 | p50 - p99 - | errors 3 | top: alice 50"},
		{"trouble", Stats{
			MovesPerSecond: 10, Latency: Latency{Count: 10, P50: time.Millisecond, P99: 2 * time.Millisecond},
			Reconnects: 2, Gaps: 1, TopError: "leaderboard: 503 Service Unavailable",
		}, "moves/s 10 | p50 1.0 ms p99 2.0 ms | errors 0 | reconnects 2 | GAPS 1 | top: unavailable (leaderboard: 503 Service Unavailable)"},
		{"nobody scored", Stats{}, "moves/s 0 | p50 - p99 - | errors 0 | top: nobody has scored yet"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.s.Line(); got != c.want {
				t.Fatalf("Line() =\n%q, want\n%q", got, c.want)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	s := Stats{
		Final: true, Elapsed: 10 * time.Second, TotalMoves: 9870, Sent: 9900,
		TotalLatency: Latency{Count: 9870, P50: 3 * time.Millisecond, P99: 9 * time.Millisecond, P999: 12 * time.Millisecond, Max: 20 * time.Millisecond},
		Errors:       map[string]uint64{"rate_limited": 30, "closed": 2}, ErrorCount: 32, Reconnects: 2,
		Top: []game.Entry{{Player: "alice", Score: 50, Rank: 1}}, Ranked: 1,
	}
	got := s.Summary()
	for _, want := range []string{
		"after 10.0 s", "9870 accepted (987/s), 9900 frames sent",
		"p50 3.0 ms  p99 9.0 ms  p99.9 12.0 ms  max 20.0 ms  (9870 samples)",
		"gaps 0, duplicates 0", "errors    closed 2, rate_limited 30", "reconnects 2", "top       alice 50\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Summary() lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(Stats{}.Summary(), "errors    none") {
		t.Errorf("an empty summary does not say there were no errors:\n%s", Stats{}.Summary())
	}
}
