package natsjs

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCheckConfig: the first service records the configuration; the same
// one passes; a different graph, partition count or radius is refused with
// a message naming each value and both sides; a service without the graph
// (ranker, push) is compared on the rest and a later one with the graph
// adds its digest; concurrent first starts agree on one record.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		ctx := ctxFor(t, 30*time.Second)
		if _, ok, err := ReadConfig(ctx, e.js, e.topo); err != nil || ok {
			t.Fatalf("ReadConfig before any record: %v %v", ok, err)
		}
		base := PipelineConfig{GraphDigest: strings.Repeat("ab", 32), GraphNodes: 68213, Graph: "data/amsterdam.gr.gz", Partitions: 2, Radius: 2000, RecordedBy: "ingest"}
		// A ranker starts first: no digest.
		if _, err := CheckConfig(ctx, e.js, e.topo, PipelineConfig{Partitions: 2, Radius: 2000, RecordedBy: "ranker"}); err != nil {
			t.Fatalf("first record: %v", err)
		}
		rec, err := CheckConfig(ctx, e.js, e.topo, base)
		if err != nil || rec.GraphDigest != base.GraphDigest || rec.RecordedBy != "ranker" {
			t.Fatalf("ingest after the ranker: %+v %v, want the digest added", rec, err)
		}
		if _, err := CheckConfig(ctx, e.js, e.topo, base); err != nil {
			t.Fatalf("same config: %v", err)
		}
		for _, tc := range []struct {
			name string
			mod  func(*PipelineConfig)
			want []string
		}{
			{"graph", func(c *PipelineConfig) {
				c.GraphDigest = strings.Repeat("cd", 32)
				c.GraphNodes = 7
				c.Graph = "other.gr"
			},
				[]string{"graph digest (TREASURE_GRAPH) is cdcdcdcdcdcd… (7 nodes, other.gr) here but abababababab… (68213 nodes, data/amsterdam.gr.gz)"}},
			{"radius", func(c *PipelineConfig) { c.Radius = 1500 }, []string{"radius (TREASURE_RADIUS) is 1500 here but 2000"}},
			{"radius without graph", func(c *PipelineConfig) { c.GraphDigest = ""; c.Radius = 1 }, []string{"radius (TREASURE_RADIUS) is 1 here but 2000"}},
			{"both", func(c *PipelineConfig) { c.Radius = 10; c.GraphDigest = "00" },
				[]string{"graph digest", "radius (TREASURE_RADIUS) is 10 here but 2000"}},
		} {
			c := base
			tc.mod(&c)
			_, err := CheckConfig(ctx, e.js, e.topo, c)
			var me *MismatchError
			if !errors.As(err, &me) || !errors.Is(err, ErrConfigMismatch) {
				t.Fatalf("%s: err %v, want a MismatchError", tc.name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not say %q", tc.name, err, w)
				}
			}
			if !strings.Contains(err.Error(), e.topo.ConfigBucket()) {
				t.Errorf("%s: %q does not name the bucket", tc.name, err)
			}
		}
		// Partitions: another topology over the same prefix.
		t4 := e.topo
		t4.Partitions = 4
		c := base
		c.Partitions = 4
		if _, err := CheckConfig(ctx, e.js, t4, c); err == nil || !strings.Contains(err.Error(), "partitions (TREASURE_PARTITIONS) is 4 here but 2") {
			t.Errorf("partitions: %v", err)
		}

		// Concurrent first starts on a fresh prefix: one record, the
		// others refused or agreeing with it.
		fresh := e.topo
		fresh.Prefix += "x"
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := base
				c.Radius = uint32(1000 + i%2)
				_, errs[i] = CheckConfig(ctx, e.js, fresh, c)
			}()
		}
		wg.Wait()
		rec, ok, err := ReadConfig(ctx, e.js, fresh)
		if err != nil || !ok {
			t.Fatalf("ReadConfig: %v %v", ok, err)
		}
		for i, err := range errs {
			if agree := uint32(1000+i%2) == rec.Radius; agree != (err == nil) {
				t.Errorf("start %d (radius %d) against record radius %d: %v", i, 1000+i%2, rec.Radius, err)
			}
		}
	})
}
