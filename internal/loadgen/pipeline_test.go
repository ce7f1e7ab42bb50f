package loadgen

import (
	"context"
	"errors"
	"testing"
	"time"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/stack"
	"treasure/internal/testenv"
)

const pipelineSecret = "pipeline-secret"

// pipeline is the real pipeline (internal/stack: the four services over
// real JetStream, Redis and PostgreSQL) started in this process on fresh
// streams, keys and schema, stopped on cleanup.
type pipeline struct {
	g            *graph.Graph
	ingest, push string // ws:// base URLs
	topo         natsjs.Topology
}

func startPipeline(t *testing.T) pipeline {
	t.Helper()
	g := amsterdam(t)
	part, err := graph.Partition(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	nc, js, prefix := testenv.JetStream(t)
	rdb, rprefix := testenv.Redis(t)
	pool, _ := testenv.Postgres(t)
	small := natsjs.Limits{MaxBytes: 64 << 20, MaxMsgs: 200_000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	st, err := stack.New(stack.Options{Graph: g, Part: part, Radius: 2000, Topology: topo, NC: nc, JS: js,
		Redis: rdb, RedisPrefix: rprefix, Postgres: pool, JWTSecret: pipelineSecret})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("stack: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("stack did not stop within 30 s")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for st.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("stack not ready: %v", st.Ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pipeline{g: g, ingest: "ws://" + st.IngestAddr().String(), push: "ws://" + st.PushAddr().String(), topo: topo}
}

func TestRunOpenSteadyOnThePipeline(t *testing.T) {
	p := startPipeline(t)
	r, err := RunOpen(context.Background(), OpenOptions{
		Ingest: []string{p.ingest}, Push: []string{p.push}, Graph: p.g, Secret: pipelineSecret,
		PlayerPrefix: "steady-", Players: 100, Seed: 1,
		Schedule: Schedule{Rate: 5, Duration: 2 * time.Second},
	}, func(s Second) {
		t.Logf("second %d: sent %d acked %d answered %d", s.Index, s.Sent, s.Acked, s.Answered)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *r)
	if r.Sent == 0 || r.Acked != r.Sent || r.Answered != r.Acked || r.Failed() || len(r.Errors) != 0 {
		t.Fatalf("accounting: %+v", *r)
	}
}
