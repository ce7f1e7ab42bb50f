package natsjs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// hangGuard runs f and fails the test when it has not returned after a
// long while: the calls tested here used to wait for as long as their
// context lasted (an hour, below), so a regression shows as this failure
// rather than as the package's timeout.
func hangGuard(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(hangAfter):
		t.Fatalf("%s has not returned after %v (it waits for its context, which lasts an hour)", what, hangAfter)
	}
}

// ckptBytes is the content of test checkpoint seq: several chunks.
func ckptBytes(seq uint64) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "checkpoint %d;", seq), 150_000/len(fmt.Sprintf("checkpoint %d;", seq)))
}

// TestCheckpointReadOfChunksThatWentGivesUp: an object whose meta is still
// there but whose chunks are gone (what a reader that read the meta sees
// once a concurrent delete has purged the chunks) is an error at once, not
// a wait for chunks that will never come (jetstream's GetBytes waits until
// its context's deadline: an hour here). Once its meta goes too, it is
// ErrObjectNotFound.
func TestCheckpointReadOfChunksThatWentGivesUp(t *testing.T) {
	servers(t, func(t *testing.T, e env) {
		ctx := ctxFor(t, time.Hour)
		c, err := OpenCheckpoints(ctx, e.js, e.topo)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.js.DeleteObjectStore(context.Background(), e.topo.CheckpointBucket()) })
		data := ckptBytes(7)
		if err := c.Put(ctx, 0, 7, data); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Get(ctx, 0, 7); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get: %d bytes, %v", len(got), err)
		}
		info, err := c.Store().GetInfo(ctx, CheckpointName(0, 7))
		if err != nil {
			t.Fatal(err)
		}
		s, err := e.js.Stream(ctx, "OBJ_"+e.topo.CheckpointBucket())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx, jetstream.WithPurgeSubject("$O."+e.topo.CheckpointBucket()+".C."+info.NUID)); err != nil {
			t.Fatal(err)
		}
		hangGuard(t, "Get of an object without its chunks", func() {
			got, err := c.Get(ctx, 0, 7)
			if err == nil || got != nil {
				t.Errorf("get of an object without its chunks: %d bytes, %v", len(got), err)
			}
		})
		// Listed still (its meta is there).
		if l, err := c.List(ctx); err != nil || len(l) != 1 {
			t.Fatalf("list: %v, %v", l, err)
		}
		if err := c.Delete(ctx, 0, 7); err != nil {
			t.Fatal(err)
		}
		hangGuard(t, "Get of a deleted object", func() {
			if _, err := c.Get(ctx, 0, 7); !errors.Is(err, jetstream.ErrObjectNotFound) {
				t.Errorf("get of a deleted object: %v", err)
			}
		})
		if l, err := c.List(ctx); err != nil || len(l) != 0 {
			t.Fatalf("list after the delete: %v, %v", l, err)
		}
	})
}

// TestCheckpointCallsUnderConcurrentDeletes: a writer keeps putting
// checkpoints and deleting all but the newest two (as a worker prunes)
// while a reader lists and reads the oldest it listed, with a context that
// lasts an hour. Every listing returns, and every read returns either the
// object's exact bytes or ErrObjectNotFound (deleted before or while it
// was read). Against nats-server 2.9.10, jetstream's own GetBytes of such
// a checkpoint waited until its context's end in about half the reads.
func TestCheckpointCallsUnderConcurrentDeletes(t *testing.T) {
	servers(t, func(t *testing.T, e env) {
		ctx := ctxFor(t, time.Hour)
		c, err := OpenCheckpoints(ctx, e.js, e.topo)
		if err != nil {
			t.Fatal(err)
		}
		c.SetLimits(CheckpointLimits{GoneEvery: 20 * time.Millisecond})
		t.Cleanup(func() { _ = e.js.DeleteObjectStore(context.Background(), e.topo.CheckpointBucket()) })
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			var kept []uint64
			for seq := uint64(1); wctx.Err() == nil; seq++ {
				if err := c.Put(wctx, 1, seq, ckptBytes(seq)); err != nil {
					if wctx.Err() == nil {
						t.Errorf("put %d: %v", seq, err)
					}
					return
				}
				for kept = append(kept, seq); len(kept) > 2; kept = kept[1:] {
					if err := c.Delete(wctx, 1, kept[0]); err != nil && wctx.Err() == nil {
						t.Errorf("delete %d: %v", kept[0], err)
					}
				}
			}
		}()
		read, gone := 0, 0
		for i := 0; i < 40; i++ {
			var seqs []uint64
			hangGuard(t, "Seqs", func() { seqs, err = c.Seqs(ctx, 1) })
			if err != nil {
				t.Fatalf("list %d: %v", i, err)
			}
			if len(seqs) == 0 {
				i--
				continue
			}
			seq := seqs[len(seqs)-1]
			hangGuard(t, "Get", func() {
				got, err := c.Get(ctx, 1, seq)
				switch {
				case errors.Is(err, jetstream.ErrObjectNotFound):
					gone++
				case err != nil:
					t.Errorf("get %d: %v", seq, err)
				case !bytes.Equal(got, ckptBytes(seq)):
					t.Errorf("get %d: %d bytes, not the ones put", seq, len(got))
				default:
					read++
				}
			})
		}
		stop()
		wg.Wait()
		t.Logf("%d read whole, %d gone before or while read", read, gone)
		// The deleted ones leave no meta behind (their delete markers
		// are purged, by Delete or by the next Prune). A put cancelled by
		// stop may still land after a first prune: prune until it holds.
		s, err := e.js.Stream(ctx, "OBJ_"+e.topo.CheckpointBucket())
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 30*time.Second, func() string {
			if err := c.Prune(ctx, 1, 2); err != nil {
				return err.Error()
			}
			info, err := s.Info(ctx, jetstream.WithSubjectFilter("$O."+e.topo.CheckpointBucket()+".M.>"))
			if err != nil {
				return err.Error()
			}
			if seqs, err := c.Seqs(ctx, 1); err != nil || len(seqs) != 2 || len(info.State.Subjects) != 2 {
				return fmt.Sprintf("after pruning to 2: checkpoints %v (%v), %d meta subjects", seqs, err, len(info.State.Subjects))
			}
			return ""
		})
	})
}

// TestCheckpointCallsAreBounded: with a bound no call can meet, each call
// ends with a timeout after its two tries, although its caller's context
// has no deadline — the bounds the worker and push rely on, since neither
// passes one.
func TestCheckpointCallsAreBounded(t *testing.T) {
	e := sharedEnv(t)
	ctx := context.Background()
	c, err := OpenCheckpoints(ctx, e.js, e.topo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.js.DeleteObjectStore(context.Background(), e.topo.CheckpointBucket()) })
	if err := c.Put(ctx, 0, 1, ckptBytes(1)); err != nil {
		t.Fatal(err)
	}
	c.SetLimits(CheckpointLimits{Call: time.Nanosecond, Rate: 1e18})
	for name, call := range map[string]func() error{
		"list":   func() error { _, err := c.List(ctx); return err },
		"get":    func() error { _, err := c.Get(ctx, 0, 1); return err },
		"put":    func() error { return c.Put(ctx, 0, 2, ckptBytes(2)) },
		"delete": func() error { return c.Delete(ctx, 0, 1) },
		"prune":  func() error { return c.Prune(ctx, 0, 0) },
		"push":   func() error { _, err := c.PushList(ctx); return err },
	} {
		var err error
		hangGuard(t, name, func() { err = call() })
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 tries") {
			t.Errorf("%s with an impossible bound: %v; want a timeout after 2 tries", name, err)
		}
	}
}

// hangAfter is how long hangGuard waits.
var hangAfter = 2 * time.Minute
