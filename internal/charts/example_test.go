package charts_test

import (
	"log"

	"treasure/internal/charts"
)

func ExampleWriteSVG() {
	secs := []float64{0, 1, 2, 3}
	err := charts.WriteSVG("latency.svg", charts.Chart{
		Title: "move → update latency", XLabel: "seconds since t0", YLabel: "ms", LogY: true,
		Series: []charts.Series{
			{Name: "p50", X: secs, Y: []float64{0.4, 0.5, 0.7, 0.6}},
			{Name: "p99", X: secs, Y: []float64{3, 14, 120, 30}},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
}
