package ranker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// unavailableErr is what a lookup of a consumer without a leader answers.
var unavailableErr = &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}

// TestRankerRecreatesStuckConsumer leaves the ranker's state as two kills
// do — A published the events of its first batch and died before the ack,
// B stored the claims of a longer batch and died before publishing — and
// then starts C with a consumer that answers "temporarily unavailable"
// (the stuck state of nats-server 2.9.10, which cannot be produced on
// demand: C's first lookup is made to answer it, with a StuckWatch that
// gives up at once). C must create the consumer again right after the last
// input whose events P.out.rank holds (A's batch), not after the claims
// PostgreSQL holds (B's, whose events were never published) nor from the
// stream's start, and end with exactly the events, PostgreSQL scores and
// Redis board of an uninterrupted run (the model).
func TestRankerRecreatesStuckConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	log := randomLog(11, 40, 6)
	m := newModel()
	m.feed(log...)
	publish(t, e, log...)
	// published reads where the events on P.out.rank reach, independently
	// of the ranker's code: the last message's id (0 with none).
	published := func(ctx context.Context) (uint64, error) {
		st, err := e.js.Stream(ctx, e.topo.OutStream())
		if err != nil {
			return 0, err
		}
		last, err := st.GetLastMsgForSubject(ctx, e.topo.RankSubject())
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		p, _, _, ok := resumePoint(last.Header.Get(jetstream.MsgIDHeader))
		if !ok {
			return 0, fmt.Errorf("last rank message id %q", last.Header.Get(jetstream.MsgIDHeader))
		}
		return p, nil
	}
	// A dies after a call that published events, before its ack (calls
	// without a claim go through).
	o := e.options()
	o.Batch = 5
	_, stopA := start(t, o, func(stage string, cancel func()) error {
		if p, err := published(context.Background()); stage != "published" || err != nil || p == 0 {
			return err
		}
		cancel()
		return context.Canceled
	})
	testenv.WaitUntil(t, wait, "A published nothing", func() bool { return len(readOutput(t, e).scores) > 0 })
	stopA()
	// B dies after a call that stored claims beyond the published inputs,
	// before publishing their events (calls that did not go through).
	o.Batch = 12
	_, stopB := start(t, o, func(stage string, cancel func()) error {
		if stage != "applied" {
			return nil
		}
		p, err := published(context.Background())
		if err != nil {
			return err
		}
		if rows, err := e.pg.ClaimsFrom(context.Background(), position(p+1, 0)); err != nil || len(rows) == 0 {
			return err
		}
		cancel()
		return context.Canceled
	})
	testenv.WaitUntil(t, wait, "B stored no claim beyond the published inputs", func() bool {
		p, err := published(t.Context())
		if err != nil {
			return false
		}
		rows, err := e.pg.ClaimsFrom(t.Context(), position(p+1, 0))
		return err == nil && len(rows) > 0
	})
	stopB()

	through, err := published(t.Context())
	if err != nil || through == 0 {
		t.Fatalf("published through %d (err %v), want inputs published", through, err)
	}
	if rows, err := e.pg.ClaimsFrom(t.Context(), position(through+1, 0)); err != nil || len(rows) == 0 {
		t.Fatalf("PostgreSQL holds no claim beyond the published inputs (%d; err %v): the setup does not tell the positions apart", through, err)
	}

	reg := prometheus.NewRegistry()
	o.Registerer = reg
	o.Batch = 3
	var lookups, unavailable atomic.Int32
	start(t, o, nil, func(r *Ranker) {
		r.stuck.After = 0
		r.newConsumer = func(ctx context.Context, js jetstream.JetStream, co natsjs.ConsumerOptions) (*natsjs.Consumer, error) {
			if lookups.Add(1) == 1 {
				unavailable.Add(1)
				return nil, fmt.Errorf("consumer %s on %s: %w", co.Durable, co.Stream, unavailableErr)
			}
			return natsjs.NewConsumer(ctx, js, co)
		}
	})
	out := waitScores(t, e, len(m.events))
	if unavailable.Load() != 1 {
		t.Fatalf("%d unavailable answers, want 1", unavailable.Load())
	}
	if got := metric(reg, "treasure_ranker_consumer_recreated_total"); got != 1 {
		t.Fatalf("treasure_ranker_consumer_recreated_total %v, want 1", got)
	}
	cons, err := e.js.Consumer(t.Context(), e.topo.OutStream(), e.topo.Prefix+"-ranker")
	if err != nil {
		t.Fatal(err)
	}
	if c := cons.CachedInfo().Config; c.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || c.OptStartSeq != through+1 {
		t.Fatalf("consumer created again with %v from %d, want from %d (after the published inputs)", c.DeliverPolicy, c.OptStartSeq, through+1)
	}
	if got := scoreLines(out.scores); !slices.Equal(got, m.events) {
		t.Fatalf("score events\n got %v\nwant %v", got, m.events)
	}
	checkBoards(t, e, m)
}

// TestRankerRecreateFrom checks the position alone: after the last input
// P.out.rank's last message covers, 1 with nothing published.
func TestRankerRecreateFrom(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	nc := testenv.ConnectNATS(t, testenv.NATSURL())
	o := e.options()
	o.NC = nc
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	o.JS = js
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.pub.Close()
	if from, err := r.recreateFrom(t.Context()); err != nil || from != 1 {
		t.Fatalf("nothing published: from %d (err %v), want 1", from, err)
	}
	for _, c := range []struct {
		id   string
		want uint64
	}{
		{rankID(17), 18},
		{rankPartID(23, 1), 23}, // input 23 only in part
		{boardID(30<<versionShift | 2), 31},
	} {
		if _, err := e.js.Publish(t.Context(), e.topo.RankSubject(), []byte("x"), jetstream.WithMsgID(c.id)); err != nil {
			t.Fatal(err)
		}
		r.published = 99 // what it held before does not count
		if from, err := r.recreateFrom(t.Context()); err != nil || from != c.want {
			t.Fatalf("last id %s: from %d (err %v), want %d", c.id, from, err, c.want)
		}
	}
}
