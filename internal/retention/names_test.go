package retention_test

import (
	"testing"

	"treasure/internal/natsjs"
	"treasure/internal/retention"
	"treasure/services/proximity"
	"treasure/services/ranker"
)

// TestHolderNamesAreTheServices: retention holds the subjects for the
// consumers the services create (it does not import them).
func TestHolderNamesAreTheServices(t *testing.T) {
	topo := natsjs.Topology{Prefix: "p", Partitions: 3}
	for k := 0; k < 3; k++ {
		if got, want := retention.ProximityDurable(topo, k), proximity.Durable(topo, k); got != want {
			t.Fatalf("partition %d: retention names %q, the worker %q", k, got, want)
		}
	}
	// A zero Ranker has the zero topology: its name is the suffix.
	if got, want := retention.RankerDurable(natsjs.Topology{}), (&ranker.Ranker{}).Durable(); got != want {
		t.Fatalf("retention names the ranker's consumer %q, the ranker %q", got, want)
	}
}
