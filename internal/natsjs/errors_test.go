package natsjs

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestOutcomeUnknownOfAPIErrors: JetStream's answers are verdicts but for
// "duplicate message id is in process" (a replicated stream still storing
// an earlier copy: seen in the R3 cluster test as a false unavailable for
// a move that was stored), and wrapping keeps the reading.
func TestOutcomeUnknownOfAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"}, true},
		{fmt.Errorf("publish x: %w", &jetstream.APIError{Code: 409, ErrorCode: 10158}), true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"}, false},
	} {
		if got := OutcomeUnknown(tc.err); got != tc.want {
			t.Errorf("OutcomeUnknown(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if got := DuplicateInProcess(tc.err); got != tc.want {
			t.Errorf("DuplicateInProcess(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
