package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// hooks are what a worker's engine calls back into the protocol.
type hooks struct {
	// end is closed when the coordinator ends the schedule early: the
	// engine stops sending, drains and returns its result.
	end <-chan struct{}
	// progress reports how many players are connected so far.
	progress func(connected int)
	// connected tells the coordinator every socket is open and waits for
	// its start message; it returns t0.
	connected func(ctx context.Context) (time.Time, error)
	// second sends second i's statistics (any JSON-encodable value).
	second func(i int, s any)
}

// runShare runs one worker's share and returns its result, any
// JSON-encodable value. Cancelling ctx means stop sending, drain, and
// return the result so far.
type runShare func(ctx context.Context, c Config, h hooks) (any, error)

// serveWorker is the worker's side of the protocol: it reads the config
// from in, runs run, and writes progress, readiness, seconds and the
// result (or the error) to out. An end message closes hooks.end; a stop
// message or end of file on in cancels run's context; so does ctx. It returns run's error, or a
// protocol error.
func serveWorker(ctx context.Context, in io.Reader, out io.Writer, run runShare) error {
	r := newLineReader(in)
	w := &lineWriter{w: out}
	first, err := r.next()
	if err != nil {
		return fmt.Errorf("worker: reading config: %w", err)
	}
	if first.Type != msgConfig || first.Config == nil {
		return fmt.Errorf("worker: first message is %q, want %q", first.Type, msgConfig)
	}
	cfg := *first.Config

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := make(chan int64, 1)
	end := make(chan struct{})
	go func() {
		ended := false
		for {
			m, err := r.next()
			switch {
			case errors.Is(err, io.EOF):
				cancel(errors.New("coordinator gone (end of stdin)"))
				return
			case err != nil:
				cancel(err)
				return
			}
			switch m.Type {
			case msgStart:
				select {
				case start <- m.T0:
				default:
				}
			case msgEnd:
				if !ended {
					ended = true
					close(end)
				}
			case msgStop:
				cancel(errStopped)
			}
		}
	}()

	h := hooks{
		end:      end,
		progress: func(n int) { _ = w.send(message{Type: msgConnected, N: n}) },
		connected: func(ctx context.Context) (time.Time, error) {
			if err := w.send(message{Type: msgReady}); err != nil {
				return time.Time{}, err
			}
			select {
			case t0 := <-start:
				return time.Unix(0, t0), nil
			case <-ctx.Done():
				select {
				case t0 := <-start: // a start then a stop: the run began
					return time.Unix(0, t0), nil
				default:
					return time.Time{}, context.Cause(ctx)
				}
			}
		},
		second: func(i int, s any) {
			b, err := marshalBody(s)
			if err == nil {
				_ = w.send(message{Type: msgSecond, I: i, Body: b})
			}
		},
	}
	res, err := run(ctx, cfg, h)
	if err != nil {
		_ = w.send(message{Type: msgError, Error: err.Error()})
		return err
	}
	b, err := marshalBody(res)
	if err != nil {
		_ = w.send(message{Type: msgError, Error: err.Error()})
		return err
	}
	if err := w.send(message{Type: msgResult, Body: b}); err != nil {
		return fmt.Errorf("worker: sending result: %w", err)
	}
	return nil
}

// errStopped is the cause of a worker's context when the coordinator asked
// it to stop.
var errStopped = errors.New("stopped by the coordinator")
