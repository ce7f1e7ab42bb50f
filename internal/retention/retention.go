// Package retention bounds the IN and OUT streams without losing anything:
// a loop removes the old end of every subject with JetStream's
// purge-by-subject-up-to-sequence, but never past the subject's safe
// sequence, the lowest position any holder of that subject still needs.
//
// The streams themselves stay what natsjs declares: limits retention with
// discard-new and byte and message caps. Retention never relies on the
// server to remove anything; when a holder stops (an archiver, a worker, a
// push checkpoint that is never written), its subjects stop being trimmed,
// the stream fills, and publishers get natsjs.ErrUnavailable (ingest answers
// SPEC's `unavailable` with `retry_after_ms`), exactly as before retention
// existed. docs/pipeline.md, "Retention", explains the choice and its
// failure modes.
//
// The holders of a subject, each giving a sequence up to which (inclusive)
// it no longer needs the subject's messages:
//
//   - IN p.in.<k>: the proximity durable consumer of partition k (its ack
//     floor); the oldest proximity checkpoint of partition k that passes
//     retention's checks (its IN sequence: a worker falling back to it
//     replays from the message after it); the archiver (key IN of the KV
//     bucket "<prefix>-archive").
//   - OUT p.out.<k> and p.out.rank: the ranker's durable consumer (its ack
//     floor); the oldest push checkpoint that passes retention's checks;
//     the archiver (key OUT).
//   - both: every other consumer on the stream whose filter matches the
//     subject, durable or not (its ack floor: a replay in progress, a push
//     instance's ordered consumer), and the subject's last message, which
//     is never removed (a restarting ranker reads the last p.out.rank
//     message; a subject is never emptied by retention).
//
// A required holder that cannot be found (no consumer yet, no checkpoint,
// no archive key) holds its subjects at 0: nothing is trimmed there, and
// Inspect and the logs say which one is missing.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
)

// Defaults of Options.
const (
	// DefaultMaxAge is TREASURE_RETENTION's default: messages older than
	// this are removed once every holder is past them.
	DefaultMaxAge = 24 * time.Hour
	// DefaultHighWater is the fraction of a stream's byte or message cap
	// above which its old end is trimmed (down toward it) whatever its age.
	DefaultHighWater = 0.8
	// DefaultEvery is how often Run trims.
	DefaultEvery = time.Minute
)

// The archiver's progress: KV bucket ArchiveBucket, keys KeyIn and KeyOut,
// each a decimal uint64 S meaning every message of that stream with a
// sequence up to S is in the archive (its manifest written and its files
// in place). A missing key means 0.
const (
	KeyIn  = "IN"
	KeyOut = "OUT"
)

// ArchiveBucket names the archiver's KV bucket, "<prefix>-archive".
func ArchiveBucket(t natsjs.Topology) string { return t.Prefix + "-archive" }

// ProximityDurable names partition k's durable consumer on IN; it is
// proximity.Durable (checked by a test; retention does not import the
// service).
func ProximityDurable(t natsjs.Topology, k int) string {
	return t.Prefix + "-proximity-" + strconv.Itoa(k)
}

// RankerDurable names the ranker's durable consumer on OUT; it is
// (*ranker.Ranker).Durable.
func RankerDurable(t natsjs.Topology) string { return t.Prefix + "-ranker" }

// Options configures Run and New.
type Options struct {
	// Topology names the streams, the checkpoint bucket and the archive
	// bucket. Required.
	Topology natsjs.Topology
	// MaxAge removes messages older than this (by their JetStream
	// timestamp). 0 means DefaultMaxAge; negative: no age bound.
	MaxAge time.Duration
	// HighWater is the fraction of a stream's byte or message cap above
	// which its oldest messages are removed, down toward it, whatever
	// their age. 0 means DefaultHighWater; 1 or more, or negative: no size
	// bound.
	HighWater float64
	// Every is how often Run trims; 0 means DefaultEvery.
	Every time.Duration
	// Timeout bounds one pass of Run; 0 means the longer of Every and 30 s.
	Timeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics (see metrics.go); nil: none.
	Registerer prometheus.Registerer
	// Now is the clock the age bound reads; nil means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if err := o.Topology.Validate(); err != nil {
		return o, fmt.Errorf("retention: %w", err)
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.HighWater == 0 {
		o.HighWater = DefaultHighWater
	}
	if o.Every <= 0 {
		o.Every = DefaultEvery
	}
	if o.Timeout <= 0 {
		o.Timeout = max(o.Every, 30*time.Second)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// sizeBound reports whether the high-water bound is on.
func (o Options) sizeBound() bool { return o.HighWater > 0 && o.HighWater < 1 }

// Retainer trims the streams of one topology, one pass per Once. It keeps
// what passes share: the metrics, the checkpoints already checked, and
// what was last logged about each subject. Not safe for concurrent Once
// calls.
type Retainer struct {
	js      jetstream.JetStream
	o       Options
	m       *metrics
	checked *checkCache
	// logged is, per subject, what the last warning said (so that a held
	// subject is logged when its reason changes, not at every pass).
	logged map[string]string
}

// New returns a Retainer; it registers the metrics with o.Registerer.
func New(js jetstream.JetStream, o Options) (*Retainer, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Retainer{js: js, o: o, m: m, checked: newCheckCache(), logged: map[string]string{}}, nil
}

// Run trims every Options.Every until ctx ends, then returns nil. A pass
// that fails is logged and counted (treasure_retention_run_errors) and the
// next one tries again; Run returns an error only for invalid options.
func Run(ctx context.Context, js jetstream.JetStream, o Options) error {
	r, err := New(js, o)
	if err != nil {
		return err
	}
	r.o.Logger.Info("retention running", "every", r.o.Every, "max_age", ageString(r.o.MaxAge), "high_water", r.o.HighWater,
		"archive_bucket", ArchiveBucket(r.o.Topology))
	t := time.NewTicker(r.o.Every)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		_, err := r.Once(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			r.o.Logger.Warn("retention pass failed; the next one tries again", "err", err, "retry_in", r.o.Every)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func ageString(d time.Duration) string {
	if d < 0 {
		return "off"
	}
	return d.String()
}

// Once surveys the holders, removes from every subject of IN and OUT what
// the age and size bounds ask for, never past the subject's safe sequence,
// and returns the report (after the purges). Problems reading a holder
// leave its subjects untrimmed and are listed in Report.Errors; the error
// joins them.
func (r *Retainer) Once(ctx context.Context) (Report, error) {
	// The size bound's cut is an estimate (see sizeCutoff): a pass that
	// purged and left a stream above its high water looks again, a few
	// times at most.
	var rep Report
	type done struct{ n, to uint64 }
	var purged map[string]done
	for round := 0; ; round++ {
		var err error
		rep, err = r.pass(ctx)
		if err != nil {
			r.m.runFailed()
			return rep, err
		}
		// Another round when this one purged and left a stream above its
		// high water.
		again := false
		for _, sr := range rep.Streams {
			n := uint64(0)
			for _, sub := range sr.Subjects {
				n += sub.Purged
			}
			again = again || sr.Present && n > 0 && r.o.sizeBound() && sizeCutoff(&sr, r.o.HighWater) > 0
		}
		// Report what this call purged in all, not its last round's.
		for i := range rep.Streams {
			for j := range rep.Streams[i].Subjects {
				sub := &rep.Streams[i].Subjects[j]
				d := purged[sub.Subject]
				sub.Purged += d.n
				sub.PurgedTo = max(sub.PurgedTo, d.to)
			}
		}
		purged = map[string]done{}
		for _, sr := range rep.Streams {
			for _, sub := range sr.Subjects {
				purged[sub.Subject] = done{sub.Purged, sub.PurgedTo}
			}
		}
		if !again || round == 3 || len(rep.Errors) > 0 {
			break
		}
	}
	r.m.observe(&rep)
	if len(rep.Errors) > 0 {
		var errs []error
		for _, e := range rep.Errors {
			errs = append(errs, errors.New(e))
		}
		return rep, errors.Join(errs...)
	}
	return rep, nil
}

// pass is one survey, trim and refresh.
func (r *Retainer) pass(ctx context.Context) (Report, error) {
	rep, err := survey(ctx, r.js, r.o.Topology, r.checked, r.o.Now())
	if err != nil {
		return rep, err
	}
	for i := range rep.Streams {
		sr := &rep.Streams[i]
		if !sr.Present {
			continue
		}
		if err := r.trimStream(ctx, sr); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	// The stream-level figures after the purges.
	for i := range rep.Streams {
		sr := &rep.Streams[i]
		if !sr.Present {
			continue
		}
		if err := refreshStream(ctx, r.js, sr, r.o.Now()); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		}
	}
	return rep, nil
}

// trimStream computes each subject's target and purges up to
// min(target, safe).
func (r *Retainer) trimStream(ctx context.Context, sr *StreamReport) error {
	s, err := r.js.Stream(ctx, sr.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", sr.Stream, err)
	}
	log := r.o.Logger.With("stream", sr.Stream)
	sizeCut := uint64(0) // messages below it are wanted gone by the size bound
	if r.o.sizeBound() {
		sizeCut = sizeCutoff(sr, r.o.HighWater)
	}
	var errs []error
	for j := range sr.Subjects {
		sub := &sr.Subjects[j]
		if sub.Msgs == 0 || sub.FirstSeq == 0 {
			continue
		}
		target, reason := uint64(0), ""
		if r.o.MaxAge >= 0 {
			// Up to the last message but one (never removed): past the
			// safe sequence too, so that a held subject shows how far
			// the bound would go.
			seq, err := ageTarget(ctx, s, sub.Subject, sub.FirstSeq, sub.LastSeq-1, r.o.Now().Add(-r.o.MaxAge))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: age: %w", sub.Subject, err))
			} else if seq > 0 {
				target, reason = seq, "age"
			}
		}
		if sizeCut > 0 && min(sizeCut-1, sub.LastSeq-1) > target {
			target, reason = min(sizeCut-1, sub.LastSeq-1), "size"
		}
		if target >= sub.FirstSeq {
			sub.TargetSeq = target
			sub.Blocked = sub.SafeSeq < target
		}
		r.note(log, sub)
		upTo := min(sub.TargetSeq, sub.SafeSeq)
		if sub.TargetSeq == 0 || upTo < sub.FirstSeq {
			continue // nothing old enough or above the high water, or held
		}
		n, err := purgeSubject(ctx, r.js, sr.Stream, sub.Subject, upTo)
		if err != nil {
			errs = append(errs, fmt.Errorf("purge %s up to %d: %w", sub.Subject, upTo, err))
			continue
		}
		sub.PurgedTo, sub.Purged = upTo, n
		r.m.purged.WithLabelValues(sr.Stream, sub.Subject).Add(float64(n))
		log.Info("retention purged", "subject", sub.Subject, "up_to_seq", upTo, "messages", n, "reason", reason,
			"safe_seq", sub.SafeSeq, "held_by", sub.HeldBy)
	}
	return errors.Join(errs...)
}

// note logs, when it changed since the last pass, that a subject is
// held back: the bounds want it trimmed past its safe sequence, or a
// required holder is missing (then nothing is trimmed there at all).
func (r *Retainer) note(log *slog.Logger, sub *SubjectReport) {
	var missing []string
	for _, h := range sub.Holders {
		if h.Missing {
			missing = append(missing, h.Label()+" ("+h.Detail+")")
		}
	}
	why := ""
	if sub.Blocked || len(missing) > 0 {
		why = fmt.Sprint(sub.Blocked, sub.HeldBy, missing)
	}
	if r.logged[sub.Subject] == why {
		return
	}
	r.logged[sub.Subject] = why
	switch {
	case why == "":
		log.Info("retention no longer held back", "subject", sub.Subject, "safe_seq", sub.SafeSeq)
	case len(missing) > 0:
		log.Warn("retention: a holder of the subject is missing, nothing of it is trimmed", "subject", sub.Subject,
			"missing", missing, "target_seq", sub.TargetSeq)
	default:
		log.Warn("retention held back: old messages are kept until every holder is past them", "subject", sub.Subject,
			"target_seq", sub.TargetSeq, "safe_seq", sub.SafeSeq, "held_by", sub.HeldBy)
	}
}

// sizeCutoff returns the stream sequence X such that removing every
// message below X would bring the stream to its high water, estimated
// from the stream's density of messages over its sequence range; 0 when
// the stream is at or below its high water.
func sizeCutoff(sr *StreamReport, hw float64) uint64 {
	if sr.Msgs == 0 || sr.LastSeq < sr.FirstSeq {
		return 0
	}
	var remove float64
	if sr.MaxMsgs > 0 {
		remove = max(remove, float64(sr.Msgs)-hw*float64(sr.MaxMsgs))
	}
	if sr.MaxBytes > 0 {
		perMsg := float64(sr.Bytes) / float64(sr.Msgs)
		remove = max(remove, (float64(sr.Bytes)-hw*float64(sr.MaxBytes))/perMsg)
	}
	if remove <= 0 {
		return 0
	}
	span := float64(sr.LastSeq - sr.FirstSeq + 1)
	density := float64(sr.Msgs) / span // messages per sequence number
	cut := sr.FirstSeq + uint64(remove/density+0.999999)
	return min(cut, sr.LastSeq+1)
}

// ageTarget returns the sequence of the last message of subject in
// [first, hi] stored before cutoff, 0 when none is (timestamps grow with
// the sequence: a binary search over "the first message at or after s").
func ageTarget(ctx context.Context, s jetstream.Stream, subject string, first, hi uint64, cutoff time.Time) (uint64, error) {
	if hi < first {
		return 0, nil
	}
	// at returns the subject's first message at or after seq, nil past hi.
	at := func(seq uint64) (*jetstream.RawStreamMsg, error) {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if m.Sequence > hi {
			return nil, nil
		}
		return m, nil
	}
	m, err := at(first)
	if err != nil || m == nil || !m.Time.Before(cutoff) {
		return 0, err
	}
	best := m.Sequence
	lo, up := m.Sequence+1, hi
	for lo <= up {
		mid := lo + (up-lo)/2
		m, err := at(mid)
		if err != nil {
			return 0, err
		}
		if m != nil && m.Time.Before(cutoff) {
			best = m.Sequence
			lo = m.Sequence + 1
		} else {
			up = mid - 1
		}
	}
	return best, nil
}
