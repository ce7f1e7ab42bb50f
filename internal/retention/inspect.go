package retention

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
)

// Report is what retention knows about the IN and OUT streams: their
// state against their caps and, per subject, the safe sequence and what
// holds it there. JSON-serialisable (`treasure status` renders it).
type Report struct {
	Time    time.Time      `json:"time"`
	Prefix  string         `json:"prefix"`
	Streams []StreamReport `json:"streams"`
	// Errors lists what could not be read; the subjects it concerns are
	// not trimmed.
	Errors []string `json:"errors,omitempty"`
}

// StreamReport is one stream.
type StreamReport struct {
	Stream string `json:"stream"`
	// Present is false when the stream does not exist (nothing else is set).
	Present   bool      `json:"present"`
	Msgs      uint64    `json:"msgs"`
	Bytes     uint64    `json:"bytes"`
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// AgeSpanSeconds is the time between the first and the last message;
	// OldestAgeSeconds the age of the first message at the report's time.
	AgeSpanSeconds   float64 `json:"age_span_seconds"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// MaxMsgs and MaxBytes are the stream's caps (-1: none); the headroom
	// is what is left below them (-1: no cap). A stream at its cap (discard
	// new) refuses publishes.
	MaxMsgs       int64 `json:"max_msgs"`
	MaxBytes      int64 `json:"max_bytes"`
	HeadroomMsgs  int64 `json:"headroom_msgs"`
	HeadroomBytes int64 `json:"headroom_bytes"`
	// Subjects holding messages, in name order.
	Subjects []SubjectReport `json:"subjects"`
}

// SubjectReport is one subject of a stream.
type SubjectReport struct {
	Subject  string `json:"subject"`
	Msgs     uint64 `json:"msgs"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// SafeSeq is the lowest of the holders' sequences: messages up to it
	// may be removed; HeldBy is the label of the holder that sets it.
	SafeSeq uint64   `json:"safe_seq"`
	HeldBy  string   `json:"held_by"`
	Holders []Holder `json:"holders"`
	// Set by a trimming pass (Retainer.Once): how far the age and size
	// bounds wanted to trim (messages up to TargetSeq), whether the safe
	// sequence held them back, and what was purged.
	TargetSeq uint64 `json:"target_seq,omitempty"`
	Blocked   bool   `json:"blocked,omitempty"`
	PurgedTo  uint64 `json:"purged_to,omitempty"`
	Purged    uint64 `json:"purged,omitempty"`
}

// Holder is one reader (or keeper) of a subject and how far it no longer
// needs it: every message up to Seq may go as far as it is concerned.
type Holder struct {
	// Kind is "consumer", "proximity-checkpoint", "push-checkpoint",
	// "archiver", "last-message" or "subject" (a subject retention does
	// not know, which it never trims).
	Kind string `json:"kind"`
	// Name: the consumer, checkpoint object or archive key.
	Name string `json:"name"`
	Seq  uint64 `json:"seq"`
	// Missing: the holder is required but could not be found or read (Seq
	// is 0: nothing is trimmed); Detail says why.
	Missing   bool   `json:"missing,omitempty"`
	Ephemeral bool   `json:"ephemeral,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

// Label names the holder in metrics and in status: "archiver",
// "proximity-checkpoint", "push-checkpoint", "last-message",
// "consumer:<durable>", "consumer:ephemeral", "subject", with "missing:"
// in front of a required holder that is missing.
func (h Holder) Label() string {
	l := h.Kind
	if h.Kind == "consumer" {
		if h.Ephemeral {
			l += ":ephemeral"
		} else {
			l += ":" + h.Name
		}
	}
	if h.Missing {
		return "missing:" + l
	}
	return l
}

// Inspect reports the IN and OUT streams and every subject's safe sequence
// and holders, without trimming anything. Holders it cannot read are
// reported missing (and listed in Report.Errors); the error is for a
// failure that leaves no report (a cancelled context).
func Inspect(ctx context.Context, js jetstream.JetStream, t natsjs.Topology) (Report, error) {
	if err := t.Validate(); err != nil {
		return Report{}, err
	}
	return survey(ctx, js, t, newCheckCache(), time.Now())
}

// survey reads every holder and both streams.
func survey(ctx context.Context, js jetstream.JetStream, t natsjs.Topology, cache *checkCache, now time.Time) (Report, error) {
	rep := Report{Time: now, Prefix: t.Prefix}
	var errs []error
	arch, err := readArchive(ctx, js, t)
	errs = append(errs, err)
	ck, err := readCheckpoints(ctx, js, t, cache)
	errs = append(errs, err)
	for _, in := range []bool{true, false} {
		sr, err := surveyStream(ctx, js, t, in, arch, ck, now)
		errs = append(errs, err)
		rep.Streams = append(rep.Streams, sr)
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	for _, e := range errs {
		if e != nil {
			rep.Errors = append(rep.Errors, e.Error())
		}
	}
	return rep, nil
}

// surveyStream reports one stream and the holders of each of its
// subjects.
func surveyStream(ctx context.Context, js jetstream.JetStream, t natsjs.Topology, in bool, arch map[string]Holder, ck ckptHolders, now time.Time) (StreamReport, error) {
	name, pattern, key := t.OutStream(), t.Prefix+".out.*", KeyOut
	if in {
		name, pattern, key = t.InStream(), t.Prefix+".in.*", KeyIn
	}
	sr := StreamReport{Stream: name}
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return sr, nil
	}
	if err != nil {
		return sr, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(pattern))
	if err != nil {
		return sr, fmt.Errorf("stream %s: %w", name, err)
	}
	sr.Present = true
	fillStream(&sr, info, now)

	var consumers []*jetstream.ConsumerInfo
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		consumers = append(consumers, ci)
	}
	var errs []error
	consumersErr := lister.Err()
	if consumersErr != nil {
		errs = append(errs, fmt.Errorf("stream %s: list consumers: %w", name, consumersErr))
	}

	subjects := make([]string, 0, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		if n > 0 {
			subjects = append(subjects, subj)
		}
	}
	slices.Sort(subjects)
	for _, subj := range subjects {
		sub := SubjectReport{Subject: subj, Msgs: info.State.Subjects[subj]}
		first, err := s.GetMsg(ctx, info.State.FirstSeq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged or removed since the info
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: first message: %w", subj, err))
			continue
		}
		last, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: last message: %w", subj, err))
			continue
		}
		sub.FirstSeq, sub.LastSeq = first.Sequence, last.Sequence

		// The holders: the archiver, the checkpoint, the required
		// consumer, every other consumer reading the subject, the last
		// message.
		var hs []Holder
		hs = append(hs, arch[key])
		var required string
		if in {
			k, ok := inPartition(t, subj)
			if !ok {
				hs = append(hs, Holder{Kind: "subject", Name: subj, Missing: true,
					Detail: fmt.Sprintf("not the log subject of one of the topology's %d partitions: never trimmed", t.Partitions)})
			} else {
				hs = append(hs, ck.part[k])
				required = ProximityDurable(t, k)
			}
		} else {
			hs = append(hs, ck.push)
			required = RankerDurable(t)
		}
		found := false
		for _, ci := range consumers {
			if !consumerReads(ci.Config, subj) {
				continue
			}
			h := Holder{Kind: "consumer", Name: ci.Name, Seq: natsjs.AckFloor(ci), Ephemeral: ci.Config.Durable == ""}
			if ci.Name == required {
				found = true
				hs = slices.Insert(hs, 2, h)
				continue
			}
			hs = append(hs, h)
		}
		if required != "" && !found {
			detail := "durable consumer absent: the service that reads this subject has not started"
			if consumersErr != nil {
				detail = "consumers could not be listed: " + consumersErr.Error()
			}
			hs = slices.Insert(hs, 2, Holder{Kind: "consumer", Name: required, Missing: true, Detail: detail})
		}
		hs = append(hs, Holder{Kind: "last-message", Name: subj, Seq: sub.LastSeq - 1, Detail: "a subject's last message is never removed"})
		sub.Holders = hs
		sub.SafeSeq, sub.HeldBy = safe(hs)
		sr.Subjects = append(sr.Subjects, sub)
	}
	return sr, errors.Join(errs...)
}

// safe returns the lowest holder sequence and its holder's label (the
// first one listed among equals).
func safe(hs []Holder) (uint64, string) {
	best := -1
	for i, h := range hs {
		if best < 0 || h.Seq < hs[best].Seq {
			best = i
		}
	}
	if best < 0 {
		return 0, ""
	}
	return hs[best].Seq, hs[best].Label()
}

// fillStream sets the stream-level figures from info.
func fillStream(sr *StreamReport, info *jetstream.StreamInfo, now time.Time) {
	st := info.State
	sr.Msgs, sr.Bytes, sr.FirstSeq, sr.LastSeq = st.Msgs, st.Bytes, st.FirstSeq, st.LastSeq
	sr.FirstTime, sr.LastTime, sr.AgeSpanSeconds, sr.OldestAgeSeconds = time.Time{}, time.Time{}, 0, 0
	if st.Msgs > 0 {
		sr.FirstTime, sr.LastTime = st.FirstTime, st.LastTime
		sr.AgeSpanSeconds = st.LastTime.Sub(st.FirstTime).Seconds()
		sr.OldestAgeSeconds = max(now.Sub(st.FirstTime).Seconds(), 0)
	}
	sr.MaxMsgs, sr.MaxBytes = info.Config.MaxMsgs, info.Config.MaxBytes
	sr.HeadroomMsgs, sr.HeadroomBytes = -1, -1
	if sr.MaxMsgs > 0 {
		sr.HeadroomMsgs = max(sr.MaxMsgs-int64(st.Msgs), 0)
	}
	if sr.MaxBytes > 0 {
		sr.HeadroomBytes = max(sr.MaxBytes-int64(st.Bytes), 0)
	}
}

// refreshStream re-reads the stream-level figures and the first sequence
// and count of every subject, after purges.
func refreshStream(ctx context.Context, js jetstream.JetStream, sr *StreamReport, now time.Time) error {
	s, err := js.Stream(ctx, sr.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", sr.Stream, err)
	}
	filter := ">"
	if len(sr.Subjects) > 0 {
		// The subjects' common pattern, "<prefix>.in.*" or "<prefix>.out.*".
		subj := sr.Subjects[0].Subject
		filter = subj[:strings.LastIndexByte(subj, '.')+1] + "*"
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return fmt.Errorf("stream %s: %w", sr.Stream, err)
	}
	fillStream(sr, info, now)
	var errs []error
	for j := range sr.Subjects {
		sub := &sr.Subjects[j]
		sub.Msgs = info.State.Subjects[sub.Subject]
		if sub.PurgedTo == 0 {
			continue
		}
		m, err := s.GetMsg(ctx, sub.PurgedTo+1, jetstream.WithGetMsgSubject(sub.Subject))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			sub.FirstSeq = 0
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: first message: %w", sub.Subject, err))
		default:
			sub.FirstSeq = m.Sequence
		}
	}
	return errors.Join(errs...)
}

// inPartition returns k for the subject "<prefix>.in.<k>" of one of t's
// partitions.
func inPartition(t natsjs.Topology, subj string) (int, bool) {
	rest, ok := strings.CutPrefix(subj, t.Prefix+".in.")
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(rest)
	if err != nil || k < 0 || k >= t.Partitions || strconv.Itoa(k) != rest {
		return 0, false
	}
	return k, true
}

// consumerReads reports whether a consumer with configuration c receives
// messages of subject subj.
func consumerReads(c jetstream.ConsumerConfig, subj string) bool {
	filters := c.FilterSubjects
	if c.FilterSubject != "" {
		filters = append(slices.Clip(filters), c.FilterSubject)
	}
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if subjectMatches(f, subj) {
			return true
		}
	}
	return false
}

// subjectMatches reports whether the literal subject subj matches the
// NATS filter f ("*" one token, ">" one or more trailing tokens).
func subjectMatches(f, subj string) bool {
	ft, st := strings.Split(f, "."), strings.Split(subj, ".")
	for i, tok := range ft {
		if tok == ">" {
			return len(st) > i
		}
		if i >= len(st) || tok != "*" && tok != st[i] {
			return false
		}
	}
	return len(ft) == len(st)
}
