package ingest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Without Redis no move can be acked (the player's state is written there
// first), so ingest is not ready while Redis does not answer.
func TestNotReadyWithoutRedis(t *testing.T) {
	t.Parallel()
	e := newEnv(t, small)
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })
	in, err := New(Options{Graph: e.g, Part: e.part, Topology: e.topo, NC: e.nc, JS: e.js,
		Redis: dead, RedisPrefix: e.rprefix, JWTSecret: testSecret, RateLimit: noLimit})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := in.Ready()
		if err != nil && strings.Contains(err.Error(), "redis") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready() = %v with Redis unreachable, want a redis error", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
