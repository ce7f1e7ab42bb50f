package cpustat_test

import (
	"context"
	"fmt"

	"treasure/internal/cpustat"
)

// A load generator's accounting: everything but itself, sampled before and
// after the run.
func Example() {
	s := cpustat.New(cpustat.Options{
		Metrics:   []string{"http://127.0.0.1:8081/metrics", "http://127.0.0.1:8082/metrics"},
		Redis:     []string{"redis://127.0.0.1:6379/0"},
		Processes: []string{"postgres", "nats-server"},
	})
	defer s.Close()
	ctx := context.Background()
	before, err := s.Sample(ctx)
	if err != nil {
		fmt.Println("before:", err) // the sources that failed are left out
	}
	moves := int64(0) // ... run the scenario, count the moves
	after, _ := s.Sample(ctx)
	r := cpustat.Between(before, after)
	fmt.Printf("server CPU %.0f µs/move, %.2f cores\n", r.MicrosPerMove(moves), r.Cores())
	for _, src := range r.Sources {
		fmt.Printf("%s: %.0f µs/move, RSS %d MB\n", src.Name, src.MicrosPerMove(moves), src.MaxRSSBytes>>20)
	}
}
