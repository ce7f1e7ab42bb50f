package testenv

import (
	"testing"
	"time"
)

// pollEvery is the pause between two checks of WaitFor.
const pollEvery = 5 * time.Millisecond

// WaitFor polls cond until it returns "" (done), and fails the test with
// cond's last complaint once timeout has passed (nats-server's checkFor).
// Tests wait for a state with it rather than sleeping and asserting; the
// timeout bounds a test that would otherwise hang, it is not a figure the
// test asserts. cond runs on the test's goroutine.
func WaitFor(tb testing.TB, timeout time.Duration, cond func() string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(pollEvery)
	}
}

// WaitUntil is WaitFor for a condition that has no complaint of its own:
// it fails with what.
func WaitUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	WaitFor(tb, timeout, func() string {
		if cond() {
			return ""
		}
		return what
	})
}
