package natsjs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestStuckWatch walks a StuckWatch through a run of unavailable answers:
// it gives up only once they have lasted After, a success starts the
// count again, other errors (a timeout) do not touch it, and Reset
// forgets it.
func TestStuckWatch(t *testing.T) {
	unavail := fmt.Errorf("consumer x on S: %w", &jetstream.APIError{Code: 503, ErrorCode: errCodeUnavailable, Description: "JetStream system temporarily unavailable"})
	notFound := &jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeConsumerNotFound, Description: "consumer not found"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	w := StuckWatch{After: 30 * time.Second}
	steps := []struct {
		err   error
		at    int
		stuck bool
		for_  int
	}{
		{nil, 0, false, 0},
		{unavail, 1, false, 0},
		{unavail, 20, false, 19},
		{context.DeadlineExceeded, 25, false, 0}, // a timeout: the run goes on
		{notFound, 26, false, 0},                 // not "unavailable" either
		{unavail, 30, false, 29},
		{unavail, 31, true, 30},
		{unavail, 45, true, 44},
		{nil, 46, false, 0}, // answered: start again
		{unavail, 47, false, 0},
		{unavail, 76, false, 29},
		{unavail, 77, true, 30},
	}
	for i, s := range steps {
		stuck, d := w.Observe(s.err, at(s.at))
		if stuck != s.stuck || d != time.Duration(s.for_)*time.Second {
			t.Fatalf("step %d (%v at %ds): stuck %v for %v, want %v for %ds", i, s.err, s.at, stuck, d, s.stuck, s.for_)
		}
	}
	w.Reset()
	if stuck, d := w.Observe(unavail, at(100)); stuck || d != 0 {
		t.Fatalf("after Reset: stuck %v for %v, want a new run", stuck, d)
	}
	if !IsUnavailable(unavail) || IsUnavailable(errors.New("JetStream system temporarily unavailable")) {
		t.Fatal("IsUnavailable must go by the API error code")
	}
	// After 0: the first unavailable answer gives up (tests' setting).
	var z StuckWatch
	if stuck, _ := z.Observe(unavail, at(0)); !stuck {
		t.Fatal("After 0: not stuck at the first unavailable answer")
	}
}
