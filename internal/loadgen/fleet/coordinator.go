package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// proc is one running worker as the coordinator sees it.
type proc interface {
	stdin() io.WriteCloser
	stdout() io.Reader
	// wait waits for the worker to exit once its stdout is read to the end
	// (or abandoned after a protocol error) and returns how it exited.
	wait() error
	// kill ends the worker at once; safe to call more than once and after
	// it exited.
	kill()
	// describe names the worker in errors ("pid 1234"); logTail is the
	// end of its stderr ("" when none), for errors.
	describe() string
	logTail() string
}

// starter starts worker k.
type starter func(k int) (proc, error)

// codec decodes and merges a worker's bodies: R is the engine's result,
// S its per-second statistics.
type codec[R, S any] struct {
	mergeResult func(dst, src *R)
	mergeSecond func(dst, src *S)
}

// coordOptions configure coordinate.
type coordOptions struct {
	configs []Config // one per worker
	start   starter
	// connected runs once every worker is ready (posts the drop, say) and
	// returns t0; nil means time.Now. startDelay is added to t0 so that
	// every worker has the start message before its schedule begins.
	connected  func(ctx context.Context) (time.Time, error)
	startDelay time.Duration
	// end, when closed, ends every worker's schedule early (they drain
	// and send their results as at the schedule's end).
	end <-chan struct{}
	// progress gets the total of connected players when it changed, at
	// most every 250 ms, and once when all are connected.
	progress func(connected int)
	// stopTimeout bounds how long workers may take to send their results
	// after ctx ends; then they are killed.
	stopTimeout time.Duration
}

type event struct {
	k      int
	m      message
	exited bool
	err    error // read or exit error, with exited
}

type wstate struct {
	p         proc
	connected int
	ready     bool
	lastSec   int
	result    bool
	exited    bool
	errText   string // the worker's own error message
}

// coordinate runs one worker per config and drives the protocol (see
// protocol.go): it sends each its config, waits until every worker is
// ready, calls connected, sends start with t0, merges the seconds by index
// (report gets second i once every worker still running has sent it, in
// order, from the calling goroutine) and merges the results in worker
// order.
//
// When ctx ends, every worker is told to stop and has stopTimeout to send
// its result; the merged result is returned as for a run that ended by
// itself. A worker that sends an error, exits without a result or exits
// non-zero fails the run: the others are killed and coordinate returns an
// error naming the worker and its last log lines. coordinate returns only
// once every worker it started has exited.
func coordinate[R, S any](ctx context.Context, o coordOptions, c codec[R, S], report func(i int, s *S)) (*R, error) {
	if len(o.configs) == 0 {
		return nil, errors.New("no workers")
	}
	if o.stopTimeout <= 0 {
		o.stopTimeout = 30 * time.Second
	}
	total := 0
	for _, cfg := range o.configs {
		total += cfg.Players
	}
	events := make(chan event)
	var ws []*wstate
	var failure error
	fail := func(err error) {
		if failure == nil {
			failure = err
			for _, w := range ws {
				if !w.exited {
					w.p.kill()
				}
			}
		}
	}
	for k, cfg := range o.configs {
		p, err := o.start(k)
		if err != nil {
			fail(fmt.Errorf("starting worker %d: %w", k, err))
			break
		}
		w := &wstate{p: p, lastSec: -1}
		ws = append(ws, w)
		go readWorker(k, p, events)
		c := cfg
		if err := (&lineWriter{w: p.stdin()}).send(message{Type: msgConfig, Config: &c}); err != nil {
			p.kill() // its exit event reports it
		}
	}

	send := func(m message) {
		for _, w := range ws {
			if !w.exited {
				_ = (&lineWriter{w: w.p.stdin()}).send(m) // a dead worker reports through its exit
			}
		}
	}
	results := make([]*R, len(ws))
	pending := map[int]*S{}
	next := 0
	emit := func(final bool) {
		for {
			s, ok := pending[next]
			if !ok {
				if !final || len(pending) == 0 {
					return
				}
				next++
				continue
			}
			if !final {
				for _, w := range ws {
					if !w.result && !w.exited && w.lastSec < next {
						return
					}
				}
			}
			delete(pending, next)
			if report != nil {
				report(next, s)
			}
			next++
		}
	}
	var lastProgress time.Time
	lastSum := -1
	progress := func() {
		if o.progress == nil {
			return
		}
		sum := 0
		for _, w := range ws {
			sum += w.connected
		}
		if now := time.Now(); sum != lastSum && (sum == total || now.Sub(lastProgress) >= 250*time.Millisecond) {
			lastProgress, lastSum = now, sum
			o.progress(sum)
		}
	}

	started, stopping := false, false
	done := ctx.Done()
	end := o.end
	var stopTimer <-chan time.Time
	exited := 0
	for exited < len(ws) {
		select {
		case <-done:
			done = nil
			stopping = true
			send(message{Type: msgStop})
			t := time.NewTimer(o.stopTimeout)
			defer t.Stop()
			stopTimer = t.C
		case <-end:
			end = nil
			send(message{Type: msgEnd})
		case <-stopTimer:
			stopTimer = nil
			fail(fmt.Errorf("workers did not finish within %v of the stop: killed", o.stopTimeout))
		case e := <-events:
			w := ws[e.k]
			if e.exited {
				w.exited = true
				exited++
				if failure == nil && (e.err != nil || !w.result) {
					fail(workerError(e.k, o.configs[e.k], w, e.err))
				}
				emit(false)
				continue
			}
			switch e.m.Type {
			case msgConnected:
				w.connected = e.m.N
				progress()
			case msgReady:
				w.ready = true
				w.connected = o.configs[e.k].Players
				if started || stopping || failure != nil || !allReady(ws) {
					continue
				}
				started = true
				progress()
				t0 := time.Now()
				if o.connected != nil {
					var err error
					if t0, err = o.connected(ctx); err != nil {
						if ctx.Err() == nil {
							fail(fmt.Errorf("every worker connected, then: %w", err))
						}
						continue // the stop follows from ctx
					}
				}
				send(message{Type: msgStart, T0: t0.Add(o.startDelay).UnixNano()})
			case msgSecond:
				s := new(S)
				if err := json.Unmarshal(e.m.Body, s); err != nil {
					fail(fmt.Errorf("worker %d: second %d: %w", e.k, e.m.I, err))
					continue
				}
				if e.m.I > w.lastSec {
					w.lastSec = e.m.I
				}
				if dst, ok := pending[e.m.I]; ok {
					c.mergeSecond(dst, s)
				} else if e.m.I >= next {
					pending[e.m.I] = s
				}
				emit(false)
			case msgResult:
				r := new(R)
				if err := json.Unmarshal(e.m.Body, r); err != nil {
					fail(fmt.Errorf("worker %d: result: %w", e.k, err))
					continue
				}
				results[e.k] = r
				w.result = true
				emit(false)
			case msgError:
				w.errText = e.m.Error
			default:
				fail(fmt.Errorf("worker %d: unexpected message %q", e.k, e.m.Type))
			}
		}
	}
	if failure != nil {
		return nil, failure
	}
	emit(true)
	merged := results[0]
	for _, r := range results[1:] {
		c.mergeResult(merged, r)
	}
	return merged, nil
}

func allReady(ws []*wstate) bool {
	for _, w := range ws {
		if !w.ready {
			return false
		}
	}
	return true
}

// readWorker forwards worker k's messages to events, then its exit.
func readWorker(k int, p proc, events chan<- event) {
	r := newLineReader(p.stdout())
	for {
		m, err := r.next()
		if err != nil {
			var readErr error
			if !errors.Is(err, io.EOF) {
				readErr = err
				p.kill()
			}
			events <- event{k: k, exited: true, err: errors.Join(readErr, p.wait())}
			return
		}
		events <- event{k: k, m: m}
	}
}

// workerError says which worker failed and how, in words for a person.
func workerError(k int, cfg Config, w *wstate, exitErr error) error {
	var why string
	switch {
	case w.errText != "":
		why = w.errText
	case exitErr != nil:
		why = "exited: " + exitErr.Error()
	default:
		why = "exited without a result"
	}
	msg := fmt.Sprintf("worker %d (%s, players %d to %d) failed: %s", k, w.p.describe(),
		cfg.FirstPlayer, cfg.FirstPlayer+cfg.Players-1, why)
	if tail := w.p.logTail(); tail != "" {
		msg += "; its last log lines:\n" + tail
	}
	return errors.New(msg)
}
