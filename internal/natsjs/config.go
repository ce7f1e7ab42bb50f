package natsjs

import (
	"treasure/internal/backoff"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConfigBucket names the key-value bucket that records the pipeline's
// configuration with its streams, "<prefix>-config" (stream
// KV_<prefix>-config). Its key ConfigKey holds a PipelineConfig as JSON.
func (t Topology) ConfigBucket() string { return t.Prefix + "-config" }

// ConfigKey is the key of the recorded PipelineConfig.
const ConfigKey = "pipeline"

// PipelineConfig is what every service of one pipeline must agree on: the
// graph (its digest, graph.Digest), the number of partitions and the
// proximity radius. The first service to start records it beside the
// streams; every later one compares (CheckConfig).
type PipelineConfig struct {
	// GraphDigest is graph.Digest of TREASURE_GRAPH; empty from a service
	// that does not load the graph (ranker, push): not compared then.
	GraphDigest string `json:"graph_digest,omitempty"`
	// GraphNodes is the graph's node count (information, and a readable
	// hint when the digests differ); 0 when GraphDigest is empty.
	GraphNodes int `json:"graph_nodes,omitempty"`
	// Graph is the path the recording service loaded (information only:
	// the same graph may live at other paths).
	Graph      string `json:"graph,omitempty"`
	Partitions int    `json:"partitions"`
	Radius     uint32 `json:"radius"`
	// RecordedBy and RecordedAt say who recorded it, for the message.
	RecordedBy string    `json:"recorded_by,omitempty"`
	RecordedAt time.Time `json:"recorded_at,omitzero"`
}

// MismatchError is CheckConfig's refusal: the values of this service that
// differ from the recorded ones. Its message names each value and both
// sides.
type MismatchError struct {
	Bucket   string
	Recorded PipelineConfig
	Diffs    []ConfigDiff
}

// ConfigDiff is one differing value.
type ConfigDiff struct {
	Name, Variable string // "partitions", "TREASURE_PARTITIONS"
	Recorded, Ours string
}

// ErrConfigMismatch matches every *MismatchError (errors.Is).
var ErrConfigMismatch = errors.New("configuration differs from the one recorded with the streams")

func (e *MismatchError) Is(target error) bool { return target == ErrConfigMismatch }

func (e *MismatchError) Error() string {
	var b strings.Builder
	b.WriteString("refusing to start: ")
	for i, d := range e.Diffs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%s) is %s here but %s in the pipeline's recorded configuration", d.Name, d.Variable, d.Ours, d.Recorded)
	}
	fmt.Fprintf(&b, " (recorded in JetStream key-value bucket %s, key %s", e.Bucket, ConfigKey)
	if e.Recorded.RecordedBy != "" {
		fmt.Fprintf(&b, ", by %s", e.Recorded.RecordedBy)
	}
	if !e.Recorded.RecordedAt.IsZero() {
		fmt.Fprintf(&b, " at %s", e.Recorded.RecordedAt.UTC().Format(time.RFC3339))
	}
	b.WriteString("); start every service with the same TREASURE_GRAPH, TREASURE_PARTITIONS and TREASURE_RADIUS, or use another TREASURE_STREAM_PREFIX")
	return b.String()
}

// compare lists how ours differs from rec.
func (rec PipelineConfig) compare(ours PipelineConfig) []ConfigDiff {
	var d []ConfigDiff
	if rec.GraphDigest != "" && ours.GraphDigest != "" && rec.GraphDigest != ours.GraphDigest {
		side := func(c PipelineConfig) string {
			s := fmt.Sprintf("%s… (%d nodes", c.GraphDigest[:min(12, len(c.GraphDigest))], c.GraphNodes)
			if c.Graph != "" {
				s += ", " + c.Graph
			}
			return s + ")"
		}
		d = append(d, ConfigDiff{"graph digest", "TREASURE_GRAPH", side(rec), side(ours)})
	}
	if rec.Partitions != ours.Partitions {
		d = append(d, ConfigDiff{"partitions", "TREASURE_PARTITIONS", fmt.Sprint(rec.Partitions), fmt.Sprint(ours.Partitions)})
	}
	if rec.Radius != ours.Radius {
		d = append(d, ConfigDiff{"radius", "TREASURE_RADIUS", fmt.Sprint(rec.Radius), fmt.Sprint(ours.Radius)})
	}
	return d
}

// CheckConfig records ours as the pipeline's configuration when none is
// recorded, and otherwise compares: it returns a *MismatchError naming
// every value that differs (graph digest, partitions, radius; a digest
// only when both sides have one), and the recorded configuration. A
// record without a digest (written by a ranker or push that started
// first) gets ours added. Concurrent first starts are safe: the bucket's
// create-if-absent decides which record stands, and the others compare
// against it. ours.Partitions must equal t.Partitions.
func CheckConfig(ctx context.Context, js jetstream.JetStream, t Topology, ours PipelineConfig) (PipelineConfig, error) {
	if err := t.Validate(); err != nil {
		return PipelineConfig{}, err
	}
	if ours.Partitions != t.Partitions {
		return PipelineConfig{}, fmt.Errorf("check config: %d partitions, topology has %d", ours.Partitions, t.Partitions)
	}
	if ours.RecordedAt.IsZero() {
		ours.RecordedAt = time.Now()
	}
	if ours.GraphDigest == "" {
		ours.GraphNodes, ours.Graph = 0, ""
	}
	bucket := t.ConfigBucket()
	kv, err := openConfigBucket(ctx, js, t)
	if err != nil {
		return PipelineConfig{}, err
	}
	for attempt := 0; attempt < 8; attempt++ {
		data, _ := json.Marshal(ours)
		e, err := kv.Get(ctx, ConfigKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := kv.Create(ctx, ConfigKey, data); err == nil {
				return ours, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return PipelineConfig{}, fmt.Errorf("record config in %s: %w", bucket, err)
			}
			continue // another service recorded first: compare with it
		}
		if err != nil {
			return PipelineConfig{}, fmt.Errorf("read config from %s: %w", bucket, err)
		}
		var rec PipelineConfig
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return PipelineConfig{}, fmt.Errorf("config in %s, key %s: %w (delete the key to record it again)", bucket, ConfigKey, err)
		}
		if diffs := rec.compare(ours); len(diffs) > 0 {
			return rec, &MismatchError{Bucket: bucket, Recorded: rec, Diffs: diffs}
		}
		if rec.GraphDigest == "" && ours.GraphDigest != "" {
			upd := rec
			upd.GraphDigest, upd.GraphNodes, upd.Graph = ours.GraphDigest, ours.GraphNodes, ours.Graph
			data, _ := json.Marshal(upd)
			if _, err := kv.Update(ctx, ConfigKey, data, e.Revision()); err != nil {
				continue // changed meanwhile: read again
			}
			return upd, nil
		}
		return rec, nil
	}
	return PipelineConfig{}, fmt.Errorf("config in %s keeps changing under us", bucket)
}

// ReadConfig returns the recorded configuration, and false when none is
// recorded (or the bucket does not exist).
func ReadConfig(ctx context.Context, js jetstream.JetStream, t Topology) (PipelineConfig, bool, error) {
	kv, err := js.KeyValue(ctx, t.ConfigBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return PipelineConfig{}, false, nil
	}
	if err != nil {
		return PipelineConfig{}, false, fmt.Errorf("config bucket %s: %w", t.ConfigBucket(), err)
	}
	e, err := kv.Get(ctx, ConfigKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return PipelineConfig{}, false, nil
	}
	if err != nil {
		return PipelineConfig{}, false, fmt.Errorf("read config from %s: %w", t.ConfigBucket(), err)
	}
	var rec PipelineConfig
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return PipelineConfig{}, false, fmt.Errorf("config in %s, key %s: %w", t.ConfigBucket(), ConfigKey, err)
	}
	return rec, true, nil
}

// openConfigBucket creates the config bucket or binds to it (services
// starting together race to create it; the loser binds).
func openConfigBucket(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.KeyValue, error) {
	bucket := t.ConfigBucket()
	cfg := jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "treasure pipeline configuration: graph digest, partitions, radius (docs/operations.md)",
		Storage:     jetstream.FileStorage,
		Replicas:    max(t.Replicas, 1),
		History:     1,
	}
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if kv, err := js.KeyValue(ctx, bucket); err == nil {
			return kv, nil
		}
		kv, err := js.CreateKeyValue(ctx, cfg)
		if err == nil {
			return kv, nil
		}
		if attempt == 4 || !backoff.Sleep(ctx, wait) {
			return nil, fmt.Errorf("config bucket %s: %w", bucket, err)
		}
		wait *= 4
	}
}
