package testenv

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// streamsWithPrefix lists the streams on js whose names contain prefix.
func streamsWithPrefix(t *testing.T, js jetstream.JetStream, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := js.StreamNames(ctx)
	var out []string
	for n := range l.Name() {
		if strings.Contains(n, prefix) {
			out = append(out, n)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatalf("list streams: %v", err)
	}
	slices.Sort(out)
	return out
}

// fillJetStream creates the same stream and KV bucket any test would, under
// prefix, and publishes name to the stream.
func fillJetStream(t *testing.T, js jetstream.JetStream, prefix, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     prefix + "_MOVES",
		Subjects: []string{prefix + ".moves.>"},
		Storage:  jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: prefix + "_state", Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, prefix+".moves.p1", []byte(name)); err != nil {
		t.Fatal(err)
	}
}

// checkJetStream checks that prefix's streams hold what fillJetStream(name)
// wrote and nothing else.
func checkJetStream(t *testing.T, js jetstream.JetStream, prefix, name string) {
	t.Helper()
	if got, want := streamsWithPrefix(t, js, prefix), []string{"KV_" + prefix + "_state", prefix + "_MOVES"}; !slices.Equal(got, want) {
		t.Errorf("streams with prefix %s = %v, want %v", prefix, got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, prefix+"_MOVES")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("stream %s_MOVES holds %+v (%v), want 1 message", prefix, info, err)
	}
	if msg, err := s.GetMsg(ctx, 1); err != nil || string(msg.Data) != name {
		t.Errorf("stream %s_MOVES first message = %v, %v; want %q", prefix, msg, err, name)
	}
}

// TestJetStreamPrefixesIsolateAndCleanUp runs test b inside test a, both
// declaring the same stream layout: each sees only its own, b's cleanup
// leaves a's streams alone, and after both none is left.
func TestJetStreamPrefixesIsolateAndCleanUp(t *testing.T) {
	t.Parallel()
	_, observer, _ := JetStream(t)
	var pa, pb string
	t.Run("a", func(t *testing.T) {
		_, js, prefix := JetStream(t)
		pa = prefix
		fillJetStream(t, js, prefix, "a")
		t.Run("b", func(t *testing.T) {
			_, js, prefix := JetStream(t)
			pb = prefix
			fillJetStream(t, js, prefix, "b")
			checkJetStream(t, js, prefix, "b")
		})
		if left := streamsWithPrefix(t, js, pb); len(left) > 0 {
			t.Errorf("streams left after their test ended: %v", left)
		}
		checkJetStream(t, js, prefix, "a")
	})
	if pa == "" || pb == "" || pa == pb {
		t.Fatalf("prefixes %q and %q, want two distinct", pa, pb)
	}
	if left := streamsWithPrefix(t, observer, pa); len(left) > 0 {
		t.Errorf("streams left after cleanup: %v", left)
	}
}

func TestDeleteStreamsLeavesOtherPrefixes(t *testing.T) {
	t.Parallel()
	_, js, prefix := JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mine := prefix + "x_S"
	for _, name := range []string{prefix + "_S", mine} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
			t.Fatal(err)
		}
	}
	// Deleting "<prefix>x" must keep "<prefix>_S".
	if err := DeleteStreams(ctx, js, prefix+"x"); err != nil {
		t.Fatal(err)
	}
	if got := streamsWithPrefix(t, js, prefix); !slices.Equal(got, []string{prefix + "_S"}) {
		t.Errorf("streams after deleting %sx = %v", prefix, got)
	}
	if err := DeleteStreams(ctx, js, ""); err == nil {
		t.Error("DeleteStreams with an empty prefix did not refuse")
	}
}

func TestEmbeddedNATSRestartKeepsStreamsAndClientsReconnect(t *testing.T) {
	t.Parallel()
	url, srv := EmbeddedNATS(t)
	nc := ConnectNATS(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "events.1", []byte("before")); err != nil {
		t.Fatal(err)
	}
	if v, err := srv.Varz(nil); err != nil || v.Version != server.VERSION {
		t.Errorf("embedded server version = %v (%v), want %s", v, err, server.VERSION)
	}

	srv2 := RestartEmbeddedNATS(t, srv)
	if srv.Running() || !srv2.Running() {
		t.Fatalf("after restart: old running=%v, new running=%v", srv.Running(), srv2.Running())
	}
	if srv2.ClientURL() != url {
		t.Errorf("restarted server URL = %s, want %s", srv2.ClientURL(), url)
	}
	// Poll until the client has reconnected and JetStream has recovered.
	for {
		_, err = js.Publish(ctx, "events.2", []byte("after"))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publish after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream after restart: %+v, %v; want both messages", info, err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil || string(msg.Data) != "before" {
		t.Errorf("first message after restart = %v, %v", msg, err)
	}
}

func TestEmbeddedNATSWithLimits(t *testing.T) {
	t.Parallel()
	url, _ := EmbeddedNATSWith(t, NATSOptions{MaxPayload: 1024})
	nc := ConnectNATS(t, url)
	if got := nc.MaxPayload(); got != 1024 {
		t.Errorf("MaxPayload = %d, want 1024", got)
	}
	if err := nc.Publish("x", make([]byte, 2048)); err == nil {
		t.Error("publishing over the payload cap succeeded")
	}
}

func TestEmbeddedNATSServersAreSeparate(t *testing.T) {
	t.Parallel()
	url1, _ := EmbeddedNATS(t)
	url2, _ := EmbeddedNATS(t)
	if url1 == url2 {
		t.Fatalf("two embedded servers share %s", url1)
	}
	js1, err := jetstream.New(ConnectNATS(t, url1))
	if err != nil {
		t.Fatal(err)
	}
	js2, err := jetstream.New(ConnectNATS(t, url2))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js1.CreateStream(ctx, jetstream.StreamConfig{Name: "ONLY1", Subjects: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js2.Stream(ctx, "ONLY1"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream of server 1 seen on server 2: %v", err)
	}
}
