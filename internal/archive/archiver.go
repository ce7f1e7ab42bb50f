package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/eventrow"
	"treasure/internal/natsjs"
)

// Archiver defaults.
const (
	// DefaultSegment is the time window of a segment.
	DefaultSegment = time.Minute
	// DefaultMaxRows and DefaultMaxBytes close a segment early (rows over
	// all its files; payload bytes of its messages).
	DefaultMaxRows  = 1 << 20
	DefaultMaxBytes = 256 << 20
	// DefaultGrace is how long after its window's end a segment with
	// nothing more pending is closed.
	DefaultGrace = 2 * time.Second
	// pullLinger is the pause of the consumers between pulls that did not
	// fill a batch (natsjs.ConsumerOptions.Linger); well under
	// DefaultGrace, so that it does not delay a segment's commit.
	pullLinger = 250 * time.Millisecond
)

// Options configures an Archiver. Dir, Topology are required.
type Options struct {
	// Dir is the archive directory (TREASURE_ARCHIVE_DIR).
	Dir string
	// Topology names the streams (IN and OUT are archived), the durable
	// consumers (<prefix>-archive-IN, -OUT) and the progress bucket.
	Topology natsjs.Topology
	// Segment is a segment's time window: its messages' JetStream
	// timestamps fall in one window of this length (aligned to the Unix
	// epoch). Default DefaultSegment.
	Segment time.Duration
	// MaxRows and MaxBytes close a segment before its window ends.
	MaxRows  int
	MaxBytes int64
	// Grace: a segment is closed once the clock is this far past its
	// window's end and the stream has nothing more for it. Default
	// DefaultGrace.
	Grace time.Duration
	// Logger receives progress lines (one per segment) and failures; nil
	// discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer

	// hook is a test hook for the commit's stages (see hookFunc); killed,
	// when set, makes a stop commit nothing (a test's SIGKILL).
	hook   hookFunc
	killed *atomic.Bool
	// stuckAfter replaces consumerStuckAfter when positive (tests);
	// consumerInfo, when set, replaces the consumer's Info in the check
	// of once (tests: an answer of "temporarily unavailable").
	stuckAfter   time.Duration
	consumerInfo func(ctx context.Context, s *streamArchiver, c *natsjs.Consumer) error
}

// consumerStuckAfter is how long a stream's consumer may answer
// "JetStream system temporarily unavailable" to the checks of a running
// archiver (an election takes seconds) before the archiver gives it up
// and starts again from its last manifest, which creates it again:
// nats-server 2.9.10 can leave a consumer created shortly before two of
// three nodes crashed without a leader for good, and the consumer's Run
// retries its fetches for as long as that lasts.
const consumerStuckAfter = 30 * time.Second

// ProgressBucket names the JetStream KV bucket where the archiver records,
// under keys IN and OUT, the highest sequence S of each stream such that
// every message with a sequence ≤ S is in the archive (manifest committed).
func ProgressBucket(t natsjs.Topology) string { return t.Prefix + "-archive" }

// Durable names the archiver's durable consumer of a stream.
func Durable(t natsjs.Topology, stream string) string {
	return t.Prefix + "-archive-" + eventrow.StreamRole(stream)
}

// Progress reads the archiver's progress from the KV bucket: the archived
// sequence of IN and of OUT, 0 for a key (or bucket) that does not exist.
func Progress(ctx context.Context, js jetstream.JetStream, t natsjs.Topology) (in, out uint64, err error) {
	kv, err := js.KeyValue(ctx, ProgressBucket(t))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("archive progress: %w", err)
	}
	get := func(key string) (uint64, error) {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("archive progress %s: %w", key, err)
		}
		v, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("archive progress %s: %q: %w", key, e.Value(), err)
		}
		return v, nil
	}
	if in, err = get("IN"); err != nil {
		return 0, 0, err
	}
	out, err = get("OUT")
	return in, out, err
}

type metrics struct {
	archived, lag   *prometheus.GaugeVec
	bytes, segments *prometheus.CounterVec
	rows, messages  *prometheus.CounterVec
	gaps, failures  *prometheus.CounterVec
	recreated       *prometheus.CounterVec
	commitSeconds   prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) metrics {
	lbl := []string{"stream"}
	m := metrics{
		archived: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_archive_archived_seq", Help: "Highest stream sequence such that every message up to it is archived (manifest committed)."}, lbl),
		lag:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_archive_lag_messages", Help: "Stream sequences stored but not yet archived (the stream's last sequence minus the archived one)."}, lbl),
		bytes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_written_bytes_total", Help: "Bytes of Parquet files committed to the archive."}, lbl),
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_segments_total", Help: "Segments committed (one manifest each)."}, lbl),
		rows:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_rows_total", Help: "Rows (events) committed."}, lbl),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_messages_total", Help: "Stream messages committed."}, lbl),
		gaps:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_gaps_total", Help: "Ranges of sequences the stream had lost before they could be archived (each one is logged at error level)."}, lbl),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_failures_total", Help: "Failures that restarted a stream's archiving from its last manifest."}, lbl),
		recreated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_archive_consumer_recreated_total",
			Help: "Times a stream's consumer answered 'JetStream system temporarily unavailable' for 30 s while archiving, and was given up and created again after the last manifest (counted in failures too)."}, lbl),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_archive_commit_seconds", Help: "Time to commit a segment: finish its files, fsync, rename, manifest.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}),
	}
	if r != nil {
		r.MustRegister(m.archived, m.lag, m.bytes, m.segments, m.rows, m.messages, m.gaps, m.failures, m.recreated, m.commitSeconds)
	}
	return m
}

// Archiver archives the IN and OUT streams (see the package doc). Run it
// once per deployment: two archivers on one prefix would share durable
// consumers and steal each other's messages.
type Archiver struct {
	js      jetstream.JetStream
	o       Options
	log     *slog.Logger
	m       metrics
	codec   *zstdCodec
	streams []*streamArchiver
}

// New checks o and returns an Archiver; it does no I/O.
func New(js jetstream.JetStream, o Options) (*Archiver, error) {
	if js == nil {
		return nil, errors.New("archive: JetStream is required")
	}
	if o.Dir == "" {
		return nil, errors.New("archive: no directory")
	}
	if err := o.Topology.Validate(); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	if o.Segment <= 0 {
		o.Segment = DefaultSegment
	}
	if o.MaxRows <= 0 {
		o.MaxRows = DefaultMaxRows
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.stuckAfter <= 0 {
		o.stuckAfter = consumerStuckAfter
	}
	codec, err := newZstdCodec()
	if err != nil {
		return nil, err
	}
	a := &Archiver{js: js, o: o, log: o.Logger, m: newMetrics(o.Registerer), codec: codec}
	for _, s := range []string{o.Topology.InStream(), o.Topology.OutStream()} {
		role := eventrow.StreamRole(s)
		a.streams = append(a.streams, &streamArchiver{a: a, stream: s, role: role, dir: filepath.Join(o.Dir, s),
			log: o.Logger.With("stream", s), stuck: natsjs.StuckWatch{After: o.stuckAfter}})
	}
	return a, nil
}

// Run archives both streams until ctx is cancelled, then commits the open
// segments (so that a clean stop leaves everything consumed archived) and
// returns nil. A failure (a full disk, a lost connection) is logged and
// retried from the stream's last manifest after a backoff; Run returns an
// error only when it cannot start (the archive directory cannot be made).
func (a *Archiver) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.o.Dir, 0o755); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	var wg sync.WaitGroup
	for _, s := range a.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// Ready returns nil once both streams' consumers are in place.
func (a *Archiver) Ready() error {
	for _, s := range a.streams {
		s.mu.Lock()
		ok := s.ready
		s.mu.Unlock()
		if !ok {
			return fmt.Errorf("archiver of %s starting", s.stream)
		}
	}
	return nil
}

// Archived returns the archived sequence of a stream (its JetStream name):
// everything up to it is committed.
func (a *Archiver) Archived(stream string) uint64 {
	for _, s := range a.streams {
		if s.stream == stream {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.archived
		}
	}
	return 0
}

// streamArchiver archives one stream.
type streamArchiver struct {
	a      *Archiver
	stream string
	role   string
	dir    string
	log    *slog.Logger

	mu       sync.Mutex
	ready    bool
	archived uint64   // last committed sequence
	next     uint64   // sequence the next message may have (last seen + 1)
	seg      *segment // open segment, nil between segments
	pending  uint64   // the last message's Pending
	failed   error    // a failure of the handler, for the loop to act on
	kv       jetstream.KeyValue
	gap      *Range // a gap found before the next segment

	// stuck watches the consumer's answers to once's checks (once's
	// goroutine only).
	stuck natsjs.StuckWatch
}

// run archives until ctx is cancelled, starting again from the last
// manifest after any failure.
func (s *streamArchiver) run(ctx context.Context) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.once(ctx)
		if ctx.Err() != nil {
			return
		}
		s.a.m.failures.WithLabelValues(s.role).Inc()
		s.log.Error("archiving failed; starting again from the last manifest", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// recover reads the committed manifests, removes what a crash left, and
// returns the last committed sequence.
func (s *streamArchiver) recover() (uint64, error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return 0, err
	}
	ms, err := readManifests(s.dir, s.stream)
	if err != nil {
		return 0, err
	}
	n, err := removeUncommitted(s.dir, ms)
	if err != nil {
		return 0, fmt.Errorf("remove uncommitted files: %w", err)
	}
	if n > 0 {
		s.log.Info("removed files of an uncommitted segment", "files", n)
	}
	if len(ms) == 0 {
		return 0, nil
	}
	return ms[len(ms)-1].LastSeq, nil
}

// once runs one life of the stream's archiving: from the last manifest
// until ctx is cancelled (nil) or a failure (its error).
func (s *streamArchiver) once(ctx context.Context) error {
	last, err := s.recover()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.archived, s.next, s.seg, s.failed, s.gap, s.pending = last, last+1, nil, nil, nil, 0
	s.mu.Unlock()
	s.a.m.archived.WithLabelValues(s.role).Set(float64(last))
	if err := s.bucket(ctx); err != nil {
		return err
	}
	if err := s.publish(ctx, last); err != nil {
		return err
	}
	cons, err := s.consumer(ctx, last+1)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cons.Run(rctx, s.handle) }()
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	s.log.Info("archiving", "from", last+1, "dir", s.dir)
	defer func() {
		s.mu.Lock()
		s.ready = false
		s.mu.Unlock()
	}()

	tick := min(max(s.a.o.Segment/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	lagEvery := time.Now()
	for {
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return s.stop()
		case err := <-done:
			if ctx.Err() != nil {
				// The consumer returned because of the cancel, and select
				// took this case rather than ctx.Done (both were ready): a
				// clean stop all the same, which commits the open segment.
				return s.stop()
			}
			s.abort()
			if err == nil {
				err = errors.New("consumer stopped")
			}
			return err
		case now := <-t.C:
			s.mu.Lock()
			err := s.failed
			if err == nil && s.seg != nil && s.pending == 0 && !now.Before(s.seg.window.Add(s.a.o.Segment+s.a.o.Grace)) {
				err = s.commit(ctx)
			}
			s.mu.Unlock()
			if err != nil {
				cancel()
				<-done
				s.abort()
				return err
			}
			if now.Sub(lagEvery) >= time.Second {
				lagEvery = now
				s.updateLag(ctx)
				if err := s.checkConsumer(ctx, cons); err != nil {
					cancel()
					<-done
					s.abort()
					return err
				}
			}
		}
	}
}

// stop commits the open segment after a cancel, unless a failure left it
// unusable.
func (s *streamArchiver) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.a.o.killed; k != nil && k.Load() {
		if s.seg != nil {
			s.seg.closeFiles() // a killed process leaves its files as they are
		}
		s.seg = nil
		return nil
	}
	if s.failed != nil || s.seg == nil {
		s.abortLocked()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.commit(ctx); err != nil {
		s.log.Error("commit at stop failed; the next start archives the segment again", "err", err)
	}
	return nil
}

func (s *streamArchiver) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortLocked()
}

func (s *streamArchiver) abortLocked() {
	if s.seg != nil {
		if !errors.Is(s.failed, errCrash) {
			s.seg.abort()
		}
		s.seg = nil
	}
}

// errCrash is what a test hook returns to simulate a crash: the segment's
// files are left as they are.
var errCrash = errors.New("simulated crash")

// errStuck ends once when the consumer has answered "temporarily
// unavailable" for consumerStuckAfter.
var errStuck = errors.New("consumer unreadable")

// checkConsumer asks the consumer for its state (once a second) and
// returns an error wrapping errStuck once it has answered "temporarily
// unavailable" for consumerStuckAfter: the consumer's Run never returns
// over that (it retries its fetches), and once then starts again from
// the last manifest, whose consumer call deletes the consumer and creates
// it again after it. That position is the safe one: everything up to the
// last manifest is committed, and what came after it (taken into the open
// segment, perhaps acknowledged) is in no committed file, so it must come
// again; the segment is written again with the same content and name.
// The consumer's ack floor, unreadable here anyway, would be unsafe: the
// messages of the open segment are acknowledged as they are taken in.
func (s *streamArchiver) checkConsumer(ctx context.Context, cons *natsjs.Consumer) error {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var err error
	if f := s.a.o.consumerInfo; f != nil {
		err = f(ictx, s, cons)
	} else {
		_, err = cons.Info(ictx)
	}
	stuck, unavailable := s.stuck.Observe(err, time.Now())
	if !stuck {
		return nil
	}
	s.stuck.Reset()
	s.a.m.recreated.WithLabelValues(s.role).Inc()
	s.mu.Lock()
	from := s.archived + 1
	s.mu.Unlock()
	s.log.Error("archive consumer unreadable: deleting it and creating it again after the last manifest",
		"unreadable_for", unavailable.Round(time.Second), "from", from, "err", err)
	return fmt.Errorf("%w for %v: %w", errStuck, unavailable.Round(time.Second), err)
}

// consumer creates the stream's durable consumer afresh at sequence from:
// the manifests, not the consumer's acks, say what is archived. Every
// start does so, which is also the remedy for a consumer that answers
// "temporarily unavailable" at every lookup (see checkConsumer): the
// delete is the meta leader's, and the new consumer has a group (and a
// leader) of its own — what natsjs.NewConsumerFrom does for the
// proximity workers, here with the archiver's settings. A start failing
// on that answer is retried (run), and deletes it again.
func (s *streamArchiver) consumer(ctx context.Context, from uint64) (*natsjs.Consumer, error) {
	t := s.a.o.Topology
	durable := Durable(t, s.stream)
	if err := s.a.js.DeleteConsumer(ctx, s.stream, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("archive consumer %s: %w", durable, err)
	}
	// Latency does not matter here (a segment waits for its window's end
	// anyway): the consumer pulls what the stream holds every pullLinger
	// and acknowledges each group with one ack (AckAll), rather than
	// taking each message in as it arrives with an ack of its own, which
	// at a steady 10,000 moves/s cost more than half of the archiver's CPU
	// (BENCHMARKS.md, "Bringing the archiver's cost down").
	const batch, maxAckPending = 1024, 4096
	_, err := s.a.js.CreateConsumer(ctx, s.stream, jetstream.ConsumerConfig{
		Durable:       durable,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       natsjs.DefaultAckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("archive consumer %s: %w", durable, err)
	}
	return natsjs.NewConsumer(ctx, s.a.js, natsjs.ConsumerOptions{
		Stream: s.stream, Durable: durable, Batch: batch, MaxAckPending: maxAckPending,
		Linger: pullLinger, AckAll: true,
		DeadLetter: t.DLQSubject(), Logger: s.log,
	})
}

// handle takes delivered messages into the open segment, committing
// segments as their windows or caps close them. It never fails: a failure
// is left in s.failed, for once to start again from the last manifest
// (what was acknowledged in between comes again, since the consumer is
// recreated there).
func (s *streamArchiver) handle(ctx context.Context, msgs []natsjs.Msg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if s.failed != nil {
			return nil
		}
		if err := s.add(ctx, m); err != nil {
			s.failed = err
			return nil
		}
		s.pending = m.Pending
	}
	return nil
}

// add takes one message. Called with s.mu held.
func (s *streamArchiver) add(ctx context.Context, m natsjs.Msg) error {
	if m.Seq < s.next {
		return nil // seen already
	}
	first := s.next
	if m.Seq > s.next {
		// Sequences missing: deleted from the stream (nothing to
		// archive), or trimmed from its head before we came to them (a
		// gap: logged, counted and recorded in the next manifest).
		st, err := s.a.js.Stream(ctx, s.stream)
		if err != nil {
			return fmt.Errorf("stream info: %w", err)
		}
		if fs := st.CachedInfo().State.FirstSeq; fs > s.next {
			gap := Range{s.next, min(fs, m.Seq) - 1}
			s.a.m.gaps.WithLabelValues(s.role).Inc()
			s.log.Error("the stream lost messages before they were archived", "first", gap.First, "last", gap.Last)
			if s.seg != nil {
				if err := s.commit(ctx); err != nil {
					return err
				}
			}
			s.gap = &gap
			first = gap.Last + 1
		}
	}
	w := windowOf(m.Time, s.a.o.Segment)
	if s.seg != nil && (!s.seg.window.Equal(w) || s.seg.rows >= uint64(s.a.o.MaxRows) || s.seg.payload >= s.a.o.MaxBytes) {
		if err := s.commit(ctx); err != nil {
			return err
		}
	}
	if s.seg == nil {
		s.seg = newSegment(s.dir, s.stream, s.a.codec, first, w)
		s.seg.gapBefore, s.gap = s.gap, nil
	}
	if err := s.seg.add(m); err != nil {
		return err
	}
	s.next = m.Seq + 1
	return nil
}

// windowOf returns the start of the window of length d that t falls in,
// windows aligned to the Unix epoch.
func windowOf(t time.Time, d time.Duration) time.Time {
	ns := t.UnixNano()
	off := ns % int64(d)
	if off < 0 {
		off += int64(d)
	}
	return time.Unix(0, ns-off).UTC()
}

// commit commits the open segment and records the progress. Called with
// s.mu held.
func (s *streamArchiver) commit(ctx context.Context) error {
	seg := s.seg
	start := time.Now()
	man, err := seg.commit(s.a.o.hook)
	if err != nil {
		if errors.Is(err, errCrash) {
			s.failed = err
		} else {
			seg.abort()
		}
		s.seg = nil
		return err
	}
	s.seg = nil
	took := time.Since(start)
	s.archived = man.LastSeq
	var bytes int64
	for _, f := range man.Files {
		bytes += f.Bytes
	}
	m := s.a.m
	m.commitSeconds.Observe(took.Seconds())
	m.archived.WithLabelValues(s.role).Set(float64(man.LastSeq))
	m.bytes.WithLabelValues(s.role).Add(float64(bytes))
	m.segments.WithLabelValues(s.role).Inc()
	m.rows.WithLabelValues(s.role).Add(float64(man.Rows))
	m.messages.WithLabelValues(s.role).Add(float64(man.Messages))
	s.log.Info("segment archived", "first", man.FirstSeq, "last", man.LastSeq, "messages", man.Messages,
		"rows", man.Rows, "files", len(man.Files), "bytes", bytes, "took", took.Round(time.Millisecond))
	if err := s.publish(ctx, man.LastSeq); err != nil {
		// The next segment publishes again; retention waits meanwhile.
		s.log.Warn("recording progress failed", "err", err)
	}
	return nil
}

// bucket creates (or finds) the progress bucket.
func (s *streamArchiver) bucket(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := s.a.js.CreateOrUpdateKeyValue(bctx, jetstream.KeyValueConfig{
		Bucket:      ProgressBucket(s.a.o.Topology),
		Description: "treasure archive: every message of a stream up to this sequence is archived",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.a.o.Topology.Replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("progress bucket: %w", err)
	}
	s.kv = kv
	return nil
}

// publish records the archived sequence in the progress bucket.
func (s *streamArchiver) publish(ctx context.Context, seq uint64) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.kv.Put(pctx, s.role, []byte(strconv.FormatUint(seq, 10))); err != nil {
		return fmt.Errorf("progress %s: %w", s.role, err)
	}
	return nil
}

// updateLag sets the lag gauge from the stream's last sequence.
func (s *streamArchiver) updateLag(ctx context.Context) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.a.js.Stream(ictx, s.stream)
	if err != nil {
		return
	}
	s.mu.Lock()
	archived := s.archived
	s.mu.Unlock()
	last := st.CachedInfo().State.LastSeq
	s.a.m.lag.WithLabelValues(s.role).Set(float64(last - min(archived, last)))
}
