package loadgen

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Line formats a per-interval report as one line for people:
//
//	moves/s 1234 | p50 3.1 ms p99 9.8 ms | errors 0 | top: alice 50, bob 40, …
//
// Latencies are the interval's ("-" when no update arrived in it); errors
// are cumulative; reconnects and gaps are added when not zero; a top that
// could not be fetched again is marked "(stale)".
func (s Stats) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "moves/s %.0f | p50 %s p99 %s | errors %d", s.MovesPerSecond, fmtLatency(s.Latency.Count, s.Latency.P50), fmtLatency(s.Latency.Count, s.Latency.P99), s.ErrorCount)
	if s.Reconnects > 0 {
		fmt.Fprintf(&b, " | reconnects %d", s.Reconnects)
	}
	if s.Gaps > 0 {
		fmt.Fprintf(&b, " | GAPS %d", s.Gaps)
	}
	b.WriteString(" | top: ")
	b.WriteString(s.top())
	return b.String()
}

// Summary formats the final report as a few lines for people, each ending
// in a newline.
func (s Stats) Summary() string {
	var b strings.Builder
	secs := s.Elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(s.TotalMoves) / secs
	}
	fmt.Fprintf(&b, "loadgen summary after %.1f s\n", secs)
	fmt.Fprintf(&b, "  moves     %d accepted (%.0f/s), %d frames sent\n", s.TotalMoves, rate, s.Sent)
	l := s.TotalLatency
	fmt.Fprintf(&b, "  latency   move→update p50 %s  p99 %s  p99.9 %s  max %s  (%d samples)\n",
		fmtLatency(l.Count, l.P50), fmtLatency(l.Count, l.P99), fmtLatency(l.Count, l.P999), fmtLatency(l.Count, l.Max), l.Count)
	fmt.Fprintf(&b, "  updates   %d proximity, %d claims, %d scores, %d leaderboards; missing %d, unmatched %d\n",
		s.Updates, s.Claims, s.Scores, s.Leaderboards, s.Missing, s.Unmatched)
	fmt.Fprintf(&b, "  push ids  gaps %d, duplicates %d\n", s.Gaps, s.Duplicates)
	fmt.Fprintf(&b, "  errors    %s\n", fmtErrors(s.Errors))
	fmt.Fprintf(&b, "  sockets   reconnects %d, resyncs %d\n", s.Reconnects, s.Resyncs)
	fmt.Fprintf(&b, "  top       %s\n", s.top())
	return b.String()
}

func (s Stats) top() string {
	if len(s.Top) == 0 {
		if s.TopError != "" {
			return "unavailable (" + s.TopError + ")"
		}
		return "nobody has scored yet"
	}
	var b strings.Builder
	if s.TopError != "" {
		b.WriteString("(stale) ")
	}
	for i, e := range s.Top {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.Player)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(e.Score, 10))
	}
	if s.Ranked > uint64(len(s.Top)) {
		b.WriteString(", …")
	}
	return b.String()
}

func fmtLatency(n uint64, d time.Duration) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatFloat(ms(d), 'f', 1, 64) + " ms"
}

func fmtErrors(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + strconv.FormatUint(m[n], 10)
	}
	return strings.Join(parts, ", ")
}
