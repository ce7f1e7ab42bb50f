package loadgen

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"treasure/internal/game"
)

// Latency summarises move→update latencies: from writing a move (its
// last send, for a move resent after rate_limited, unavailable or a
// reconnect) to reading the proximity update with its seq on the push
// socket.
type Latency struct {
	Count uint64
	P50   time.Duration
	P99   time.Duration
	P999  time.Duration
	Max   time.Duration
}

// MarshalJSON writes {"count":N,"p50_ms":…,"p99_ms":…,"p999_ms":…,"max_ms":…}.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Count uint64  `json:"count"`
		P50   float64 `json:"p50_ms"`
		P99   float64 `json:"p99_ms"`
		P999  float64 `json:"p999_ms"`
		Max   float64 `json:"max_ms"`
	}{l.Count, ms(l.P50), ms(l.P99), ms(l.P999), ms(l.Max)})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Stats is one report: figures over the last interval (about a second)
// and cumulative ones since the run started. Final marks the last report,
// sent once after every socket is closed; its interval figures cover the
// time since the previous report.
type Stats struct {
	Final    bool          `json:"final"`
	Elapsed  time.Duration `json:"-"` // since Run started
	Interval time.Duration `json:"-"` // covered by Moves, MovesPerSecond and Latency

	// Over the interval.
	Moves          uint64  `json:"moves"` // moves accepted: acked, or found accepted after a lost ack
	MovesPerSecond float64 `json:"moves_per_s"`
	Latency        Latency `json:"latency"`

	// Cumulative.
	TotalMoves   uint64  `json:"total_moves"` // moves accepted
	TotalLatency Latency `json:"total_latency"`
	Sent         uint64  `json:"sent"`    // move frames written, resends included
	Updates      uint64  `json:"updates"` // proximity updates read
	// Unmatched counts proximity updates whose seq was not waiting for one:
	// a move of an earlier run under the same player id, a duplicate, or a
	// sample lost because a player had too many moves waiting.
	Unmatched uint64 `json:"unmatched"`
	// Missing counts moves sent and not rejected whose proximity update
	// has not arrived (yet); in the final report, those whose update did
	// not arrive before the end of the drain (see Options.Drain).
	Missing      uint64 `json:"missing"`
	Claims       uint64 `json:"claims"`
	Scores       uint64 `json:"scores"`
	Leaderboards uint64 `json:"leaderboards"` // pushed leaderboard messages
	// Errors counts error answers by SPEC code (rate_limited included) and
	// client-side failures: "dial" (a socket could not be opened),
	// "closed" (a socket dropped), "ack_timeout", "bad_message" (a line
	// that is not a message of the contract), "unexpected" (an answer for
	// a seq not in flight), "desync" (a player that could not resynchronise
	// and stopped), "other" (an unknown code). Only non-zero counts appear.
	Errors     map[string]uint64 `json:"errors"`
	ErrorCount uint64            `json:"error_count"`
	Reconnects uint64            `json:"reconnects"` // sockets reopened after a drop, both kinds
	Resyncs    uint64            `json:"resyncs"`    // stale_seq/discontinuous answers acted on
	// Gaps counts update ids skipped on push sockets (SPEC: none is ever
	// lost, across reconnects too): it must be 0. Duplicates counts ids
	// received twice (harmless, skipped).
	Gaps       uint64 `json:"gaps"`
	Duplicates uint64 `json:"duplicates"`

	// Now.
	IngestSockets int `json:"ingest_sockets"` // open
	PushSockets   int `json:"push_sockets"`

	// Top is GET /v1/leaderboard?limit=5 on the push service, fetched for
	// this report; on failure it holds the last good answer and TopError
	// says why.
	Top      []game.Entry `json:"top"`
	Ranked   uint64       `json:"ranked"` // the leaderboard's "players"
	TopError string       `json:"top_error,omitempty"`
}

// MarshalJSON adds elapsed_s and interval_s to the tagged fields.
func (s Stats) MarshalJSON() ([]byte, error) {
	type plain Stats
	return json.Marshal(struct {
		ElapsedS  float64 `json:"elapsed_s"`
		IntervalS float64 `json:"interval_s"`
		plain
	}{s.Elapsed.Seconds(), s.Interval.Seconds(), plain(s)})
}

// Error names counted in Stats.Errors besides SPEC's codes.
const (
	errDial       = "dial"
	errClosed     = "closed"
	errAckTimeout = "ack_timeout"
	errBadMessage = "bad_message"
	errUnexpected = "unexpected"
	errDesync     = "desync"
	// errNoRetryAfter counts rate_limited and unavailable answers without
	// a positive retry_after_ms (SPEC: both carry one), besides their
	// code: the server broke the contract, the client waits 1 ms.
	errNoRetryAfter = "no_retry_after"
	errOther        = "other"
)

// errNames lists every counted error; its index is the counter's.
var errNames = [...]string{
	"bad_json", "bad_request", "unknown_node", "not_adjacent", "discontinuous",
	"stale_seq", "path_too_long", "rate_limited", "unauthorized", "unavailable",
	errDial, errClosed, errAckTimeout, errBadMessage, errUnexpected, errDesync, errNoRetryAfter, errOther,
}

// errIndex returns the counter of an error name, "other" for unknown ones.
func errIndex(name []byte) int {
	for i, n := range errNames {
		if n == string(name) {
			return i
		}
	}
	return len(errNames) - 1
}

// Counters of the client-side errors.
var (
	iDial       = errIndex([]byte(errDial))
	iClosed     = errIndex([]byte(errClosed))
	iAckTimeout = errIndex([]byte(errAckTimeout))
	iBadMessage = errIndex([]byte(errBadMessage))
	iUnexpected = errIndex([]byte(errUnexpected))
	iDesync     = errIndex([]byte(errDesync))
	iNoRetry    = errIndex([]byte(errNoRetryAfter))
)

// Latencies are recorded in microseconds, from 1 µs to 10 minutes (longer
// ones count as 10 minutes), to 3 significant digits.
const (
	histMax    = int64(10 * time.Minute / time.Microsecond)
	histDigits = 3
	histShards = 8
)

func newHist() *hdr.Histogram { return hdr.New(1, histMax, histDigits) }

// collector gathers the figures of a run. The counters and record are safe
// for concurrent use by the players' goroutines; stats is called by one
// goroutine, the reporter.
type collector struct {
	acked, sent, updates, unmatched, lost atomic.Uint64
	claims, scores, boards                atomic.Uint64
	reconnects, resyncs, gaps, dups       atomic.Uint64
	errs                                  [len(errNames)]atomic.Uint64
	pending                               atomic.Int64 // sent moves waiting for their update
	ingestUp, pushUp, everUp              atomic.Int64
	shards                                [histShards]shard

	// reporter only
	start, last time.Time
	lastAcked   uint64
	interval    *hdr.Histogram
	total       *hdr.Histogram
}

type shard struct {
	mu sync.Mutex
	h  *hdr.Histogram
	_  [40]byte // keep shards on separate cache lines
}

func newCollector(start time.Time) *collector {
	c := &collector{start: start, last: start, interval: newHist(), total: newHist()}
	for i := range c.shards {
		c.shards[i].h = newHist()
	}
	return c
}

// record adds one move→update latency measured by player p.
func (c *collector) record(p int, d time.Duration) {
	us := min(max(int64(d/time.Microsecond), 1), histMax)
	s := &c.shards[p%histShards]
	s.mu.Lock()
	s.h.RecordValue(us) // in range by construction
	s.mu.Unlock()
}

// countErr counts one error by name.
func (c *collector) countErr(i int) { c.errs[i].Add(1) }

// stats returns the report for the interval ending at now and starts the
// next one. The caller fills in Top.
func (c *collector) stats(now time.Time, final bool) Stats {
	c.interval.Reset()
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		c.interval.Merge(s.h)
		s.h.Reset()
		s.mu.Unlock()
	}
	c.total.Merge(c.interval)
	acked := c.acked.Load()
	st := Stats{
		Final:         final,
		Elapsed:       now.Sub(c.start),
		Interval:      now.Sub(c.last),
		Moves:         acked - c.lastAcked,
		Latency:       latency(c.interval),
		TotalMoves:    acked,
		TotalLatency:  latency(c.total),
		Sent:          c.sent.Load(),
		Updates:       c.updates.Load(),
		Unmatched:     c.unmatched.Load() + c.lost.Load(),
		Missing:       uint64(max(c.pending.Load(), 0)),
		Claims:        c.claims.Load(),
		Scores:        c.scores.Load(),
		Leaderboards:  c.boards.Load(),
		Errors:        map[string]uint64{},
		Reconnects:    c.reconnects.Load(),
		Resyncs:       c.resyncs.Load(),
		Gaps:          c.gaps.Load(),
		Duplicates:    c.dups.Load(),
		IngestSockets: int(c.ingestUp.Load()),
		PushSockets:   int(c.pushUp.Load()),
	}
	if st.Interval > 0 {
		st.MovesPerSecond = float64(st.Moves) / st.Interval.Seconds()
	}
	for i := range c.errs {
		if n := c.errs[i].Load(); n > 0 {
			st.Errors[errNames[i]] = n
			st.ErrorCount += n
		}
	}
	c.last, c.lastAcked = now, acked
	return st
}

func latency(h *hdr.Histogram) Latency {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Latency{
		Count: uint64(h.TotalCount()),
		P50:   us(h.ValueAtQuantile(50)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
}
