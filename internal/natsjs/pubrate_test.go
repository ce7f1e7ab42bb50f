package natsjs

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// streamGone fails the test unless stream name no longer exists.
func streamGone(tb testing.TB, js jetstream.JetStream, name string) {
	tb.Helper()
	if _, err := js.Stream(ctxFor(tb, 10*time.Second), name); !errors.Is(err, jetstream.ErrStreamNotFound) {
		tb.Errorf("stream %s: %v, want it deleted", name, err)
	}
}

func TestPublishRateCountsWhatTheStreamStoredAndDeletesIt(t *testing.T) {
	servers(t, func(t *testing.T, e env) {
		name := e.topo.Prefix + "_RATE"
		res, err := PublishRate(ctxFor(t, time.Minute), e.nc, PublishRateOptions{
			Size: 200, Duration: 300 * time.Millisecond, MaxInFlight: 64, Stream: name,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", res)
		if res.Msgs <= 0 || res.Msgs != res.Stored {
			t.Errorf("%d acked, %d stored: want the same, > 0", res.Msgs, res.Stored)
		}
		if res.Seconds <= 0 || math.Abs(res.MsgsPerSec-float64(res.Msgs)/res.Seconds) > 1e-6 ||
			math.Abs(res.BytesPerSec-200*res.MsgsPerSec) > 1e-6 {
			t.Errorf("rates do not add up: %+v", res)
		}
		streamGone(t, e.js, name)
	})
}

func TestPublishRateRefusesAStreamThatExistsAndLeavesIt(t *testing.T) {
	e := sharedEnv(t)
	name := e.topo.Prefix + "_MINE"
	ctx := ctxFor(t, time.Minute)
	// The same configuration PublishRate would ask for: CreateStream alone
	// would succeed on it.
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"pubrate." + name}, Storage: jetstream.FileStorage, Replicas: 1,
	}); err != nil {
		t.Fatal(err)
	}
	_, err := PublishRate(ctx, e.nc, PublishRateOptions{Size: 10, Duration: 50 * time.Millisecond, Stream: name})
	if err == nil || !strings.Contains(err.Error(), "stream "+name+" already exists") {
		t.Fatalf("error %v, want a refusal", err)
	}
	if _, err := e.js.Stream(ctx, name); err != nil {
		t.Errorf("the existing stream: %v", err)
	}
}

func TestPublishRateDeletesItsStreamOnCancel(t *testing.T) {
	e := sharedEnv(t)
	name := e.topo.Prefix + "_CANCEL"
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := PublishRate(ctx, e.nc, PublishRateOptions{Size: 100, Duration: time.Minute, Stream: name})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's", err)
	}
	streamGone(t, e.js, name)
}

func TestPublishRateReportsRefusedPublishesAndDeletesItsStream(t *testing.T) {
	url, _ := testenv.EmbeddedNATSWith(t, testenv.NATSOptions{MaxStore: 1 << 20})
	nc := testenv.ConnectNATS(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := testenv.Prefix(t) + "_FULL"
	// 1 MiB of store fills after a few thousand 512-byte messages.
	res, err := PublishRate(ctxFor(t, time.Minute), nc, PublishRateOptions{Size: 512, Duration: 2 * time.Second, Stream: name})
	if err == nil || !strings.Contains(err.Error(), "publishes failed") {
		t.Fatalf("error %v, want failed publishes", err)
	}
	if res.Msgs != res.Stored {
		t.Errorf("%d acked, %d stored", res.Msgs, res.Stored)
	}
	streamGone(t, js, name)
}

func TestPublishRateRefusesAnOversizedMessage(t *testing.T) {
	e := sharedEnv(t)
	name := e.topo.Prefix + "_BIG"
	_, err := PublishRate(ctxFor(t, time.Minute), e.nc, PublishRateOptions{Size: int(e.nc.MaxPayload()) + 1, Stream: name})
	if err == nil || !strings.Contains(err.Error(), "max payload") {
		t.Errorf("error %v", err)
	}
	streamGone(t, e.js, name)
}
