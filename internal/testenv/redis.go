package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Redis connects to the shared Redis server (TREASURE_REDIS_URL, default
// redis://127.0.0.1:6379/0) and returns a client and a fresh key prefix of the
// form "t0123456789ab:". The test must put every key it creates under that
// prefix; on cleanup every key under it is deleted (SCAN + UNLINK) and the
// client is closed. The test fails at once, saying how to start the server,
// when Redis does not answer.
func Redis(tb testing.TB) (*redis.Client, string) {
	tb.Helper()
	url := RedisURL()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("testenv: %s: %v", EnvRedisURL, err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		tb.Fatalf("testenv: Redis at %s does not answer: %v; "+hint, opts.Addr, err, EnvRedisURL)
	}
	prefix := Prefix(tb) + ":"
	tb.Cleanup(func() {
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if _, err := DeleteKeys(ctx, rdb, prefix); err != nil {
			tb.Errorf("testenv: cleanup: %v", err)
		}
	})
	return rdb, prefix
}

// DeleteKeys deletes every key that starts with prefix, scanning the whole
// keyspace in batches, and returns how many it deleted. prefix must not be
// empty and must not contain glob characters (*?[\).
func DeleteKeys(ctx context.Context, rdb redis.UniversalClient, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("delete keys: empty prefix")
	}
	for _, r := range prefix {
		switch r {
		case '*', '?', '[', ']', '\\':
			return 0, fmt.Errorf("delete keys: prefix %q has a glob character", prefix)
		}
	}
	deleted := 0
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return deleted, fmt.Errorf("scan %s*: %w", prefix, err)
		}
		if len(keys) > 0 {
			n, err := rdb.Unlink(ctx, keys...).Result()
			if err != nil {
				return deleted, fmt.Errorf("unlink %s*: %w", prefix, err)
			}
			deleted += int(n)
		}
		if next == 0 {
			return deleted, nil
		}
		cursor = next
	}
}
