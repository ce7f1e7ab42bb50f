package archive

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// TestArchiverRecreatesStuckConsumer makes each stream's consumer answer
// "temporarily unavailable" to the running archiver's check (the stuck
// state of nats-server 2.9.10, which cannot be produced on demand; a
// StuckWatch that gives up at once) while its last segment is open: its
// messages are taken in and acknowledged, but in no committed file. The
// archiver must give the consumer up, create it again right after its
// last manifest (not after the acknowledged messages), and end, once
// stopped, with exactly the files of an archiver that was never
// interrupted.
func TestArchiverRecreatesStuckConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	newLogWriter(e, 4).publish(t, ctxFor(t, 30*time.Second), 400)
	in, out := lastSeq(t, e, e.topo.InStream()), lastSeq(t, e, e.topo.OutStream())
	// Hour-long windows: segments are cut by MaxRows alone, and the last
	// one stays open until the stop.
	o := Options{Segment: time.Hour, Grace: time.Hour, MaxRows: 150}

	ref := t.TempDir()
	o.Dir = ref
	a, stop := runArchiver(t, e, o)
	testenv.WaitUntil(t, time.Minute, "reference archiver has not taken in both streams", func() bool { return consumed(a, in, out) })
	stop()
	want := tree(t, ref)

	dir := t.TempDir()
	o.Dir = dir
	var mu sync.Mutex
	stuckAt := map[string]uint64{}             // stream → archived when its consumer began to answer unavailable
	stuckCons := map[string]*natsjs.Consumer{} // the consumer that answers so, until it is replaced
	o.stuckAfter = time.Nanosecond             // the second unavailable answer gives up
	o.consumerInfo = func(ctx context.Context, s *streamArchiver, c *natsjs.Consumer) error {
		s.mu.Lock()
		open := s.seg != nil && s.seg.rows > 0
		archived, next := s.archived, s.next
		s.mu.Unlock()
		last := in
		if s.role == "OUT" {
			last = out
		}
		mu.Lock()
		defer mu.Unlock()
		if _, done := stuckAt[s.stream]; !done && open && next > last {
			stuckAt[s.stream], stuckCons[s.stream] = archived, c
		}
		if stuckCons[s.stream] != c {
			_, err := c.Info(ctx)
			return err
		}
		return fmt.Errorf("consumer info: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"})
	}
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	a2, stop2 := runArchiver(t, e, o)
	testenv.WaitUntil(t, time.Minute, "no consumer answered unavailable with its last segment open", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stuckAt) == 2
	})
	// Each stream's once has returned (failures counts it after once has
	// made the stream unready); ready again, it has created its consumer.
	testenv.WaitFor(t, time.Minute, func() string {
		if f := counterValue(t, reg, "treasure_archive_failures_total"); f != 2 {
			return fmt.Sprintf("%v failures, want 2", f)
		}
		if err := a2.Ready(); err != nil {
			return err.Error()
		}
		if !consumed(a2, in, out) {
			return "archiver has not taken in both streams again"
		}
		return ""
	})
	for _, stream := range []string{e.topo.InStream(), e.topo.OutStream()} {
		mu.Lock()
		archived := stuckAt[stream]
		mu.Unlock()
		if last := lastSeq(t, e, stream); archived >= last {
			t.Fatalf("%s: archived %d of %d when it answered unavailable: nothing was open", stream, archived, last)
		}
		cons, err := e.js.Consumer(ctxFor(t, 10*time.Second), stream, Durable(e.topo, stream))
		if err != nil {
			t.Fatal(err)
		}
		if c := cons.CachedInfo().Config; c.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || c.OptStartSeq != archived+1 {
			t.Fatalf("%s: consumer created again with %v from %d, want from %d (after the last manifest)", stream, c.DeliverPolicy, c.OptStartSeq, archived+1)
		}
	}
	stop2()
	if got := counterValue(t, reg, "treasure_archive_consumer_recreated_total"); got != 2 {
		t.Fatalf("treasure_archive_consumer_recreated_total %v, want 2 (one per stream)", got)
	}
	got := tree(t, dir)
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Errorf("%s differs from the uninterrupted run's (%d bytes, want %d)", p, len(got[p]), len(b))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: not in the uninterrupted run's archive", p)
		}
	}
}
