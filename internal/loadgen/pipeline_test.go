package loadgen

import (
	"context"
	"testing"
	"time"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/stack/stacktest"
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
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: pipelineSecret})
	return pipeline{g: g, ingest: sp.IngestURL, push: sp.PushURL, topo: sp.Topology}
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
