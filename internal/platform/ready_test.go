package platform

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestReadyGaugeFollowsReady: the gauge is 0 while ready fails and 1 once
// it returns nil, labelled with the service.
func TestReadyGaugeFollowsReady(t *testing.T) {
	var up atomic.Bool
	reg := prometheus.NewRegistry()
	reg.MustRegister(ReadyGauge("ranker", func() error {
		if up.Load() {
			return nil
		}
		return errors.New("starting")
	}))
	for _, want := range []string{"0", "1"} {
		exp := "# HELP treasure_service_ready 1 while the service answers /readyz with 200, else 0.\n# TYPE treasure_service_ready gauge\n" +
			`treasure_service_ready{service="ranker"} ` + want + "\n"
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "treasure_service_ready"); err != nil {
			t.Fatal(err)
		}
		up.Store(true)
	}
}
