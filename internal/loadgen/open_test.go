package loadgen

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"treasure/internal/graph"
)

// cycleGraph is a ring of n nodes: every walk on it is easy to check.
func cycleGraph(t *testing.T, n int) *graph.Graph {
	t.Helper()
	edges := make([]graph.Edge, n)
	for i := range n {
		edges[i] = graph.Edge{U: uint32(i), V: uint32((i + 1) % n), Len: 1}
	}
	g, err := graph.FromEdges(n, edges, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestScheduleSteadySendsAtTheRateFromASeededPhase(t *testing.T) {
	s := Schedule{Rate: 4, Duration: 2 * time.Second}
	interval := int64(250 * time.Millisecond)
	phases := map[int64]bool{}
	for i := range 50 {
		var times []int64
		prev := int64(0)
		for k := 0; ; k++ {
			at := s.At(9, i, k, prev)
			if at == noMore {
				break
			}
			times = append(times, at)
			prev = at
		}
		if len(times) != 8 {
			t.Fatalf("player %d: %d moves in 2 s at 4/s, want 8: %v", i, len(times), times)
		}
		if times[0] < 0 || times[0] >= interval {
			t.Fatalf("player %d: phase %d outside [0, %d)", i, times[0], interval)
		}
		for k := 1; k < len(times); k++ {
			if d := times[k] - times[k-1]; d < interval-1 || d > interval+1 {
				t.Fatalf("player %d: moves %d and %d are %d ns apart, want %d", i, k-1, k, d, interval)
			}
		}
		phases[times[0]] = true
		if again := s.At(9, i, 0, 0); again != times[0] {
			t.Fatalf("player %d: the schedule is not reproducible: %d then %d", i, times[0], again)
		}
	}
	if len(phases) < 45 {
		t.Fatalf("50 players share %d phases: the phases are not spread", len(phases))
	}
	if got := s.offered(9, 0, 50, 0); got != 200 {
		t.Fatalf("offered in second 0 = %d, want 200", got)
	}
}

func TestScheduleDropSendsOneMovePerWaveInsideItsWindow(t *testing.T) {
	s := Schedule{Window: time.Second, Waves: 3}
	if s.End() != 3*time.Second {
		t.Fatalf("end %v", s.End())
	}
	perSecond := make([]uint64, 4)
	for i := range 300 {
		prev := int64(0)
		for k := 0; k < 3; k++ {
			at := s.At(5, i, k, prev)
			if at < int64(k)*int64(time.Second) || at >= int64(k+1)*int64(time.Second) {
				t.Fatalf("player %d wave %d at %d: outside its window", i, k, at)
			}
			perSecond[at/int64(time.Second)]++
			prev = at
		}
		if s.At(5, i, 3, prev) != noMore {
			t.Fatalf("player %d has a fourth move in 3 waves", i)
		}
	}
	for sec := range 4 {
		if got := s.offered(5, 0, 300, sec); got != perSecond[sec] {
			t.Fatalf("offered(second %d) = %d, the schedule has %d", sec, got, perSecond[sec])
		}
	}
	// A player's schedule depends on its global index only, not on how
	// players are split over processes.
	if s.At(5, 120, 1, 0) != (Schedule{Window: time.Second, Waves: 3}).At(5, 120, 1, 0) {
		t.Fatal("not reproducible")
	}
}

func TestScheduleRampFollowsRateAt(t *testing.T) {
	s := Schedule{Duration: 4 * time.Second, RateAt: func(el time.Duration) float64 { return float64(1 + int(el/time.Second)) }}
	prev := s.At(3, 0, 0, 0)
	for k := 1; ; k++ {
		at := s.At(3, 0, k, prev)
		if at == noMore {
			break
		}
		want := float64(time.Second) / float64(1+int(prev/int64(time.Second)))
		if d := float64(at - prev); math.Abs(d-want) > 1 {
			t.Fatalf("move %d at %d, %v after the previous, want %v", k, at, d, want)
		}
		prev = at
	}
	if prev < int64(3*time.Second) {
		t.Fatalf("the ramp stopped at %d, before its last second", prev)
	}
}

// sentMove is a move as a frame carries it.
type sentMove struct {
	Type string   `json:"type"`
	Seq  uint64   `json:"seq"`
	Path []uint64 `json:"path"`
}

func parseFrame(t *testing.T, frame []byte) []sentMove {
	t.Helper()
	var out []sentMove
	for _, line := range strings.Split(string(frame), "\n") {
		var m sentMove
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.Type != "move" {
			t.Fatalf("bad move line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// testEngine is an engine of players on g with schedule s and no sockets.
func testEngine(t *testing.T, g *graph.Graph, players int, s Schedule) *engine {
	t.Helper()
	e := newEngine(OpenOptions{Graph: g, Players: players, Seed: 7, Schedule: s, Drain: time.Second})
	e.t0 = time.Now()
	return e
}

func line(s string) (msg, bool) { return parseMsg([]byte(s)) }

// TestFillSendsEveryDueMoveContinuingThePreviousPath: moves due while
// earlier ones are unanswered all go, seq+1 each, each path starting where
// the previous one sent ended, each stamped with its scheduled time.
func TestFillSendsEveryDueMoveContinuingThePreviousPath(t *testing.T) {
	g := cycleGraph(t, 40)
	s := Schedule{Rate: 10, Duration: 2 * time.Second}
	e := testEngine(t, g, 1, s)
	p := e.players[0]
	var moves []sentMove
	var scheds []int64
	for _, ms := range []int64{0, 350, 700, 1000} {
		now := ms * int64(time.Millisecond)
		frame, n, _ := p.fill(e, now, nil)
		if n == 0 {
			continue
		}
		got := parseFrame(t, frame)
		if len(got) != n {
			t.Fatalf("fill said %d moves, the frame holds %d", n, len(got))
		}
		for _, m := range got {
			scheds = append(scheds, p.slot(m.Seq).sched)
		}
		moves = append(moves, got...)
	}
	if len(moves) < 10 {
		t.Fatalf("%d moves sent in a second at 10/s with none answered", len(moves))
	}
	if len(moves[0].Path) != 1 || moves[0].Seq != 1 {
		t.Fatalf("the first move must be a 1-node spawn with seq 1: %+v", moves[0])
	}
	prev := int64(0)
	for k, m := range moves {
		if m.Seq != uint64(k+1) {
			t.Fatalf("move %d has seq %d", k, m.Seq)
		}
		if want := s.At(7, 0, k, prev); scheds[k] != want {
			t.Fatalf("move %d scheduled at %d, the schedule says %d", k, scheds[k], want)
		}
		prev = scheds[k]
		if k > 0 {
			last := moves[k-1].Path[len(moves[k-1].Path)-1]
			if m.Path[0] != last {
				t.Fatalf("move %d starts at %d, the previous one sent ended at %d", k, m.Path[0], last)
			}
			if len(m.Path) < minPath || len(m.Path) > maxPath {
				t.Fatalf("move %d has %d nodes", k, len(m.Path))
			}
		}
		for i := 1; i < len(m.Path); i++ {
			a, b := m.Path[i-1], m.Path[i]
			if d := (a + 40 - b) % 40; d != 1 && d != 39 {
				t.Fatalf("move %d: %d → %d is not an edge of the ring", k, a, b)
			}
		}
	}
	if got := e.sent.Load(); got != uint64(len(moves)) || p.awaiting != len(moves) || e.inFlight.Load() != int64(len(moves)) {
		t.Fatalf("sent %d, awaiting %d, in flight %d, want %d each", got, p.awaiting, e.inFlight.Load(), len(moves))
	}
}

// settled runs the end-of-run accounting of e.
func settled(e *engine) *Result {
	r := newResult(len(e.players))
	r.LostNoUpdate = e.lostNoUpdate.Load()
	r.Answered = e.answered.Load()
	for _, p := range e.players {
		p.settle(e, r)
	}
	r.Lost = r.LostUnanswered + r.LostNoUpdate
	return r
}

func TestAccountingMatchesAnswersAndUpdatesBySeq(t *testing.T) {
	g := cycleGraph(t, 40)
	e := testEngine(t, g, 1, Schedule{Rate: 10, Duration: time.Second})
	p := e.players[0]
	if _, n, _ := p.fill(e, int64(time.Second), nil); n != 10 {
		t.Fatalf("sent %d moves, want 10", n)
	}
	ack := func(seq string) {
		m, ok := line(`{"type":"ack","seq":` + seq + `}`)
		p.answer(e, m, ok, int64(time.Second))
	}
	upd := func(id, seq string) {
		m, ok := line(`{"type":"proximity","id":` + id + `,"seq":` + seq + `,"node":1,"treasure":null}`)
		p.update(e, m, ok, int64(time.Second))
	}
	ack("1")
	upd("1", "1") // the usual: ack, then update
	upd("2", "2") // update before its ack
	ack("2")
	ack("3")
	ack("3") // a second answer
	upd("3", "3")
	upd("4", "3") // a second update
	ack("4")
	ack("5")
	upd("5", "5")
	upd("6", "4")  // reordered, still answers move 4
	upd("8", "99") // a seq never sent; id 7 skipped
	ack("6")       // acked, update never comes
	// 7..10: never answered
	r := settled(e)
	want := map[string]uint64{
		"acked": 6, "answered": 5, "duplicated": 2, "unexpected": 1, "reordered": 1, "out_of_order": 1,
		"lost_no_update": 1, "lost_unanswered": 4,
	}
	got := map[string]uint64{
		"acked": e.acked.Load(), "answered": r.Answered, "duplicated": e.duplicated.Load(), "unexpected": e.unexpected.Load(),
		"reordered": e.reordered.Load(), "out_of_order": e.outOfOrder.Load(), "lost_no_update": r.LostNoUpdate, "lost_unanswered": r.LostUnanswered,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if e.outstanding.Load() != 1 || e.inFlight.Load() != 5 {
		t.Errorf("outstanding %d (want 1: move 6), in flight %d (want 5: moves 6-10)", e.outstanding.Load(), e.inFlight.Load())
	}
	if n := e.recorded(); n != 6+5 {
		t.Errorf("%d latencies recorded, want 6 acks + 5 updates", n)
	}
}

// recorded counts the latencies in the current-second histograms.
func (e *engine) recorded() int64 {
	var n int64
	for i := range e.hs {
		n += e.hs[i].ack.TotalCount() + e.hs[i].update.TotalCount()
	}
	return n
}

// TestRetryableErrorsResendTheChain: moves 2–4 answered unavailable while
// in flight are sent again, same seqs and paths, after retry_after_ms,
// and nothing new leaves before.
func TestRetryableErrorsResendTheChain(t *testing.T) {
	g := cycleGraph(t, 40)
	e := testEngine(t, g, 1, Schedule{Rate: 10, Duration: time.Second})
	p := e.players[0]
	frame, _, _ := p.fill(e, int64(350*time.Millisecond), nil) // moves 1-4
	first := parseFrame(t, frame)
	if len(first) != 4 {
		t.Fatalf("%d moves", len(first))
	}
	now := int64(400 * time.Millisecond)
	m, ok := line(`{"type":"ack","seq":1}`)
	p.answer(e, m, ok, now)
	for _, seq := range []string{"2", "3", "4"} {
		m, ok := line(`{"type":"error","seq":` + seq + `,"code":"unavailable","message":"x","retry_after_ms":50}`)
		p.answer(e, m, ok, now)
	}
	if !p.resend || p.resendAt != now+int64(50*time.Millisecond) {
		t.Fatalf("resend %v at %d", p.resend, p.resendAt)
	}
	if _, n, next := p.fill(e, now+int64(10*time.Millisecond), nil); n != 0 || next != p.resendAt {
		t.Fatalf("sent %d moves before retry_after; next %d", n, next)
	}
	frame, n, _ := p.fill(e, now+int64(60*time.Millisecond), nil)
	again := parseFrame(t, frame)
	if n != 4 || len(again) != 4 { // 2, 3, 4 again and the new move 5 (due at 400 ms)
		t.Fatalf("resent %d: %s", n, frame)
	}
	for k := range 3 {
		if again[k].Seq != first[k+1].Seq || !equalPaths(again[k].Path, first[k+1].Path) {
			t.Fatalf("resend %d differs: %+v vs %+v", k, again[k], first[k+1])
		}
	}
	if again[3].Seq != 5 || again[3].Path[0] != first[3].Path[len(first[3].Path)-1] {
		t.Fatalf("the next move must be seq 5 from the end of move 4: %+v", again[3])
	}
	if e.retries.Load() != 3 || e.sent.Load() != 5 || e.errs[errIndex([]byte("unavailable"))].Load() != 3 {
		t.Fatalf("retries %d sent %d", e.retries.Load(), e.sent.Load())
	}
}

// TestRetryableErrorWithoutRetryAfterIsCounted: SPEC has unavailable
// and rate_limited carry retry_after_ms; an answer without it counts as
// no_retry_after besides its code (the move is still sent again).
func TestRetryableErrorWithoutRetryAfterIsCounted(t *testing.T) {
	g := cycleGraph(t, 40)
	e := testEngine(t, g, 1, Schedule{Rate: 10, Duration: time.Second})
	p := e.players[0]
	if _, n, _ := p.fill(e, int64(150*time.Millisecond), nil); n != 2 {
		t.Fatalf("%d moves sent, want 2", n)
	}
	now := int64(200 * time.Millisecond)
	for _, l := range []string{
		`{"type":"error","seq":1,"code":"unavailable","message":"x","retry_after_ms":50}`,
		`{"type":"error","seq":2,"code":"rate_limited","message":"x"}`,
	} {
		m, ok := line(l)
		p.answer(e, m, ok, now)
	}
	count := func(name string) uint64 { return e.errs[errIndex([]byte(name))].Load() }
	if count("no_retry_after") != 1 || count("unavailable") != 1 || count("rate_limited") != 1 || count("other") != 0 {
		t.Fatalf("no_retry_after %d, unavailable %d, rate_limited %d, other %d; want 1, 1, 1, 0",
			count("no_retry_after"), count("unavailable"), count("rate_limited"), count("other"))
	}
	if !p.resend {
		t.Fatal("the moves are not to be sent again")
	}
}

// TestRejectedMovesResyncFromTheLastAck: move 2 rejected for good and
// move 3 (built on it) rejected as discontinuous: both are dropped and the
// player continues from the end of move 1 with seq 4.
func TestRejectedMovesResyncFromTheLastAck(t *testing.T) {
	g := cycleGraph(t, 40)
	e := testEngine(t, g, 1, Schedule{Rate: 10, Duration: time.Second})
	p := e.players[0]
	frame, _, _ := p.fill(e, int64(250*time.Millisecond), nil) // moves 1-3
	first := parseFrame(t, frame)
	now := int64(300 * time.Millisecond)
	for _, l := range []string{
		`{"type":"ack","seq":1}`,
		`{"type":"error","seq":2,"code":"not_adjacent","message":"x"}`,
		`{"type":"error","seq":3,"code":"discontinuous","message":"path starts at node 9 but the player is at node 5"}`,
	} {
		m, ok := line(l)
		p.answer(e, m, ok, now)
	}
	if p.blocked || p.resend {
		t.Fatalf("blocked %v resend %v after resync", p.blocked, p.resend)
	}
	frame, n, _ := p.fill(e, int64(500*time.Millisecond), nil) // the moves due meanwhile
	next := parseFrame(t, frame)
	if n < 2 || next[0].Seq != 4 || next[1].Seq != 5 || next[1].Path[0] != next[0].Path[len(next[0].Path)-1] {
		t.Fatalf("after the resync: %s", frame)
	}
	// The discontinuous message names node 5: the server's word wins.
	if next[0].Path[0] != 5 {
		t.Fatalf("move 4 starts at %d, want node 5 (named by the error; move 1 ended at %d)", next[0].Path[0], first[0].Path[0])
	}
	if e.rejected.Load() != 2 || e.inFlight.Load() != 1+int64(n) {
		t.Fatalf("rejected %d, in flight %d", e.rejected.Load(), e.inFlight.Load())
	}
}

func equalPaths(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestResultRoundTripsAndMerges(t *testing.T) {
	a, b := newResult(2), newResult(3)
	a.Sent, b.Sent = 10, 5
	a.Errors["unavailable"] = 1
	b.Errors["unavailable"] = 2
	a.Ack.RecordValue(1000)
	b.Ack.RecordValue(3000)
	b.Seconds = []Second{{Index: 0, Sent: 5, Update: newSecondHist()}, {Index: 1, Sent: 1}}
	b.Seconds[0].Update.RecordValue(2000)
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	a.Merge(&back)
	if a.Players != 5 || a.Sent != 15 || a.Errors["unavailable"] != 3 || a.Ack.TotalCount() != 2 || a.Ack.Max() < 2990 {
		t.Fatalf("merged: %+v", a)
	}
	if len(a.Seconds) != 2 || a.Seconds[0].Sent != 5 || a.Seconds[0].Update.TotalCount() != 1 {
		t.Fatalf("seconds: %+v", a.Seconds)
	}
	sum := NewSummary("drop", a)
	sum.Extra["window_s"] = 1.0
	sum.Extra["sent"] = 99 // never replaces a field
	out, _ := json.Marshal(sum)
	var m map[string]any
	json.Unmarshal(out, &m)
	if m["window_s"] != 1.0 || m["sent"] != 15.0 || m["players"] != 5.0 {
		t.Fatalf("summary JSON: %s", out)
	}
}

// BenchmarkOpenMove is the load generator's own work per move on its hot
// path, sockets aside: build and encode a due move, read its ack and its
// proximity update, record both latencies. It must not allocate.
func BenchmarkOpenMove(b *testing.B) {
	edges := make([]graph.Edge, 1000)
	for i := range edges {
		edges[i] = graph.Edge{U: uint32(i), V: uint32((i + 1) % 1000), Len: 1}
	}
	g, err := graph.FromEdges(1000, edges, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	e := newEngine(OpenOptions{Graph: g, Players: 1, Seed: 1, Schedule: Schedule{Rate: MaxRate, Duration: 1000 * time.Hour}})
	p := e.players[0]
	frame := make([]byte, 0, 4096)
	ack, upd := make([]byte, 0, 64), make([]byte, 0, 128)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now := int64(i+1) * int64(time.Millisecond)
		var n int
		frame, n, _ = p.fill(e, now, frame[:0])
		if n != 1 {
			b.Fatalf("fill sent %d moves", n)
		}
		seq := uint64(i + 1) // and the update's id
		ack = append(strconv.AppendUint(append(ack[:0], `{"type":"ack","seq":`...), seq, 10), '}')
		eachLine(ack, func(line []byte) {
			m, ok := parseMsg(line)
			p.answer(e, m, ok, now+1000)
		})
		upd = strconv.AppendUint(append(upd[:0], `{"type":"proximity","id":`...), seq, 10)
		upd = strconv.AppendUint(append(upd, `,"seq":`...), seq, 10)
		upd = append(upd, `,"node":7,"treasure":null}`...)
		eachLine(upd, func(line []byte) {
			m, ok := parseMsg(line)
			p.update(e, m, ok, now+2000)
		})
	}
	b.StopTimer()
	if e.answered.Load() != uint64(b.N) || e.duplicated.Load()+e.unexpected.Load()+e.outOfOrder.Load() != 0 {
		b.Fatalf("answered %d of %d; dup %d unexpected %d ooo %d", e.answered.Load(), b.N, e.duplicated.Load(), e.unexpected.Load(), e.outOfOrder.Load())
	}
}

// TestFillBatchesAndWaitsForAFreeSlot: 40 moves due at once leave 16 per
// frame; once openRing moves are unsettled the player waits, and the
// settlement of its oldest move wakes it for the next one, still late and
// stamped with its own scheduled time.
func TestFillBatchesAndWaitsForAFreeSlot(t *testing.T) {
	g := cycleGraph(t, 40)
	s := Schedule{Rate: 100, Duration: time.Second}
	e := testEngine(t, g, 1, s)
	p := e.players[0]
	now := int64(400 * time.Millisecond) // 40 moves due
	var sent []int
	for range 3 {
		_, n, next := p.fill(e, now, nil)
		sent = append(sent, n)
		if n == maxBatch && next != now {
			t.Fatalf("a full frame must ask to be called again at once, got %d", next)
		}
	}
	if sent[0] != maxBatch || sent[1] != maxBatch || sent[2] != openRing-2*maxBatch || !p.full {
		t.Fatalf("frames of %v moves, full %v; want 16, 16, then none: %d slots", sent, p.full, openRing)
	}
	if _, n, next := p.fill(e, now, nil); n != 0 || next != noMore {
		t.Fatalf("a full player sent %d moves, next %d", n, next)
	}
	m, ok := line(`{"type":"ack","seq":1}`)
	p.answer(e, m, ok, now)
	m, ok = line(`{"type":"proximity","id":1,"seq":1,"node":1,"treasure":null}`)
	p.update(e, m, ok, now)
	if p.full || len(p.sh.woken) != 1 {
		t.Fatalf("settling move 1 must wake the player: full %v, woken %v", p.full, p.sh.woken)
	}
	frame, n, _ := p.fill(e, now, nil)
	if n != 1 || parseFrame(t, frame)[0].Seq != openRing+1 {
		t.Fatalf("after a slot freed: %s", frame)
	}
	if got, want := p.slot(openRing+1).sched, s.At(7, 0, openRing, p.slot(openRing).sched); got != want {
		t.Fatalf("move %d stamped %d, scheduled at %d", openRing+1, got, want)
	}
}
