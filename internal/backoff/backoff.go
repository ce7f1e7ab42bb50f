// Package backoff is treasure's one retry wait: exponential from a base,
// capped, optionally jittered, and a sleep that ends with its context.
// Every retry loop (a service that cannot start yet, a consumer or feed
// that failed, a load generator that cannot dial) uses it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults of Backoff.
const (
	DefaultBase = 100 * time.Millisecond
	DefaultMax  = 5 * time.Second
)

// Backoff hands out the waits of one retry loop: Base, then Factor times
// the last one, up to Max. A zero Backoff waits 100 ms, 200 ms, ... up to
// 5 s. It is not safe for concurrent use: each loop has its own.
type Backoff struct {
	Base   time.Duration // the first wait (default DefaultBase)
	Max    time.Duration // the longest wait (default DefaultMax)
	Factor int           // growth per attempt (default 2)
	// Jitter draws each wait uniformly from [d/2, d] instead of d, so that
	// many clients failing together do not retry together.
	Jitter bool

	next time.Duration
}

// Next returns the wait before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	base, limit := b.Base, b.Max
	if base <= 0 {
		base = DefaultBase
	}
	if limit <= 0 {
		limit = max(DefaultMax, base)
	}
	if b.next == 0 {
		b.next = min(base, limit)
	}
	factor := time.Duration(max(b.Factor, 2))
	d := b.next
	if b.next > limit/factor {
		b.next = limit
	} else {
		b.next *= factor
	}
	if b.Jitter {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

// Reset starts the waits again from Base (after a success).
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps Next() and reports whether it did; false means ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits d or until ctx is done, and reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool { return SleepOr(ctx, nil, d) }

// SleepOr waits d, or until ctx is done or stop is closed (a nil stop
// never is), and reports whether d passed.
func SleepOr(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}
