package retention

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are retention's Prometheus metrics (docs/operations.md,
// "Retention").
type metrics struct {
	safeSeq, firstSeq, heldBy, blocked *prometheus.GaugeVec
	headroomBytes, headroomMsgs, age   *prometheus.GaugeVec
	purged                             *prometheus.CounterVec
	runs                               prometheus.Counter
	runErrors, lastRun                 prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	subj := []string{"stream", "subject"}
	m := &metrics{
		safeSeq: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_safe_seq",
			Help: "Per subject, the highest sequence retention may remove: the lowest position any holder still needs (consumer ack floors, oldest checkpoint, archiver, last message)."}, subj),
		firstSeq: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_first_seq",
			Help: "Per subject, the sequence of its first (oldest) message."}, subj),
		heldBy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_held_by",
			Help: "1 for the holder that sets the subject's safe sequence (holder: archiver, proximity-checkpoint, push-checkpoint, consumer:<name>, consumer:ephemeral, last-message; missing:<...> when a required holder is absent and nothing is trimmed)."},
			[]string{"stream", "subject", "holder"}),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_blocked",
			Help: "1 when the age or size bound wants the subject trimmed past its safe sequence: a holder is behind (see treasure_retention_held_by)."}, subj),
		headroomBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_headroom_bytes",
			Help: "Bytes left below the stream's byte cap (discard new: at 0 publishes are refused); +Inf without a cap."}, []string{"stream"}),
		headroomMsgs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_headroom_messages",
			Help: "Messages left below the stream's message cap; +Inf without a cap."}, []string{"stream"}),
		age: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "treasure_retention_oldest_message_age_seconds",
			Help: "Age of the stream's first message."}, []string{"stream"}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "treasure_retention_purged_messages_total",
			Help: "Messages removed by retention."}, subj),
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_retention_runs_total",
			Help: "Retention passes."}),
		runErrors: prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_retention_run_errors",
			Help: "Errors of the last retention pass (holders or streams it could not read, purges that failed); their subjects were not trimmed."}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_retention_last_run_timestamp_seconds",
			Help: "Unix time of the last retention pass."}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.safeSeq, m.firstSeq, m.heldBy, m.blocked, m.headroomBytes, m.headroomMsgs, m.age, m.purged, m.runs, m.runErrors, m.lastRun} {
			if err := r.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// observe sets the gauges from a pass's report.
func (m *metrics) observe(rep *Report) {
	m.runs.Inc()
	m.lastRun.Set(float64(rep.Time.UnixNano()) / float64(time.Second))
	m.runErrors.Set(float64(len(rep.Errors)))
	for _, v := range []*prometheus.GaugeVec{m.safeSeq, m.firstSeq, m.heldBy, m.blocked, m.headroomBytes, m.headroomMsgs, m.age} {
		v.Reset()
	}
	for _, sr := range rep.Streams {
		if !sr.Present {
			continue
		}
		headroom := func(v int64) float64 {
			if v < 0 {
				return posInf
			}
			return float64(v)
		}
		m.headroomBytes.WithLabelValues(sr.Stream).Set(headroom(sr.HeadroomBytes))
		m.headroomMsgs.WithLabelValues(sr.Stream).Set(headroom(sr.HeadroomMsgs))
		m.age.WithLabelValues(sr.Stream).Set(sr.OldestAgeSeconds)
		for _, sub := range sr.Subjects {
			m.safeSeq.WithLabelValues(sr.Stream, sub.Subject).Set(float64(sub.SafeSeq))
			m.firstSeq.WithLabelValues(sr.Stream, sub.Subject).Set(float64(sub.FirstSeq))
			m.heldBy.WithLabelValues(sr.Stream, sub.Subject, sub.HeldBy).Set(1)
			b := 0.0
			if sub.Blocked {
				b = 1
			}
			m.blocked.WithLabelValues(sr.Stream, sub.Subject).Set(b)
		}
	}
}

// runFailed records a pass that produced no report.
func (m *metrics) runFailed() {
	m.runs.Inc()
	m.runErrors.Set(1)
	m.lastRun.Set(float64(time.Now().UnixNano()) / float64(time.Second))
}

var posInf = math.Inf(1)
