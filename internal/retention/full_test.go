package retention

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
)

// TestFullStreamRefusesThenResumes: IN has a cap of 40 messages; both
// partitions are consumed and checkpointed as messages arrive (stand-ins
// for the workers), and the archiver has stopped at sequence 5. With
// retention running, publishing fills the stream and is then refused with
// ErrUnavailable and a retry-after, and stays refused over retention
// passes (held by the archiver). When the archiver's key advances,
// retention trims and publishing resumes. Every accepted message is in
// the stream or covered by the archiver's key.
func TestFullStreamRefusesThenResumes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 40)
	tp := w.topo
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The workers' stand-ins: consume, ack, checkpoint every batch (the 3
	// newest kept).
	var wg sync.WaitGroup
	for k := 0; k < tp.Partitions; k++ {
		cons, err := natsjs.NewConsumer(ctx, w.js, natsjs.ConsumerOptions{Stream: tp.InStream(), Durable: ProximityDurable(tp, k),
			Subjects: []string{tp.InSubject(k)}, DeadLetter: tp.DLQSubject(), MaxWait: time.Second, AckWait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var kept []uint64 // its checkpoints, oldest first
			_ = cons.Run(ctx, func(ctx context.Context, msgs []natsjs.Msg) error {
				seq := msgs[len(msgs)-1].Seq
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if err := w.store.Put(ctx, k, seq, proxCkptBytes(t, k, tp.Partitions, seq)); err != nil {
					t.Logf("partition %d: checkpoint at %d: %v", k, seq, err)
					return nil
				}
				// Pruned as the worker does, without listing (the object
				// store's listing can wait for ever on 2.9; see holders.go).
				for kept = append(kept, seq); len(kept) > 3; kept = kept[1:] {
					if err := w.store.Delete(ctx, k, kept[0]); err != nil {
						t.Logf("partition %d: prune: %v", k, err)
						break
					}
				}
				return nil
			})
		}()
	}
	defer wg.Wait()
	defer cancel()
	w.archive(t, KeyIn, 5)

	reg := prometheus.NewRegistry()
	runs := func() float64 {
		v, _ := metric(t, reg, "treasure_retention_runs_total", nil)
		return v
	}
	runDone := make(chan error, 1)
	go func() {
		runDone <- Run(ctx, w.js, Options{Topology: tp, MaxAge: -1, HighWater: 0.5, Every: 20 * time.Millisecond, Timeout: 5 * time.Second, Logger: testLog(), Registerer: reg})
	}()

	pub, err := natsjs.NewPublisher(w.nc, natsjs.PublisherOptions{AckTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	accepted := map[uint64]string{} // seq → payload
	publish := func(i int) error {
		data := fmt.Sprintf("move-%d", i)
		f, err := pub.Publish(ctx, tp.InSubject(i%2), []byte(data), data)
		if err != nil {
			return err
		}
		ack, err := f.Wait(ctx)
		if err != nil {
			return err
		}
		accepted[ack.Seq] = data
		return nil
	}
	// Fill until refused, and refused still after two retention passes
	// that started once the archiver alone held the stream back (the
	// workers' stand-ins have caught up).
	heldByArchiver := func() string {
		rep, err := Inspect(ctxFor(t), w.js, tp)
		if err != nil {
			return err.Error()
		}
		for _, s := range rep.Streams[0].Subjects {
			if s.HeldBy != "archiver" || s.SafeSeq != 5 {
				return fmt.Sprintf("%s held by %s at %d", s.Subject, s.HeldBy, s.SafeSeq)
			}
		}
		return ""
	}
	i := 0
	for {
		err := publish(i)
		if err == nil {
			i++
			continue
		}
		if !errors.Is(err, natsjs.ErrUnavailable) {
			t.Fatalf("publish %d: %v", i, err)
		}
		if d, ok := natsjs.RetryAfter(err); !ok || d <= 0 {
			t.Fatalf("a refusal without a retry-after: %v", err)
		}
		waitFor(t, heldByArchiver)
		n := runs()
		waitFor(t, func() string {
			if runs() < n+2 {
				return "two retention passes"
			}
			return ""
		})
		if publish(i) != nil {
			break
		}
		i++
	}
	if i > 100 {
		t.Fatalf("%d messages accepted into a stream of 40 with the archiver at 5", i)
	}
	rep, err := Inspect(ctxFor(t), w.js, tp)
	if err != nil {
		t.Fatal(err)
	}
	in := rep.Streams[0]
	if in.Msgs != 40 || in.HeadroomMsgs != 0 || in.FirstSeq != 6 {
		t.Fatalf("the full stream: %d messages, headroom %d, first seq %d; want 40, 0, 6 (trimmed to the archiver's 5); %+v", in.Msgs, in.HeadroomMsgs, in.FirstSeq, in.Subjects)
	}
	for _, s := range in.Subjects {
		if s.HeldBy != "archiver" || s.SafeSeq != 5 {
			t.Fatalf("%s held by %q at %d, want the archiver at 5", s.Subject, s.HeldBy, s.SafeSeq)
		}
	}
	waitFor(t, func() string {
		if v, ok := metric(t, reg, "treasure_retention_blocked", map[string]string{"subject": tp.InSubject(0)}); !ok || v != 1 {
			return fmt.Sprintf("treasure_retention_blocked = %v, %v while held", v, ok)
		}
		if v, ok := metric(t, reg, "treasure_retention_held_by", map[string]string{"subject": tp.InSubject(0), "holder": "archiver"}); !ok || v != 1 {
			return fmt.Sprintf("treasure_retention_held_by{holder=archiver} = %v, %v while held", v, ok)
		}
		return ""
	})

	// The archiver catches up to everything accepted so far.
	var archived uint64
	for seq := range accepted {
		archived = max(archived, seq)
	}
	w.archive(t, KeyIn, archived)
	waitFor(t, func() string {
		if err := publish(i); err != nil {
			return "still refused: " + err.Error()
		}
		i++
		return ""
	})
	for range 10 {
		if err := publish(i); err != nil {
			t.Fatalf("publish %d after the trim: %v", i, err)
		}
		i++
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if len(accepted) != i {
		t.Fatalf("%d publishes acked, %d distinct sequences", i, len(accepted))
	}
	// Nothing accepted is lost: all past the archiver's key is stored.
	s, err := w.js.Stream(ctxFor(t), tp.InStream())
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for seq, data := range accepted {
		if seq <= archived {
			continue
		}
		m, err := s.GetMsg(ctxFor(t), seq)
		if err != nil || string(m.Data) != data {
			t.Fatalf("accepted message %d (%s) past the archive's %d: %v", seq, data, archived, err)
		}
		kept++
	}
	if kept < 11 {
		t.Fatalf("%d messages past the archive, want at least 11", kept)
	}
}

// waitFor polls cond until it returns "" (30 s at most).
func waitFor(tb testing.TB, cond func() string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after 30 s: %s", msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
