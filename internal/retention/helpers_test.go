package retention

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

// world is one test's streams (two partitions, small caps) and buckets.
type world struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	topo  natsjs.Topology
	store *natsjs.Checkpoints
}

func newWorld(tb testing.TB, capMsgs int64) world {
	tb.Helper()
	nc, js, prefix := testenv.JetStream(tb)
	l := natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: capMsgs}
	topo := natsjs.Topology{Prefix: prefix, Partitions: 2, In: l, Out: l, Upd: l, DLQ: l}
	ctx := ctxFor(tb)
	if err := topo.Ensure(ctx, js); err != nil {
		tb.Fatal(err)
	}
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		tb.Fatal(err)
	}
	return world{nc: nc, js: js, topo: topo, store: store}
}

func ctxFor(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// publish stores n messages on each subject in turn (round-robin) and
// returns, per subject, their sequences.
func (w world) publish(tb testing.TB, n int, subjects ...string) map[string][]uint64 {
	tb.Helper()
	ctx := ctxFor(tb)
	out := map[string][]uint64{}
	for i := 0; i < n; i++ {
		for _, s := range subjects {
			ack, err := w.js.Publish(ctx, s, []byte(fmt.Sprintf("%s#%d", s, i)))
			if err != nil {
				tb.Fatal(err)
			}
			out[s] = append(out[s], ack.Sequence)
		}
	}
	return out
}

// consumer creates a durable consumer (ephemeral when name is empty) on
// stream reading filter (all when empty) and acks its messages up to
// stream sequence upTo.
func (w world) consumer(tb testing.TB, stream, name, filter string, upTo uint64) {
	tb.Helper()
	ctx := ctxFor(tb)
	cfg := jetstream.ConsumerConfig{Durable: name, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute}
	if name == "" {
		cfg.InactiveThreshold = time.Minute // an ephemeral consumer
	}
	c, err := w.js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	w.ack(tb, c, upTo)
}

// ack fetches and acks c's messages up to stream sequence upTo.
func (w world) ack(tb testing.TB, c jetstream.Consumer, upTo uint64) {
	tb.Helper()
	ctx := ctxFor(tb)
	for {
		info, err := c.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if info.AckFloor.Stream >= upTo || info.NumPending == 0 {
			return
		}
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			tb.Fatal(err)
		}
		meta, err := m.Metadata()
		if err != nil {
			tb.Fatal(err)
		}
		if meta.Sequence.Stream > upTo {
			_ = m.Nak()
			return
		}
		if err := m.DoubleAck(ctx); err != nil {
			tb.Fatal(err)
		}
	}
}

// archive writes the archiver's progress key (the test's stand-in for the
// archiver).
func (w world) archive(tb testing.TB, key string, seq uint64) {
	tb.Helper()
	archiveKey(tb, w.js, w.topo, key, seq)
}

func archiveKey(tb testing.TB, js jetstream.JetStream, topo natsjs.Topology, key string, seq uint64) {
	tb.Helper()
	ctx := ctxFor(tb)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: ArchiveBucket(topo)})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := kv.Put(ctx, key, []byte(strconv.FormatUint(seq, 10))); err != nil {
		tb.Fatal(err)
	}
}

// tinyGraph is a path of 4 nodes.
func tinyGraph(tb testing.TB) *graph.Graph {
	tb.Helper()
	g, err := graph.FromEdges(4, []graph.Edge{{U: 0, V: 1, Len: 1}, {U: 1, V: 2, Len: 1}, {U: 2, V: 3, Len: 1}}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// proxCkpt stores a sound proximity checkpoint of partition k at seq.
func (w world) proxCkpt(tb testing.TB, k int, seq uint64) {
	tb.Helper()
	if err := w.store.Put(ctxFor(tb), k, seq, proxCkptBytes(tb, k, w.topo.Partitions, seq)); err != nil {
		tb.Fatal(err)
	}
}

// proxCkptBytes is a sound proximity checkpoint of partition k of
// partitions at seq (over a tiny graph).
func proxCkptBytes(tb testing.TB, k, partitions int, seq uint64) []byte {
	g := tinyGraph(tb)
	e := game.NewEngine(g, 5)
	e.Drop(game.Treasure{ID: "t", Node: 1, Points: 3})
	return e.AppendCheckpoint(nil, &game.CheckpointMeta{Partition: uint32(k), Partitions: uint32(partitions), Seq: seq,
		Players: map[string]game.SeqWindow{"ann": {Last: 4}}}, game.Fingerprint(g))
}

// pushCkptBytes is a sound push checkpoint at seq of no players and no
// leaderboard (services/push/checkpoint.go's format, version 1).
func pushCkptBytes(seq uint64) []byte {
	le := binary.LittleEndian
	players := []byte{0}     // no players
	board := []byte{0, 0, 0} // not seen, version 0, no message
	b := make([]byte, 48)
	copy(b, pushMagic)
	le.PutUint32(b[8:], 1)
	le.PutUint64(b[16:], seq)
	le.PutUint64(b[24:], uint64(len(players)))
	le.PutUint64(b[32:], uint64(len(board)))
	le.PutUint32(b[12:], crc32.Checksum(b, castagnoli))
	b = append(b, players...)
	b = le.AppendUint32(b, crc32.Checksum(players, castagnoli))
	b = append(b, board...)
	return le.AppendUint32(b, crc32.Checksum(board, castagnoli))
}

func (w world) pushCkpt(tb testing.TB, seq uint64) {
	tb.Helper()
	if err := w.store.PushPut(ctxFor(tb), seq, pushCkptBytes(seq)); err != nil {
		tb.Fatal(err)
	}
}

// retainer returns a Retainer for which every message is older than its
// MaxAge (its clock is two days ahead), with its own registry.
func (w world) retainer(tb testing.TB, o Options) (*Retainer, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	o.Topology, o.Registerer = w.topo, reg
	if o.Logger == nil {
		o.Logger = testLog()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	}
	if o.HighWater == 0 {
		o.HighWater = -1 // no size bound unless the test asks
	}
	r, err := New(w.js, o)
	if err != nil {
		tb.Fatal(err)
	}
	return r, reg
}

// once runs one pass and fails the test on an error.
func once(tb testing.TB, r *Retainer) Report {
	tb.Helper()
	rep, err := r.Once(ctxFor(tb))
	if err != nil {
		tb.Fatalf("retention pass: %v", err)
	}
	return rep
}

// present returns the sequences of stream's messages on subject.
func (w world) present(tb testing.TB, stream, subject string) []uint64 {
	tb.Helper()
	ctx := ctxFor(tb)
	s, err := w.js.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	var seqs []uint64
	next := uint64(1)
	for {
		m, err := s.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return seqs
		}
		seqs = append(seqs, m.Sequence)
		next = m.Sequence + 1
	}
}

// subject returns the report's entry for subject.
func subject(tb testing.TB, rep Report, subj string) SubjectReport {
	tb.Helper()
	for _, sr := range rep.Streams {
		for _, s := range sr.Subjects {
			if s.Subject == subj {
				return s
			}
		}
	}
	tb.Fatalf("no subject %s in the report", subj)
	return SubjectReport{}
}

// above returns the elements of seqs greater than x.
func above(seqs []uint64, x uint64) []uint64 {
	var out []uint64
	for _, s := range seqs {
		if s > x {
			out = append(out, s)
		}
	}
	return out
}

// metric returns the value of the gauge or counter name whose labels
// include labels, and whether there is one.
func metric(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}
