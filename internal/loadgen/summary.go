package loadgen

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Summary is the one-object summary of an open-loop run (the CLI's
// --json last line). Extra holds scenario-specific and later fields
// (drop's window_s, ramp's held_rate, server CPU, …): MarshalJSON merges
// them into the object (an Extra key never replaces a field).
type Summary struct {
	Scenario   string            `json:"scenario"`
	Players    int               `json:"players"`
	Sent       uint64            `json:"sent"`
	Acked      uint64            `json:"acked"`
	Answered   uint64            `json:"answered"`
	Rejected   uint64            `json:"rejected"`
	Retries    uint64            `json:"retries"`
	Unsent     uint64            `json:"unsent"`
	Lost       uint64            `json:"lost"`
	Duplicated uint64            `json:"duplicated"`
	OutOfOrder uint64            `json:"out_of_order"`
	Unexpected uint64            `json:"unexpected"`
	Reordered  uint64            `json:"reordered"`
	Errors     map[string]uint64 `json:"errors"`
	// MovesPerS is moves acked per second from t0 to the end of the run
	// (the schedule, possibly stopped early, plus the drain).
	MovesPerS       float64 `json:"moves_per_s"`
	AckP50Ms        float64 `json:"ack_p50_ms"`
	AckP99Ms        float64 `json:"ack_p99_ms"`
	AckP999Ms       float64 `json:"ack_p999_ms"`
	AckMaxMs        float64 `json:"ack_max_ms"`
	UpdateP50Ms     float64 `json:"update_p50_ms"`
	UpdateP99Ms     float64 `json:"update_p99_ms"`
	UpdateP999Ms    float64 `json:"update_p999_ms"`
	UpdateMaxMs     float64 `json:"update_max_ms"`
	DrainS          float64 `json:"drain_s"`
	OutstandingPeak int64   `json:"outstanding_peak"`
	Failed          bool    `json:"failed"`

	Extra map[string]any `json:"-"`
}

// NewSummary summarises r for scenario.
func NewSummary(scenario string, r *Result) Summary {
	s := Summary{
		Scenario: scenario, Players: r.Players, Sent: r.Sent, Acked: r.Acked, Answered: r.Answered,
		Rejected: r.Rejected, Retries: r.Retries, Unsent: r.Unsent, Lost: r.Lost, Duplicated: r.Duplicated,
		OutOfOrder: r.OutOfOrder, Unexpected: r.Unexpected, Reordered: r.Reordered, Errors: r.Errors,
		AckP50Ms: quantileMs(r.Ack, 50), AckP99Ms: quantileMs(r.Ack, 99), AckP999Ms: quantileMs(r.Ack, 99.9), AckMaxMs: maxMs(r.Ack),
		UpdateP50Ms: quantileMs(r.Update, 50), UpdateP99Ms: quantileMs(r.Update, 99), UpdateP999Ms: quantileMs(r.Update, 99.9), UpdateMaxMs: maxMs(r.Update),
		DrainS: r.DrainS, OutstandingPeak: r.OutstandingPeak, Failed: r.Failed(),
		Extra: map[string]any{},
	}
	if s.Errors == nil {
		s.Errors = map[string]uint64{}
	}
	if r.ElapsedS > 0 {
		s.MovesPerS = float64(r.Acked) / r.ElapsedS
	}
	return s
}

// MarshalJSON writes the fields and Extra's entries as one object.
func (s Summary) MarshalJSON() ([]byte, error) {
	type plain Summary
	b, err := json.Marshal(plain(s))
	if err != nil || len(s.Extra) == 0 {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range s.Extra {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// Text is the human summary: a few lines, each ending in a newline.
func (s Summary) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "loadgen %s summary: %d players\n", s.Scenario, s.Players)
	fmt.Fprintf(&b, "  moves     sent %d, acked %d, answered %d (%.0f acked/s), rejected %d, retries %d, unsent %d\n",
		s.Sent, s.Acked, s.Answered, s.MovesPerS, s.Rejected, s.Retries, s.Unsent)
	fmt.Fprintf(&b, "  ack       p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms (from the scheduled send time)\n", s.AckP50Ms, s.AckP99Ms, s.AckP999Ms, s.AckMaxMs)
	fmt.Fprintf(&b, "  update    p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms (move → proximity update)\n", s.UpdateP50Ms, s.UpdateP99Ms, s.UpdateP999Ms, s.UpdateMaxMs)
	fmt.Fprintf(&b, "  drain     %.2f s after the schedule; client backlog peak %d\n", s.DrainS, s.OutstandingPeak)
	fmt.Fprintf(&b, "  errors    %s\n", fmtErrors(s.Errors))
	verdict := "ok"
	if s.Failed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "  contract  lost %d, duplicated %d, out of order %d, unexpected %d: %s\n", s.Lost, s.Duplicated, s.OutOfOrder, s.Unexpected, verdict)
	if s.Reordered > 0 {
		fmt.Fprintf(&b, "  order     %d proximity updates came after a later move's (SPEC: per player in move order)\n", s.Reordered)
	}
	if len(s.Extra) > 0 {
		keys := make([]string, 0, len(s.Extra))
		for k, v := range s.Extra {
			switch v.(type) {
			case []map[string]any, map[string]any, []any:
				continue // structured: in the JSON only
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + " " + fmtAny(s.Extra[k])
		}
		fmt.Fprintf(&b, "  scenario  %s\n", strings.Join(parts, ", "))
	}
	return b.String()
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// Line formats one second for people.
func (s Second) Line(backlog string) string {
	return fmt.Sprintf("t=%3ds offered %6d sent %6d acked %6d answered %6d /s | ack p50 %s p99 %s | update p50 %s p99 %s | backlog %s client %d | errors %d",
		s.Index+1, s.Offered, s.Sent, s.Acked, s.Answered,
		fmtMs(s.Ack, 50), fmtMs(s.Ack, 99), fmtMs(s.Update, 50), fmtMs(s.Update, 99), backlog, s.Outstanding, s.Errors)
}

func fmtMs(h *hdr.Histogram, q float64) string {
	if h == nil || h.TotalCount() == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(h.ValueAtQuantile(q))/1000, 'f', 1, 64) + "ms"
}
