package natsjs

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestFindMsgID finds a stored message by its Nats-Msg-Id on its subject,
// and does not find an id never stored, one on another subject, or one
// stored before since.
func TestFindMsgID(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		ctx := ctxFor(t, 30*time.Second)
		stream, subj, other := e.topo.InStream(), e.topo.InSubject(0), e.topo.InSubject(1)
		if found, err := FindMsgID(ctx, e.js, stream, subj, time.Time{}, "x"); err != nil || found {
			t.Fatalf("empty stream: found %v, err %v", found, err)
		}
		pub := func(subject, id string) {
			m := nats.NewMsg(subject)
			m.Data = []byte("batch")
			m.Header.Set(jetstream.MsgIDHeader, id)
			if _, err := e.js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 50 {
			pub(subj, "early-"+strconv.Itoa(i))
		}
		time.Sleep(20 * time.Millisecond) // a server timestamp strictly after the early ones
		since := time.Now()
		for i := range 50 {
			pub(subj, "late-"+strconv.Itoa(i))
			pub(other, "other-"+strconv.Itoa(i))
		}
		for _, tc := range []struct {
			id    string
			since time.Time
			want  bool
		}{
			{"late-0", since, true},
			{"late-49", since, true},
			{"early-3", time.Time{}, true},
			{"early-3", since, false},
			{"other-7", since, false},
			{"never", since, false},
		} {
			found, err := FindMsgID(ctx, e.js, stream, subj, tc.since, tc.id)
			if err != nil || found != tc.want {
				t.Errorf("FindMsgID(%s, since %v) = %v, %v; want %v", tc.id, !tc.since.IsZero(), found, err, tc.want)
			}
		}
	})
}

// TestScanSince reads, in stream order and with their data, exactly the
// messages on its subject (a wildcard) stored at or after since, and
// nothing from an empty stream.
func TestScanSince(t *testing.T) {
	t.Parallel()
	servers(t, func(t *testing.T, e env) {
		e.ensure(t)
		ctx := ctxFor(t, 30*time.Second)
		stream, all := e.topo.InStream(), e.topo.Prefix+".in.*"
		scan := func(since time.Time) []string {
			t.Helper()
			var got []string
			err := ScanSince(ctx, e.js, stream, all, since, func(m jetstream.Msg) error {
				got = append(got, m.Headers().Get(jetstream.MsgIDHeader)+"="+string(m.Data()))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		if got := scan(time.Time{}); len(got) != 0 {
			t.Fatalf("empty stream: %v", got)
		}
		pub := func(subject, id string) {
			m := nats.NewMsg(subject)
			m.Data = []byte("d-" + id)
			m.Header.Set(jetstream.MsgIDHeader, id)
			if _, err := e.js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 30 {
			pub(e.topo.InSubject(i%2), "early-"+strconv.Itoa(i))
		}
		time.Sleep(20 * time.Millisecond) // a server timestamp strictly after the early ones
		since := time.Now()
		var want []string
		for i := range 700 { // more than one pull of 512
			id := "late-" + strconv.Itoa(i)
			pub(e.topo.InSubject(i%2), id)
			want = append(want, id+"=d-"+id)
		}
		got := scan(since)
		if len(got) != len(want) {
			t.Fatalf("scan since: %d messages, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("scan since: message %d is %s, want %s", i, got[i], want[i])
			}
		}
		if n := len(scan(time.Time{})); n != 730 {
			t.Fatalf("scan from the start: %d messages, want 730", n)
		}
	})
}
