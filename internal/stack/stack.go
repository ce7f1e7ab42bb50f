// Package stack runs the four services of treasure in one process — ingest,
// proximity, ranker and push — over connections the caller made. It is what
// `treasure dev` runs and what the end-to-end tests start, so both exercise
// exactly the services that run as separate processes in production; only
// the wiring is shared here.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/ratelimit"
	"treasure/services/ingest"
	"treasure/services/proximity"
	"treasure/services/push"
	"treasure/services/ranker"
)

// Options are the stack's connections and settings. Everything but the
// addresses and RateLimit is required.
type Options struct {
	Graph    *graph.Graph
	Part     []uint32 // graph.Partition(Graph, Topology.Partitions)
	Radius   uint32
	Topology natsjs.Topology
	NC       *nats.Conn
	JS       jetstream.JetStream
	Redis    redis.UniversalClient
	// RedisPrefix starts every Redis key of the stack (scores, player
	// states, dropped ids).
	RedisPrefix string
	Postgres    *pgxpool.Pool
	JWTSecret   string
	RateLimit   ratelimit.Limit // zero: SPEC's default
	// Limits are the access limits (platform.LimitsFromEnv); zero
	// fields keep the services' defaults.
	Limits platform.Limits
	// PushSendBuffer is push.Options.SendBuffer (0: the kernel's).
	PushSendBuffer int
	// CheckpointEvery is proximity's and push's checkpoint interval
	// (TREASURE_CHECKPOINT_EVERY): 0 means their default, negative
	// disables checkpoints.
	CheckpointEvery time.Duration
	// ProximityPartitions are the partitions the stack's proximity worker
	// serves; empty: all (a test runs a worker for the others itself).
	ProximityPartitions []int
	// Listen addresses; "127.0.0.1:0" picks free ports (the default).
	IngestAddr, PushAddr, ProximityAddr, RankerAddr string
	Log                                             *slog.Logger
	Registry                                        *prometheus.Registry // nil: a fresh one
	// NoProximity leaves the proximity worker out (Stack.Proximity is nil
	// and ProximityAddr unused): the partitions are served by workers run
	// elsewhere, as a test that changes the worker count runs them.
	NoProximity bool
}

// Stack is the four services and their HTTP servers.
type Stack struct {
	Ingest    *ingest.Ingest
	Proximity *proximity.Worker
	Ranker    *ranker.Ranker
	Push      *push.Server
	Registry  *prometheus.Registry

	servers []*platform.HTTPServer
	ingSrv  *platform.HTTPServer
	pushSrv *platform.HTTPServer
}

// New builds the services and binds their listeners (so the URLs are known
// before Run).
func New(o Options) (*Stack, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = platform.NewRegistry()
	}
	if o.RateLimit == (ratelimit.Limit{}) {
		o.RateLimit = ratelimit.Default
	}
	for _, a := range []*string{&o.IngestAddr, &o.PushAddr, &o.ProximityAddr, &o.RankerAddr} {
		if *a == "" {
			*a = "127.0.0.1:0"
		}
	}
	verifier, err := auth.NewVerifier(o.JWTSecret)
	if err != nil {
		return nil, err
	}
	s := &Stack{Registry: o.Registry}
	if !o.NoProximity {
		s.Proximity, err = proximity.New(proximity.Options{
			Graph: o.Graph, Part: o.Part, Partitions: o.ProximityPartitions, Radius: o.Radius, Topology: o.Topology, NC: o.NC, JS: o.JS,
			Log: o.Log.With("service", "proximity"), Registerer: o.Registry, CheckpointEvery: o.CheckpointEvery,
		})
		if err != nil {
			return nil, err
		}
	}
	s.Ingest, err = ingest.New(ingest.Options{
		Graph: o.Graph, Part: o.Part, Topology: o.Topology, NC: o.NC, JS: o.JS,
		Redis: o.Redis, RedisPrefix: o.RedisPrefix, Verifier: verifier, JWTSecret: o.JWTSecret,
		RateLimit: o.RateLimit, Log: o.Log.With("service", "ingest"), Registerer: o.Registry,
		MaxConnsPerAddr: o.Limits.MaxConnsPerAddr, MaxSocketsPerPlayer: o.Limits.MaxSocketsPerPlayer,
	})
	if err != nil {
		return nil, err
	}
	s.Ranker, err = ranker.New(ranker.Options{
		Topology: o.Topology, NC: o.NC, JS: o.JS, Pool: o.Postgres, Redis: o.Redis, RedisPrefix: o.RedisPrefix,
		Logger: o.Log.With("service", "ranker"), Registerer: o.Registry,
	})
	if err != nil {
		return nil, err
	}
	s.Push, err = push.New(push.Options{
		Graph: o.Graph, Topology: o.Topology, NC: o.NC, JS: o.JS, Redis: o.Redis, RedisPrefix: o.RedisPrefix, Postgres: o.Postgres,
		Verifier: verifier, SendBuffer: o.PushSendBuffer, Log: o.Log.With("service", "push"), Registerer: o.Registry,
		MaxConnsPerAddr: o.Limits.MaxConnsPerAddr, MaxSocketsPerPlayer: o.Limits.MaxSocketsPerPlayer,
		LeaderboardRate: o.Limits.LeaderboardRate, CheckpointEvery: o.CheckpointEvery,
	})
	if err != nil {
		return nil, err
	}
	serve := func(name, addr string, api http.Handler, ready func() error) (*platform.HTTPServer, error) {
		if err := o.Registry.Register(platform.ReadyGauge(name, ready)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		mux := platform.OpsMux(o.Registry, ready)
		switch {
		case api != nil && name == "push":
			mux.Handle("/", api) // the live page at / (push.Handler)
		case api != nil:
			mux.Handle("/v1/", api)
		default:
			platform.RegisterPprof(mux) // internal ports only
		}
		srv := &platform.HTTPServer{Name: name, Addr: addr, Handler: mux, Log: o.Log}
		o.Limits.Apply(srv)
		if _, err := srv.Listen(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		s.servers = append(s.servers, srv)
		return srv, nil
	}
	if s.ingSrv, err = serve("ingest", o.IngestAddr, s.Ingest.Handler(), s.Ingest.Ready); err != nil {
		return nil, err
	}
	if s.pushSrv, err = serve("push", o.PushAddr, s.Push.Handler(), s.Push.Ready); err != nil {
		return nil, s.closeListeners(err)
	}
	if s.Proximity != nil {
		if _, err = serve("proximity", o.ProximityAddr, nil, s.Proximity.Ready); err != nil {
			return nil, s.closeListeners(err)
		}
	}
	if _, err = serve("ranker", o.RankerAddr, nil, s.Ranker.Ready); err != nil {
		return nil, s.closeListeners(err)
	}
	return s, nil
}

func (s *Stack) closeListeners(err error) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, srv := range s.servers {
		_ = srv.Run(ctx) // shuts the bound listener down at once
	}
	return err
}

// IngestAddr and PushAddr return where the player-facing services listen.
func (s *Stack) IngestAddr() net.Addr { return s.ingSrv.ListenAddr() }
func (s *Stack) PushAddr() net.Addr   { return s.pushSrv.ListenAddr() }

// Ready reports nil once all four services (three with NoProximity) are
// ready.
func (s *Stack) Ready() error {
	err := errors.Join(s.Ingest.Ready(), s.Ranker.Ready(), s.Push.Ready())
	if s.Proximity != nil {
		err = errors.Join(err, s.Proximity.Ready())
	}
	return err
}

// Run runs the services and their servers until ctx ends or one fails.
func (s *Stack) Run(ctx context.Context) error {
	runners := []platform.Runner{s.Ingest, s.Ranker, s.Push}
	if s.Proximity != nil {
		runners = append(runners, s.Proximity)
	}
	for _, srv := range s.servers {
		runners = append(runners, srv)
	}
	return platform.RunGroup(ctx, runners...)
}
