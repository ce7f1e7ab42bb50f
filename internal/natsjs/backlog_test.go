package natsjs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/testenv"
)

// backlogValues gathers reg and returns metric name → partition label →
// value.
func backlogValues(tb testing.TB, reg *prometheus.Registry) map[string]map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		out[mf.GetName()] = map[string]float64{}
		for _, m := range mf.GetMetric() {
			part := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "partition" {
					part = l.GetValue()
				}
			}
			out[mf.GetName()][part] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestBacklogCollectorReadsPendingAndAckPending: messages not yet delivered
// count in the backlog; delivered and unacknowledged ones in both the
// backlog and ack-pending; acknowledged ones in neither; a consumer that
// does not exist reports nothing.
func TestBacklogCollectorReadsPendingAndAckPending(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	e.publishSync(t, e.topo.InSubject(0), 5)
	e.publishSync(t, e.topo.InSubject(1), 2)
	c0 := e.newConsumer(t, ConsumerOptions{Durable: "w-0", Subjects: []string{e.topo.InSubject(0)}, Batch: 8})
	e.newConsumer(t, ConsumerOptions{Durable: "w-1", Subjects: []string{e.topo.InSubject(1)}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBacklogCollector(e.js, BacklogOptions{Stream: e.topo.InStream(), Durables: []string{"w-0", "w-1", "absent"},
		Namespace: "test", Label: "partition", Values: []string{"0", "1", "2"}}))

	v := backlogValues(t, reg)
	if b := v["test_backlog_messages"]; len(b) != 2 || b["0"] != 5 || b["1"] != 2 {
		t.Fatalf("backlog before any delivery = %v, want 0:5 1:2 and nothing for the absent consumer", b)
	}
	if a := v["test_ack_pending_messages"]; a["0"] != 0 || a["1"] != 0 {
		t.Fatalf("ack pending before any delivery = %v, want 0", a)
	}

	// Hold the first batch in the handler: delivered, not acknowledged.
	release := make(chan struct{})
	held := make(chan int, 1)
	stop := runConsumer(t, c0, func(ctx context.Context, msgs []Msg) error {
		select {
		case held <- len(msgs):
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	defer stop()
	// The handler gets what has arrived of the pull (so under load the
	// first group may hold fewer than five), but the one pull request of 8
	// has all five delivered: the server counts them all ack-pending.
	n := <-held
	if n < 1 || n > 5 {
		t.Fatalf("first batch held %d messages, want 1 to 5", n)
	}
	testenv.WaitFor(t, 20*time.Second, func() string {
		if v = backlogValues(t, reg); v["test_ack_pending_messages"]["0"] != 5 {
			return fmt.Sprintf("ack pending %v, want 5 on partition 0 (the handler holds %d)", v["test_ack_pending_messages"], n)
		}
		return ""
	})
	if b := v["test_backlog_messages"]["0"]; b != 5 {
		t.Fatalf("backlog while 5 are delivered unacknowledged = %v, want 5", b)
	}
	close(release)
	testenv.WaitFor(t, 20*time.Second, func() string {
		if v = backlogValues(t, reg); v["test_backlog_messages"]["0"] != 0 || v["test_ack_pending_messages"]["0"] != 0 {
			return fmt.Sprintf("after the ack: backlog %v, ack pending %v, want 0 on partition 0", v["test_backlog_messages"], v["test_ack_pending_messages"])
		}
		return ""
	})
	if b := v["test_backlog_messages"]["1"]; b != 2 {
		t.Fatalf("the other consumer's backlog = %v, want 2 still", b)
	}
}

// TestStreamCollectorReadsFillAndCaps: the stream's messages and bytes and
// its caps, nothing for an absent stream.
func TestStreamCollectorReadsFillAndCaps(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	e.ensure(t)
	e.publishSync(t, e.topo.InSubject(1), 3)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewStreamCollector(e.js, e.topo.InStream(), "t_log"), NewStreamCollector(e.js, "absent-"+e.topo.Prefix, "t_none"))
	v := backlogValues(t, reg)
	if len(v) != 4 {
		t.Fatalf("families %v, want the four of t_log only", v)
	}
	info := e.streamInfo(t, e.topo.InStream())
	for name, want := range map[string]float64{"t_log_messages": 3, "t_log_bytes": float64(info.State.Bytes),
		"t_log_max_messages": float64(small.MaxMsgs), "t_log_max_bytes": float64(small.MaxBytes)} {
		if got := v[name][""]; got != want || want == 0 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
