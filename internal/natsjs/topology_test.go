package natsjs

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestTopologyNames(t *testing.T) {
	t.Parallel()
	topo := Topology{Prefix: "treasure", Partitions: 3, UpdateShards: 2}
	if err := topo.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want string }{
		{topo.InStream(), "treasure_IN"},
		{topo.OutStream(), "treasure_OUT"},
		{topo.UpdStream(), "treasure_UPD"},
		{topo.DLQStream(), "treasure_DLQ"},
		{topo.InSubject(2), "treasure.in.2"},
		{topo.OutSubject(0), "treasure.out.0"},
		{topo.UpdSubject(1), "treasure.upd.1"},
		{topo.DLQSubject(), "treasure.dlq"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if got, want := topo.InSubjects(), []string{"treasure.in.0", "treasure.in.1", "treasure.in.2"}; !slices.Equal(got, want) {
		t.Errorf("InSubjects = %v, want %v", got, want)
	}
	if got, want := topo.OutSubjects(), []string{"treasure.out.0", "treasure.out.1", "treasure.out.2"}; !slices.Equal(got, want) {
		t.Errorf("OutSubjects = %v, want %v", got, want)
	}
	if topo.Shards() != 2 || (Topology{}).Shards() != 1 {
		t.Errorf("Shards = %d and %d for 2 and 0, want 2 and 1", topo.Shards(), (Topology{}).Shards())
	}
}

func TestTopologyDefaultsAndPolicies(t *testing.T) {
	t.Parallel()
	topo := Topology{Prefix: "p", Partitions: 1, Upd: Limits{MaxBytes: -1}}
	cfgs := topo.StreamConfigs()
	byName := map[string]jetstream.StreamConfig{}
	for _, c := range cfgs {
		byName[c.Name] = c
		if c.Storage != jetstream.FileStorage || c.Retention != jetstream.LimitsPolicy || c.Duplicates != DefaultDuplicates || c.Replicas != 1 {
			t.Errorf("%s: storage %v, retention %v, duplicates %v, replicas %d; want file, limits, %v, 1",
				c.Name, c.Storage, c.Retention, c.Duplicates, c.Replicas, DefaultDuplicates)
		}
	}
	in, upd, dlq := byName["p_IN"], byName["p_UPD"], byName["p_DLQ"]
	if in.Discard != jetstream.DiscardNew || in.MaxBytes != DefaultLogMaxBytes || in.MaxMsgs != DefaultLogMaxMsgs || in.MaxAge != 0 ||
		!slices.Equal(in.Subjects, []string{"p.in.*"}) {
		t.Errorf("IN = %+v", in)
	}
	if upd.Discard != jetstream.DiscardOld || upd.MaxBytes != -1 || upd.MaxAge != DefaultUpdMaxAge {
		t.Errorf("UPD = discard %v, max bytes %d, max age %v; want old, unlimited, %v", upd.Discard, upd.MaxBytes, upd.MaxAge, DefaultUpdMaxAge)
	}
	if dlq.Discard != jetstream.DiscardNew || !slices.Equal(dlq.Subjects, []string{"p.dlq"}) {
		t.Errorf("DLQ = %+v", dlq)
	}
	if len(cfgs) != 4 || byName["p_OUT"].Discard != jetstream.DiscardNew {
		t.Errorf("configs = %+v", cfgs)
	}
}

func TestTopologyValidateRejects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		topo Topology
		want string
	}{
		{"empty prefix", Topology{Partitions: 1}, "prefix"},
		{"prefix with a dot", Topology{Prefix: "a.b", Partitions: 1}, "prefix"},
		{"prefix with a wildcard", Topology{Prefix: "a*", Partitions: 1}, "prefix"},
		{"prefix starting with a digit", Topology{Prefix: "1a", Partitions: 1}, "prefix"},
		{"prefix too long", Topology{Prefix: strings.Repeat("a", 33), Partitions: 1}, "prefix"},
		{"no partitions", Topology{Prefix: "a"}, "partitions"},
		{"negative shards", Topology{Prefix: "a", Partitions: 1, UpdateShards: -1}, "shards"},
		{"too many replicas", Topology{Prefix: "a", Partitions: 1, Replicas: 7}, "replicas"},
		{"duplicates beyond max age", Topology{Prefix: "a", Partitions: 1, Upd: Limits{MaxAge: time.Minute}}, "duplicates"},
	} {
		err := c.topo.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v, want an error about %s", c.name, err, c.want)
		}
	}
}

// TestEnsureIsIdempotentAndUpdatesLimits declares the topology twice (no
// error, same streams) and then again with other limits, which the streams
// take on in place, keeping their messages.
func TestEnsureIsIdempotentAndUpdatesLimits(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		e.publishSync(t, e.topo.InSubject(1), 3)
		e.ensure(t)
		for _, want := range e.topo.StreamConfigs() {
			info := e.streamInfo(t, want.Name)
			got := info.Config
			if !slices.Equal(got.Subjects, want.Subjects) || got.Discard != want.Discard || got.MaxBytes != want.MaxBytes ||
				got.MaxMsgs != want.MaxMsgs || got.MaxAge != want.MaxAge || got.Duplicates != want.Duplicates || got.Storage != jetstream.FileStorage {
				t.Errorf("stream %s config = %+v, want %+v", want.Name, got, want)
			}
		}
		if n := e.streamInfo(t, e.topo.InStream()).State.Msgs; n != 3 {
			t.Fatalf("IN holds %d messages, want 3", n)
		}

		e.topo.In.MaxMsgs = 50
		e.topo.Upd.MaxAge = time.Hour
		e.ensure(t)
		in := e.streamInfo(t, e.topo.InStream())
		if in.Config.MaxMsgs != 50 || in.State.Msgs != 3 {
			t.Errorf("IN after update: max msgs %d holding %d, want 50 holding 3", in.Config.MaxMsgs, in.State.Msgs)
		}
		if got := e.streamInfo(t, e.topo.UpdStream()).Config.MaxAge; got != time.Hour {
			t.Errorf("UPD max age after update = %v, want 1h", got)
		}
	})
}

func TestEnsureRefusesInvalidTopology(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.topo.Partitions = 0
	if err := e.topo.Ensure(ctxFor(t, 10*time.Second), e.js); err == nil {
		t.Fatal("Ensure accepted a topology without partitions")
	}
}

// TestEnsureSaysWhenStorageCannotBeReserved asks for a stream larger than
// the server's storage: the error says what to change.
func TestEnsureSaysWhenStorageCannotBeReserved(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.topo.Out.MaxBytes = 1 << 50
	err := e.topo.Ensure(ctxFor(t, 10*time.Second), e.js)
	if err == nil || !strings.Contains(err.Error(), "cannot reserve") || !strings.Contains(err.Error(), e.topo.OutStream()) {
		t.Fatalf("Ensure with a 1 PiB stream: %v", err)
	}
}
