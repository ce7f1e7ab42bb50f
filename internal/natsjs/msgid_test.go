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
