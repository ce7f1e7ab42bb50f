package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func ptr[T any](v T) *T                  { return &v }
func lines(s string) []string            { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }
func newBar(w *bytes.Buffer, c *clock, terminal bool, total int64) *Bar {
	return New(w, Options{Label: "IN", Unit: "msgs", Total: total, Terminal: ptr(terminal), Every: 5 * time.Second, Now: c.now})
}

// TestPlainLinesEveryInterval: off a terminal, a line appears only once
// the interval has passed, each ending in a newline, with rate and ETA;
// Finish writes the last line.
func TestPlainLinesEveryInterval(t *testing.T) {
	var w bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := newBar(&w, c, false, 10_000)
	c.advance(time.Second)
	b.Set(1000)
	if w.Len() != 0 {
		t.Fatalf("drew before the interval: %q", w.String())
	}
	c.advance(4 * time.Second) // 5 s in, 2,000 done: 400/s, 8,000 left = 20 s
	b.Set(2000)
	want := "IN 2,000/10,000 msgs ( 20%), 400 msgs/s, ETA 20s\n"
	if w.String() != want {
		t.Fatalf("got %q, want %q", w.String(), want)
	}
	c.advance(5 * time.Second)
	b.Set(10_000)
	b.Finish()
	b.Set(10_000) // after Finish: nothing
	got := lines(w.String())
	if len(got) != 3 || got[2] != "IN 10,000/10,000 msgs (100%), 1,000 msgs/s, done in 10s" {
		t.Fatalf("lines %q", got)
	}
	if strings.Contains(w.String(), "\r") {
		t.Fatal("carriage return off a terminal")
	}
}

// TestTerminalRedrawsInPlace: on a terminal the bar is redrawn in place
// (carriage return, erase line, no newline) at most ten times a second,
// shows the bar, and Finish ends the line.
func TestTerminalRedrawsInPlace(t *testing.T) {
	var w bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := newBar(&w, c, true, 100)
	c.advance(50 * time.Millisecond)
	b.Set(10)
	if w.Len() != 0 {
		t.Fatalf("drew within 100 ms: %q", w.String())
	}
	c.advance(950 * time.Millisecond) // 1 s, 50 done: 50/s, 1 s left
	b.Set(50)
	want := "\r\x1b[KIN [===============>              ] 50/100 msgs ( 50%), 50 msgs/s, ETA 1s"
	if w.String() != want {
		t.Fatalf("got %q\nwant %q", w.String(), want)
	}
	b.Finish()
	if !strings.HasSuffix(w.String(), "done in 1s\n") || strings.Count(w.String(), "\n") != 1 {
		t.Fatalf("finish: %q", w.String())
	}
}

// TestUnknownTotal: without a total there is no percentage and no ETA.
func TestUnknownTotal(t *testing.T) {
	var w bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := newBar(&w, c, false, 0)
	c.advance(6 * time.Second)
	b.Set(1_234_567)
	if got := w.String(); got != "IN 1,234,567 msgs, 205,761 msgs/s, 6s elapsed\n" {
		t.Fatalf("got %q", got)
	}
}

// TestDisabledDrawsNothing.
func TestDisabledDrawsNothing(t *testing.T) {
	var w bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	b := New(&w, Options{Total: 10, Disabled: true, Terminal: ptr(true), Now: c.now})
	c.advance(time.Minute)
	b.Set(5)
	b.Finish()
	if w.Len() != 0 {
		t.Fatalf("disabled bar drew %q", w.String())
	}
}

// TestBufferIsNotATerminal: detection says a buffer is not a terminal.
func TestBufferIsNotATerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) {
		t.Fatal("a buffer taken for a terminal")
	}
	b := New(&bytes.Buffer{}, Options{})
	if b.term {
		t.Fatal("New detected a terminal in a buffer")
	}
}
