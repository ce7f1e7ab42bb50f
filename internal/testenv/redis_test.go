package testenv

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func keysWithPrefix(t *testing.T, rdb *redis.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan: %v", err)
	}
	slices.Sort(out)
	return out
}

// fillRedis writes the same key names any test would, under prefix: a
// leaderboard holding name and enough plain keys to need several SCAN rounds
// at cleanup.
func fillRedis(t *testing.T, rdb *redis.Client, prefix, name string) {
	t.Helper()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	pipe.ZAdd(ctx, prefix+"lb", redis.Z{Score: 1, Member: name})
	for i := range 2500 {
		pipe.Set(ctx, fmt.Sprintf("%sk:%d", prefix, i), name, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// checkRedis checks that prefix holds exactly what fillRedis(name) wrote.
func checkRedis(t *testing.T, rdb *redis.Client, prefix, name string) {
	t.Helper()
	ctx := context.Background()
	members, err := rdb.ZRange(ctx, prefix+"lb", 0, -1).Result()
	if err != nil || !slices.Equal(members, []string{name}) {
		t.Errorf("leaderboard under %s = %v, %v; want only %q", prefix, members, err, name)
	}
	if v, err := rdb.Get(ctx, prefix+"k:7").Result(); err != nil || v != name {
		t.Errorf("%sk:7 = %q, %v; want %q", prefix, v, err, name)
	}
	if n := len(keysWithPrefix(t, rdb, prefix)); n != 2501 {
		t.Errorf("keys under %s = %d, want 2501", prefix, n)
	}
}

// TestRedisPrefixesIsolateAndCleanUp runs test b inside test a, both writing
// the same key names: each sees only its own, b's cleanup leaves a's keys
// alone, and after both nothing is left.
func TestRedisPrefixesIsolateAndCleanUp(t *testing.T) {
	t.Parallel()
	observer, _ := Redis(t)
	var pa, pb string
	t.Run("a", func(t *testing.T) {
		rdb, prefix := Redis(t)
		pa = prefix
		fillRedis(t, rdb, prefix, "a")
		t.Run("b", func(t *testing.T) {
			rdb, prefix := Redis(t)
			pb = prefix
			fillRedis(t, rdb, prefix, "b")
			checkRedis(t, rdb, prefix, "b")
		})
		if left := keysWithPrefix(t, rdb, pb); len(left) > 0 {
			t.Errorf("%d keys left under %s after its test ended", len(left), pb)
		}
		checkRedis(t, rdb, prefix, "a")
	})
	if pa == "" || pb == "" || pa == pb {
		t.Fatalf("prefixes %q and %q, want two distinct", pa, pb)
	}
	if left := keysWithPrefix(t, observer, pa); len(left) > 0 {
		t.Errorf("%d keys left under %s after cleanup", len(left), pa)
	}
}

func TestDeleteKeysRefusesDangerousPrefixes(t *testing.T) {
	t.Parallel()
	rdb, prefix := Redis(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, prefix+"keep", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "*", prefix + "?", "t[0-9]"} {
		if _, err := DeleteKeys(ctx, rdb, bad); err == nil {
			t.Errorf("DeleteKeys(%q) did not refuse", bad)
		}
	}
	if n, err := rdb.Exists(ctx, prefix+"keep").Result(); err != nil || n != 1 {
		t.Errorf("key deleted by a refused call: %d, %v", n, err)
	}
	if n, err := DeleteKeys(ctx, rdb, prefix); err != nil || n != 1 {
		t.Errorf("DeleteKeys(%q) = %d, %v; want 1", prefix, n, err)
	}
}
