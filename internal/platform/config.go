// Package platform is the plumbing every treasure process shares: typed
// configuration from the environment, the slog logger, the operations
// endpoints (/healthz, /readyz, /metrics) and the lifecycle helpers that run a
// process's components in one group and shut them down within a deadline.
//
// Nothing here knows about the game; services import platform, never the
// other way round.
package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"treasure/internal/natsjs"
)

// The environment variables FromEnv reads.
const (
	EnvNATSURL       = "TREASURE_NATS_URL"
	EnvRedisURL      = "TREASURE_REDIS_URL"
	EnvDatabaseURL   = "TREASURE_DATABASE_URL"
	EnvGraph         = "TREASURE_GRAPH"
	EnvRadius        = "TREASURE_RADIUS"
	EnvJWTSecret     = "TREASURE_JWT_SECRET"
	EnvIngestAddr    = "TREASURE_INGEST_ADDR"
	EnvPushAddr      = "TREASURE_PUSH_ADDR"
	EnvProximityAddr = "TREASURE_PROXIMITY_ADDR"
	EnvRankerAddr    = "TREASURE_RANKER_ADDR"
	EnvDevNATSAddr   = "TREASURE_DEV_NATS_ADDR"
	EnvPartitions    = "TREASURE_PARTITIONS"
	EnvStreamPrefix  = "TREASURE_STREAM_PREFIX"
	EnvLogFormat     = "TREASURE_LOG_FORMAT"
	EnvLogLevel      = "TREASURE_LOG_LEVEL"
	// EnvStreamMaxBytes and EnvStreamMaxMsgs, when set, cap each of the
	// four JetStream streams (IN, OUT, UPD, DLQ) instead of natsjs's
	// defaults. Not in SPEC: tests and small deployments set them, because
	// the file store reserves every stream's byte cap on the server.
	EnvStreamMaxBytes = "TREASURE_STREAM_MAX_BYTES"
	EnvStreamMaxMsgs  = "TREASURE_STREAM_MAX_MSGS"
	// EnvStreamReplicas sets the replicas of every stream (1 to 5; 3 on a
	// 3-node JetStream cluster). Unset: 1.
	EnvStreamReplicas = "TREASURE_STREAM_REPLICAS"
	// EnvCheckpointEvery is how often each proximity partition, and push,
	// writes a checkpoint of its state (a Go duration of at least 1s, or "off").
	EnvCheckpointEvery = "TREASURE_CHECKPOINT_EVERY"
	// EnvRetention is the age past which retention removes messages of IN
	// and OUT once every holder is past them (a Go duration of at least
	// 1m, or "off": no retention, the streams fill to their caps).
	EnvRetention = "TREASURE_RETENTION"
	// EnvArchiveDir is where `treasure archive` writes the log's Parquet
	// archive and where replays read it; EnvArchiveAddr its ops port.
	EnvArchiveDir  = "TREASURE_ARCHIVE_DIR"
	EnvArchiveAddr = "TREASURE_ARCHIVE_ADDR"
)

// The defaults SPEC.md gives.
const (
	DefaultNATSURL       = "nats://127.0.0.1:4222"
	DefaultRedisURL      = "redis://127.0.0.1:6379/0"
	DefaultDatabaseURL   = "postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable"
	DefaultRadius        = 2000
	DefaultIngestAddr    = "127.0.0.1:8081"
	DefaultPushAddr      = "127.0.0.1:8082"
	DefaultProximityAddr = "127.0.0.1:8083"
	DefaultRankerAddr    = "127.0.0.1:8084"
	DefaultDevNATSAddr   = "127.0.0.1:4223"
	DefaultPartitions    = 4
	DefaultStreamPrefix  = "treasure"
	// DefaultCheckpointEvery is TREASURE_CHECKPOINT_EVERY's default.
	DefaultCheckpointEvery = 10 * time.Second
	// MinCheckpointEvery is the shortest checkpoint interval accepted.
	MinCheckpointEvery = time.Second
	// DefaultRetention is TREASURE_RETENTION's default; MinRetention the
	// shortest accepted.
	DefaultRetention = 24 * time.Hour
	MinRetention     = time.Minute
	// DefaultArchiveDir and DefaultArchiveAddr: TREASURE_ARCHIVE_DIR's and
	// TREASURE_ARCHIVE_ADDR's defaults.
	DefaultArchiveDir  = "./archive"
	DefaultArchiveAddr = "127.0.0.1:8085"
)

// Config is the configuration every treasure process reads from the
// environment. A zero Config is not valid; build one with FromEnv (or write a
// literal in tests). Flags may override fields after FromEnv; call Validate
// again after changing them.
type Config struct {
	// NATSURL is the NATS server list (comma-separated URLs, as nats.go takes).
	NATSURL string
	// NATSURLSet reports whether TREASURE_NATS_URL was given: `treasure dev`
	// embeds its own JetStream server when it was not.
	NATSURLSet bool
	// RedisURL is a go-redis URL (redis://, rediss:// or unix://).
	RedisURL string
	// DatabaseURL is a pgx connection string (URL or key=value form).
	DatabaseURL string
	// Graph is the graph file to load (.gr, .gr.gz or a snapshot); empty when
	// unset, which only commands that need no graph accept.
	Graph string
	// Radius is the proximity radius in the graph's length units, > 0.
	Radius uint32
	// JWTSecret signs and checks HS256 tokens. Empty when unset: see
	// RequireJWTSecret.
	JWTSecret string
	// Listen addresses (host:port) of the four services and of the embedded
	// NATS server of `treasure dev`.
	IngestAddr, PushAddr, ProximityAddr, RankerAddr, DevNATSAddr string
	// Partitions is the number of graph partitions K (TREASURE_PARTITIONS):
	// every service computes the same graph.Partition(g, K).
	Partitions int
	// StreamPrefix names the JetStream streams and subjects
	// (TREASURE_STREAM_PREFIX), see natsjs.Topology.
	StreamPrefix string
	// StreamMaxBytes and StreamMaxMsgs cap each stream's bytes and
	// messages (TREASURE_STREAM_MAX_BYTES, TREASURE_STREAM_MAX_MSGS);
	// 0, when unset, keeps natsjs's per-stream defaults.
	StreamMaxBytes, StreamMaxMsgs int64
	// StreamReplicas is every stream's replica count (TREASURE_STREAM_REPLICAS);
	// 0 means the server's default, 1.
	StreamReplicas int
	// CheckpointEvery is how often each proximity partition, and push,
	// writes a checkpoint (TREASURE_CHECKPOINT_EVERY, at least MinCheckpointEvery);
	// negative ("off") disables checkpoints, 0 in a literal means the
	// default.
	CheckpointEvery time.Duration
	// Retention is the age bound of IN and OUT (TREASURE_RETENTION, see
	// internal/retention); negative ("off") runs no retention, 0 in a
	// literal means the default.
	Retention time.Duration
	// ArchiveDir is the archive's directory (TREASURE_ARCHIVE_DIR) and
	// ArchiveAddr the archiver's ops address (TREASURE_ARCHIVE_ADDR).
	ArchiveDir, ArchiveAddr string
	// Log selects the log format and level.
	Log LogConfig
}

// FromEnv reads the configuration through getenv (os.Getenv in a main, a map
// lookup in tests), applies SPEC's defaults to unset or empty variables and
// validates the result. The error names every variable that is wrong.
func FromEnv(getenv func(string) string) (Config, error) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := Config{
		NATSURL:       get(EnvNATSURL, DefaultNATSURL),
		NATSURLSet:    strings.TrimSpace(getenv(EnvNATSURL)) != "",
		RedisURL:      get(EnvRedisURL, DefaultRedisURL),
		DatabaseURL:   get(EnvDatabaseURL, DefaultDatabaseURL),
		Graph:         get(EnvGraph, ""),
		Radius:        DefaultRadius,
		JWTSecret:     getenv(EnvJWTSecret), // secrets are taken verbatim
		IngestAddr:    get(EnvIngestAddr, DefaultIngestAddr),
		PushAddr:      get(EnvPushAddr, DefaultPushAddr),
		ProximityAddr: get(EnvProximityAddr, DefaultProximityAddr),
		RankerAddr:    get(EnvRankerAddr, DefaultRankerAddr),
		DevNATSAddr:   get(EnvDevNATSAddr, DefaultDevNATSAddr),
		Partitions:    DefaultPartitions,
		StreamPrefix:  get(EnvStreamPrefix, DefaultStreamPrefix),

		CheckpointEvery: DefaultCheckpointEvery,
		Retention:       DefaultRetention,
		ArchiveDir:      get(EnvArchiveDir, DefaultArchiveDir),
		ArchiveAddr:     get(EnvArchiveAddr, DefaultArchiveAddr),
	}
	var errs []error
	if s := get(EnvCheckpointEvery, ""); s != "" {
		if strings.EqualFold(s, "off") {
			c.CheckpointEvery = -1
		} else if d, err := time.ParseDuration(s); err != nil || d < MinCheckpointEvery {
			errs = append(errs, fmt.Errorf("%s: want a duration of at least %v (like 10s) or \"off\", got %q", EnvCheckpointEvery, MinCheckpointEvery, s))
		} else {
			c.CheckpointEvery = d
		}
	}
	if s := get(EnvRetention, ""); s != "" {
		if strings.EqualFold(s, "off") {
			c.Retention = -1
		} else if d, err := time.ParseDuration(s); err != nil || d < MinRetention {
			errs = append(errs, fmt.Errorf("%s: want a duration of at least %v (like 24h) or \"off\", got %q", EnvRetention, MinRetention, s))
		} else {
			c.Retention = d
		}
	}
	if s := get(EnvPartitions, ""); s != "" {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 || k > 4096 {
			errs = append(errs, fmt.Errorf("%s: want an integer from 1 to 4096, got %q", EnvPartitions, s))
		} else {
			c.Partitions = k
		}
	}
	if s := get(EnvRadius, ""); s != "" {
		r, err := strconv.ParseUint(s, 10, 32)
		if err != nil || r == 0 {
			errs = append(errs, fmt.Errorf("%s: want a positive integer below 2^32, got %q", EnvRadius, s))
		} else {
			c.Radius = uint32(r)
		}
	}
	if s := get(EnvStreamReplicas, ""); s != "" {
		r, err := strconv.Atoi(s)
		if err != nil || r < 1 || r > 5 {
			errs = append(errs, fmt.Errorf("%s: want 1 to 5, got %q", EnvStreamReplicas, s))
		} else {
			c.StreamReplicas = r
		}
	}
	for _, v := range []struct {
		env string
		dst *int64
	}{{EnvStreamMaxBytes, &c.StreamMaxBytes}, {EnvStreamMaxMsgs, &c.StreamMaxMsgs}} {
		if s := get(v.env, ""); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("%s: want a positive integer, got %q", v.env, s))
			} else {
				*v.dst = n
			}
		}
	}
	lc, err := ParseLogConfig(get(EnvLogFormat, ""), get(EnvLogLevel, ""))
	if err != nil {
		errs = append(errs, err)
	}
	c.Log = lc
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Validate checks every field and returns all problems joined, each naming
// its environment variable.
func (c Config) Validate() error {
	var errs []error
	if err := natsjs.ValidPrefix(c.StreamPrefix); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvStreamPrefix, err))
	}
	if err := validNATSURL(c.NATSURL); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvNATSURL, err))
	}
	if _, err := redis.ParseURL(c.RedisURL); err != nil {
		errs = append(errs, fmt.Errorf("%s: %s", EnvRedisURL, maskSecrets(err.Error())))
	}
	if err := validDatabaseURL(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvDatabaseURL, err))
	}
	if c.Radius == 0 {
		errs = append(errs, fmt.Errorf("%s: must be positive", EnvRadius))
	}
	if c.StreamMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%s: must not be negative", EnvStreamMaxBytes))
	}
	if c.StreamMaxMsgs < 0 {
		errs = append(errs, fmt.Errorf("%s: must not be negative", EnvStreamMaxMsgs))
	}
	if c.CheckpointEvery > 0 && c.CheckpointEvery < MinCheckpointEvery {
		errs = append(errs, fmt.Errorf("%s: %v is shorter than %v", EnvCheckpointEvery, c.CheckpointEvery, MinCheckpointEvery))
	}
	for _, a := range []struct{ env, addr string }{
		{EnvIngestAddr, c.IngestAddr},
		{EnvPushAddr, c.PushAddr},
		{EnvProximityAddr, c.ProximityAddr},
		{EnvRankerAddr, c.RankerAddr},
		{EnvDevNATSAddr, c.DevNATSAddr},
		{EnvArchiveAddr, c.ArchiveAddr},
	} {
		if err := validAddr(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.env, err))
		}
	}
	return errors.Join(errs...)
}

// RequireJWTSecret returns an error when no JWT secret is configured. Every
// command but the demo calls it: the demo generates a secret instead.
func (c Config) RequireJWTSecret() error {
	if c.JWTSecret == "" {
		return fmt.Errorf("config: %s is required (the demo generates one; elsewhere set it)", EnvJWTSecret)
	}
	return nil
}

// LogValue renders the configuration for the one log line a process writes
// at start, with the JWT secret and any password or token in a URL masked.
func (c Config) LogValue() slog.Value {
	secret := "unset"
	if c.JWTSecret != "" {
		secret = "set (masked)"
	}
	graph := c.Graph
	if graph == "" {
		graph = "unset"
	}
	return slog.GroupValue(
		slog.String("nats_url", MaskURL(c.NATSURL)),
		slog.Bool("nats_url_set", c.NATSURLSet),
		slog.String("redis_url", MaskURL(c.RedisURL)),
		slog.String("database_url", MaskURL(c.DatabaseURL)),
		slog.String("graph", graph),
		slog.Uint64("radius", uint64(c.Radius)),
		slog.String("jwt_secret", secret),
		slog.String("ingest_addr", c.IngestAddr),
		slog.String("push_addr", c.PushAddr),
		slog.String("proximity_addr", c.ProximityAddr),
		slog.String("ranker_addr", c.RankerAddr),
		slog.String("dev_nats_addr", c.DevNATSAddr),
		slog.Int64("stream_max_bytes", c.StreamMaxBytes),
		slog.Int64("stream_max_msgs", c.StreamMaxMsgs),
		slog.Int("stream_replicas", c.StreamReplicas),
		slog.Duration("checkpoint_every", c.CheckpointEvery),
		slog.Duration("retention", c.Retention),
		slog.String("archive_dir", c.ArchiveDir),
		slog.String("archive_addr", c.ArchiveAddr),
		slog.String("log_format", c.Log.Format),
		slog.String("log_level", c.Log.Level.String()),
	)
}

const mask = "xxxxx"

// secretParam matches key=value settings that carry secrets, in a query
// string or a libpq key/value connection string.
var secretParam = regexp.MustCompile(`(?i)\b((?:ssl)?password|pass|token|secret)=('(?:[^'\\]|\\.)*'|[^&\s]*)`)

// MaskURL returns s with secrets replaced by "xxxxx": the password of every
// URL in a comma-separated list, a NATS URL's lone user (NATS reads it as a
// token), and password=, token= and secret= settings. Strings it cannot parse
// are masked by the key=value rule alone.
func MaskURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = maskOneURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func maskOneURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" && u.User == nil {
		return maskSecrets(s)
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), mask)
		} else if isNATSScheme(u.Scheme) && u.User.Username() != "" {
			u.User = url.User(mask)
		}
	}
	// url.URL.String escapes "xxxxx" as is; the query is masked textually so
	// that its order and encoding stay as given.
	u.RawQuery = maskSecrets(u.RawQuery)
	return u.String()
}

func maskSecrets(s string) string {
	return secretParam.ReplaceAllString(s, "${1}="+mask)
}

func isNATSScheme(s string) bool {
	switch strings.ToLower(s) {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

func validNATSURL(s string) error {
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			return fmt.Errorf("bad URL %q", MaskURL(p))
		}
		if !isNATSScheme(u.Scheme) {
			return fmt.Errorf("want nats://host:port, got %q", MaskURL(p))
		}
		if u.Hostname() == "" {
			return fmt.Errorf("no host in %q", MaskURL(p))
		}
		if port := u.Port(); port != "" {
			if err := validPort(port); err != nil {
				return fmt.Errorf("%q: %w", MaskURL(p), err)
			}
		}
	}
	return nil
}

func validDatabaseURL(s string) error {
	if _, err := pgconn.ParseConfig(s); err != nil {
		// pgconn's message quotes the input; mask it.
		return errors.New(maskSecrets(strings.ReplaceAll(err.Error(), s, MaskURL(s))))
	}
	return nil
}

func validAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", s)
	}
	return validPort(port)
}

func validPort(s string) error {
	if _, err := strconv.ParseUint(s, 10, 16); err != nil {
		return fmt.Errorf("bad port %q", s)
	}
	return nil
}
