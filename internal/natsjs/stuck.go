package natsjs

import "time"

// StuckWatch decides when a durable consumer that keeps answering
// "JetStream system temporarily unavailable" (IsUnavailable) is to be
// given up on and created again (NewConsumerFrom): an election takes
// seconds, but nats-server 2.9.10 can leave a consumer created shortly
// before two of three nodes crashed without a leader for good. The zero
// value never gives up before a first unavailable answer; After is how
// long the answers must last.
type StuckWatch struct {
	// After is how long lookups must keep answering unavailable.
	After time.Duration
	since time.Time // the first unavailable answer of the current run of them
}

// Observe records the outcome err of a lookup (or creation) of the
// consumer at now. stuck says that it has answered unavailable since at
// least After ago (with no success in between); unavailable is how long
// that has lasted (0 when the last answer was not unavailable). A
// success ends the run of unavailable answers; another error (a timeout,
// a lost connection) neither starts nor ends one.
func (w *StuckWatch) Observe(err error, now time.Time) (stuck bool, unavailable time.Duration) {
	switch {
	case err == nil:
		w.since = time.Time{}
		return false, 0
	case IsUnavailable(err):
		if w.since.IsZero() {
			w.since = now
		}
		d := now.Sub(w.since)
		return d >= w.After, d
	default:
		return false, 0
	}
}

// Reset forgets the unavailable answers so far: call it once the
// consumer was created again.
func (w *StuckWatch) Reset() { w.since = time.Time{} }
