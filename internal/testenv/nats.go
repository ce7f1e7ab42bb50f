package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS connects to the shared NATS server (TREASURE_NATS_URL, default
// nats://127.0.0.1:4222) and closes the connection on cleanup. The test fails
// at once, saying how to start the server, when it does not answer. Name
// streams, consumers and subjects with a Prefix so that parallel tests and a
// running demo never meet.
func NATS(tb testing.TB) *nats.Conn {
	tb.Helper()
	return ConnectNATS(tb, NATSURL())
}

// ConnectNATS connects to the NATS server at url (the shared one or an
// EmbeddedNATS) and closes the connection on cleanup. The connection keeps
// nats.go's default reconnect behaviour, so it survives a restarted server.
func ConnectNATS(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url,
		nats.Name("testenv "+tb.Name()),
		nats.Timeout(5*time.Second),
		// Keep retrying while a fault test restarts the server.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
	)
	if err != nil {
		tb.Fatalf("testenv: NATS at %s does not answer: %v; "+hint, url, err, EnvNATSURL)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream connects to the shared NATS server as NATS does, checks that
// JetStream is enabled there, and returns the connection, a JetStream context
// and a fresh Prefix whose streams (and KV and object-store buckets) are
// deleted on cleanup, before the connection closes.
func JetStream(tb testing.TB) (*nats.Conn, jetstream.JetStream, string) {
	tb.Helper()
	nc := NATS(tb)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("testenv: jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		tb.Fatalf("testenv: JetStream at %s: %v (the server must run with -js)", nc.ConnectedUrlRedacted(), err)
	}
	prefix := Prefix(tb)
	DeleteStreamsOnCleanup(tb, js, prefix)
	return nc, js, prefix
}

// DeleteStreamsOnCleanup registers a cleanup that deletes every stream whose
// name starts with prefix, and the streams behind KV and object-store
// buckets whose names start with it ("KV_<prefix>…", "OBJ_<prefix>…").
// Register it after the connection that js uses (cleanups run last-in
// first-out), as JetStream does. A stream that cannot be deleted fails the
// test.
func DeleteStreamsOnCleanup(tb testing.TB, js jetstream.JetStream, prefix string) {
	tb.Helper()
	if prefix == "" {
		tb.Fatalf("testenv: DeleteStreamsOnCleanup with an empty prefix would delete every stream")
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := DeleteStreams(ctx, js, prefix); err != nil {
			tb.Errorf("testenv: cleanup: %v", err)
		}
	})
}

// DeleteStreams deletes now every stream that DeleteStreamsOnCleanup would
// delete at cleanup, and reports how it went.
func DeleteStreams(ctx context.Context, js jetstream.JetStream, prefix string) error {
	if prefix == "" {
		return errors.New("delete streams: empty prefix")
	}
	lister := js.StreamNames(ctx)
	var names []string
	for name := range lister.Name() {
		if strings.HasPrefix(name, prefix) || strings.HasPrefix(name, "KV_"+prefix) || strings.HasPrefix(name, "OBJ_"+prefix) {
			names = append(names, name)
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("list streams: %w", err)
	}
	var errs []error
	for _, name := range names {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// NATSOptions configures an EmbeddedNATSWith server. The zero value is a
// JetStream server on a random loopback port storing in tb.TempDir().
type NATSOptions struct {
	// Port to listen on (loopback); 0 picks a free one. A restarted server
	// reuses its port so that clients reconnect to it.
	Port int
	// StoreDir holds JetStream's files; empty means a fresh tb.TempDir().
	// Give the same directory to a later server to keep the streams.
	StoreDir string
	// MaxMemory and MaxStore cap JetStream's memory and file storage in
	// bytes; 0 lets the server choose. Small caps make "storage full" tests
	// cheap.
	MaxMemory, MaxStore int64
	// MaxPayload caps a message's size in bytes; 0 keeps the server's 1 MiB.
	MaxPayload int32
	// Debug sends the server's log to tb.Log.
	Debug bool
}

// EmbeddedNATS starts a private in-process JetStream server (nats-server
// v2.15) on a random loopback port, with its store in tb.TempDir(), and
// shuts it down on cleanup. It returns the client URL and the server, which
// a fault test may Shutdown itself or pass to RestartEmbeddedNATS.
func EmbeddedNATS(tb testing.TB) (url string, srv *server.Server) {
	tb.Helper()
	return EmbeddedNATSWith(tb, NATSOptions{})
}

// EmbeddedNATSWith starts an embedded JetStream server configured by o and
// shuts it down on cleanup (a server already shut down is left alone).
func EmbeddedNATSWith(tb testing.TB, o NATSOptions) (url string, srv *server.Server) {
	tb.Helper()
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	dir := o.StoreDir
	if dir == "" {
		dir = tb.TempDir()
	}
	opts := &server.Options{
		ServerName:         "testenv-" + Prefix(tb),
		Host:               "127.0.0.1",
		Port:               port,
		JetStream:          true,
		StoreDir:           dir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		MaxPayload:         o.MaxPayload,
		NoSigs:             true,
		NoLog:              !o.Debug,
		Debug:              o.Debug,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("testenv: embedded NATS: %v", err)
	}
	if o.Debug {
		srv.ConfigureLogger()
	}
	go srv.Start()
	tb.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(setupTimeout) {
		tb.Fatalf("testenv: embedded NATS not ready within %v", setupTimeout)
	}
	return srv.ClientURL(), srv
}

// RestartEmbeddedNATS shuts srv down (it must still be running) and starts a
// new server on the same port with the same store directory, JetStream
// limits and payload cap, as a crashed and restarted server would come back:
// streams, consumers and acknowledged messages survive, and clients with
// reconnect enabled (as ConnectNATS makes them) reconnect. The new server is
// shut down on cleanup.
//
// For a gap between stop and start, note srv's port and store directory,
// call srv.Shutdown(), and later EmbeddedNATSWith with the same NATSOptions.
func RestartEmbeddedNATS(tb testing.TB, srv *server.Server) *server.Server {
	tb.Helper()
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok || !srv.Running() {
		tb.Fatalf("testenv: RestartEmbeddedNATS needs a running server")
	}
	var o NATSOptions
	o.Port = addr.Port
	if jc := srv.JetStreamConfig(); jc != nil {
		// The server keeps its files in <StoreDir>/jetstream.
		o.StoreDir = filepath.Dir(jc.StoreDir)
		o.MaxMemory, o.MaxStore = jc.MaxMemory, jc.MaxStore
	}
	if v, err := srv.Varz(nil); err == nil {
		o.MaxPayload = int32(v.MaxPayload)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	_, next := EmbeddedNATSWith(tb, o)
	return next
}
