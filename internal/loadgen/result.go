package loadgen

import (
	"encoding/json"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Open-loop latencies are recorded in microseconds from 1 µs to
// openHistMax (longer ones count as openHistMax): the run's totals to 3
// significant digits, the per-second histograms to 2 (1 %), which keeps a
// long run's seconds small.
const (
	openHistMax      = int64(10 * time.Minute / time.Microsecond)
	secondHistDigits = 2
)

func newSecondHist() *hdr.Histogram { return hdr.New(1, openHistMax, secondHistDigits) }

// Result is what RunOpen measured: counts, latency histograms and the run
// second by second. It is mergeable (Merge) and JSON round-trippable
// (histograms as hdr snapshots), so that worker processes can send theirs
// to a coordinator.
//
// The accounting (see the package doc of open.go): every move sent is
// either Acked, Rejected (answered with a SPEC error it was not sent again
// for) or LostUnanswered; every acked move either Answered (its proximity
// update arrived) or LostNoUpdate. So, at the end of a run,
// Sent = Acked + Rejected + LostUnanswered and Acked = Answered + LostNoUpdate
// hold, unless the server broke its contract (Unexpected > 0).
type Result struct {
	Players int `json:"players"`
	// Sent counts distinct moves sent (a move sent again after
	// rate_limited/unavailable counts once; Retries counts the resends).
	Sent    uint64 `json:"sent"`
	Retries uint64 `json:"retries"`
	Acked   uint64 `json:"acked"`
	// Rejected counts moves whose final answer was a SPEC error.
	Rejected uint64 `json:"rejected"`
	// Answered counts acked moves whose proximity update arrived.
	Answered uint64 `json:"answered"`
	// Lost = LostUnanswered + LostNoUpdate.
	Lost           uint64 `json:"lost"`
	LostUnanswered uint64 `json:"lost_unanswered"` // sent, never answered by the end of the drain
	LostNoUpdate   uint64 `json:"lost_no_update"`  // acked, no proximity update by the end of the drain
	// Duplicated counts second answers to one send and second proximity
	// updates for one seq.
	Duplicated uint64 `json:"duplicated"`
	// OutOfOrder counts push messages whose id is not the previous id of
	// the socket + 1.
	OutOfOrder uint64 `json:"out_of_order"`
	// Reordered counts proximity updates whose seq is below an earlier
	// update's of the same player: SPEC wants them in move order, but the
	// update still answers its move. A failure (Failed): push delivers
	// in move order since schema revision 4.
	Reordered uint64 `json:"reordered"`
	// Unexpected counts answers and updates for seqs never sent, and
	// updates for moves that were rejected: the server broke the contract.
	Unexpected uint64 `json:"unexpected"`
	// Unsent counts moves scheduled before the end of the schedule that
	// were never sent: their player was blocked (resynchronising), had too
	// many moves in flight, or lost its socket.
	Unsent uint64 `json:"unsent"`
	// Errors counts error answers by SPEC code, and client-side failures:
	// "dial", "closed" (a socket dropped during the run), "bad_message".
	Errors map[string]uint64 `json:"errors"`
	// SentInWindow counts moves first sent within the schedule's windows
	// (drop: Waves × Window after t0).
	SentInWindow uint64 `json:"sent_in_window"`
	// Ack and Update are latencies in µs from each move's scheduled send
	// time to its ack and to its proximity update.
	Ack    *hdr.Histogram `json:"-"`
	Update *hdr.Histogram `json:"-"`
	// Seconds holds the run second by second since t0 (index = second).
	Seconds []Second `json:"seconds"`
	// OutstandingPeak is the largest client-side backlog seen at a second's
	// end: moves acked but not answered yet (summed over processes by
	// Merge, which is an upper bound of the merged peak).
	OutstandingPeak int64 `json:"outstanding_peak"`
	// DrainS is how long after the end of the schedule the last move was
	// settled (answered or lost); the run waited at most OpenOptions.Drain.
	DrainS float64 `json:"drain_s"`
	// ElapsedS runs from t0 to the end of the drain.
	ElapsedS float64 `json:"elapsed_s"`
	// Start is t0 (Merge keeps the earliest).
	Start time.Time `json:"start"`
}

// Second is one second of a run (since t0): counts of what happened in it
// and the latencies measured in it (at the answer's arrival).
type Second struct {
	Index    int    `json:"index"`
	Offered  uint64 `json:"offered"` // moves scheduled in this second (the open-loop target)
	Sent     uint64 `json:"sent"`    // first sends
	Acked    uint64 `json:"acked"`
	Answered uint64 `json:"answered"`
	Errors   uint64 `json:"errors"`
	// Outstanding is the client-side backlog at the second's end: moves
	// acked whose update has not arrived; InFlight counts moves sent and
	// not settled yet (answer or update due).
	Outstanding int64          `json:"outstanding"`
	InFlight    int64          `json:"in_flight"`
	Ack         *hdr.Histogram `json:"-"`
	Update      *hdr.Histogram `json:"-"`
}

// newResult returns an empty Result for players players.
func newResult(players int) *Result {
	return &Result{Players: players, Errors: map[string]uint64{}, Ack: newHist(), Update: newHist()}
}

// Merge adds o's counts, histograms and seconds to r (seconds by index).
// Peaks add up (an upper bound); DrainS and ElapsedS take the larger.
func (r *Result) Merge(o *Result) {
	r.Players += o.Players
	r.Sent += o.Sent
	r.Retries += o.Retries
	r.Acked += o.Acked
	r.Rejected += o.Rejected
	r.Answered += o.Answered
	r.Lost += o.Lost
	r.LostUnanswered += o.LostUnanswered
	r.LostNoUpdate += o.LostNoUpdate
	r.Duplicated += o.Duplicated
	r.OutOfOrder += o.OutOfOrder
	r.Unexpected += o.Unexpected
	r.Reordered += o.Reordered
	r.Unsent += o.Unsent
	r.SentInWindow += o.SentInWindow
	r.OutstandingPeak += o.OutstandingPeak
	r.DrainS = max(r.DrainS, o.DrainS)
	r.ElapsedS = max(r.ElapsedS, o.ElapsedS)
	if r.Start.IsZero() || (!o.Start.IsZero() && o.Start.Before(r.Start)) {
		r.Start = o.Start
	}
	if r.Errors == nil {
		r.Errors = map[string]uint64{}
	}
	for k, v := range o.Errors {
		r.Errors[k] += v
	}
	if r.Ack == nil {
		r.Ack = newHist()
	}
	if r.Update == nil {
		r.Update = newHist()
	}
	if o.Ack != nil {
		r.Ack.Merge(o.Ack)
	}
	if o.Update != nil {
		r.Update.Merge(o.Update)
	}
	for _, s := range o.Seconds {
		for len(r.Seconds) <= s.Index {
			r.Seconds = append(r.Seconds, Second{Index: len(r.Seconds)})
		}
		r.Seconds[s.Index].Merge(s)
	}
}

// Merge adds o's counts and histograms to s.
func (s *Second) Merge(o Second) {
	s.Offered += o.Offered
	s.Sent += o.Sent
	s.Acked += o.Acked
	s.Answered += o.Answered
	s.Errors += o.Errors
	s.Outstanding += o.Outstanding
	s.InFlight += o.InFlight
	if o.Ack != nil {
		if s.Ack == nil {
			s.Ack = newSecondHist()
		}
		s.Ack.Merge(o.Ack)
	}
	if o.Update != nil {
		if s.Update == nil {
			s.Update = newSecondHist()
		}
		s.Update.Merge(o.Update)
	}
}

type resultJSON struct {
	*resultAlias
	Ack    *hdr.Snapshot `json:"ack_hist,omitempty"`
	Update *hdr.Snapshot `json:"update_hist,omitempty"`
}

type resultAlias Result

// MarshalJSON writes the fields with their histograms as hdr snapshots
// ("ack_hist", "update_hist"); UnmarshalJSON reads them back.
func (r *Result) MarshalJSON() ([]byte, error) {
	j := resultJSON{resultAlias: (*resultAlias)(r)}
	if r.Ack != nil {
		j.Ack = r.Ack.Export()
	}
	if r.Update != nil {
		j.Update = r.Update.Export()
	}
	return json.Marshal(j)
}

func (r *Result) UnmarshalJSON(b []byte) error {
	j := resultJSON{resultAlias: (*resultAlias)(r)}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	r.Ack, r.Update = newHist(), newHist()
	if j.Ack != nil {
		r.Ack = hdr.Import(j.Ack)
	}
	if j.Update != nil {
		r.Update = hdr.Import(j.Update)
	}
	if r.Errors == nil {
		r.Errors = map[string]uint64{}
	}
	return nil
}

type secondAlias Second

type secondJSON struct {
	*secondAlias
	Ack    *hdr.Snapshot `json:"ack_hist,omitempty"`
	Update *hdr.Snapshot `json:"update_hist,omitempty"`
}

func (s Second) MarshalJSON() ([]byte, error) {
	j := secondJSON{secondAlias: (*secondAlias)(&s)}
	if s.Ack != nil && s.Ack.TotalCount() > 0 {
		j.Ack = s.Ack.Export()
	}
	if s.Update != nil && s.Update.TotalCount() > 0 {
		j.Update = s.Update.Export()
	}
	return json.Marshal(j)
}

func (s *Second) UnmarshalJSON(b []byte) error {
	j := secondJSON{secondAlias: (*secondAlias)(s)}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	s.Ack, s.Update = nil, nil
	if j.Ack != nil {
		s.Ack = hdr.Import(j.Ack)
	}
	if j.Update != nil {
		s.Update = hdr.Import(j.Update)
	}
	return nil
}

// Failed reports whether the accounting found a broken contract: a lost,
// duplicated, out-of-order, reordered or unexpected message. The CLI
// exits 1 on it.
func (r *Result) Failed() bool {
	return r.Lost > 0 || r.Duplicated > 0 || r.OutOfOrder > 0 || r.Unexpected > 0 || r.Reordered > 0
}

// quantileMs returns h's quantile q (0–100) in milliseconds; 0 for an
// empty or nil histogram.
func quantileMs(h *hdr.Histogram, q float64) float64 {
	if h == nil || h.TotalCount() == 0 {
		return 0
	}
	return float64(h.ValueAtQuantile(q)) / 1000
}

func maxMs(h *hdr.Histogram) float64 {
	if h == nil || h.TotalCount() == 0 {
		return 0
	}
	return float64(h.Max()) / 1000
}

// histShard is one of the sharded current-second histograms the socket
// readers record into; the reporter folds them into a Second each second.
type histShard struct {
	mu          sync.Mutex
	ack, update *hdr.Histogram
	_           [40]byte
}
