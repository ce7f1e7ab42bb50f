package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/retention"
	"treasure/services/proximity"
)

const statusSynopsis = `status [--json] [--watch [INTERVAL]] [--sample D] [--endpoints FILE] [--services NAME=URL,...|none]

Prints the state of the pipeline:

  - services: each service's GET /readyz (ready, not ready and why, or
    down), and, per process, the services its /metrics reports ready
    (treasure_service_ready; in treasure dev one process serves all four);
  - per partition, and for the ranker: the backlog (messages not yet
    delivered plus delivered and unacknowledged), the acknowledgement-pending
    part of it, the processing rate and the arrival rate (two reads --sample
    apart, in log messages per second) and the drain ETA, backlog ÷
    (processing rate − arrival rate): "never" while the backlog does not
    shrink, "0s" when there is none; a backlog below one second of
    processing is work in flight, its ETA backlog ÷ processing rate;
  - every stream of TREASURE_STREAM_PREFIX (messages, bytes, first and last
    sequence) and every consumer on them, each partition's lease holder
    (the proximity worker that owns it, and how long ago it renewed) and
    each partition's newest proximity checkpoint.

Where to look: TREASURE_NATS_URL and TREASURE_STREAM_PREFIX for the log
(for a running demo: TREASURE_NATS_URL=nats://127.0.0.1:4223), and the
services at TREASURE_INGEST_ADDR … TREASURE_RANKER_ADDR; --endpoints FILE
(what treasure dev --endpoints writes) gives all of them at once; --services
lists the services to check instead (name=URL or name=host:port; "none"
checks none).

--json prints one JSON object (with --watch, one per refresh, one a line).
--watch refreshes every INTERVAL (default 2s; --watch 5s or --watch=5s) until
interrupted: in place on a terminal, as successive blocks otherwise; rates
then run from one refresh to the next.`

// statusFlags are status's command line.
type statusFlags struct {
	json      bool
	watch     watchFlag
	sample    time.Duration
	endpoints string
	services  string
}

// watchFlag is --watch with an optional interval: a boolean flag that also
// takes a duration (--watch=5s), or the next argument (--watch 5s, handled
// after parsing).
type watchFlag struct {
	on    bool
	every time.Duration
}

const defaultWatchEvery = 2 * time.Second

func (w *watchFlag) String() string {
	if w == nil || !w.on {
		return ""
	}
	return w.every.String()
}

func (w *watchFlag) IsBoolFlag() bool { return true }

func (w *watchFlag) Set(s string) error {
	switch s {
	case "true":
		w.on = true
		if w.every == 0 {
			w.every = defaultWatchEvery
		}
		return nil
	case "false":
		w.on = false
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 100*time.Millisecond {
		return fmt.Errorf("want a duration of at least 100ms, like 2s")
	}
	w.on, w.every = true, d
	return nil
}

func runStatus(ctx context.Context, args []string, env Env, io IO) error {
	var f statusFlags
	fs := newFlagSet("status", statusSynopsis, io.Stderr)
	fs.BoolVar(&f.json, "json", false, "print one JSON object (one a line with --watch)")
	fs.Var(&f.watch, "watch", "refresh every INTERVAL (default 2s) until interrupted")
	fs.DurationVar(&f.sample, "sample", time.Second, "time between the two reads that give the rates (without --watch)")
	fs.StringVar(&f.endpoints, "endpoints", "", "read NATS, the stream prefix and the services' addresses from this file (written by treasure dev --endpoints)")
	fs.StringVar(&f.services, "services", "", "services to check: name=URL or name=host:port, comma-separated; none: no health checks")
	if err := parse(fs, args); err != nil {
		return err
	}
	// --watch 5s: the flag package stops at "5s"; take it as the interval
	// and parse what follows it.
	for rest := fs.Args(); len(rest) > 0; rest = fs.Args() {
		d, err := time.ParseDuration(rest[0])
		if !f.watch.on || err != nil {
			return &UsageError{Msg: fmt.Sprintf("unexpected argument %q (an interval goes right after --watch)", rest[0])}
		}
		if err := f.watch.Set(d.String()); err != nil {
			return &UsageError{Msg: "--watch: " + err.Error()}
		}
		if err := parse(fs, rest[1:]); err != nil {
			return err
		}
	}
	if f.sample < 10*time.Millisecond || f.sample > time.Minute {
		return &UsageError{Msg: "--sample: want 10ms to 1m"}
	}
	cfg, err := platform.FromEnv(env)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	natsURL, topo := cfg.NATSURL, topology(cfg)
	targets, err := statusTargets(f, cfg)
	if err != nil {
		return err
	}
	if f.endpoints != "" {
		e, err := readEndpoints(f.endpoints)
		if err != nil {
			return &InputError{Err: err}
		}
		natsURL, topo.Prefix = e.NATS, e.StreamPrefix
	}
	nc, js, err := connectJetStream(natsURL, "treasure-status")
	if err != nil {
		return err
	}
	defer nc.Close()
	s := &statusSource{js: js, topo: topo, natsURL: natsURL, server: nc.ConnectedServerVersion(), targets: targets,
		client: &http.Client{Timeout: 2 * time.Second}}

	if !f.watch.on {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second+f.sample)
		defer cancel()
		r, _, err := s.collect(cctx, nil, f.sample)
		if err != nil {
			return err
		}
		return writeStatus(io.Stdout, r, f.json)
	}
	inPlace := !f.json && isTerminal(io.Stdout)
	var prev *queueReads
	for first := true; ; first = false {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second+f.sample)
		r, reads, err := s.collect(cctx, prev, f.sample)
		cancel()
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if err != nil {
			// A watch outlives a NATS hiccup: say so, and try again.
			fmt.Fprintf(io.Stderr, "treasure status: %s: %v\n", time.Now().Format(time.TimeOnly), err)
			prev = nil
		} else {
			prev = reads
			switch {
			case inPlace:
				fmt.Fprint(io.Stdout, "\x1b[H\x1b[2J") // home, clear screen
			case !first && !f.json:
				fmt.Fprintln(io.Stdout)
			}
			if err := writeStatus(io.Stdout, r, f.json); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.watch.every):
		}
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// statusTarget is one service process to check.
type statusTarget struct {
	Name, URL string
}

// statusTargets returns the services to check: --services, else the
// processes of --endpoints, else the four addresses of the configuration.
func statusTargets(f statusFlags, cfg platform.Config) ([]statusTarget, error) {
	switch {
	case f.services == "none":
		return nil, nil
	case f.services != "":
		var ts []statusTarget
		for _, item := range strings.Split(f.services, ",") {
			name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok || name == "" || addr == "" {
				return nil, &UsageError{Msg: fmt.Sprintf("--services: %q: want name=URL or name=host:port", item)}
			}
			ts = append(ts, statusTarget{Name: name, URL: baseURL(addr)})
		}
		return ts, nil
	case f.endpoints != "":
		e, err := readEndpoints(f.endpoints)
		if err != nil {
			return nil, &InputError{Err: err}
		}
		var ts []statusTarget
		for _, p := range e.Processes {
			ts = append(ts, statusTarget{Name: p.Name, URL: baseURL(p.Addr)})
		}
		return ts, nil
	}
	return []statusTarget{
		{"ingest", baseURL(cfg.IngestAddr)}, {"push", baseURL(cfg.PushAddr)},
		{"proximity", baseURL(cfg.ProximityAddr)}, {"ranker", baseURL(cfg.RankerAddr)},
	}, nil
}

// baseURL turns a listen address or URL into an http:// base URL; an
// unspecified host (":8081", "0.0.0.0:8081") becomes the loopback address.
func baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(strings.Replace(strings.Replace(addr, "ws://", "http://", 1), "wss://", "https://", 1), "/")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// readEndpoints reads the file treasure dev --endpoints writes.
func readEndpoints(path string) (devEndpoints, error) {
	var e devEndpoints
	b, err := os.ReadFile(path)
	if err != nil {
		return e, fmt.Errorf("--endpoints: %w", err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("--endpoints %s: %w", path, err)
	}
	if e.NATS == "" || e.StreamPrefix == "" {
		return e, fmt.Errorf("--endpoints %s: no nats or stream_prefix", path)
	}
	return e, nil
}

// statusReport is what status prints; its JSON form is --json's.
type statusReport struct {
	Time          time.Time         `json:"time"`
	NATS          string            `json:"nats"`
	ServerVersion string            `json:"server_version"`
	StreamPrefix  string            `json:"stream_prefix"`
	SampleSeconds float64           `json:"sample_seconds"` // between the two reads of the rates
	Services      []serviceHealth   `json:"services"`
	Partitions    []queueStatus     `json:"partitions"`
	Ranker        *queueStatus      `json:"ranker"` // nil while its consumer does not exist
	Backlog       queueStatus       `json:"backlog"`
	Streams       []streamStatus    `json:"streams"`
	Consumers     []consumerStatus  `json:"consumers"`
	Checkpoints   []checkpointState `json:"checkpoints"` // nil when the bucket is absent
	// Leases holds each partition's lease (nil when the bucket is absent:
	// no worker has started).
	Leases []leaseState `json:"leases"`
	// Retention is retention.Inspect's report: what may be removed of
	// each subject and which holder keeps the rest (nil when it could not
	// be read; RetentionError says why).
	Retention      *retention.Report `json:"retention"`
	RetentionError string            `json:"retention_error,omitempty"`
}

// serviceHealth is one checked service process.
type serviceHealth struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	State  string `json:"state"` // ready, not_ready, down
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Serves holds treasure_service_ready of the process's /metrics: the
	// services it runs and whether each is ready.
	Serves map[string]bool `json:"serves,omitempty"`
}

// queueStatus is a consumer's backlog and rates.
type queueStatus struct {
	Partition  *int   `json:"partition,omitempty"`
	Consumer   string `json:"consumer,omitempty"`
	Backlog    uint64 `json:"backlog"`     // num pending + num ack pending
	Pending    uint64 `json:"pending"`     // not yet delivered
	AckPending uint64 `json:"ack_pending"` // delivered, not acknowledged
	// Rates in log messages per second over the sample; nil when they
	// could not be measured (no earlier read, the consumer recreated).
	ProcessedPerS *float64 `json:"processed_per_s"`
	ArrivedPerS   *float64 `json:"arrived_per_s"`
	// DrainETASeconds is nil when the backlog does not shrink ("never")
	// or no rate is known; DrainETA says which.
	DrainETASeconds *float64 `json:"drain_eta_seconds"`
	DrainETA        string   `json:"drain_eta"`
	Absent          bool     `json:"absent,omitempty"` // no such consumer (yet)
}

type streamStatus struct {
	Name     string `json:"name"`
	Absent   bool   `json:"absent,omitempty"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	MaxMsgs  int64  `json:"max_msgs"`
	MaxBytes int64  `json:"max_bytes"`
}

type consumerStatus struct {
	Name        string `json:"name"`
	Stream      string `json:"stream"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	AckFloor    uint64 `json:"ack_floor"`
	Redelivered int    `json:"redelivered"`
}

type checkpointState struct {
	Partition  int      `json:"partition"`
	Seq        uint64   `json:"seq"`
	AgeSeconds *float64 `json:"age_seconds"`
	Bytes      uint64   `json:"bytes"`
	Kept       int      `json:"kept"`
}

// leaseState is a partition's lease: its holder, when the holder acquired
// it and how long ago the server stored its last renewal. Holder is empty
// when nobody holds it.
type leaseState struct {
	Partition   int       `json:"partition"`
	Holder      string    `json:"holder,omitempty"`
	Acquired    time.Time `json:"acquired,omitzero"`
	RenewedAgoS *float64  `json:"renewed_ago_seconds,omitempty"`
	TTLSeconds  float64   `json:"ttl_seconds"`
	ExpiresInS  *float64  `json:"expires_in_seconds,omitempty"`
	Revision    uint64    `json:"revision,omitempty"`
}

// statusSource is where status reads from.
type statusSource struct {
	js      jetstream.JetStream
	topo    natsjs.Topology
	natsURL string
	server  string
	targets []statusTarget
	client  *http.Client
}

// queueReads is one read of the proximity and ranker consumers, by durable
// name (nil: absent), with when it was taken.
type queueReads struct {
	at    time.Time
	infos map[string]*jetstream.ConsumerInfo
}

func (s *statusSource) durables() []string {
	d := make([]string, 0, s.topo.Partitions+1)
	for k := 0; k < s.topo.Partitions; k++ {
		d = append(d, proximity.Durable(s.topo, k))
	}
	return append(d, s.topo.Prefix+"-ranker")
}

func (s *statusSource) readQueues(ctx context.Context) (*queueReads, error) {
	r := &queueReads{at: time.Now(), infos: map[string]*jetstream.ConsumerInfo{}}
	for i, d := range s.durables() {
		stream := s.topo.InStream()
		if i == s.topo.Partitions {
			stream = s.topo.OutStream()
		}
		c, err := s.js.Consumer(ctx, stream, d)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
			r.infos[d] = nil
		case err != nil:
			return nil, fmt.Errorf("consumer %s: %w", d, err)
		default:
			r.infos[d] = c.CachedInfo()
		}
	}
	return r, nil
}

// collect reads everything once. The rates run from prev (when not nil)
// or from a first read sample earlier. It returns the reads for the next
// refresh.
func (s *statusSource) collect(ctx context.Context, prev *queueReads, sample time.Duration) (statusReport, *queueReads, error) {
	r := statusReport{NATS: platform.MaskURL(s.natsURL), ServerVersion: s.server, StreamPrefix: s.topo.Prefix}
	var health sync.WaitGroup
	health.Go(func() { r.Services = s.checkServices(ctx) })
	if prev == nil {
		var err error
		if prev, err = s.readQueues(ctx); err != nil {
			health.Wait()
			return r, nil, err
		}
		select {
		case <-ctx.Done():
			health.Wait()
			return r, nil, ctx.Err()
		case <-time.After(sample):
		}
	}
	cur, err := s.readQueues(ctx)
	if err != nil {
		health.Wait()
		return r, nil, err
	}
	r.Time = cur.at.UTC().Round(time.Millisecond)
	r.SampleSeconds = round3(cur.at.Sub(prev.at).Seconds())
	var total queueRates
	for i, d := range s.durables() {
		q := queueStat(prev.infos[d], cur.infos[d], prev.at, cur.at)
		q.Consumer = d
		if i < s.topo.Partitions {
			k := i
			q.Partition = &k
			r.Partitions = append(r.Partitions, q)
			total.add(q)
		} else if !q.Absent {
			r.Ranker = &q
		}
	}
	r.Backlog = total.status()
	if err := s.readStreams(ctx, &r); err != nil {
		health.Wait()
		return r, nil, err
	}
	if r.Checkpoints, err = s.readCheckpoints(ctx); err != nil {
		health.Wait()
		return r, nil, err
	}
	if r.Leases, err = s.readLeases(ctx); err != nil {
		health.Wait()
		return r, nil, err
	}
	if rep, err := retention.Inspect(ctx, s.js, s.topo); err != nil {
		r.RetentionError = err.Error()
	} else {
		r.Retention = &rep
	}
	health.Wait()
	return r, cur, nil
}

// queueStat computes a consumer's backlog, rates and drain ETA from two
// reads of its info taken at t0 and t1 (the server's timestamps when it
// gives them). The processing rate is the advance of the acknowledged
// floor of consumer sequences (a redelivery counts again); the arrival
// rate is that plus the backlog's growth.
func queueStat(a, b *jetstream.ConsumerInfo, t0, t1 time.Time) queueStatus {
	if b == nil {
		return queueStatus{Absent: true, DrainETA: "-"}
	}
	q := queueStatus{Pending: b.NumPending, AckPending: uint64(max(b.NumAckPending, 0))}
	q.Backlog = q.Pending + q.AckPending
	if a != nil && !a.TimeStamp.IsZero() && !b.TimeStamp.IsZero() {
		t0, t1 = a.TimeStamp, b.TimeStamp
	}
	dt := t1.Sub(t0).Seconds()
	if a == nil || dt <= 0 || !a.Created.Equal(b.Created) || b.AckFloor.Consumer < a.AckFloor.Consumer {
		q.DrainETA = drainLabel(q.Backlog)
		return q
	}
	processed := float64(b.AckFloor.Consumer - a.AckFloor.Consumer)
	arrived := max(processed+float64(q.Backlog)-float64(a.NumPending+uint64(max(a.NumAckPending, 0))), 0)
	pr, ar := round3(processed/dt), round3(arrived/dt)
	q.ProcessedPerS, q.ArrivedPerS = &pr, &ar
	q.DrainETASeconds, q.DrainETA = drainETA(q.Backlog, pr, ar)
	return q
}

// drainETA is backlog ÷ (processed − arrived): nil and "never" when that
// is not positive and there is a backlog, 0 and "0s" without backlog. A
// backlog smaller than one second of processing is work in flight, not a
// queue: its ETA is backlog ÷ processed, whatever arrives meanwhile.
func drainETA(backlog uint64, processed, arrived float64) (*float64, string) {
	if backlog == 0 {
		z := 0.0
		return &z, "0s"
	}
	if processed > 0 && float64(backlog) < processed {
		eta := round3(float64(backlog) / processed)
		return &eta, fmtSeconds(eta)
	}
	net := processed - arrived
	if net <= 0 {
		return nil, "never"
	}
	eta := round3(float64(backlog) / net)
	return &eta, fmtSeconds(eta)
}

// drainLabel is the drain ETA when no rate is known.
func drainLabel(backlog uint64) string {
	if backlog == 0 {
		return "0s"
	}
	return "unknown"
}

// fmtSeconds prints a duration in seconds as 0.04s, 2.5s, 12s, 3m05s, 2h10m.
func fmtSeconds(s float64) string {
	switch {
	case s < 1:
		return strconv.FormatFloat(s, 'f', 2, 64) + "s"
	case s < 10:
		return strconv.FormatFloat(s, 'f', 1, 64) + "s"
	case s < 60:
		return strconv.Itoa(int(math.Round(s))) + "s"
	case s < 3600:
		m := int(s) / 60
		return fmt.Sprintf("%dm%02ds", m, int(s)-60*m)
	case s < 1e9:
		h := int(s) / 3600
		return fmt.Sprintf("%dh%02dm", h, (int(s)-3600*h)/60)
	}
	return "never"
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// queueRates sums the partitions' figures.
type queueRates struct {
	backlog, pending, ackPending uint64
	processed, arrived           float64
	unknown                      bool
	any                          bool
}

func (t *queueRates) add(q queueStatus) {
	if q.Absent {
		return
	}
	t.any = true
	t.backlog += q.Backlog
	t.pending += q.Pending
	t.ackPending += q.AckPending
	if q.ProcessedPerS == nil {
		t.unknown = true
		return
	}
	t.processed += *q.ProcessedPerS
	t.arrived += *q.ArrivedPerS
}

func (t queueRates) status() queueStatus {
	q := queueStatus{Backlog: t.backlog, Pending: t.pending, AckPending: t.ackPending, Absent: !t.any}
	if t.unknown || !t.any {
		q.DrainETA = drainLabel(t.backlog)
		if !t.any {
			q.DrainETA = "-"
		}
		return q
	}
	pr, ar := round3(t.processed), round3(t.arrived)
	q.ProcessedPerS, q.ArrivedPerS = &pr, &ar
	q.DrainETASeconds, q.DrainETA = drainETA(t.backlog, pr, ar)
	return q
}

// readStreams fills the streams and consumers of r.
func (s *statusSource) readStreams(ctx context.Context, r *statusReport) error {
	found := 0
	for _, name := range []string{s.topo.InStream(), s.topo.OutStream(), s.topo.DLQStream()} {
		st, err := s.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			r.Streams = append(r.Streams, streamStatus{Name: name, Absent: true})
			continue
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		found++
		info, err := st.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		ss := info.State
		r.Streams = append(r.Streams, streamStatus{Name: name, Messages: ss.Msgs, Bytes: ss.Bytes, FirstSeq: ss.FirstSeq, LastSeq: ss.LastSeq,
			MaxMsgs: info.Config.MaxMsgs, MaxBytes: info.Config.MaxBytes})
		for ci := range st.ListConsumers(ctx).Info() {
			r.Consumers = append(r.Consumers, consumerStatus{Name: ci.Name, Stream: ci.Stream, Pending: ci.NumPending,
				AckPending: ci.NumAckPending, AckFloor: ci.AckFloor.Stream, Redelivered: ci.NumRedelivered})
		}
	}
	if found == 0 {
		return fmt.Errorf("no stream of prefix %q on %s: is the pipeline running there (TREASURE_NATS_URL, TREASURE_STREAM_PREFIX)?", s.topo.Prefix, platform.MaskURL(s.natsURL))
	}
	sort.Slice(r.Consumers, func(i, j int) bool {
		if r.Consumers[i].Stream != r.Consumers[j].Stream {
			return r.Consumers[i].Stream < r.Consumers[j].Stream
		}
		return r.Consumers[i].Name < r.Consumers[j].Name
	})
	return nil
}

// readCheckpoints returns, per partition, the newest proximity checkpoint
// (nil when the bucket is absent).
func (s *statusSource) readCheckpoints(ctx context.Context) ([]checkpointState, error) {
	store, err := natsjs.BindCheckpoints(ctx, s.js, s.topo)
	if errors.Is(err, natsjs.ErrNoCheckpoints) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	all, err := store.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]checkpointState, s.topo.Partitions)
	for k := range out {
		out[k].Partition = k
		for i := range all { // newest first
			if all[i].Partition != k {
				continue
			}
			if out[k].Kept == 0 {
				age := round3(time.Since(all[i].Time).Seconds())
				out[k].Seq, out[k].Bytes, out[k].AgeSeconds = all[i].Seq, all[i].Size, &age
			}
			out[k].Kept++
		}
	}
	return out, nil
}

// readLeases returns every partition's lease (nil when the bucket is
// absent).
func (s *statusSource) readLeases(ctx context.Context) ([]leaseState, error) {
	ls, err := natsjs.BindLeases(ctx, s.js, s.topo)
	if errors.Is(err, natsjs.ErrNoLeases) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]leaseState, s.topo.Partitions)
	ttl := ls.TTL().Seconds()
	for k := range out {
		out[k] = leaseState{Partition: k, TTLSeconds: ttl}
		st, ok, err := ls.Get(ctx, natsjs.PartitionLeaseKey(k))
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		ago := round3(time.Since(st.Written).Seconds())
		left := round3(max(ttl-ago, 0))
		out[k].Holder, out[k].Acquired, out[k].Revision = st.Holder, st.Acquired, st.Revision
		out[k].RenewedAgoS, out[k].ExpiresInS = &ago, &left
	}
	return out, nil
}

// checkServices GETs every target's /readyz and /metrics, in parallel.
func (s *statusSource) checkServices(ctx context.Context) []serviceHealth {
	out := make([]serviceHealth, len(s.targets))
	var wg sync.WaitGroup
	for i, t := range s.targets {
		wg.Go(func() { out[i] = s.checkService(ctx, t) })
	}
	wg.Wait()
	return out
}

func (s *statusSource) checkService(ctx context.Context, t statusTarget) serviceHealth {
	h := serviceHealth{Name: t.Name, URL: t.URL}
	code, body, err := s.get(ctx, t.URL+"/readyz")
	switch {
	case err != nil:
		h.State, h.Reason = "down", err.Error()
		return h
	case code == http.StatusOK:
		h.State, h.Ready = "ready", true
	default:
		h.State = "not_ready"
		h.Reason = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(body)), "not ready:"))
		if h.Reason == "" {
			h.Reason = http.StatusText(code)
		}
	}
	if code, body, err := s.get(ctx, t.URL+"/metrics"); err == nil && code == http.StatusOK {
		h.Serves = serviceReadiness(body)
	}
	return h
}

func (s *statusSource) get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, body, err
}

// serviceReadiness reads treasure_service_ready from a /metrics text.
func serviceReadiness(text []byte) map[string]bool {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(text)))
	if err != nil {
		return nil
	}
	f, ok := fams["treasure_service_ready"]
	if !ok {
		return nil
	}
	out := map[string]bool{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "service" {
				out[l.GetValue()] = m.GetGauge().GetValue() == 1
			}
		}
	}
	return out
}

// writeStatus prints r as text or as one JSON line.
func writeStatus(w io.Writer, r statusReport, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	fmt.Fprintf(w, "nats %s (server %s), stream prefix %q, %d partitions, %s; rates over %.1fs\n",
		r.NATS, r.ServerVersion, r.StreamPrefix, len(r.Partitions), r.Time.Format(time.RFC3339), r.SampleSeconds)

	if len(r.Services) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "service\turl\tstate\t")
		for _, h := range r.Services {
			state := h.State
			if h.Reason != "" {
				state += ": " + h.Reason
			}
			if len(h.Serves) > 1 || len(h.Serves) == 1 && !h.Serves[h.Name] {
				names := make([]string, 0, len(h.Serves))
				for n := range h.Serves {
					names = append(names, n)
				}
				sort.Strings(names)
				for i, n := range names {
					if h.Serves[n] {
						names[i] = n + " ready"
					} else {
						names[i] = n + " NOT READY"
					}
				}
				state += " (" + strings.Join(names, ", ") + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", h.Name, h.URL, state)
		}
		tw.Flush()
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "partition\tbacklog\tack pending\tprocessed/s\tarrived/s\tdrain ETA\t")
	row := func(name string, q queueStatus) {
		if q.Absent {
			fmt.Fprintf(tw, "%s\t(no consumer)\t\t\t\t\t\n", name)
			return
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t\n", name, q.Backlog, q.AckPending, fmtRate(q.ProcessedPerS), fmtRate(q.ArrivedPerS), q.DrainETA)
	}
	for _, q := range r.Partitions {
		row(strconv.Itoa(*q.Partition), q)
	}
	row("all", r.Backlog)
	if r.Ranker != nil {
		row("ranker", *r.Ranker)
	} else {
		row("ranker", queueStatus{Absent: true})
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stream\tmessages\tbytes\tfirst seq\tlast seq\t")
	for _, st := range r.Streams {
		if st.Absent {
			fmt.Fprintf(tw, "%s\t(absent)\t\t\t\t\n", st.Name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", st.Name, st.Messages, st.Bytes, st.FirstSeq, st.LastSeq)
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "consumer\tstream\twaiting\tunacked\tack floor\tredelivered\t")
	var backlog uint64
	for _, c := range r.Consumers {
		backlog += c.Pending + uint64(max(c.AckPending, 0))
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t\n", c.Name, c.Stream, c.Pending, c.AckPending, c.AckFloor, c.Redelivered)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nbacklog: %d messages waiting or unacknowledged over %d consumers\n", backlog, len(r.Consumers))

	if r.Leases == nil {
		fmt.Fprintln(w, "\nleases: none (bucket absent: no proximity worker has started)")
	} else {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "partition\tlease holder\trenewed\tacquired\t")
		for _, l := range r.Leases {
			if l.Holder == "" {
				fmt.Fprintf(tw, "%d\t(none)\t\t\t\n", l.Partition)
				continue
			}
			fmt.Fprintf(tw, "%d\t%s\t%s ago (ttl %s)\t%s\t\n", l.Partition, l.Holder, fmtSeconds(*l.RenewedAgoS), fmtSeconds(l.TTLSeconds),
				l.Acquired.UTC().Format(time.RFC3339))
		}
		tw.Flush()
	}
	if r.Checkpoints == nil {
		fmt.Fprintln(w, "\ncheckpoints: none (bucket absent)")
	} else {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "partition\tcheckpoint seq\tage\tbytes\tkept\t")
		for _, c := range r.Checkpoints {
			if c.Kept == 0 {
				fmt.Fprintf(tw, "%d\t(none)\t\t\t0\t\n", c.Partition)
				continue
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t\n", c.Partition, c.Seq, time.Duration(*c.AgeSeconds*float64(time.Second)).Round(time.Second), c.Bytes, c.Kept)
		}
		tw.Flush()
	}
	if r.Retention != nil {
		return renderRetention(w, *r.Retention)
	}
	fmt.Fprintf(w, "\nretention: %s\n", r.RetentionError)
	return nil
}

func fmtRate(r *float64) string {
	if r == nil {
		return "-"
	}
	return strconv.FormatFloat(*r, 'f', 1, 64)
}

var _ flag.Value = (*watchFlag)(nil)
