package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"treasure/internal/archive"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/internal/retention"
	"treasure/internal/testenv"
)

// outCapture records every message published on OUT's subjects (a core
// NATS subscription, which holds nothing back in JetStream): what the live
// services published, by Nats-Msg-Id.
//
// An id can come with several payloads, of which OUT stores only the
// first: a publish JetStream drops as a duplicate reaches a core
// subscription all the same, and an output computed again is not byte for
// byte the first one. A proximity worker stopped after publishing an
// input's outputs and before that input's ack (natsjs.Consumer acks
// nothing once its context is cancelled) applies the input again after its
// restart and publishes the same ids with other hop timestamps
// (Batch.input_consumed_unix_nanos); so does a worker that rebuilds after
// a failed batch. Counting distinct payloads, as this helper once did,
// counts such an output twice (TestLongRunTrimmedReplayEqualsLive failed
// once with 1471 messages read back and 1472 "published"). And what the
// services publish after OUT was read back (the ranker's leaderboard
// snapshot, up to its SnapshotEvery after the last claim, so after the
// pipeline is otherwise quiet) is published live but not read: match
// takes it from what OUT stored after the read (matchRead).
type outCapture struct {
	nc    *nats.Conn
	mu    sync.Mutex
	ids   map[string]*liveOut
	order []*liveOut // by first arrival
	sub   *nats.Subscription
	// barrier: the subjects of settle's markers (under the captured ones,
	// but in no stream); marks: those seen.
	barrier string
	marks   map[string]bool
}

// liveOut is one Nats-Msg-Id published on OUT.
type liveOut struct {
	id      string
	subject string
	n       int       // arrival index of its first copy
	at      time.Time // when its first copy arrived
	// payloads: the distinct payloads published under the id, in
	// arrival order; copies: every copy, the same ones included.
	payloads [][]byte
	copies   int
}

func captureOut(t *testing.T, nc *nats.Conn, topo natsjs.Topology) *outCapture {
	t.Helper()
	// OUT stores topo.Prefix+".out.*": the markers, a token longer, are
	// captured but never stored.
	c := &outCapture{nc: nc, ids: map[string]*liveOut{}, barrier: topo.Prefix + ".out.barrier.", marks: map[string]bool{}}
	sub, err := nc.Subscribe(topo.Prefix+".out.>", c.add)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *outCapture) add(m *nats.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.HasPrefix(m.Subject, c.barrier) {
		c.marks[m.Subject] = true
		return
	}
	id := m.Header.Get(jetstream.MsgIDHeader)
	if id == "" {
		// Without an id nothing tells copies apart: the payload is the
		// message.
		id = "payload:" + m.Subject + "\x00" + string(m.Data)
	}
	l := c.ids[id]
	if l == nil {
		l = &liveOut{id: id, subject: m.Subject, n: len(c.order), at: time.Now()}
		c.ids[id] = l
		c.order = append(c.order, l)
	}
	l.copies++
	for _, p := range l.payloads {
		if bytes.Equal(p, m.Data) {
			return
		}
	}
	l.payloads = append(l.payloads, bytes.Clone(m.Data))
}

// settle returns once the capture has taken in every message the server
// routed to it before now: in particular every message OUT stored before
// now (the server hands a publish to the subscribers and to the stream in
// one step, and writes to a connection in order), so that a message read
// back from OUT is never taken for one not published live because its copy
// was still on its way.
func (c *outCapture) settle(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	subject := c.barrier + strconv.Itoa(len(c.marks))
	c.mu.Unlock()
	if err := c.nc.Publish(subject, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.marks[subject] {
			return "the capture has not taken in its marker " + subject
		}
		return ""
	})
}

// liveMatch is what outCapture.match found.
type liveMatch struct {
	// ids: the Nats-Msg-Ids published live; resent: those published more
	// than once; recomputed: those published with more than one payload
	// (OUT holds one).
	ids, resent, recomputed int
	// seqOf: the stream sequence of each id found in out (or in the tail).
	seqOf map[string]uint64
	// late: the ids published live that OUT stored after what was read
	// back (found in the tail): published after the read (the ranker's
	// leaderboard snapshot follows its last claims by up to
	// SnapshotEvery).
	late []string
	// problems: an out message published live under no id, or under an id
	// another out message has; an id published live that out lacks
	// (missing, in arrival order).
	problems []string
	missing  []*liveOut
}

func (r liveMatch) String() string {
	return fmt.Sprintf("%d ids published live (%d sent more than once, %d with more than one payload, %d stored after the read %v)",
		r.ids, r.resent, r.recomputed, len(r.late), r.late)
}

// match checks OUT read back (out, in stream order) against what was
// published live: every message of out is a payload published live on its
// subject, under an id no other message of out has, and every id published
// live is in out, or else in tail — what OUT stored after out's last
// message, with headers (readTail) — with a payload published live under
// that id: published after the read.
func (c *outCapture) match(out, tail []natsjs.Msg) liveMatch {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := liveMatch{ids: len(c.order), seqOf: map[string]uint64{}}
	byPayload := map[string][]*liveOut{}
	for _, l := range c.order {
		if l.copies > 1 {
			r.resent++
		}
		if len(l.payloads) > 1 {
			r.recomputed++
		}
		for _, p := range l.payloads {
			k := l.subject + "\x00" + string(p)
			byPayload[k] = append(byPayload[k], l)
		}
	}
	for _, m := range out {
		ls := byPayload[m.Subject+"\x00"+string(m.Data)]
		if len(ls) == 0 {
			r.problems = append(r.problems, fmt.Sprintf("OUT seq %d (%s, %s) was never published live", m.Seq, m.Subject, describeBatch(m.Data)))
			continue
		}
		var l *liveOut
		for _, x := range ls {
			if _, ok := r.seqOf[x.id]; !ok {
				l = x
				break
			}
		}
		if l == nil {
			r.problems = append(r.problems, fmt.Sprintf("OUT seq %d (%s) is a second copy of id %s, first at seq %d", m.Seq, m.Subject, ls[0].id, r.seqOf[ls[0].id]))
			continue
		}
		r.seqOf[l.id] = m.Seq
	}
	for _, m := range tail {
		l := c.ids[m.Header.Get(jetstream.MsgIDHeader)]
		if l == nil {
			continue // published after the capture was last settled
		}
		if s, ok := r.seqOf[l.id]; ok {
			r.problems = append(r.problems, fmt.Sprintf("OUT seq %d (%s) is a second copy of id %s, first at seq %d", m.Seq, m.Subject, l.id, s))
			continue
		}
		for _, p := range l.payloads {
			if bytes.Equal(p, m.Data) {
				r.seqOf[l.id] = m.Seq
				r.late = append(r.late, l.id)
				break
			}
		}
	}
	for _, l := range c.order {
		if _, ok := r.seqOf[l.id]; !ok {
			r.missing = append(r.missing, l)
			r.problems = append(r.problems, fmt.Sprintf("id %s (%s, first published %s, %d payloads, %d copies: %s) is not in OUT read back",
				l.id, l.subject, l.at.Format("15:04:05.000000"), len(l.payloads), l.copies, describeBatch(l.payloads[0])))
		}
	}
	return r
}

// readTail reads, with their headers, the messages stream stores after
// out's last one (every one, when out is empty).
func readTail(js jetstream.JetStream, stream string, out []natsjs.Msg) ([]natsjs.Msg, error) {
	from := uint64(1)
	if len(out) > 0 {
		from = out[len(out)-1].Seq + 1
	}
	var tail []natsjs.Msg
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: stream, StartSeq: from}, func(ctx context.Context, msgs []natsjs.Msg) error {
		for _, m := range msgs {
			m.Data = bytes.Clone(m.Data)
			tail = append(tail, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s from seq %d: %w", stream, from, err)
	}
	return tail, nil
}

// matchRead is match(out, tail) once the capture has settled: every id
// published live that out lacks is looked for again in what OUT stored
// after it, until found or wait has passed (a message just captured may
// not be stored yet: the stream takes it in on its own goroutine).
func (c *outCapture) matchRead(t *testing.T, js jetstream.JetStream, stream string, out []natsjs.Msg, wait time.Duration) liveMatch {
	t.Helper()
	c.settle(t)
	r := c.match(out, nil)
	for end := time.Now().Add(wait); len(r.missing) > 0 && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		tail, err := readTail(js, stream, out)
		if err != nil {
			t.Fatal(err)
		}
		r = c.match(out, tail)
	}
	return r
}

// seqBounds returns the stream sequences of the ids found in out that were
// published live right before and right after l (0 when there is none):
// where l would have been in the stream, give or take the other subjects'
// messages crossing it on the way.
func (c *outCapture) seqBounds(r liveMatch, l *liveOut) (before, after uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := l.n - 1; i >= 0; i-- {
		if s, ok := r.seqOf[c.order[i].id]; ok {
			before = s
			break
		}
	}
	for i := l.n + 1; i < len(c.order); i++ {
		if s, ok := r.seqOf[c.order[i].id]; ok {
			after = s
			break
		}
	}
	return before, after
}

// describeBatch names a batch's events briefly: its proximity results and
// claims (player/seq) and how many others.
func describeBatch(data []byte) string {
	var b eventpb.Batch
	if err := event.Decode(data, &b); err != nil {
		return "undecodable: " + err.Error()
	}
	var parts []string
	others := 0
	for _, ev := range b.Events {
		switch {
		case ev.GetProximity() != nil:
			p := ev.GetProximity()
			parts = append(parts, fmt.Sprintf("result %s/%d (IN seq %d)", p.Player, p.Seq, p.GetMove().GetStreamSeq()))
		case ev.GetClaim() != nil:
			c := ev.GetClaim()
			parts = append(parts, fmt.Sprintf("claim %s/%d %s", c.Player, c.Seq, c.Treasure))
		default:
			others++
		}
	}
	sort.Strings(parts)
	if others > 0 {
		parts = append(parts, fmt.Sprintf("%d other events", others))
	}
	return fmt.Sprintf("%d events: %s; consumed at %d", len(b.Events), strings.Join(parts, ", "), b.InputConsumedUnixNanos)
}

// explainMissing logs (and returns), for each id published live that OUT read back lacks
// (the first five), where it would have been: the stream sequences of its
// neighbours by arrival, the archive's segments over them, and the
// retention passes whose purge of its subject reached them (safe
// sequence, who held it there, the archiver's progress). Cheap: it runs
// on a failure only, over what the test kept anyway.
func explainMissing(t *testing.T, js jetstream.JetStream, live *outCapture, r liveMatch, passes []retention.Report, dir, stream string) []string {
	t.Helper()
	var lines []string
	logf := func(format string, args ...any) {
		t.Helper()
		lines = append(lines, fmt.Sprintf(format, args...))
		t.Log(lines[len(lines)-1])
	}
	ms, err := archive.Open(dir).Manifests(stream)
	if err != nil {
		logf("archive manifests of %s: %v", stream, err)
	}
	// Whether the stream itself still holds them (what is left of it).
	held := map[string]uint64{}
	all, err := readTail(js, stream, nil)
	if err != nil {
		logf("%v", err)
	}
	for _, m := range all {
		if id := m.Header.Get(jetstream.MsgIDHeader); id != "" {
			held[id] = m.Seq
		}
	}
	for i, l := range r.missing {
		if i == 5 {
			logf("... and %d more ids missing", len(r.missing)-i)
			break
		}
		before, after := live.seqBounds(r, l)
		lo, hi := before+1, after-1
		if after == 0 {
			hi = ^uint64(0)
		}
		where := "not in the stream now"
		if s, ok := held[l.id]; ok {
			where = fmt.Sprintf("in the stream at seq %d", s)
		}
		logf("missing %s on %s: published live between OUT seqs %d and %d (0: none); %s", l.id, l.subject, before, after, where)
		for _, m := range ms {
			if m.LastSeq >= lo && m.FirstSeq <= hi || m.LastSeq+1 == lo || m.FirstSeq == hi+1 {
				gap := ""
				if m.GapBefore != nil {
					gap = fmt.Sprintf(", gap before %v", *m.GapBefore)
				}
				logf("  segment %d-%d: %d messages, window %s, times %s..%s%s", m.FirstSeq, m.LastSeq, m.Messages,
					m.Window.Format("15:04:05.000"), m.FirstTime.Format("15:04:05.000000"), m.LastTime.Format("15:04:05.000000"), gap)
			}
		}
		prev := uint64(0)
		for n, rep := range passes {
			for _, s := range rep.Streams {
				if s.Stream != stream {
					continue
				}
				for _, sub := range s.Subjects {
					if sub.Subject != l.subject {
						continue
					}
					reached := sub.PurgedTo >= lo && prev < hi
					if sub.PurgedTo > prev {
						prev = sub.PurgedTo
					}
					if !reached {
						continue
					}
					var archived []string
					for _, h := range sub.Holders {
						if h.Kind == "archiver" {
							archived = append(archived, fmt.Sprintf("%s %d", h.Name, h.Seq))
						}
					}
					logf("  pass %d at %s: subject %d-%d, safe seq %d held by %s, target %d, purged to %d (%d messages), archiver %v",
						n, rep.Time.Format("15:04:05.000000"), sub.FirstSeq, sub.LastSeq, sub.SafeSeq, sub.HeldBy, sub.TargetSeq, sub.PurgedTo, sub.Purged, archived)
				}
			}
		}
	}
	return lines
}

// TestOutCaptureMatchesByMsgID: outCapture's accounting against a real
// OUT stream. A proximity output published twice under one Nats-Msg-Id
// with other hop timestamps (a worker that applies an input again after a
// stop between its publishes and its ack) is stored once and counted once,
// as is a plain resend of the same bytes; a message OUT lacks, one OUT
// holds twice and one never published are each named; one published after
// the read (the ranker's last leaderboard snapshot) is late, not missing,
// and one the stream refused (seen live all the same) is missing.
func TestOutCaptureMatchesByMsgID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nc, js, prefix := testenv.JetStream(t)
	topo := natsjs.Topology{Prefix: prefix, Partitions: 1}
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	live := captureOut(t, nc, topo)
	result := func(seq uint64, consumed int64) []byte {
		b := &eventpb.Batch{SchemaVersion: event.SchemaVersion, InputConsumedUnixNanos: consumed, Events: []*eventpb.Event{{Kind: &eventpb.Event_Proximity{
			Proximity: &eventpb.ProximityResult{Player: "p", Seq: seq, Node: 7, Move: &eventpb.LogPosition{StreamSeq: 10 + seq}}}}}}
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	pubs := []struct {
		subject, id string
		data        []byte
		dup         bool // JetStream drops it as a duplicate
	}{
		{topo.OutSubject(0), "out-0-11-0", result(1, 100), false},
		{topo.OutSubject(0), "out-0-11-0", result(1, 200), true}, // applied again: other hop timestamps
		{topo.OutSubject(0), "out-0-12-0", result(2, 300), false},
		{topo.OutSubject(0), "out-0-12-0", result(2, 300), true}, // resent as it was
		{topo.RankSubject(), "rank-3", result(3, 0), false},
	}
	for _, p := range pubs {
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: p.subject, Data: p.data}, jetstream.WithMsgID(p.id))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != p.dup {
			t.Fatalf("%s: duplicate %v, want %v", p.id, ack.Duplicate, p.dup)
		}
	}
	live.settle(t)
	copies := 0
	live.mu.Lock()
	for _, l := range live.order {
		copies += l.copies
	}
	live.mu.Unlock()
	if copies != len(pubs) {
		t.Fatalf("%d of %d publishes captured", copies, len(pubs))
	}
	out := readAll(t, js, "", topo.OutStream())
	if len(out) != 3 {
		t.Fatalf("OUT holds %d messages, want 3", len(out))
	}
	// Distinct payloads, what the long-run test once counted: one too many.
	payloads := 0
	for _, l := range live.order {
		payloads += len(l.payloads)
	}
	if payloads != 4 {
		t.Fatalf("%d distinct payloads captured, want 4", payloads)
	}
	lm := live.matchRead(t, js, topo.OutStream(), out, 15*time.Second)
	if len(lm.problems) != 0 || len(lm.late) != 0 || lm.ids != 3 || lm.resent != 2 || lm.recomputed != 1 {
		t.Fatalf("OUT as published: %v, problems %q", lm, lm.problems)
	}
	if got := lm.seqOf["out-0-11-0"]; got != out[0].Seq {
		t.Fatalf("out-0-11-0 matched seq %d, want %d", got, out[0].Seq)
	}

	// A message missing from what was read back: named, with its
	// neighbours' sequences.
	lm = live.match([]natsjs.Msg{out[0], out[2]}, nil)
	if len(lm.missing) != 1 || lm.missing[0].id != "out-0-12-0" || len(lm.problems) != 1 ||
		!strings.Contains(lm.problems[0], "id out-0-12-0 ") || !strings.Contains(lm.problems[0], "result p/2 (IN seq 12)") {
		t.Fatalf("OUT without its second message: missing %v, problems %q", lm.missing, lm.problems)
	}
	if before, after := live.seqBounds(lm, lm.missing[0]); before != out[0].Seq || after != out[2].Seq {
		t.Fatalf("the missing message's neighbours: seqs %d and %d, want %d and %d", before, after, out[0].Seq, out[2].Seq)
	}
	if lines := explainMissing(t, js, live, lm, nil, t.TempDir(), topo.OutStream()); len(lines) != 1 || !strings.HasSuffix(lines[0], fmt.Sprintf("; in the stream at seq %d", out[1].Seq)) {
		t.Fatalf("diagnosis %q", lines)
	}
	// One read back twice, and one never published.
	twice := append(append([]natsjs.Msg{}, out...), out[1])
	twice[3].Seq = out[2].Seq + 1
	if lm = live.match(twice, nil); len(lm.problems) != 1 || !strings.Contains(lm.problems[0], "second copy of id out-0-12-0") {
		t.Fatalf("OUT with a message twice: problems %q", lm.problems)
	}
	other := append([]natsjs.Msg{}, out...)
	other[1].Data = result(2, 999)
	if lm = live.match(other, nil); len(lm.problems) != 2 || !strings.Contains(lm.problems[0], "never published live") || len(lm.missing) != 1 {
		t.Fatalf("OUT with a message never published: problems %q", lm.problems)
	}
	// Published after the read (a leaderboard snapshot): stored after
	// what was read, and so late, not missing.
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: topo.RankSubject(), Data: result(4, 0)}, jetstream.WithMsgID("board-1")); err != nil {
		t.Fatal(err)
	}
	lm = live.matchRead(t, js, topo.OutStream(), out, 15*time.Second)
	if len(lm.problems) != 0 || fmt.Sprint(lm.late) != "[board-1]" || lm.ids != 4 {
		t.Fatalf("OUT read before board-1 was published: %v, problems %q", lm, lm.problems)
	}
	// Refused by the stream (seen live all the same): missing, whatever
	// the wait.
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: topo.OutSubject(0), Data: result(5, 500)}, jetstream.WithMsgID("out-0-15-0"), jetstream.WithExpectLastSequence(1)); err == nil {
		t.Fatal("a publish expecting last seq 1 was stored")
	}
	lm = live.matchRead(t, js, topo.OutStream(), out, time.Second)
	if len(lm.missing) != 1 || lm.missing[0].id != "out-0-15-0" || len(lm.problems) != 1 || fmt.Sprint(lm.late) != "[board-1]" {
		t.Fatalf("OUT without a refused publish: %v, missing %v, problems %q", lm, lm.missing, lm.problems)
	}
	// The diagnosis of the refused one, after the stream's head is gone.
	stream, err := js.Stream(ctx, topo.OutStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(3)); err != nil {
		t.Fatal(err)
	}
	lines := explainMissing(t, js, live, lm, nil, t.TempDir(), topo.OutStream())
	if want := fmt.Sprintf("missing out-0-15-0 on %s: published live between OUT seqs %d and 0 (0: none); not in the stream now", topo.OutSubject(0), lm.seqOf["board-1"]); len(lines) != 1 || lines[0] != want {
		t.Fatalf("diagnosis %q, want %q", lines, want)
	}
}
