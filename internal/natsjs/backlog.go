package natsjs

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// BacklogOptions configures a BacklogCollector.
type BacklogOptions struct {
	// Stream holds the consumers.
	Stream string
	// Durables names the durable consumers to report.
	Durables []string
	// Namespace starts the metric names: Namespace+"_backlog_messages" and
	// Namespace+"_ack_pending_messages" (e.g. "treasure_proximity").
	Namespace string
	// Label names the label telling the consumers apart ("partition") and
	// Values gives its value for each of Durables. Empty Label: no label
	// (one consumer).
	Label  string
	Values []string
	// Timeout bounds the JetStream requests of one scrape (default 2 s).
	Timeout time.Duration
	// Include, when not nil, says at each scrape whether Durables[i] is
	// reported: a proximity worker reports only the partitions whose lease
	// it holds, so that a standby's copy of a backlog is neither summed
	// twice nor taken for a stalled consumer.
	Include func(i int) bool
}

// BacklogCollector is a prometheus.Collector that reads, at every scrape,
// the backlog of durable consumers from JetStream (one consumer-info
// request each): <ns>_backlog_messages, the messages not yet delivered plus
// those delivered and not yet acknowledged (what docs/operations.md calls
// the backlog), and <ns>_ack_pending_messages, the second part alone. A
// consumer whose info cannot be read (absent, or JetStream away) reports
// nothing at that scrape, so an alert on the metric's absence catches it.
// Safe for concurrent use.
type BacklogCollector struct {
	js                  jetstream.JetStream
	o                   BacklogOptions
	backlog, ackPending *prometheus.Desc
}

var _ prometheus.Collector = (*BacklogCollector)(nil)

// NewBacklogCollector returns a collector of o's consumers on js.
func NewBacklogCollector(js jetstream.JetStream, o BacklogOptions) *BacklogCollector {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	var labels []string
	if o.Label != "" {
		labels = []string{o.Label}
	}
	return &BacklogCollector{
		js: js, o: o,
		backlog: prometheus.NewDesc(o.Namespace+"_backlog_messages",
			"Messages of the consumer's subjects not yet delivered plus delivered and not yet acknowledged (JetStream's num_pending + num_ack_pending), read at the scrape.", labels, nil),
		ackPending: prometheus.NewDesc(o.Namespace+"_ack_pending_messages",
			"Messages delivered to the consumer and not yet acknowledged (JetStream's num_ack_pending), read at the scrape.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *BacklogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.backlog
	ch <- c.ackPending
}

// Collect implements prometheus.Collector: one JetStream request per
// consumer, all within Timeout.
func (c *BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.o.Timeout)
	defer cancel()
	for i, d := range c.o.Durables {
		if c.o.Include != nil && !c.o.Include(i) {
			continue
		}
		cons, err := c.js.Consumer(ctx, c.o.Stream, d)
		if err != nil {
			continue
		}
		info := cons.CachedInfo()
		var lv []string
		if c.o.Label != "" {
			lv = []string{d} // a missing value: the durable's name
			if i < len(c.o.Values) {
				lv[0] = c.o.Values[i]
			}
		}
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(info.NumPending)+float64(info.NumAckPending), lv...)
		ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), lv...)
	}
}

// StreamCollector is a prometheus.Collector that reads, at every scrape,
// how full a stream is (one stream-info request): <ns>_messages,
// <ns>_bytes, and its caps <ns>_max_messages, <ns>_max_bytes (-1:
// unlimited). Nothing is reported while the info cannot be read. Safe for
// concurrent use.
type StreamCollector struct {
	js                          jetstream.JetStream
	stream                      string
	timeout                     time.Duration
	msgs, bytes, maxMsgs, maxBy *prometheus.Desc
}

var _ prometheus.Collector = (*StreamCollector)(nil)

// NewStreamCollector returns a collector of stream on js whose metric names
// start with namespace (e.g. "treasure_ingest_log").
func NewStreamCollector(js jetstream.JetStream, stream, namespace string) *StreamCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help+" (stream "+stream+", read at the scrape).", nil, nil)
	}
	return &StreamCollector{js: js, stream: stream, timeout: 2 * time.Second,
		msgs:    d("messages", "Messages the stream holds"),
		bytes:   d("bytes", "Bytes the stream holds"),
		maxMsgs: d("max_messages", "The stream's message cap; -1: none"),
		maxBy:   d("max_bytes", "The stream's byte cap; -1: none"),
	}
}

// Describe implements prometheus.Collector.
func (c *StreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.msgs
	ch <- c.bytes
	ch <- c.maxMsgs
	ch <- c.maxBy
}

// Collect implements prometheus.Collector.
func (c *StreamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s, err := c.js.Stream(ctx, c.stream)
	if err != nil {
		return
	}
	info := s.CachedInfo()
	ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.GaugeValue, float64(info.State.Msgs))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(info.State.Bytes))
	ch <- prometheus.MustNewConstMetric(c.maxMsgs, prometheus.GaugeValue, float64(info.Config.MaxMsgs))
	ch <- prometheus.MustNewConstMetric(c.maxBy, prometheus.GaugeValue, float64(info.Config.MaxBytes))
}
