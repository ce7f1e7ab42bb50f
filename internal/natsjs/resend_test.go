package natsjs

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// stalledPublisher returns an env on a private embedded server (streams
// not yet created), a StallProxy to it and a Publisher with o that talks
// to the server through the proxy, while the test reads the streams
// directly.
func stalledPublisher(t *testing.T, o PublisherOptions) (env, *testenv.StallProxy, *Publisher) {
	t.Helper()
	url, _ := testenv.EmbeddedNATS(t)
	nc := testenv.ConnectNATS(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := env{nc: nc, js: js, topo: Topology{Prefix: testenv.Prefix(t), Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}}
	px := testenv.NewStallProxy(t, url)
	return e, px, newPublisher(t, testenv.ConnectNATS(t, px.URL()), o)
}

// storedData returns the payloads of subject's messages in stream order.
func storedData(t *testing.T, e env, stream, subject string) []string {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	c, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	n := e.streamInfo(t, stream).State.Msgs
	var got []string
	for uint64(len(got)) < n {
		b, err := c.Fetch(int(n)-len(got), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			got = append(got, string(m.Data()))
		}
		if err := b.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// TestResendAfterLostAck: the server stores a message but its ack is held
// back past AckTimeout (the proxy is paused). The Publisher sends it again
// under the same Nats-Msg-Id, and again, instead of failing it; once the
// acks come through the publish succeeds and the stream holds the message
// once.
func TestResendAfterLostAck(t *testing.T) {
	t.Parallel()
	e, px, p := stalledPublisher(t, PublisherOptions{AckTimeout: 200 * time.Millisecond, ResendFor: time.Minute})
	e.ensure(t)
	ctx := ctxFor(t, 60*time.Second)
	subj := e.topo.OutSubject(0)
	px.Pause()
	f, err := p.Publish(ctx, subj, []byte("one"), "out-0-1")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, func() string {
		if n := e.streamInfo(t, e.topo.OutStream()).State.Msgs; n != 1 || p.Resends() < 2 {
			return fmt.Sprintf("%d messages stored, %d resends; want 1 and at least 2", n, p.Resends())
		}
		return ""
	})
	select {
	case <-f.Done():
		r, err := f.Result()
		t.Fatalf("publish settled while no ack could come: %+v, %v", r, err)
	default:
	}
	px.Resume()
	a, err := f.Wait(ctx)
	if err != nil {
		t.Fatalf("publish: %v, want its ack", err)
	}
	if a.Seq != 1 {
		t.Errorf("ack %+v, want seq 1", a)
	}
	if got := storedData(t, e, e.topo.OutStream(), subj); len(got) != 1 || got[0] != "one" {
		t.Errorf("stream holds %q, want [one]", got)
	}
	if p.Pending() != 0 {
		t.Errorf("%d publishes still pending", p.Pending())
	}
}

// TestResendKeepsOrder: messages published while no stream listens (each
// attempt answered "no responders": nothing stored) are sent again until
// the stream exists; messages published meanwhile queue behind them. The
// stream holds every message once, in publish order.
func TestResendKeepsOrder(t *testing.T) {
	t.Parallel()
	e, _, p := stalledPublisher(t, PublisherOptions{AckTimeout: 300 * time.Millisecond, RetryAfter: 100 * time.Millisecond, ResendFor: time.Minute})
	ctx := ctxFor(t, 60*time.Second)
	subj := e.topo.OutSubject(1)
	var fs []*Future
	var want []string
	publish := func(n int) {
		for range n {
			i := len(want)
			f, err := p.Publish(ctx, subj, []byte(fmt.Sprint("m", i)), fmt.Sprint("out-1-", i))
			if err != nil {
				t.Fatal(err)
			}
			fs, want = append(fs, f), append(want, fmt.Sprint("m", i))
		}
	}
	publish(10)
	testenv.WaitUntil(t, 30*time.Second, "a resend round", func() bool { return p.Resends() >= 10 })
	publish(10)
	testenv.WaitUntil(t, 30*time.Second, "a second resend round", func() bool { return p.Resends() >= 20 })
	e.ensure(t)
	publish(10)
	for i, f := range fs {
		if _, err := f.Wait(ctx); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	got := storedData(t, e, e.topo.OutStream(), subj)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stream holds\n%q\nwant\n%q", got, want)
	}
}

// TestResendGivesUp: a message whose ack never comes is sent again until
// ResendFor has passed since its first publish, then fails as before the
// resends (ErrUnavailable, outcome unknown); the stream holds it once.
func TestResendGivesUp(t *testing.T) {
	t.Parallel()
	e, px, p := stalledPublisher(t, PublisherOptions{AckTimeout: 200 * time.Millisecond, ResendFor: time.Second})
	e.ensure(t)
	ctx := ctxFor(t, 60*time.Second)
	subj := e.topo.OutSubject(0)
	px.Pause()
	f, err := p.Publish(ctx, subj, []byte("one"), "out-0-1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Wait(ctx)
	if !errors.Is(err, ErrUnavailable) || !OutcomeUnknown(err) {
		t.Fatalf("publish without acks: %v, want ErrUnavailable with an unknown outcome", err)
	}
	if p.Resends() == 0 {
		t.Errorf("given up without a resend")
	}
	if p.Pending() != 0 {
		t.Errorf("%d publishes still pending", p.Pending())
	}
	px.Resume()
	if got := storedData(t, e, e.topo.OutStream(), subj); len(got) != 1 {
		t.Errorf("stream holds %q, want the message once", got)
	}
}

// TestNoResendWithoutMsgID: without a Nats-Msg-Id a resend could store a
// message twice: it fails at its first ack timeout, as without ResendFor.
func TestNoResendWithoutMsgID(t *testing.T) {
	t.Parallel()
	e, px, p := stalledPublisher(t, PublisherOptions{AckTimeout: 200 * time.Millisecond, ResendFor: time.Minute})
	e.ensure(t)
	ctx := ctxFor(t, 60*time.Second)
	px.Pause()
	defer px.Resume()
	f, err := p.Publish(ctx, e.topo.OutSubject(0), []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Wait(ctx); !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		t.Fatalf("publish without ack: %v, want an ack timeout", err)
	}
	if n := p.Resends(); n != 0 {
		t.Errorf("%d resends of a message without Nats-Msg-Id", n)
	}
}

// TestResendCloseFailsWaiting: Close fails messages waiting for a resend
// round as well as those in flight, each once.
func TestResendCloseFailsWaiting(t *testing.T) {
	t.Parallel()
	_, _, p := stalledPublisher(t, PublisherOptions{AckTimeout: time.Second, RetryAfter: time.Second, ResendFor: time.Minute})
	ctx := ctxFor(t, 60*time.Second)
	var fs []*Future
	for i := range 5 {
		f, err := p.Publish(ctx, "nostream."+fmt.Sprint(i%2), []byte("x"), fmt.Sprint("id-", i))
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	testenv.WaitUntil(t, 30*time.Second, "a resend round", func() bool { return p.Resends() >= 5 })
	p.Close()
	for i, f := range fs {
		if _, err := f.Wait(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("publish %d after Close: %v, want ErrClosed", i, err)
		}
	}
	if p.Pending() != 0 {
		t.Errorf("%d publishes still pending", p.Pending())
	}
}
