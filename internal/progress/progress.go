// Package progress reports how far a long read has come, on stderr: a
// bar redrawn in place with the rate and the time left when stderr is a
// terminal, and a plain line every few seconds otherwise (a log file, CI),
// so that a pipe or a file never fills with carriage returns.
//
// A Bar draws only when it is updated (no goroutine of its own): a read
// that stalls shows the last state until it moves again. It is safe for
// concurrent use.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Options configures a Bar.
type Options struct {
	// Label names what is read ("IN", "export").
	Label string
	// Unit names what is counted ("msgs").
	Unit string
	// Total is the count at which the work is done; 0 when unknown (no
	// percentage, no ETA).
	Total int64
	// Terminal forces the terminal (true) or plain (false) rendering;
	// nil detects it from the writer (an *os.File that is a terminal).
	Terminal *bool
	// Every is the least time between two plain lines (default 5 s);
	// a terminal bar redraws at most ten times a second.
	Every time.Duration
	// Width is the terminal bar's width in cells (default 30).
	Width int
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Disabled draws nothing (--quiet, --json runs that want a clean
	// stderr).
	Disabled bool
}

// Bar is one progress report.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	o        Options
	term     bool
	start    time.Time
	last     time.Time // last draw
	done     int64
	finished bool
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// New returns a bar writing to w (stderr, typically).
func New(w io.Writer, o Options) *Bar {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Every <= 0 {
		o.Every = 5 * time.Second
	}
	if o.Width <= 0 {
		o.Width = 30
	}
	if o.Unit == "" {
		o.Unit = "msgs"
	}
	b := &Bar{w: w, o: o}
	if o.Terminal != nil {
		b.term = *o.Terminal
	} else {
		b.term = IsTerminal(w)
	}
	b.start = o.Now()
	b.last = b.start
	return b
}

// SetTotal changes the total (0: unknown).
func (b *Bar) SetTotal(total int64) {
	b.mu.Lock()
	b.o.Total = total
	b.mu.Unlock()
}

// Set records that done units are done, drawing when it is time to.
func (b *Bar) Set(done int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished || b.o.Disabled {
		b.done = done
		return
	}
	b.done = done
	now := b.o.Now()
	every := b.o.Every
	if b.term {
		every = 100 * time.Millisecond
	}
	if now.Sub(b.last) < every {
		return
	}
	b.last = now
	b.draw(now, false)
}

// Add records n more units done.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	d := b.done + n
	b.mu.Unlock()
	b.Set(d)
}

// Finish draws the final state (with a newline on a terminal) and stops
// the bar; later calls draw nothing.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished || b.o.Disabled {
		b.finished = true
		return
	}
	b.finished = true
	b.draw(b.o.Now(), true)
}

// draw writes the current state (mu held).
func (b *Bar) draw(now time.Time, final bool) {
	elapsed := now.Sub(b.start)
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(b.done) / s
	}
	var sb strings.Builder
	if b.term {
		sb.WriteString("\r\x1b[K")
	}
	if b.o.Label != "" {
		sb.WriteString(b.o.Label)
		sb.WriteByte(' ')
	}
	total := b.o.Total
	if total > 0 {
		frac := min(float64(b.done)/float64(total), 1)
		if b.term {
			filled := int(frac * float64(b.o.Width))
			sb.WriteByte('[')
			sb.WriteString(strings.Repeat("=", filled))
			if filled < b.o.Width {
				sb.WriteByte('>')
				sb.WriteString(strings.Repeat(" ", b.o.Width-filled-1))
			}
			sb.WriteString("] ")
		}
		fmt.Fprintf(&sb, "%s/%s %s (%3.0f%%)", count(b.done), count(total), b.o.Unit, 100*frac)
	} else {
		fmt.Fprintf(&sb, "%s %s", count(b.done), b.o.Unit)
	}
	fmt.Fprintf(&sb, ", %s %s/s", count(int64(rate+0.5)), b.o.Unit)
	switch {
	case final:
		fmt.Fprintf(&sb, ", done in %s", round(elapsed))
	case total > 0 && rate > 0 && b.done < total:
		eta := time.Duration(float64(total-b.done) / rate * float64(time.Second))
		fmt.Fprintf(&sb, ", ETA %s", round(eta))
	default:
		fmt.Fprintf(&sb, ", %s elapsed", round(elapsed))
	}
	if !b.term || final {
		sb.WriteByte('\n')
	}
	io.WriteString(b.w, sb.String())
}

// round shortens a duration for people: whole seconds above 10 s,
// tenths below.
func round(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// count writes n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
