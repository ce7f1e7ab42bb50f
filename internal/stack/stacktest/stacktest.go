// Package stacktest starts the four services in one process, on the real
// NATS, Redis and PostgreSQL of internal/testenv, for tests that need a
// whole pipeline to talk to (the load generator's, the CLI's). Each call
// gets its own stream prefix, Redis key prefix and PostgreSQL schema, so
// such tests run in parallel.
package stacktest

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/ratelimit"
	"treasure/internal/stack"
	"treasure/internal/testenv"
)

// Options of Start. Graph and Secret are required.
type Options struct {
	Graph      *graph.Graph
	Secret     string          // the services' JWT secret
	Partitions int             // graph partitions; default 2
	RateLimit  ratelimit.Limit // zero: SPEC's default
	// Redis, when set, is used instead of the shared server (a private
	// one a fault test kills), with RedisPrefix (default "t:").
	Redis       *redis.Client
	RedisPrefix string
	// Limits are the access limits; the zero value turns the leaderboard
	// endpoints' rate limit off (tests poll them far above 20/s) and keeps
	// the other defaults.
	Limits platform.Limits
	// NATSURL, when set, is a private JetStream server (an embedded one a
	// fault test fills up or stops) used instead of the shared one.
	NATSURL string
	// Postgres, when set, is used instead of a fresh schema of the shared
	// database (a private server a fault test stops); Schema is then "".
	Postgres *pgxpool.Pool
	// StreamLimits, when not zero, bound every stream instead of the small
	// default (64 MiB, 200,000 messages); natsjs.Limits' rules apply
	// (negative: unlimited, no reservation on the server).
	StreamLimits natsjs.Limits
	// PushSendBuffer is push.Options.SendBuffer (0: the kernel's).
	PushSendBuffer int
	// In and Out, when not zero, are the IN and OUT streams' caps
	// (default 64 MiB / 200,000 messages each).
	In, Out natsjs.Limits
	// CheckpointEvery is the services' checkpoint interval (stack.Options);
	// 0: their default.
	CheckpointEvery time.Duration
	// ProximityPartitions: the partitions the stack's proximity worker
	// serves (stack.Options); empty: all.
	ProximityPartitions []int
	// Log, when set, receives the services' logs.
	Log *slog.Logger
	// Replicas is every stream's number of copies (natsjs.Topology); 0:
	// the server's default. For a cluster at NATSURL.
	Replicas int
	// NoProximity: the stack runs no proximity worker; the test runs
	// them beside it (stack.Options).
	NoProximity bool
	// Before, when set, runs once the streams exist and before any
	// service starts: a replay fills the log there, a test on a private
	// server registers the streams' deletion there (a cleanup registered
	// then runs once the stack has stopped).
	Before func(topo natsjs.Topology, js jetstream.JetStream)
	// ReadyWithin bounds the wait for every service to be ready; 0: 30 s.
	ReadyWithin time.Duration
}

// Pipeline is a running stack and where to reach it.
type Pipeline struct {
	Stack        *stack.Stack
	Topology     natsjs.Topology
	IngestURL    string // ws:// base URL of ingest
	PushURL      string // ws:// base URL of push
	NATSURL      string
	StreamPrefix string
	// RedisPrefix and Schema are where the ranker keeps the board (Redis
	// key prefix, PostgreSQL schema of TREASURE_DATABASE_URL's database).
	RedisPrefix string
	Schema      string
	// The stack's connections and partition assignment, for checks.
	NC       *nats.Conn
	JS       jetstream.JetStream
	Postgres *pgxpool.Pool
	Redis    redis.UniversalClient
	Part     []uint32
}

// Start runs a stack until the test ends (its cleanup stops it, and
// reports an error when it does not stop within 30 s) and returns once
// every service is ready, failing the test when that takes over
// o.ReadyWithin (30 s).
func Start(tb testing.TB, o Options) Pipeline {
	tb.Helper()
	if o.Partitions == 0 {
		o.Partitions = 2
	}
	part, err := graph.Partition(o.Graph, o.Partitions)
	if err != nil {
		tb.Fatal(err)
	}
	var (
		nc      *nats.Conn
		js      jetstream.JetStream
		prefix  string
		natsURL = testenv.NATSURL()
	)
	if o.NATSURL == "" {
		nc, js, prefix = testenv.JetStream(tb)
	} else {
		natsURL = o.NATSURL
		nc = testenv.ConnectNATS(tb, o.NATSURL)
		var err error
		if js, err = jetstream.New(nc); err != nil {
			tb.Fatal(err)
		}
		prefix = testenv.Prefix(tb)
	}
	rdb, rprefix := o.Redis, o.RedisPrefix
	if rdb == nil {
		rdb, rprefix = testenv.Redis(tb)
	} else if rprefix == "" {
		rprefix = "t:"
	}
	pool, schema := o.Postgres, ""
	if pool == nil {
		pool, schema = testenv.Postgres(tb)
	}
	small := natsjs.Limits{MaxBytes: 64 << 20, MaxMsgs: 200_000}
	if o.StreamLimits != (natsjs.Limits{}) {
		small = o.StreamLimits
	}
	topo := natsjs.Topology{Prefix: prefix, Partitions: o.Partitions, Replicas: o.Replicas, In: small, Out: small, Upd: small, DLQ: small}
	if o.In != (natsjs.Limits{}) {
		topo.In = o.In
	}
	if o.Out != (natsjs.Limits{}) {
		topo.Out = o.Out
	}
	if err := topo.Ensure(context.Background(), js); err != nil {
		tb.Fatal(err)
	}
	if o.Before != nil {
		o.Before(topo, js)
	}
	limits := o.Limits
	if limits == (platform.Limits{}) {
		limits.LeaderboardRate = platform.Off
	}
	st, err := stack.New(stack.Options{Graph: o.Graph, Part: part, Radius: 2000, Topology: topo, NC: nc, JS: js,
		Redis: rdb, RedisPrefix: rprefix, Postgres: pool, JWTSecret: o.Secret, RateLimit: o.RateLimit, Limits: limits,
		PushSendBuffer:  o.PushSendBuffer,
		CheckpointEvery: o.CheckpointEvery, ProximityPartitions: o.ProximityPartitions, NoProximity: o.NoProximity, Log: o.Log})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				tb.Errorf("stack: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("stack did not stop within 30 s")
		}
	})
	if o.ReadyWithin == 0 {
		o.ReadyWithin = 30 * time.Second
	}
	testenv.WaitFor(tb, o.ReadyWithin, func() string {
		if err := st.Ready(); err != nil {
			return "stack not ready: " + err.Error()
		}
		return ""
	})
	return Pipeline{Stack: st, Topology: topo, IngestURL: "ws://" + st.IngestAddr().String(), PushURL: "ws://" + st.PushAddr().String(),
		NATSURL: natsURL, StreamPrefix: prefix, RedisPrefix: rprefix, Schema: schema,
		NC: nc, JS: js, Postgres: pool, Redis: rdb, Part: part}
}
