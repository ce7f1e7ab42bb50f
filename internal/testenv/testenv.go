// Package testenv gives tests real servers — NATS with JetStream, Redis and
// PostgreSQL — isolated per test, so that tests run in parallel
// (t.Parallel) and never touch a running demo:
//
//   - NATS and JetStream: the shared server at TREASURE_NATS_URL; a test
//     names its streams and subjects with its own Prefix, and
//     DeleteStreamsOnCleanup removes those streams at the end. EmbeddedNATS
//     starts a private in-process JetStream server instead, for tests that
//     stop, restart or fill up their server; EmbeddedCluster a private
//     cluster of three routed in-process nodes, for tests of replicated
//     streams that lose a node; ProcessCluster the same of nats-server
//     processes (the installed binary), for tests that crash nodes
//     (SIGKILL) or take the quorum away.
//   - Redis: the shared server at TREASURE_REDIS_URL; each test gets its own
//     key prefix, and every key under it is deleted at the end.
//   - PostgreSQL: the database at TREASURE_DATABASE_URL (created if missing);
//     each test gets a fresh schema, set as the search_path of its pool or URL
//     and dropped with everything in it at the end.
//
// The shared servers are found, or started, by `scripts/services.sh ensure`
// (which `make test` runs first). When one is absent the test fails, naming
// the server, the address and that command: a test that needs a server never
// passes silently without it.
//
// Every helper takes a testing.TB, registers its cleanup with tb.Cleanup and
// is safe to call from parallel tests.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"
)

// The environment variables that point testenv at other servers; their
// defaults are SPEC's.
const (
	EnvNATSURL     = "TREASURE_NATS_URL"
	EnvRedisURL    = "TREASURE_REDIS_URL"
	EnvDatabaseURL = "TREASURE_DATABASE_URL"
)

const (
	defaultNATSURL     = "nats://127.0.0.1:4222"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable"
)

// setupTimeout bounds every connection, creation and cleanup step, so that a
// wedged server fails the test instead of hanging the suite.
const setupTimeout = 30 * time.Second

// hint is appended to every "server absent" failure.
const hint = "start the servers with `scripts/services.sh ensure` (make test does), or point %s at one"

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// NATSURL returns the shared NATS server's URL: TREASURE_NATS_URL or
// nats://127.0.0.1:4222.
func NATSURL() string { return env(EnvNATSURL, defaultNATSURL) }

// RedisURL returns the shared Redis server's URL: TREASURE_REDIS_URL or
// redis://127.0.0.1:6379/0.
func RedisURL() string { return env(EnvRedisURL, defaultRedisURL) }

// DatabaseURL returns the shared PostgreSQL database's URL:
// TREASURE_DATABASE_URL or postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable.
func DatabaseURL() string { return env(EnvDatabaseURL, defaultDatabaseURL) }

// Prefix returns a fresh token unique to this call: "t" followed by 12
// lowercase hex digits (13 characters). It is valid as a JetStream stream or
// consumer name, a subject token, a Redis key prefix and an unquoted
// PostgreSQL identifier.
func Prefix(tb testing.TB) string {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("testenv: random prefix: %v", err)
	}
	return "t" + hex.EncodeToString(b[:])
}
