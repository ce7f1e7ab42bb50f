package loadgen

import "testing"

// A reordered proximity update breaks SPEC's move order: a failure.
func TestReorderedFails(t *testing.T) {
	if r := (&Result{}); r.Failed() {
		t.Fatal("an empty result failed")
	}
	if r := (&Result{Reordered: 1}); !r.Failed() {
		t.Fatal("a reordered update did not fail the run")
	}
}
