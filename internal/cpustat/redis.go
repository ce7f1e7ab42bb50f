package cpustat

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// readRedis reads one Redis server's INFO server, cpu and memory sections.
func (s *Sampler) readRedis(ctx context.Context, u string, rdb *redis.Client, badURL error) Source {
	src := Source{Key: KindRedis + " " + u, Name: "redis " + hostOf(u), Kind: KindRedis}
	if badURL != nil {
		src.Err = fmt.Errorf("redis %s: %w", u, badURL)
		return src
	}
	src.Name = "redis " + rdb.Options().Addr
	text, err := rdb.Info(ctx, "server", "cpu", "memory").Result()
	if err == nil {
		err = fromInfo(&src, text)
	}
	if err != nil {
		src.Err = fmt.Errorf("redis %s: %w", rdb.Options().Addr, err)
	}
	return src
}

// fromInfo fills src from the text of Redis INFO: CPU is used_cpu_sys +
// used_cpu_user + used_cpu_sys_children + used_cpu_user_children (seconds),
// RSS used_memory_rss, the instance run_id.
func fromInfo(src *Source, text string) error {
	kv := make(map[string]string)
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("info: line %q is not key:value", line)
		}
		kv[k] = v
	}
	var errs []error
	num := func(k string) float64 {
		v, ok := kv[k]
		if !ok {
			errs = append(errs, fmt.Errorf("info: %s missing", k))
			return 0
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("info: %s: %w", k, err))
		}
		return f
	}
	src.CPUSeconds = num("used_cpu_sys") + num("used_cpu_user") + num("used_cpu_sys_children") + num("used_cpu_user_children")
	src.RSSBytes = uint64(num("used_memory_rss"))
	src.Instance = kv["run_id"]
	return errors.Join(errs...)
}
