package platform

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestFromEnvDefaultsMatchSpec(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envMap(nil))
	if err != nil {
		t.Fatalf("FromEnv(empty): %v", err)
	}
	want := Config{
		NATSURL:       "nats://127.0.0.1:4222",
		RedisURL:      "redis://127.0.0.1:6379/0",
		DatabaseURL:   "postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable",
		Radius:        2000,
		IngestAddr:    "127.0.0.1:8081",
		PushAddr:      "127.0.0.1:8082",
		ProximityAddr: "127.0.0.1:8083",
		RankerAddr:    "127.0.0.1:8084",
		DevNATSAddr:   "127.0.0.1:4223",
		Partitions:    4,
		StreamPrefix:  "treasure",
		Log:           LogConfig{Format: "text", Level: slog.LevelInfo},

		CheckpointEvery: 10 * time.Second,
		Retention:       24 * time.Hour,
		ArchiveDir:      "./archive",
		ArchiveAddr:     "127.0.0.1:8085",
	}
	if c != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if c.NATSURLSet {
		t.Error("NATSURLSet is true with TREASURE_NATS_URL unset")
	}
	if err := c.RequireJWTSecret(); err == nil || !strings.Contains(err.Error(), EnvJWTSecret) {
		t.Errorf("RequireJWTSecret without a secret = %v, want an error naming %s", err, EnvJWTSecret)
	}
}

func TestFromEnvOverridesEveryVariable(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		EnvNATSURL:         "nats://10.0.0.1:4300,nats://10.0.0.2:4300",
		EnvRedisURL:        "redis://:pw@127.0.0.1:6380/3",
		EnvDatabaseURL:     "postgres://u:pw@127.0.0.1:5433/other?sslmode=disable",
		EnvGraph:           "/data/amsterdam.gr.gz",
		EnvRadius:          "750",
		EnvJWTSecret:       " s3cret ",
		EnvIngestAddr:      ":9081",
		EnvPushAddr:        "0.0.0.0:9082",
		EnvProximityAddr:   "[::1]:9083",
		EnvRankerAddr:      "localhost:0",
		EnvDevNATSAddr:     "127.0.0.1:5222",
		EnvPartitions:      "16",
		EnvStreamPrefix:    "demo",
		EnvStreamMaxBytes:  "67108864",
		EnvStreamMaxMsgs:   "200000",
		EnvStreamReplicas:  "3",
		EnvCheckpointEvery: "1m30s",
		EnvRetention:       "6h",
		EnvArchiveDir:      "/var/lib/treasure/archive",
		EnvArchiveAddr:     "127.0.0.1:9085",
		EnvLogFormat:       "JSON",
		EnvLogLevel:        "debug",
	}
	c, err := FromEnv(envMap(env))
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	want := Config{
		NATSURL:        env[EnvNATSURL],
		NATSURLSet:     true,
		RedisURL:       env[EnvRedisURL],
		DatabaseURL:    env[EnvDatabaseURL],
		Graph:          env[EnvGraph],
		Radius:         750,
		JWTSecret:      " s3cret ", // taken verbatim, spaces included
		IngestAddr:     ":9081",
		PushAddr:       "0.0.0.0:9082",
		ProximityAddr:  "[::1]:9083",
		RankerAddr:     "localhost:0",
		DevNATSAddr:    "127.0.0.1:5222",
		Partitions:     16,
		StreamPrefix:   "demo",
		StreamMaxBytes: 64 << 20,
		StreamMaxMsgs:  200_000,
		StreamReplicas: 3,
		Log:            LogConfig{Format: "json", Level: slog.LevelDebug},

		CheckpointEvery: 90 * time.Second,
		Retention:       6 * time.Hour,
		ArchiveDir:      "/var/lib/treasure/archive",
		ArchiveAddr:     "127.0.0.1:9085",
	}
	if c != want {
		t.Errorf("overrides:\n got %+v\nwant %+v", c, want)
	}
	if err := c.RequireJWTSecret(); err != nil {
		t.Errorf("RequireJWTSecret with a secret: %v", err)
	}
}

func TestFromEnvRejectsBadValuesNamingEachVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, env, value string
	}{
		{"radius not a number", EnvRadius, "far"},
		{"radius zero", EnvRadius, "0"},
		{"radius negative", EnvRadius, "-5"},
		{"radius over uint32", EnvRadius, "4294967296"},
		{"nats wrong scheme", EnvNATSURL, "http://127.0.0.1:4222"},
		{"nats no host", EnvNATSURL, "nats://:4222"},
		{"nats bad port", EnvNATSURL, "nats://127.0.0.1:99999"},
		{"redis wrong scheme", EnvRedisURL, "http://127.0.0.1:6379"},
		{"redis bad db", EnvRedisURL, "redis://127.0.0.1:6379/x"},
		{"database garbage", EnvDatabaseURL, "postgres://u:pw@[bad/db"},
		{"ingest addr no port", EnvIngestAddr, "127.0.0.1"},
		{"push addr bad port", EnvPushAddr, "127.0.0.1:http2"},
		{"proximity addr port too big", EnvProximityAddr, "127.0.0.1:70000"},
		{"ranker addr garbage", EnvRankerAddr, "::::"},
		{"dev nats addr no port", EnvDevNATSAddr, "localhost"},
		{"partitions zero", EnvPartitions, "0"},
		{"partitions not a number", EnvPartitions, "many"},
		{"stream prefix with a dot", EnvStreamPrefix, "a.b"},
		{"stream prefix starting with a digit", EnvStreamPrefix, "1abc"},
		{"stream replicas zero", EnvStreamReplicas, "0"},
		{"stream replicas six", EnvStreamReplicas, "6"},
		{"stream max bytes not a number", EnvStreamMaxBytes, "64MiB"},
		{"stream max bytes zero", EnvStreamMaxBytes, "0"},
		{"stream max bytes negative", EnvStreamMaxBytes, "-1"},
		{"stream max msgs not a number", EnvStreamMaxMsgs, "lots"},
		{"stream max msgs zero", EnvStreamMaxMsgs, "0"},
		{"checkpoint every not a duration", EnvCheckpointEvery, "10"},
		{"checkpoint every too short", EnvCheckpointEvery, "500ms"},
		{"checkpoint every negative", EnvCheckpointEvery, "-10s"},
		{"retention not a duration", EnvRetention, "24"},
		{"retention too short", EnvRetention, "30s"},
		{"retention negative", EnvRetention, "-1h"},
		{"log format", EnvLogFormat, "xml"},
		{"log level", EnvLogLevel, "loud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := FromEnv(envMap(map[string]string{tt.env: tt.value}))
			if err == nil {
				t.Fatalf("FromEnv(%s=%q) = %+v, want an error", tt.env, tt.value, c)
			}
			if !strings.Contains(err.Error(), tt.env) {
				t.Errorf("error %q does not name %s", err, tt.env)
			}
			if c != (Config{}) {
				t.Errorf("FromEnv returned a config with its error: %+v", c)
			}
			if strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), ":pw") {
				t.Errorf("error leaks a password: %q", err)
			}
		})
	}
}

func TestFromEnvReportsAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	_, err := FromEnv(envMap(map[string]string{
		EnvRadius:     "x",
		EnvIngestAddr: "nope",
		EnvLogLevel:   "loud",
	}))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, name := range []string{EnvRadius, EnvIngestAddr, EnvLogLevel} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestConfigLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(envMap(map[string]string{
		EnvNATSURL:     "nats://natstoken@127.0.0.1:4222,nats://alice:natspw@127.0.0.2:4222",
		EnvRedisURL:    "redis://:redispw@127.0.0.1:6379/0",
		EnvDatabaseURL: "postgres://bob:pgpw@127.0.0.1:5432/treasure?sslmode=disable&password=querypw",
		EnvJWTSecret:   "jwtsecret",
	}))
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	out := buf.String()
	for _, secret := range []string{"natstoken", "natspw", "redispw", "pgpw", "querypw", "jwtsecret"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line leaks %q: %s", secret, out)
		}
	}
	for _, kept := range []string{"alice", "bob", "127.0.0.2:4222", "sslmode=disable", "config.radius=2000", "config.jwt_secret=\"set (masked)\""} {
		if !strings.Contains(out, kept) {
			t.Errorf("log line lacks %q: %s", kept, out)
		}
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://tok@h:4222", "nats://xxxxx@h:4222"},
		{"nats://u:p@h:1,nats://h2:2", "nats://u:xxxxx@h:1,nats://h2:2"},
		{"redis://:p@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"redis://user@h:6379/0", "redis://user@h:6379/0"},
		{"postgres://postgres@h:5432/db?sslmode=disable", "postgres://postgres@h:5432/db?sslmode=disable"},
		{"postgres://u@h/db?password=p&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"host=h user=u password=p dbname=db", "host=h user=u password=xxxxx dbname=db"},
		{"host=h password='a b' dbname=db", "host=h password=xxxxx dbname=db"},
	}
	for _, tt := range tests {
		if got := MaskURL(tt.in); got != tt.want {
			t.Errorf("MaskURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFromEnvCheckpointsOff(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"off", "OFF"} {
		c, err := FromEnv(envMap(map[string]string{EnvCheckpointEvery: v}))
		if err != nil || c.CheckpointEvery >= 0 {
			t.Fatalf("%s=%s: %v, %v; want a negative interval (off)", EnvCheckpointEvery, v, c.CheckpointEvery, err)
		}
	}
}

func TestFromEnvRetentionOff(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"off", "Off"} {
		c, err := FromEnv(envMap(map[string]string{EnvRetention: v}))
		if err != nil || c.Retention >= 0 {
			t.Fatalf("%s=%s: %v, %v; want a negative age (off)", EnvRetention, v, c.Retention, err)
		}
	}
}
