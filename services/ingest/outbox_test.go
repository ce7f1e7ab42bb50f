package ingest

import (
	"bytes"
	"fmt"
	"testing"

	"treasure/internal/game"
)

// TestOutboxKeepsOrderAndBounds: replies filled in any order come out in
// reservation order; the ring grows to its bound and then makes the reader
// wait until the writer takes replies.
func TestOutboxKeepsOrderAndBounds(t *testing.T) {
	const max = 40 // grows 16 → 32 → 40
	o := newOutbox(max)
	done := make(chan struct{})
	var ids []uint64
	for range max {
		id, ok := o.reserve(done)
		if !ok {
			t.Fatal("reserve refused below the bound")
		}
		ids = append(ids, id)
	}
	// Full: a reserve waits, and gives up when done closes.
	waited := make(chan bool)
	go func() {
		_, ok := o.reserve(done)
		waited <- ok
	}()
	// Fill from the back; nothing is taken while the oldest is empty.
	for i := max - 1; i >= 1; i-- {
		o.deliver(ids[i], reply{seq: uint64(i)})
	}
	if frame, _ := o.take(nil); len(frame) != 0 {
		t.Fatalf("took %q before the oldest reply was there", frame)
	}
	o.deliver(ids[0], reply{seq: 0, code: game.CodeBadJSON, msg: "x"})
	frame, more := o.take(nil)
	if more {
		t.Fatal("more after taking everything")
	}
	lines := bytes.Split(frame, []byte("\n"))
	if len(lines) != max || string(lines[0]) != `{"type":"error","seq":0,"code":"bad_json","message":"x"}` {
		t.Fatalf("took %d lines, first %s", len(lines), lines[0])
	}
	for i := 1; i < max; i++ {
		if want := fmt.Sprintf(`{"type":"ack","seq":%d}`, i); string(lines[i]) != want {
			t.Fatalf("line %d is %s, want %s", i, lines[i], want)
		}
	}
	// The waiting reserve got its slot once the writer took replies.
	if ok := <-waited; !ok {
		t.Fatal("reserve gave up although slots were freed")
	}
	// Full again (one slot in use, max-1 more): then done ends the wait.
	for range max - 1 {
		if _, ok := o.reserve(done); !ok {
			t.Fatal("reserve refused below the bound")
		}
	}
	go func() {
		_, ok := o.reserve(done)
		waited <- ok
	}()
	close(done)
	if ok := <-waited; ok {
		t.Fatal("reserve on a full ring succeeded after done")
	}
}

// TestManyMovesThroughASmallQueue: with a reply queue of 2, a frame of 30
// moves is read in pieces and answered whole, in order.
func TestManyMovesThroughASmallQueue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	s := e.start(t, func(o *Options) { o.MaxQueue = 2 })
	c := s.dial(t, "chatty")
	w := newWalker(e.g, 4)
	var lines []string
	var seqs []uint64
	for i := range 30 {
		seq, p := w.step(2 + i%4)
		lines = append(lines, moveLine(seq, p))
		seqs = append(seqs, seq)
		if i%5 == 0 {
			lines = append(lines, "{oops")
			seqs = append(seqs, 0)
		}
	}
	c.send(lines...)
	for _, seq := range seqs {
		if seq == 0 {
			c.expectError(0, "bad_json")
			continue
		}
		c.expectAck(seq)
	}
}
