package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/eventrow"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// env is a fresh pair of streams on the shared NATS server.
type env struct {
	js   jetstream.JetStream
	topo natsjs.Topology
}

func newEnv(tb testing.TB) env {
	tb.Helper()
	_, js, prefix := testenv.JetStream(tb)
	small := natsjs.Limits{MaxBytes: 32 << 20, MaxMsgs: 100_000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: 3, In: small, Out: small, Upd: small, DLQ: small}
	if err := topo.Ensure(ctxFor(tb, 10*time.Second), js); err != nil {
		tb.Fatal(err)
	}
	return env{js: js, topo: topo}
}

func ctxFor(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// logWriter publishes batches shaped like the pipeline's: moves and drops
// on IN, results and claims (with hop timestamps) on OUT, score changes
// and leaderboards on OUT's rank subject, and the odd empty batch and
// payload that is not a batch.
type logWriter struct {
	e    env
	r    *rand.Rand
	seq  map[string]uint64
	b    event.Builder
	n    int
	lbv  uint64
	inSq uint64
}

func newLogWriter(e env, seed uint64) *logWriter {
	return &logWriter{e: e, r: rand.New(rand.NewPCG(seed, 7)), seq: map[string]uint64{}}
}

func (w *logWriter) player() string { return fmt.Sprintf("player-%03d", w.r.IntN(40)) }

// publish publishes n messages, alternating streams, and returns nothing:
// the tests read the streams back as the truth.
func (w *logWriter) publish(tb testing.TB, ctx context.Context, n int) {
	tb.Helper()
	t := w.e.topo
	for range n {
		w.n++
		w.b.Reset()
		_ = w.b.SetHops(event.Hops{})
		var subject string
		var data []byte
		switch k := w.n % 11; {
		case k == 5:
			subject, data = t.InSubject(w.r.IntN(3)), []byte("not a batch \x00\xff")
		case k == 7:
			subject, data = t.OutSubject(w.r.IntN(3)), append([]byte(nil), w.b.Bytes()...)
		case k%2 == 0: // IN: moves, now and then a drop
			part := w.r.IntN(3)
			subject = t.InSubject(part)
			for range 1 + w.r.IntN(30) {
				p := w.player()
				prev := w.seq[p]
				w.seq[p]++
				path := make([]uint32, 1+w.r.IntN(16))
				for i := range path {
					path[i] = w.r.Uint32N(2_300_000)
				}
				if err := w.b.AddMove(&eventpb.MoveAccepted{Player: p, Seq: prev + 1, PrevSeq: prev, Path: path,
					IngestUnixNanos: time.Now().UnixNano(), Partition: uint32(part)}); err != nil {
					tb.Fatal(err)
				}
			}
			if w.r.IntN(4) == 0 {
				w.add(tb, &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{
					Id: fmt.Sprintf("t%d", w.n), Node: w.r.Uint32N(1000), Points: 1 + w.r.Uint64N(500), IngestUnixNanos: time.Now().UnixNano()}}})
			}
			data = append([]byte(nil), w.b.Bytes()...)
		case k == 1 || k == 9: // OUT rank: scores and a leaderboard
			subject = t.RankSubject()
			pos := &eventpb.LogPosition{StreamSeq: w.r.Uint64N(10000), Index: w.r.Uint32N(30)}
			w.add(tb, &eventpb.Event{Kind: &eventpb.Event_Score{Score: &eventpb.ScoreChanged{Player: w.player(), Score: w.r.Uint64N(5000), Rank: 1 + w.r.Uint64N(40),
				Cause: &eventpb.ClaimRef{Treasure: fmt.Sprintf("t%d", w.r.IntN(w.n)), Move: pos}}}})
			w.lbv++
			lb := &eventpb.LeaderboardSnapshot{Players: 40, Version: w.lbv}
			for i := range 1 + w.r.IntN(5) {
				lb.Top = append(lb.Top, &eventpb.LeaderboardEntry{Player: w.player(), Score: uint64(900 - i), Rank: uint64(i + 1)})
			}
			w.add(tb, &eventpb.Event{Kind: &eventpb.Event_Leaderboard{Leaderboard: lb}})
			data = append([]byte(nil), w.b.Bytes()...)
		default: // OUT: proximity results and claims
			part := w.r.IntN(3)
			subject = t.OutSubject(part)
			if err := w.b.SetHops(event.Hops{InputPublished: time.Now().UnixNano() - 1000, InputConsumed: time.Now().UnixNano()}); err != nil {
				tb.Fatal(err)
			}
			for i := range 1 + w.r.IntN(20) {
				pos := &eventpb.LogPosition{StreamSeq: w.r.Uint64N(10000), Index: uint32(i)}
				p := w.player()
				if w.r.IntN(5) == 0 {
					w.add(tb, &eventpb.Event{Kind: &eventpb.Event_Claim{Claim: &eventpb.Claim{Player: p, Seq: uint64(i), Treasure: fmt.Sprintf("t%d", i),
						Points: 10, Node: w.r.Uint32N(1000), Move: pos, PrevSeq: uint64(i)}}})
				}
				r := &eventpb.ProximityResult{Player: p, Seq: uint64(i + 1), Node: w.r.Uint32N(1000), Move: pos, IngestUnixNanos: time.Now().UnixNano(), PrevSeq: uint64(i)}
				if w.r.IntN(2) == 0 {
					r.Treasure = &eventpb.NearestTreasure{Id: fmt.Sprintf("t%d", i), Node: w.r.Uint32N(1000), Distance: w.r.Uint64N(2000)}
				}
				w.add(tb, &eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: r}})
			}
			data = append([]byte(nil), w.b.Bytes()...)
		}
		if _, err := w.e.js.Publish(ctx, subject, data); err != nil {
			tb.Fatalf("publish %s: %v", subject, err)
		}
	}
}

func (w *logWriter) add(tb testing.TB, ev *eventpb.Event) {
	tb.Helper()
	if err := w.b.Add(ev); err != nil {
		tb.Fatal(err)
	}
}

// streamMsgs reads a stream whole from the server.
func streamMsgs(tb testing.TB, js jetstream.JetStream, stream string, subjects ...string) []natsjs.Msg {
	tb.Helper()
	var out []natsjs.Msg
	err := natsjs.Replay(ctxFor(tb, 60*time.Second), js, natsjs.ReplayOptions{Stream: stream, Subjects: subjects}, func(_ context.Context, ms []natsjs.Msg) error {
		out = append(out, ms...)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// sameMsgs compares what a replay handed over with the originals: subject,
// sequence, time, payload byte for byte and, for batches, proto.Equal.
func sameMsgs(tb testing.TB, what string, got, want []natsjs.Msg) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.Subject != w.Subject || !g.Time.Equal(w.Time) {
			tb.Fatalf("%s: message %d is %s seq %d at %v, want %s seq %d at %v", what, i, g.Subject, g.Seq, g.Time, w.Subject, w.Seq, w.Time)
		}
		if !bytes.Equal(g.Data, w.Data) {
			tb.Errorf("%s: seq %d: payload differs", what, g.Seq)
		}
		var gb, wb eventpb.Batch
		if event.Decode(w.Data, &wb) == nil {
			if err := event.Decode(g.Data, &gb); err != nil || !proto.Equal(&gb, &wb) {
				tb.Errorf("%s: seq %d: batch %v (%v), want %v", what, g.Seq, &gb, err, &wb)
			}
		}
	}
}

// runArchiver runs an Archiver until the test ends or stop is called.
func runArchiver(tb testing.TB, e env, o Options) (a *Archiver, stop func()) {
	tb.Helper()
	o.Topology = e.topo
	if o.Segment == 0 {
		o.Segment = 100 * time.Millisecond
	}
	if o.Grace == 0 {
		o.Grace = 50 * time.Millisecond
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	a, err := New(e.js, o)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("archiver: %v", err)
				}
			case <-time.After(time.Minute):
				buf := make([]byte, 1<<20)
				tb.Errorf("archiver did not stop within a minute; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
			}
		})
	}
	tb.Cleanup(stop)
	return a, stop
}

// lastSeq returns a stream's last sequence.
func lastSeq(tb testing.TB, e env, stream string) uint64 {
	tb.Helper()
	s, err := e.js.Stream(ctxFor(tb, 10*time.Second), stream)
	if err != nil {
		tb.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// waitArchived waits until the archiver has committed both streams up to
// their last sequences, and checks the progress bucket says so.
func waitArchived(tb testing.TB, e env, a *Archiver) {
	tb.Helper()
	in, out := lastSeq(tb, e, e.topo.InStream()), lastSeq(tb, e, e.topo.OutStream())
	deadline := time.Now().Add(2 * time.Minute) // a hang guard, not a timing
	for a.Archived(e.topo.InStream()) < in || a.Archived(e.topo.OutStream()) < out {
		if time.Now().After(deadline) {
			tb.Fatalf("archived IN %d of %d, OUT %d of %d after 2 minutes", a.Archived(e.topo.InStream()), in, a.Archived(e.topo.OutStream()), out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		pin, pout, err := Progress(ctxFor(tb, 5*time.Second), e.js, e.topo)
		if err != nil {
			tb.Fatal(err)
		}
		if pin >= in && pout >= out {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("progress bucket says IN %d OUT %d, want %d %d", pin, pout, in, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// consumed reports whether the archiver has taken in every message of both
// streams up to in and out (not yet committed: the commit is at stop).
func consumed(a *Archiver, in, out uint64) bool {
	for _, s := range a.streams {
		want := in
		if s.role == "OUT" {
			want = out
		}
		s.mu.Lock()
		next := s.next
		s.mu.Unlock()
		if next <= want {
			return false
		}
	}
	return true
}

// TestStopCommitsTheOpenSegment: a stop (ctx cancelled) commits the open
// segment, with everything the archiver took in, rather than leaving it
// for the next start; whichever of the cancel and its consumer's return
// the archiver sees first. (Hour-long segments: nothing is committed
// before the stop.)
func TestStopCommitsTheOpenSegment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	newLogWriter(e, 9).publish(t, ctxFor(t, 30*time.Second), 200)
	in, out := lastSeq(t, e, e.topo.InStream()), lastSeq(t, e, e.topo.OutStream())
	a, stop := runArchiver(t, e, Options{Dir: dir, Segment: time.Hour, Grace: time.Hour})
	testenv.WaitUntil(t, time.Minute, "archiver has not taken in both streams", func() bool { return consumed(a, in, out) })
	if got := a.Archived(e.topo.InStream()); got != 0 && got != in {
		t.Fatalf("IN archived up to %d before the stop", got)
	}
	stop()
	for stream, last := range map[string]uint64{e.topo.InStream(): in, e.topo.OutStream(): out} {
		if got := a.Archived(stream); got != last {
			t.Errorf("%s archived up to %d after the stop, want %d", stream, got, last)
		}
		sameMsgs(t, stream, readArchive(t, dir, stream, ReadOptions{}), streamMsgs(t, e.js, stream))
	}
}

// readArchive reads a stream from the archive.
func readArchive(tb testing.TB, dir, stream string, o ReadOptions) []natsjs.Msg {
	tb.Helper()
	var out []natsjs.Msg
	err := Open(dir).Read(ctxFor(tb, 60*time.Second), stream, o, func(_ context.Context, ms []natsjs.Msg) error {
		if o.Batch > 0 && len(ms) > o.Batch {
			tb.Errorf("batch of %d, cap %d", len(ms), o.Batch)
		}
		out = append(out, ms...)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// publishSpread publishes n messages over several segment windows.
func publishSpread(tb testing.TB, w *logWriter, n int) {
	tb.Helper()
	ctx := ctxFor(tb, 60*time.Second)
	for i := 0; i < n; i += 100 {
		w.publish(tb, ctx, min(100, n-i))
		time.Sleep(30 * time.Millisecond) // spreads the messages over windows; nothing waits on it
	}
}

// TestArchiveHoldsEveryMessage archives both streams and reads them back:
// every message with its subject, sequence, time and payload, whole, from
// a sequence, by subject; the Parquet files read back with parquet-go's
// reader hold exactly eventrow.Flatten's rows; the manifests add up.
func TestArchiveHoldsEveryMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	publishSpread(t, newLogWriter(e, 1), 700)
	a, _ := runArchiver(t, e, Options{Dir: dir})
	waitArchived(t, e, a)

	for _, stream := range []string{e.topo.InStream(), e.topo.OutStream()} {
		want := streamMsgs(t, e.js, stream)
		sameMsgs(t, stream+" whole", readArchive(t, dir, stream, ReadOptions{Batch: 33}), want)
		mid := want[len(want)/2].Seq
		sameMsgs(t, stream+" from the middle", readArchive(t, dir, stream, ReadOptions{From: mid, To: mid + 50}),
			slices.DeleteFunc(slices.Clone(want), func(m natsjs.Msg) bool { return m.Seq < mid || m.Seq > mid+50 }))
		ms, err := Open(dir).Manifests(stream)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) < 3 {
			t.Errorf("%s: %d segments, want several (windows of 100ms over a spread publish)", stream, len(ms))
		}
		var msgs uint64
		for i, m := range ms {
			msgs += m.Messages
			if i > 0 && m.FirstSeq != ms[i-1].LastSeq+1 {
				t.Errorf("%s: segment %d starts at %d after %d", stream, i, m.FirstSeq, ms[i-1].LastSeq)
			}
		}
		if msgs != uint64(len(want)) || ms[0].FirstSeq != 1 || ms[len(ms)-1].LastSeq != want[len(want)-1].Seq {
			t.Errorf("%s: manifests hold %d messages %d-%d, the stream %d", stream, msgs, ms[0].FirstSeq, ms[len(ms)-1].LastSeq, len(want))
		}
		if err := Open(dir).Verify(stream); err != nil {
			t.Error(err)
		}
		checkParquetRows(t, dir, stream, ms, want)
	}
	sub := e.topo.OutSubject(1)
	sameMsgs(t, "one subject", readArchive(t, dir, e.topo.OutStream(), ReadOptions{Subjects: []string{sub}}), streamMsgs(t, e.js, e.topo.OutStream(), sub))
	sameMsgs(t, "wildcard", readArchive(t, dir, e.topo.OutStream(), ReadOptions{Subjects: []string{e.topo.Prefix + ".out.rank"}}),
		streamMsgs(t, e.js, e.topo.OutStream(), e.topo.RankSubject()))
}

// checkParquetRows reads every file of the manifests with parquet-go's
// reader and compares the rows, field by field, with what eventrow.Flatten
// makes of the stream's messages on the file's subject and range.
func checkParquetRows(tb testing.TB, dir, stream string, ms []Manifest, want []natsjs.Msg) {
	tb.Helper()
	files := 0
	for _, m := range ms {
		for _, f := range m.Files {
			files++
			got, err := parquet.ReadFile[eventrow.Row](filepath.Join(dir, stream, f.Path))
			if err != nil {
				tb.Fatal(err)
			}
			var rows []eventrow.Row
			for _, w := range want {
				if w.Subject == f.Subject && w.Seq >= m.FirstSeq && w.Seq <= m.LastSeq {
					rows, err = eventrow.Flatten(rows, eventrow.Message{Stream: stream, Subject: w.Subject, Seq: w.Seq, Time: w.Time, Data: w.Data})
					if err != nil {
						tb.Fatal(err)
					}
				}
			}
			if len(got) != len(rows) || uint64(len(rows)) != f.Rows {
				tb.Fatalf("%s: %d rows, want %d (manifest %d)", f.Path, len(got), len(rows), f.Rows)
			}
			for i := range rows {
				g, w := reflect.ValueOf(got[i]), reflect.ValueOf(rows[i])
				for k := 0; k < g.NumField(); k++ {
					gf, wf := g.Field(k), w.Field(k)
					if gf.Kind() == reflect.Slice && gf.Len() == 0 && wf.Len() == 0 {
						continue // an empty list reads back as null
					}
					if !reflect.DeepEqual(gf.Interface(), wf.Interface()) {
						tb.Errorf("%s row %d %s: %v, want %v", f.Path, i, g.Type().Field(k).Name, gf.Interface(), wf.Interface())
					}
				}
			}
		}
	}
	if files == 0 {
		tb.Errorf("%s: no files", stream)
	}
}

// tree returns every file under dir (relative path → content).
func tree(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestCrashMidSegment kills the archiver (no cleanup, no commit at stop)
// in a commit: after the files are written and fsynced under temporary
// names, and after they are renamed but before the manifest. Nothing a
// reader sees is partial, and a new archiver on the same directory ends
// with exactly the files of an archiver that never crashed.
func TestCrashMidSegment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	publishSpread(t, newLogWriter(e, 2), 500)
	ref := t.TempDir()
	a, stop := runArchiver(t, e, Options{Dir: ref})
	waitArchived(t, e, a)
	stop()
	want := tree(t, ref)

	for _, stage := range []string{"rename", "manifest"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			var commits int
			var mu sync.Mutex
			var killed atomic.Bool
			crashed := make(chan struct{})
			_, stop := runArchiver(t, e, Options{Dir: dir, killed: &killed, hook: func(s string) error {
				mu.Lock()
				defer mu.Unlock()
				if s != stage {
					return nil
				}
				if commits++; commits == 3 {
					killed.Store(true)
					close(crashed)
					return errCrash
				}
				return nil
			}})
			select {
			case <-crashed:
			case <-time.After(30 * time.Second):
				t.Fatal("no crash within 30 s")
			}
			stop()
			// What a reader sees: only committed segments, nothing partial.
			got := tree(t, dir)
			leftovers := 0
			for _, stream := range []string{e.topo.InStream(), e.topo.OutStream()} {
				ms, err := Open(dir).Manifests(stream)
				if err != nil {
					t.Fatal(err)
				}
				named := map[string]bool{}
				for _, m := range ms {
					for _, f := range m.Files {
						named[stream+"/"+f.Path] = true
						if !bytes.Equal(got[stream+"/"+f.Path], want[stream+"/"+f.Path]) {
							t.Errorf("committed %s differs from the reference", f.Path)
						}
					}
				}
				for p := range got {
					if !strings.HasPrefix(p, stream+"/") {
						continue
					}
					base := p[strings.LastIndexByte(p, '/')+1:]
					switch {
					case strings.HasPrefix(base, "."):
						leftovers++
					case strings.HasSuffix(p, ".parquet") && !named[p]:
						if stage == "rename" {
							t.Errorf("%s is visible but no manifest names it", p)
						}
						leftovers++
					}
				}
				readArchive(t, dir, stream, ReadOptions{})
			}
			if leftovers == 0 {
				t.Error("the crash left nothing behind: the hook did not stop the commit")
			}
			// A new archiver finishes the job: same files, nothing else.
			a2, stop2 := runArchiver(t, e, Options{Dir: dir})
			waitArchived(t, e, a2)
			stop2()
			again := tree(t, dir)
			for p, b := range want {
				if !bytes.Equal(again[p], b) {
					t.Errorf("%s differs from the reference after the re-run (%d bytes, want %d)", p, len(again[p]), len(b))
				}
			}
			for p := range again {
				if _, ok := want[p]; !ok {
					t.Errorf("%s: left over after the re-run", p)
				}
			}
		})
	}
}

// TestReplayAllAfterPurge purges the head of both streams once archived:
// ReplayAll returns exactly what the streams held before, from the start,
// from the middle of the archive and by subject; without the archive, it
// names the gap.
func TestReplayAllAfterPurge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	publishSpread(t, newLogWriter(e, 3), 600)
	a, stop := runArchiver(t, e, Options{Dir: dir})
	waitArchived(t, e, a)
	stop()
	type query struct {
		o    natsjs.ReplayOptions
		want []natsjs.Msg
	}
	var queries []query
	for _, stream := range []string{e.topo.InStream(), e.topo.OutStream()} {
		all := streamMsgs(t, e.js, stream)
		queries = append(queries, query{natsjs.ReplayOptions{Stream: stream}, all})
		from := all[len(all)/4].Seq
		queries = append(queries, query{natsjs.ReplayOptions{Stream: stream, StartSeq: from, Batch: 17},
			slices.DeleteFunc(slices.Clone(all), func(m natsjs.Msg) bool { return m.Seq < from })})
	}
	sub := e.topo.InSubject(2)
	queries = append(queries, query{natsjs.ReplayOptions{Stream: e.topo.InStream(), Subjects: []string{sub}}, streamMsgs(t, e.js, e.topo.InStream(), sub)})

	for _, stream := range []string{e.topo.InStream(), e.topo.OutStream()} {
		s, err := e.js.Stream(ctxFor(t, 5*time.Second), stream)
		if err != nil {
			t.Fatal(err)
		}
		keep := s.CachedInfo().State.LastSeq/2 + 1
		if err := s.Purge(ctxFor(t, 5*time.Second), jetstream.WithPurgeSequence(keep)); err != nil {
			t.Fatal(err)
		}
		if first := streamFirst(t, e, stream); first != keep {
			t.Fatalf("%s starts at %d after the purge, want %d", stream, first, keep)
		}
	}
	for _, q := range queries {
		var got []natsjs.Msg
		err := ReplayAll(ctxFor(t, 60*time.Second), e.js, dir, q.o, func(_ context.Context, ms []natsjs.Msg) error {
			got = append(got, ms...)
			return nil
		})
		if err != nil {
			t.Fatalf("%+v: %v", q.o, err)
		}
		sameMsgs(t, fmt.Sprintf("ReplayAll %s from %d %v", q.o.Stream, q.o.StartSeq, q.o.Subjects), got, q.want)
	}

	// Without the archive the purged head is a gap, named.
	err := ReplayAll(ctxFor(t, 30*time.Second), e.js, t.TempDir(), natsjs.ReplayOptions{Stream: e.topo.InStream()}, func(context.Context, []natsjs.Msg) error {
		t.Error("handed over messages before the gap")
		return nil
	})
	var gap *GapError
	if !errors.As(err, &gap) || gap.First != 1 || gap.Last != streamFirst(t, e, e.topo.InStream())-1 {
		t.Errorf("ReplayAll without the archive: %v, want a gap error 1-%d", err, streamFirst(t, e, e.topo.InStream())-1)
	}
}

// TestReplayAllAfterSubjectPurges purges subjects of IN each up to its own
// sequence, as retention does (one far past the stream's first sequence,
// one a little, the rest not at all): ReplayAll, by subject and over the
// whole stream, returns exactly what the stream held before.
func TestReplayAllAfterSubjectPurges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	publishSpread(t, newLogWriter(e, 3), 600)
	a, stop := runArchiver(t, e, Options{Dir: dir})
	waitArchived(t, e, a)
	stop()
	stream := e.topo.InStream()
	type query struct {
		o    natsjs.ReplayOptions
		want []natsjs.Msg
	}
	queries := []query{{natsjs.ReplayOptions{Stream: stream}, streamMsgs(t, e.js, stream)}}
	for k := 0; k < e.topo.Partitions; k++ {
		sub := e.topo.InSubject(k)
		queries = append(queries, query{natsjs.ReplayOptions{Stream: stream, Subjects: []string{sub}}, streamMsgs(t, e.js, stream, sub)})
	}
	s, err := e.js.Stream(ctxFor(t, 5*time.Second), stream)
	if err != nil {
		t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	for k, upTo := range map[int]uint64{0: last * 3 / 4, 1: last / 4} {
		if err := s.Purge(ctxFor(t, 5*time.Second), jetstream.WithPurgeSubject(e.topo.InSubject(k)), jetstream.WithPurgeSequence(upTo+1)); err != nil {
			t.Fatal(err)
		}
	}
	if first := streamFirst(t, e, stream); first <= 1 || first > last/4+1 {
		t.Fatalf("%s starts at %d after the purges, want 2..%d", stream, first, last/4+1)
	}
	for _, q := range queries {
		var got []natsjs.Msg
		err := ReplayAll(ctxFor(t, 60*time.Second), e.js, dir, q.o, func(_ context.Context, ms []natsjs.Msg) error {
			got = append(got, ms...)
			return nil
		})
		if err != nil {
			t.Fatalf("%+v: %v", q.o, err)
		}
		sameMsgs(t, fmt.Sprintf("ReplayAll %s %v", q.o.Stream, q.o.Subjects), got, q.want)
	}
}

func streamFirst(tb testing.TB, e env, stream string) uint64 {
	tb.Helper()
	s, err := e.js.Stream(ctxFor(tb, 5*time.Second), stream)
	if err != nil {
		tb.Fatal(err)
	}
	return s.CachedInfo().State.FirstSeq
}

// TestArchiveThroughRepeatedPurges runs the archiver while messages are
// published and both streams are purged, again and again, up to what the
// progress bucket says is archived (what retention does); then ReplayAll
// from sequence 1 returns every message that was published.
func TestArchiveThroughRepeatedPurges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	// The truth: every message as stored, read before each purge.
	seen := map[string]map[uint64]natsjs.Msg{e.topo.InStream(): {}, e.topo.OutStream(): {}}
	record := func() {
		for stream, m := range seen {
			for _, msg := range streamMsgs(t, e.js, stream) {
				m[msg.Seq] = msg
			}
		}
	}
	a, stop := runArchiver(t, e, Options{Dir: dir})
	w := newLogWriter(e, 4)
	purges := map[string]int{}
	ctx := ctxFor(t, 5*time.Minute) // a hang guard: the race detector on a busy box is slow
	for round := range 10 {
		w.publish(t, ctx, 120)
		if round%2 == 1 {
			record()
			in, out, err := Progress(ctx, e.js, e.topo)
			if err != nil {
				t.Fatal(err)
			}
			for stream, upto := range map[string]uint64{e.topo.InStream(): in, e.topo.OutStream(): out} {
				if upto == 0 || upto < streamFirst(t, e, stream) {
					continue
				}
				s, err := e.js.Stream(ctx, stream)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Purge(ctx, jetstream.WithPurgeSequence(upto+1)); err != nil {
					t.Fatal(err)
				}
				purges[stream]++
			}
		}
		time.Sleep(40 * time.Millisecond) // lets windows close between rounds; nothing waits on it
	}
	record()
	waitArchived(t, e, a)
	stop()
	for stream, m := range seen {
		if purges[stream] < 3 || streamFirst(t, e, stream) < 100 {
			t.Errorf("%s: purged %d times, first seq %d: want several purges", stream, purges[stream], streamFirst(t, e, stream))
		}
		want := make([]natsjs.Msg, 0, len(m))
		for _, msg := range m {
			want = append(want, msg)
		}
		slices.SortFunc(want, func(a, b natsjs.Msg) int { return cmpUint(a.Seq, b.Seq) })
		if last := lastSeq(t, e, stream); want[len(want)-1].Seq != last || uint64(len(want)) != last {
			t.Fatalf("%s: recorded %d messages up to %d, the stream ends at %d", stream, len(want), want[len(want)-1].Seq, last)
		}
		var got []natsjs.Msg
		err := ReplayAll(ctx, e.js, dir, natsjs.ReplayOptions{Stream: stream, StartSeq: 1}, func(_ context.Context, ms []natsjs.Msg) error {
			got = append(got, ms...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sameMsgs(t, "ReplayAll "+stream, got, want)
	}
}

// TestArchiverRecordsAGap: messages trimmed before the archiver came to
// them are a gap, recorded in the manifest, and ReplayAll names it.
func TestArchiverRecordsAGap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	publishSpread(t, newLogWriter(e, 5), 200)
	s, err := e.js.Stream(ctxFor(t, 5*time.Second), e.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctxFor(t, 5*time.Second), jetstream.WithPurgeSequence(41)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, stop := runArchiver(t, e, Options{Dir: dir, Registerer: reg})
	waitArchived(t, e, a)
	stop()
	ms, err := Open(dir).Manifests(e.topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	if g := ms[0].GapBefore; g == nil || *g != (Range{1, 40}) || ms[0].FirstSeq != 41 {
		t.Errorf("first manifest: from %d, gap %v; want from 41, gap 1-40", ms[0].FirstSeq, g)
	}
	if v := counterValue(t, reg, "treasure_archive_gaps_total"); v != 1 {
		t.Errorf("gaps counted %v, want 1", v)
	}
	err = ReplayAll(ctxFor(t, 30*time.Second), e.js, dir, natsjs.ReplayOptions{Stream: e.topo.InStream()}, func(context.Context, []natsjs.Msg) error { return nil })
	var gap *GapError
	if !errors.As(err, &gap) || gap.Range != (Range{1, 40}) {
		t.Errorf("ReplayAll: %v, want the gap 1-40", err)
	}
	var got []natsjs.Msg
	err = ReplayAll(ctxFor(t, 30*time.Second), e.js, dir, natsjs.ReplayOptions{Stream: e.topo.InStream(), StartSeq: 41}, func(_ context.Context, ms []natsjs.Msg) error {
		got = append(got, ms...)
		return nil
	})
	if err != nil || len(got) == 0 || got[0].Seq != 41 {
		t.Errorf("ReplayAll from 41: %d messages, %v", len(got), err)
	}
}

func counterValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
