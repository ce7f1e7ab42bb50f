package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

// TestServicesRefuseAnotherConfiguration: a pipeline is recorded with the
// amsterdam graph, 4 partitions and radius 2000; each service started with
// another graph, partition count or radius exits with status 1 and a
// message naming the value that differs and both sides, before it serves
// anything.
func TestServicesRefuseAnotherConfiguration(t *testing.T) {
	t.Parallel()
	nc, js, prefix := testenv.JetStream(t)
	_ = nc
	amsterdam := testgraph.Path(t, "amsterdam.gr.gz")
	g, err := graph.LoadDIMACS(amsterdam)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := natsjs.Topology{Prefix: prefix, Partitions: 4}
	if _, err := natsjs.CheckConfig(ctx, js, topo, natsjs.PipelineConfig{GraphDigest: graph.Digest(g), GraphNodes: g.NumNodes(),
		Graph: amsterdam, Partitions: 4, Radius: 2000, RecordedBy: "the test"}); err != nil {
		t.Fatal(err)
	}
	// Another graph: a path of 12 nodes.
	other := filepath.Join(t.TempDir(), "path.gr")
	var b strings.Builder
	b.WriteString("p sp 12 11\n")
	for i := 1; i < 12; i++ {
		fmt.Fprintf(&b, "a %d %d 10\n", i, i+1)
	}
	if err := os.WriteFile(other, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"TREASURE_NATS_URL":         testenv.NATSURL(),
		"TREASURE_REDIS_URL":        testenv.RedisURL(),
		"TREASURE_DATABASE_URL":     testenv.DatabaseURL(),
		"TREASURE_STREAM_PREFIX":    prefix,
		"TREASURE_STREAM_MAX_BYTES": "16777216",
		"TREASURE_GRAPH":            amsterdam,
		"TREASURE_PARTITIONS":       "4",
		"TREASURE_RADIUS":           "2000",
		"TREASURE_JWT_SECRET":       "mismatch-secret",
		"TREASURE_INGEST_ADDR":      "127.0.0.1:0",
		"TREASURE_PUSH_ADDR":        "127.0.0.1:0",
		"TREASURE_PROXIMITY_ADDR":   "127.0.0.1:0",
		"TREASURE_RANKER_ADDR":      "127.0.0.1:0",
		"TREASURE_LOG_LEVEL":        "warn",
	}
	for _, tc := range []struct {
		cmd  string
		set  map[string]string
		want []string
	}{
		{"ingest", map[string]string{"TREASURE_RADIUS": "1500"}, []string{"radius (TREASURE_RADIUS) is 1500 here but 2000"}},
		{"ingest", map[string]string{"TREASURE_GRAPH": other}, []string{"graph digest (TREASURE_GRAPH) is", "(12 nodes, " + other + ") here but", "(68213 nodes, " + amsterdam + ")"}},
		{"proximity", map[string]string{"TREASURE_PARTITIONS": "2"}, []string{"partitions (TREASURE_PARTITIONS) is 2 here but 4"}},
		{"proximity", map[string]string{"TREASURE_GRAPH": other, "TREASURE_RADIUS": "100"}, []string{"graph digest (TREASURE_GRAPH)", "radius (TREASURE_RADIUS) is 100 here but 2000"}},
		{"ranker", map[string]string{"TREASURE_RADIUS": "2500"}, []string{"radius (TREASURE_RADIUS) is 2500 here but 2000"}},
		{"push", map[string]string{"TREASURE_PARTITIONS": "8"}, []string{"partitions (TREASURE_PARTITIONS) is 8 here but 4"}},
	} {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range tc.set {
			env[k] = v
		}
		var out, errb bytes.Buffer
		code := Run(ctx, []string{tc.cmd}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
		msg := errb.String()
		if code != 1 || !strings.Contains(msg, "treasure "+tc.cmd+": refusing to start: ") {
			t.Errorf("%s with %v: exit %d, stderr:\n%s", tc.cmd, tc.set, code, msg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s with %v: stderr lacks %q:\n%s", tc.cmd, tc.set, w, msg)
			}
		}
	}
}
