package retention

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// everythingAhead makes every holder but the archiver far ahead: both
// proximity durables and the ranker acked everything, a checkpoint at the
// last message of each partition and a push checkpoint at OUT's last.
func (w world) everythingAhead(tb testing.TB, in, out map[string][]uint64) {
	tb.Helper()
	t := w.topo
	for k := 0; k < t.Partitions; k++ {
		seqs := in[t.InSubject(k)]
		w.consumer(tb, t.InStream(), ProximityDurable(t, k), t.InSubject(k), 1<<40)
		w.proxCkpt(tb, k, seqs[len(seqs)-1])
	}
	w.consumer(tb, t.OutStream(), RankerDurable(t), t.Prefix+".out.*", 1<<40)
	var last uint64
	for _, seqs := range out {
		last = max(last, seqs[len(seqs)-1])
	}
	w.pushCkpt(tb, last)
}

// TestArchiverHoldsBackEvenPastMaxAge: with every other holder ahead and
// every message older than MaxAge, IN is trimmed up to the archiver's key
// and not one message further; OUT, whose key is absent, not at all. When
// the keys advance, everything but each subject's last message goes.
func TestArchiverHoldsBackEvenPastMaxAge(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1000)
	tp := w.topo
	in := w.publish(t, 10, tp.InSubject(0), tp.InSubject(1))
	out := w.publish(t, 10, tp.OutSubject(0), tp.RankSubject())
	w.everythingAhead(t, in, out)
	w.archive(t, KeyIn, 7)
	r, reg := w.retainer(t, Options{MaxAge: time.Hour})

	rep := once(t, r)
	for k := 0; k < 2; k++ {
		subj := tp.InSubject(k)
		if got, want := w.present(t, tp.InStream(), subj), above(in[subj], 7); !slices.Equal(got, want) {
			t.Fatalf("%s holds %v after the pass, want %v (the archiver's key is 7)", subj, got, want)
		}
		s := subject(t, rep, subj)
		if s.SafeSeq != 7 || s.HeldBy != "archiver" || !s.Blocked || s.TargetSeq <= 7 {
			t.Fatalf("%s: safe %d held by %q blocked %v target %d; want 7, archiver, blocked, a target past 7", subj, s.SafeSeq, s.HeldBy, s.Blocked, s.TargetSeq)
		}
		wantPurged := float64(len(in[subj]) - len(above(in[subj], 7)))
		if v, _ := metric(t, reg, "treasure_retention_purged_messages_total", map[string]string{"subject": subj}); v != wantPurged || s.Purged != uint64(wantPurged) {
			t.Fatalf("%s: purged counter %v, report %d, want %v", subj, v, s.Purged, wantPurged)
		}
		if v, ok := metric(t, reg, "treasure_retention_held_by", map[string]string{"subject": subj, "holder": "archiver"}); !ok || v != 1 {
			t.Fatalf("%s: treasure_retention_held_by{holder=archiver} = %v, %v", subj, v, ok)
		}
	}
	for _, subj := range []string{tp.OutSubject(0), tp.RankSubject()} {
		if got := w.present(t, tp.OutStream(), subj); !slices.Equal(got, out[subj]) {
			t.Fatalf("%s holds %v, want all of %v: the archiver has no OUT key", subj, got, out[subj])
		}
		if s := subject(t, rep, subj); s.SafeSeq != 0 || s.HeldBy != "missing:archiver" {
			t.Fatalf("%s: safe %d held by %q, want 0 held by missing:archiver", subj, s.SafeSeq, s.HeldBy)
		}
	}
	// The report is JSON and says what is missing.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"held_by":"missing:archiver"`) || !strings.Contains(string(b), "archived nothing of this stream") {
		t.Fatalf("report JSON lacks the missing archiver: %s", b)
	}

	// The archiver catches up: all but each subject's last message goes.
	w.archive(t, KeyIn, 20)
	w.archive(t, KeyOut, 20)
	rep = once(t, r)
	for subj, seqs := range in {
		if got := w.present(t, tp.InStream(), subj); !slices.Equal(got, seqs[len(seqs)-1:]) {
			t.Fatalf("%s holds %v, want its last message only", subj, got)
		}
	}
	for subj, seqs := range out {
		if got := w.present(t, tp.OutStream(), subj); !slices.Equal(got, seqs[len(seqs)-1:]) {
			t.Fatalf("%s holds %v, want its last message only", subj, got)
		}
		if s := subject(t, rep, subj); s.HeldBy != "last-message" || s.Blocked {
			t.Fatalf("%s: held by %q (blocked %v), want last-message", subj, s.HeldBy, s.Blocked)
		}
	}
	// Nothing more to do: a third pass purges nothing.
	rep = once(t, r)
	for _, sr := range rep.Streams {
		for _, s := range sr.Subjects {
			if s.Purged != 0 {
				t.Fatalf("a pass with nothing to do purged %d of %s", s.Purged, s.Subject)
			}
		}
	}
}

// TestConsumerBehindHolds: a durable consumer behind holds its subject at
// its ack floor; so does an ephemeral consumer (a replay, a push
// instance) on OUT; the other subjects are trimmed.
func TestConsumerBehindHolds(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1000)
	tp := w.topo
	in := w.publish(t, 10, tp.InSubject(0), tp.InSubject(1))
	out := w.publish(t, 10, tp.OutSubject(0), tp.OutSubject(1))
	// Partition 0's worker is behind: it acked up to 9.
	w.consumer(t, tp.InStream(), ProximityDurable(tp, 0), tp.InSubject(0), 9)
	w.consumer(t, tp.InStream(), ProximityDurable(tp, 1), tp.InSubject(1), 1<<40)
	w.proxCkpt(t, 0, 19)
	w.proxCkpt(t, 1, 20)
	w.consumer(t, tp.OutStream(), RankerDurable(tp), tp.Prefix+".out.*", 1<<40)
	w.pushCkpt(t, 20)
	w.archive(t, KeyIn, 1000)
	w.archive(t, KeyOut, 1000)
	w.consumer(t, tp.OutStream(), "", "", 6) // an ephemeral reader of all of OUT, at 6

	r, _ := w.retainer(t, Options{MaxAge: time.Hour})
	rep := once(t, r)
	s0 := tp.InSubject(0)
	if got, want := w.present(t, tp.InStream(), s0), above(in[s0], 9); !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v (its consumer's ack floor is 9)", s0, got, want)
	}
	if s := subject(t, rep, s0); s.SafeSeq != 9 || s.HeldBy != "consumer:"+ProximityDurable(tp, 0) {
		t.Fatalf("%s: safe %d held by %q", s0, s.SafeSeq, s.HeldBy)
	}
	s1 := tp.InSubject(1)
	if got := w.present(t, tp.InStream(), s1); len(got) != 1 {
		t.Fatalf("%s holds %v, want its last message only", s1, got)
	}
	for subj, seqs := range out {
		if got, want := w.present(t, tp.OutStream(), subj), above(seqs, 6); !slices.Equal(got, want) {
			t.Fatalf("%s holds %v, want %v (an ephemeral consumer at 6)", subj, got, want)
		}
		if s := subject(t, rep, subj); s.HeldBy != "consumer:ephemeral" {
			t.Fatalf("%s: held by %q, want consumer:ephemeral", subj, s.HeldBy)
		}
	}
}

// TestMissingOrRefusedCheckpointHolds: a partition without a checkpoint,
// or whose only checkpoint is damaged, is not trimmed at all; a damaged
// oldest checkpoint is skipped for the next one; push likewise.
func TestMissingOrRefusedCheckpointHolds(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1000)
	tp := w.topo
	in := w.publish(t, 10, tp.InSubject(0), tp.InSubject(1))
	out := w.publish(t, 10, tp.OutSubject(0))
	for k := 0; k < 2; k++ {
		w.consumer(t, tp.InStream(), ProximityDurable(tp, k), tp.InSubject(k), 1<<40)
	}
	w.consumer(t, tp.OutStream(), RankerDurable(tp), "", 1<<40)
	w.archive(t, KeyIn, 1000)
	w.archive(t, KeyOut, 1000)
	r, _ := w.retainer(t, Options{MaxAge: time.Hour})

	// No checkpoint at all: nothing is trimmed.
	rep := once(t, r)
	for _, sr := range rep.Streams {
		for _, s := range sr.Subjects {
			if s.Purged != 0 || s.SafeSeq != 0 || !strings.HasPrefix(s.HeldBy, "missing:") || !strings.HasSuffix(s.HeldBy, "-checkpoint") {
				t.Fatalf("%s without checkpoints: purged %d, safe %d, held by %q", s.Subject, s.Purged, s.SafeSeq, s.HeldBy)
			}
		}
	}

	// Partition 0: a damaged checkpoint at 5 (sound object, flipped byte
	// in a section) and a sound one at 13: the damaged one is skipped.
	w.proxCkpt(t, 0, 5)
	data, err := w.store.Get(ctxFor(t), 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 1
	if err := w.store.Put(ctxFor(t), 0, 5, data); err != nil {
		t.Fatal(err)
	}
	w.proxCkpt(t, 0, 13)
	// Partition 1: its only checkpoint is cut short.
	w.proxCkpt(t, 1, 14)
	data, err = w.store.Get(ctxFor(t), 1, 14)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.store.Put(ctxFor(t), 1, 14, data[:len(data)-3]); err != nil {
		t.Fatal(err)
	}
	// Push: the oldest, at 3, names another sequence; the next, at 6, is sound.
	if err := w.store.PushPut(ctxFor(t), 3, pushCkptBytes(4)); err != nil {
		t.Fatal(err)
	}
	w.pushCkpt(t, 6)
	w.pushCkpt(t, 8)

	rep, err = Inspect(ctxFor(t), w.js, tp)
	if err != nil {
		t.Fatal(err)
	}
	holder := func(s SubjectReport, kind string) Holder {
		for _, h := range s.Holders {
			if h.Kind == kind {
				return h
			}
		}
		t.Fatalf("%s: no %s holder in %+v", s.Subject, kind, s.Holders)
		return Holder{}
	}
	if h := holder(subject(t, rep, tp.InSubject(0)), "proximity-checkpoint"); h.Seq != 13 || h.Missing || !strings.Contains(h.Detail, "1 older") {
		t.Fatalf("partition 0's checkpoint holder %+v, want seq 13 with one older refused", h)
	}
	if h := holder(subject(t, rep, tp.InSubject(1)), "proximity-checkpoint"); !h.Missing || !strings.Contains(h.Detail, "none of the 1") {
		t.Fatalf("partition 1's checkpoint holder %+v, want missing (its only checkpoint refused)", h)
	}
	if h := holder(subject(t, rep, tp.OutSubject(0)), "push-checkpoint"); h.Seq != 6 || h.Missing {
		t.Fatalf("push checkpoint holder %+v, want seq 6", h)
	}

	once(t, r)
	s0 := tp.InSubject(0)
	if got, want := w.present(t, tp.InStream(), s0), above(in[s0], 13); !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v", s0, got, want)
	}
	s1 := tp.InSubject(1)
	if got := w.present(t, tp.InStream(), s1); !slices.Equal(got, in[s1]) {
		t.Fatalf("%s holds %v, want all of %v (no usable checkpoint)", s1, got, in[s1])
	}
	o0 := tp.OutSubject(0)
	if got, want := w.present(t, tp.OutStream(), o0), above(out[o0], 6); !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v (the oldest sound push checkpoint is at 6)", o0, got, want)
	}
}

// TestAgeBound: messages older than MaxAge go, the younger stay; with the
// real clock and a day's MaxAge nothing goes.
func TestAgeBound(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1000)
	tp := w.topo
	old := w.publish(t, 6, tp.InSubject(0), tp.InSubject(1))
	s, err := w.js.Stream(ctxFor(t), tp.InStream())
	if err != nil {
		t.Fatal(err)
	}
	lastOld, err := s.GetMsg(ctxFor(t), old[tp.InSubject(1)][5])
	if err != nil {
		t.Fatal(err)
	}
	young := w.publish(t, 6, tp.InSubject(0), tp.InSubject(1))
	all := map[string][]uint64{}
	for subj := range old {
		all[subj] = append(slices.Clone(old[subj]), young[subj]...)
	}
	w.everythingAhead(t, all, w.publish(t, 1, tp.OutSubject(0)))
	w.archive(t, KeyIn, 1000)
	w.archive(t, KeyOut, 1000)

	r, _ := w.retainer(t, Options{MaxAge: 24 * time.Hour, Now: time.Now})
	once(t, r)
	for subj, seqs := range all {
		if got := w.present(t, tp.InStream(), subj); !slices.Equal(got, seqs) {
			t.Fatalf("%s: a day's max age removed %v", subj, got)
		}
	}
	// The clock at the last old message + MaxAge (+1 ns): the old go.
	r2, _ := w.retainer(t, Options{MaxAge: time.Hour, Now: func() time.Time { return lastOld.Time.Add(time.Hour + 1) }})
	rep := once(t, r2)
	for subj := range all {
		if got := w.present(t, tp.InStream(), subj); !slices.Equal(got, young[subj]) {
			t.Fatalf("%s holds %v, want the young %v", subj, got, young[subj])
		}
		if s := subject(t, rep, subj); s.Blocked || s.TargetSeq != old[subj][5] {
			t.Fatalf("%s: target %d blocked %v, want %d, not blocked", subj, s.TargetSeq, s.Blocked, old[subj][5])
		}
	}
}

// TestHighWater: a stream above its high water is trimmed down toward it
// (not emptied), whatever the age of its messages.
func TestHighWater(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 100)
	tp := w.topo
	in := w.publish(t, 45, tp.InSubject(0), tp.InSubject(1)) // 90 of 100
	w.everythingAhead(t, in, w.publish(t, 1, tp.OutSubject(0)))
	w.archive(t, KeyIn, 1000)
	w.archive(t, KeyOut, 1000)
	r, reg := w.retainer(t, Options{MaxAge: -1, HighWater: 0.8, Now: time.Now})
	rep := once(t, r)
	sr := rep.Streams[0]
	if sr.Stream != tp.InStream() || sr.Msgs > 80 || sr.Msgs < 70 {
		t.Fatalf("%s holds %d messages after the pass, want 70 to 80 (high water 80 of 100)", sr.Stream, sr.Msgs)
	}
	if sr.HeadroomMsgs != 100-int64(sr.Msgs) {
		t.Fatalf("headroom %d messages with %d of 100 stored", sr.HeadroomMsgs, sr.Msgs)
	}
	if v, _ := metric(t, reg, "treasure_retention_headroom_messages", map[string]string{"stream": tp.InStream()}); v != float64(sr.HeadroomMsgs) {
		t.Fatalf("headroom metric %v, report %d", v, sr.HeadroomMsgs)
	}
	// The oldest went: what is left of each subject is its newest part.
	for subj, seqs := range in {
		got := w.present(t, tp.InStream(), subj)
		if len(got) == 0 || !slices.Equal(got, seqs[len(seqs)-len(got):]) {
			t.Fatalf("%s holds %v: not the newest end of %v", subj, got, seqs)
		}
	}
	// Below the high water: nothing more.
	if rep := once(t, r); rep.Streams[0].Msgs != sr.Msgs {
		t.Fatalf("a pass below the high water went from %d to %d messages", sr.Msgs, rep.Streams[0].Msgs)
	}
}

// TestUnknownSubjectAndStreamsAbsent: an IN subject of no partition of
// the topology is never trimmed; absent streams are reported absent.
func TestUnknownSubjectAndStreamsAbsent(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1000)
	tp := w.topo
	in := w.publish(t, 3, tp.InSubject(0), tp.InSubject(7))
	w.everythingAhead(t, map[string][]uint64{tp.InSubject(0): in[tp.InSubject(0)], tp.InSubject(1): in[tp.InSubject(0)]}, w.publish(t, 1, tp.OutSubject(0)))
	w.archive(t, KeyIn, 1000)
	w.archive(t, KeyOut, 1000)
	r, _ := w.retainer(t, Options{MaxAge: time.Hour})
	rep := once(t, r)
	if got := w.present(t, tp.InStream(), tp.InSubject(7)); !slices.Equal(got, in[tp.InSubject(7)]) {
		t.Fatalf("the unknown subject holds %v, want all of %v", got, in[tp.InSubject(7)])
	}
	if s := subject(t, rep, tp.InSubject(7)); s.HeldBy != "missing:subject" {
		t.Fatalf("unknown subject held by %q", s.HeldBy)
	}
	if got := w.present(t, tp.InStream(), tp.InSubject(0)); len(got) != 1 {
		t.Fatalf("%s holds %v, want its last message", tp.InSubject(0), got)
	}
	other := tp
	other.Prefix += "x"
	rep, err := Inspect(ctxFor(t), w.js, other)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Streams) != 2 || rep.Streams[0].Present || rep.Streams[1].Present {
		t.Fatalf("streams of an unused prefix: %+v", rep.Streams)
	}
}

func TestSubjectMatches(t *testing.T) {
	for _, c := range []struct {
		f, s string
		want bool
	}{
		{"p.out.*", "p.out.rank", true}, {"p.out.*", "p.out.1", true}, {"p.out.*", "p.out", false},
		{"p.out.*", "p.out.1.x", false}, {"p.>", "p.out.1", true}, {"p.>", "p", false}, {"p.in.1", "p.in.1", true},
		{"p.in.1", "p.in.10", false}, {"*.in.*", "p.in.3", true}, {">", "p.in.3", true},
	} {
		if got := subjectMatches(c.f, c.s); got != c.want {
			t.Errorf("subjectMatches(%q, %q) = %v", c.f, c.s, got)
		}
	}
	if !consumerReads(jetstream.ConsumerConfig{}, "p.in.1") || consumerReads(jetstream.ConsumerConfig{FilterSubjects: []string{"p.in.0", "p.in.2"}}, "p.in.1") {
		t.Error("consumerReads: an unfiltered consumer reads everything, a multi-filter one its filters only")
	}
}

func TestSizeCutoff(t *testing.T) {
	for _, c := range []struct {
		sr   StreamReport
		hw   float64
		want uint64
	}{
		{StreamReport{Msgs: 90, FirstSeq: 1, LastSeq: 90, MaxMsgs: 100, MaxBytes: -1}, 0.8, 11},
		{StreamReport{Msgs: 80, FirstSeq: 1, LastSeq: 80, MaxMsgs: 100, MaxBytes: -1}, 0.8, 0},
		// Half the sequences already purged from the middle: twice the span.
		{StreamReport{Msgs: 90, FirstSeq: 1, LastSeq: 180, MaxMsgs: 100, MaxBytes: -1}, 0.8, 21},
		// Bytes: 100 messages of 10 bytes, cap 1000 bytes: 20 to go.
		{StreamReport{Msgs: 100, Bytes: 1000, FirstSeq: 51, LastSeq: 150, MaxMsgs: -1, MaxBytes: 1000}, 0.8, 71},
		{StreamReport{Msgs: 0, FirstSeq: 0, LastSeq: 0, MaxMsgs: 100}, 0.8, 0},
	} {
		if got := sizeCutoff(&c.sr, c.hw); got != c.want {
			t.Errorf("sizeCutoff(%+v, %v) = %d, want %d", c.sr, c.hw, got, c.want)
		}
	}
}

func TestOptions(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Fatal("options without a topology accepted")
	}
}
