package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/backoff"
)

// Default limits of the streams. IN and OUT are sized for several minutes of
// a city-wide burst: at 50,000 events/s and about 64 bytes per encoded event
// (3.2 MB/s), 4 GiB hold some twenty minutes, and 8 M messages the same time
// at 6,700 messages/s (batches of eight events or more). Raise them for a
// whole day of play; a full stream answers publishers with ErrUnavailable.
const (
	DefaultLogMaxBytes   = 4 << 30
	DefaultLogMaxMsgs    = 8_000_000
	DefaultUpdMaxBytes   = 1 << 30
	DefaultUpdMaxMsgs    = 4_000_000
	DefaultUpdMaxAge     = 24 * time.Hour
	DefaultDLQMaxBytes   = 256 << 20
	DefaultDLQMaxMsgs    = 1_000_000
	DefaultDuplicates    = 2 * time.Minute
	DefaultUpdateShards  = 1
	DefaultPrefix        = "treasure"
	maxPrefixLen         = 32
	maxPartitionsOrShard = 1 << 16
)

// Limits bounds one stream. Zero fields take the stream's defaults;
// a negative MaxBytes, MaxMsgs or MaxAge means unlimited.
type Limits struct {
	// MaxBytes caps the stream's stored bytes (the server reserves it).
	MaxBytes int64
	// MaxMsgs caps the stream's message count.
	MaxMsgs int64
	// MaxAge drops messages older than this (only UPD has one by default).
	MaxAge time.Duration
	// Duplicates is the window in which a repeated Nats-Msg-Id is stored
	// once; default DefaultDuplicates. It must not exceed MaxAge.
	Duplicates time.Duration
}

// Topology declares treasure's streams and names their subjects (see the
// package doc for the layout). The zero value is not valid: set Prefix and
// Partitions. A Topology is a plain value, safe to copy and to share.
type Topology struct {
	// Prefix starts every stream name and subject: 1 to 32 characters of
	// [A-Za-z0-9_-], starting with a letter. DefaultPrefix in production.
	Prefix string
	// Partitions is the number of graph partitions (subjects p.in.<n> and
	// p.out.<n>, n in [0, Partitions)).
	Partitions int
	// UpdateShards is the number of p.upd.<n> subjects; 0 means 1.
	UpdateShards int
	// Replicas of every stream; 0 means 1 (a single server).
	Replicas int
	// In, Out, Upd and DLQ bound the four streams; zero fields take the
	// defaults above.
	In, Out, Upd, DLQ Limits
}

// Validate reports whether t names valid streams and subjects.
func (t Topology) Validate() error {
	if err := ValidPrefix(t.Prefix); err != nil {
		return fmt.Errorf("topology prefix: %w", err)
	}
	if t.Partitions < 1 || t.Partitions > maxPartitionsOrShard {
		return fmt.Errorf("topology: %d partitions, want 1 to %d", t.Partitions, maxPartitionsOrShard)
	}
	if t.UpdateShards < 0 || t.UpdateShards > maxPartitionsOrShard {
		return fmt.Errorf("topology: %d update shards, want 0 to %d", t.UpdateShards, maxPartitionsOrShard)
	}
	if t.Replicas < 0 || t.Replicas > 5 {
		return fmt.Errorf("topology: %d replicas, want 0 to 5", t.Replicas)
	}
	for _, c := range t.StreamConfigs() {
		if c.MaxAge > 0 && c.Duplicates > c.MaxAge {
			return fmt.Errorf("topology: stream %s keeps duplicates for %v, longer than its max age %v", c.Name, c.Duplicates, c.MaxAge)
		}
	}
	return nil
}

// ValidPrefix checks a stream prefix: letters, digits, '_' and '-', starting with a
// letter, valid in stream names, consumer names and subject tokens alike.
func ValidPrefix(s string) error {
	if s == "" || len(s) > maxPrefixLen {
		return fmt.Errorf("%q: want 1 to %d characters", s, maxPrefixLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return fmt.Errorf("%q: must start with a letter", s)
		}
		if !letter && !(c >= '0' && c <= '9') && c != '_' && c != '-' {
			return fmt.Errorf("%q: character %q not in [A-Za-z0-9_-]", s, c)
		}
	}
	return nil
}

// InStream names the log stream, p_IN.
func (t Topology) InStream() string { return t.Prefix + "_IN" }

// OutStream names the proximity results stream, p_OUT.
func (t Topology) OutStream() string { return t.Prefix + "_OUT" }

// UpdStream names the ranker's updates stream, p_UPD.
func (t Topology) UpdStream() string { return t.Prefix + "_UPD" }

// DLQStream names the dead-letter stream, p_DLQ.
func (t Topology) DLQStream() string { return t.Prefix + "_DLQ" }

// InSubject names partition part's log subject, p.in.<part>.
func (t Topology) InSubject(part int) string { return t.Prefix + ".in." + strconv.Itoa(part) }

// OutSubject names partition part's results subject, p.out.<part>.
func (t Topology) OutSubject(part int) string { return t.Prefix + ".out." + strconv.Itoa(part) }

// UpdSubject names update shard shard's subject, p.upd.<shard>.
func (t Topology) UpdSubject(shard int) string { return t.Prefix + ".upd." + strconv.Itoa(shard) }

// DLQSubject names the dead-letter subject, p.dlq.
func (t Topology) DLQSubject() string { return t.Prefix + ".dlq" }

// InSubjects returns the log subjects of every partition, in partition
// order, for a caller that publishes to them on a hot path.
func (t Topology) InSubjects() []string {
	s := make([]string, max(t.Partitions, 0))
	for i := range s {
		s[i] = t.InSubject(i)
	}
	return s
}

// OutSubjects returns the results subjects of every partition, in order.
func (t Topology) OutSubjects() []string {
	s := make([]string, max(t.Partitions, 0))
	for i := range s {
		s[i] = t.OutSubject(i)
	}
	return s
}

// Shards returns the number of update shards (UpdateShards, at least 1).
func (t Topology) Shards() int {
	if t.UpdateShards <= 0 {
		return DefaultUpdateShards
	}
	return t.UpdateShards
}

// StreamConfigs returns the configurations Ensure declares, in the order
// IN, OUT, UPD, DLQ, with every default applied.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	replicas := max(t.Replicas, 1)
	stream := func(name, subject string, l Limits, def Limits, discard jetstream.DiscardPolicy) jetstream.StreamConfig {
		l = l.withDefaults(def)
		return jetstream.StreamConfig{
			Name:       name,
			Subjects:   []string{subject},
			Retention:  jetstream.LimitsPolicy,
			Storage:    jetstream.FileStorage,
			Discard:    discard,
			MaxBytes:   l.MaxBytes,
			MaxMsgs:    l.MaxMsgs,
			MaxAge:     l.MaxAge,
			Duplicates: l.Duplicates,
			Replicas:   replicas,
			// Direct gets serve replays and inspections without a consumer
			// (nats-server 2.9+).
			AllowDirect: true,
		}
	}
	logLimits := Limits{MaxBytes: DefaultLogMaxBytes, MaxMsgs: DefaultLogMaxMsgs, MaxAge: -1, Duplicates: DefaultDuplicates}
	return []jetstream.StreamConfig{
		stream(t.InStream(), t.Prefix+".in.*", t.In, logLimits, jetstream.DiscardNew),
		stream(t.OutStream(), t.Prefix+".out.*", t.Out, logLimits, jetstream.DiscardNew),
		stream(t.UpdStream(), t.Prefix+".upd.*", t.Upd,
			Limits{MaxBytes: DefaultUpdMaxBytes, MaxMsgs: DefaultUpdMaxMsgs, MaxAge: DefaultUpdMaxAge, Duplicates: DefaultDuplicates},
			jetstream.DiscardOld),
		stream(t.DLQStream(), t.DLQSubject(), t.DLQ,
			Limits{MaxBytes: DefaultDLQMaxBytes, MaxMsgs: DefaultDLQMaxMsgs, MaxAge: -1, Duplicates: DefaultDuplicates},
			jetstream.DiscardNew),
	}
}

// withDefaults fills l's zero fields from def and turns negatives into the
// server's "unlimited" (-1, or 0 for MaxAge).
func (l Limits) withDefaults(def Limits) Limits {
	pick := func(v, d int64) int64 {
		if v == 0 {
			v = d
		}
		if v < 0 {
			return -1
		}
		return v
	}
	l.MaxBytes = pick(l.MaxBytes, def.MaxBytes)
	l.MaxMsgs = pick(l.MaxMsgs, def.MaxMsgs)
	if l.MaxAge == 0 {
		l.MaxAge = def.MaxAge
	}
	if l.MaxAge < 0 {
		l.MaxAge = 0
	}
	if l.Duplicates <= 0 {
		l.Duplicates = def.Duplicates
	}
	return l
}

// Ensure creates the four streams, or updates them to t's configuration
// when they exist; it is idempotent and safe to run from every service at
// start. It stops at the first stream it cannot declare. The file store
// reserves every stream's MaxBytes on the server when the stream is created
// (the defaults add up to about 9.3 GiB); a server that cannot reserve them
// refuses with an error saying so. A change the server
// refuses to apply in place (storage type, a subject owned by another
// stream) is returned as an error naming the stream.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	if err := t.Validate(); err != nil {
		return err
	}
	for _, cfg := range t.StreamConfigs() {
		if err := ensureStream(ctx, js, cfg); err != nil {
			var api *jetstream.APIError
			if errors.As(err, &api) && (api.ErrorCode == codeStorageExceeded || api.ErrorCode == codeInsufficientResource) {
				return fmt.Errorf("ensure stream %s: the server cannot reserve its %d max bytes (lower the Topology's limits or raise the server's max_file_store): %w",
					cfg.Name, cfg.MaxBytes, err)
			}
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// codeStreamCreate is JetStream's "error creating store for stream".
const codeStreamCreate jetstream.ErrorCode = 10049

// ensureStream creates or updates one stream. A create that fails to set
// up its store is tried again a few times: nats-server 2.9 can fail it
// while another client deletes the account's last stream (the store
// directory vanishes under it).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	retry := backoff.Backoff{Base: 20 * time.Millisecond, Factor: 4}
	for attempt := 1; ; attempt++ {
		_, err := js.CreateOrUpdateStream(ctx, cfg)
		var api *jetstream.APIError
		if err == nil || attempt == 4 || !errors.As(err, &api) || api.ErrorCode != codeStreamCreate {
			return err
		}
		if !retry.Wait(ctx) {
			return err
		}
	}
}

// errNoServer is returned when a version check finds no connected server.
var errNoServer = errors.New("not connected to a server")
