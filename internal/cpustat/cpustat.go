// Package cpustat measures what the server side of a run costs: the CPU
// seconds, resident memory and garbage-collector work of every process that
// serves the players, read from outside those processes, so that a load
// generator can report server CPU per move with itself left out.
//
// A Sampler reads three kinds of source, each named in its Options:
//
//   - Go services, through their Prometheus /metrics URL (the registry of
//     internal/platform.NewRegistry): process_cpu_seconds_total,
//     process_resident_memory_bytes, process_start_time_seconds, and the GC
//     figures described at GC.
//   - Redis, through INFO: used_cpu_sys + used_cpu_user +
//     used_cpu_sys_children + used_cpu_user_children (the children are the
//     fork()ed snapshot writers) and used_memory_rss.
//   - Local processes found in /proc by name (PostgreSQL's postmaster and
//     backends, a separate nats-server) or by process id: utime + stime +
//     cutime + cstime from /proc/PID/stat, and the resident set from the same
//     file (the kernel counter that /proc/PID/status reports as VmRSS). How
//     processes that come and go between two samples are counted is written
//     at Source.Exited.
//
// A Sample reads every source at one instant (concurrently); Between (or
// Over, for a series) turns two samples into a Report: CPU seconds per source
// and in total, RSS, GC CPU and pauses. Report.MicrosPerMove divides by a
// number of moves.
//
// Sampling costs: a scrape of a service's /metrics (platform.NewRegistry)
// costs a few milliseconds of CPU on both sides on the shared 2-core box,
// charged to the service; a walk of /proc a few more to the sampling
// process. Sample at the start and end of a run, or every few seconds for
// the RSS peak — not every 100 ms.
//
// What is not counted is what no source names: the load generator (leave
// it out), the kernel's own work outside process context (softirqs of the
// loopback device are mostly charged to the processes that send), and the
// unaccounted exits described at Source.Exited.
package cpustat

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kinds of source.
const (
	KindMetrics = "metrics" // a Go service's /metrics
	KindRedis   = "redis"   // a Redis server's INFO
	KindProcess = "process" // processes found in /proc by name or id
)

// Options names the sources a Sampler reads. The zero value reads nothing.
type Options struct {
	// Metrics lists Go services' /metrics URLs (http://host:port/metrics).
	// A source is named after the services whose treasure_<service>_
	// metrics it serves and its host:port ("ingest 127.0.0.1:8081"), or its
	// host:port alone.
	Metrics []string
	// Redis lists Redis servers as redis:// URLs (go-redis ParseURL syntax);
	// each source is named "redis host:port".
	Redis []string
	// Processes lists process names, matched exactly against the kernel's
	// command name (/proc/PID/comm, at most 15 bytes: a longer name is
	// matched on its first 15). Every process of one name is one source
	// named after it ("postgres": the postmaster and all its backends). A
	// name that matches no process gives a source with Procs 0, not an
	// error: `treasure dev` embeds its NATS server, for one.
	Processes []string
	// PIDs lists single processes by id; each is a source named
	// "<comm> <pid>". A PID that does not exist is an error of Sample.
	PIDs []int
	// Timeout bounds the reading of one source in one Sample (default 5s).
	Timeout time.Duration
	// HTTPClient reads the /metrics URLs; nil uses a client of the Sampler's
	// own, closed by Close.
	HTTPClient *http.Client
}

// Sampler reads the sources of its Options. Safe for concurrent use; Close
// it when done.
type Sampler struct {
	o       Options
	client  *http.Client
	ownHTTP bool
	redis   []*redis.Client
	badURL  []error // per Redis URL: why it did not parse
	clkTck  float64
}

// New returns a Sampler for o. It connects lazily: an unreachable source
// shows up as an error of Sample, as does a malformed Redis URL.
func New(o Options) *Sampler {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	s := &Sampler{o: o, client: o.HTTPClient, clkTck: clockTicks()}
	if s.client == nil {
		s.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownHTTP = true
	}
	for _, u := range o.Redis {
		opt, err := redis.ParseURL(u)
		s.badURL = append(s.badURL, err)
		if err != nil {
			s.redis = append(s.redis, nil)
			continue
		}
		opt.PoolSize = 1
		opt.MaxRetries = -1
		s.redis = append(s.redis, redis.NewClient(opt))
	}
	return s
}

// Close releases the Sampler's Redis connections and idle HTTP connections.
func (s *Sampler) Close() error {
	var errs []error
	for _, c := range s.redis {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	if s.ownHTTP {
		s.client.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// Snapshot is every source's cumulative counters at one instant. Compare two
// with Between.
type Snapshot struct {
	At      time.Time
	Sources []Source // in Options order: Metrics, Redis, Processes, PIDs
}

// Source is one source's cumulative counters in a Snapshot.
type Source struct {
	// Key identifies the source across snapshots (its kind and URL, name or
	// id); Name is for people.
	Key, Name, Kind string
	// CPUSeconds is the CPU time (user + system) the source has used since
	// it started; for a process group, see Exited.
	CPUSeconds float64
	// RSSBytes is the resident set now. For a process group it is the sum
	// over its processes, which counts shared memory (PostgreSQL's
	// shared_buffers) once per process that touched it: an overstatement.
	RSSBytes uint64
	// Instance identifies the process instance (Go:
	// process_start_time_seconds; Redis: its run_id; empty for process
	// groups, whose members are tracked one by one): when it changes between
	// two snapshots the source restarted, and Between counts its CPU from
	// zero.
	Instance string
	// GC is the Go runtime's collector, for KindMetrics sources (nil
	// otherwise).
	GC *GC
	// Procs is the number of processes found (process sources).
	Procs int
	// Exited explains process groups, whose members come and go (PostgreSQL
	// forks a backend per connection). A group's CPU between two snapshots
	// is, per process (identified by pid and start time): its own and its
	// reaped children's time (utime+stime+cutime+cstime) at the second
	// snapshot minus the same at the first (0 for a process born since);
	// for a member that exited in between, its time after the first
	// snapshot appears in its parent's cutime/cstime once the parent has
	// reaped it — the postmaster reaps its backends — so it is counted
	// exactly when the parent (its ppid at the first snapshot) is a member
	// alive at both. Otherwise that last stretch is unknowable from /proc
	// and the Report counts it in Unaccounted.
	procs map[procKey]procTimes
	// Err is why the source could not be read (its other fields are zero).
	Err error
}

// GC is the Go garbage collector's cumulative figures from /metrics.
type GC struct {
	// CPUSeconds is the runtime's estimate of the CPU spent in GC
	// (go_cpu_classes_gc_total_cpu_seconds_total: mark assists, dedicated
	// and idle mark workers, pauses). Idle mark workers run only on
	// otherwise idle processors, so a mostly idle process shows more.
	CPUSeconds float64
	// HasCPU says the runtime/metrics CPU classes were exported (they are by
	// platform.NewRegistry).
	HasCPU bool
	// Cycles is the number of completed GC cycles (go_gc_duration_seconds_count).
	Cycles uint64
	// PauseMaxRecent is go_gc_duration_seconds{quantile="1"}: the longest
	// stop-the-world total of one GC cycle (both of its pauses) among the
	// last 256 cycles, as runtime/debug.ReadGCStats keeps them.
	PauseMaxRecent float64
	// Pauses is the histogram of individual stop-the-world GC pauses
	// (go_sched_pauses_total_gc_seconds, or go_gc_pauses_seconds before Go
	// 1.22), cumulative counts by upper bound; nil when not exported.
	Pauses []Bucket
}

// Bucket is one cumulative histogram bucket: Count observations ≤ UpperBound.
type Bucket struct {
	UpperBound float64
	Count      uint64
}

// Sample reads every source now, concurrently. It returns the Snapshot of
// all sources, those that failed with their Err set, and an error naming
// every failed source (nil when all were read). It stops early only when ctx
// ends.
func (s *Sampler) Sample(ctx context.Context) (Snapshot, error) {
	type job struct {
		i    int
		read func(context.Context) Source
	}
	var jobs []job
	add := func(f func(context.Context) Source) {
		jobs = append(jobs, job{len(jobs), f})
	}
	for _, u := range s.o.Metrics {
		add(func(ctx context.Context) Source { return s.readMetrics(ctx, u) })
	}
	for i, u := range s.o.Redis {
		add(func(ctx context.Context) Source { return s.readRedis(ctx, u, s.redis[i], s.badURL[i]) })
	}
	// One walk of /proc serves every name and id.
	var (
		procOnce sync.Once
		procs    []procInfo
		procErr  error
	)
	list := func() ([]procInfo, error) {
		procOnce.Do(func() { procs, procErr = listProcs(s.clkTck) })
		return procs, procErr
	}
	for _, name := range s.o.Processes {
		add(func(context.Context) Source { return s.readProcName(name, list) })
	}
	for _, pid := range s.o.PIDs {
		add(func(context.Context) Source { return s.readPID(pid) })
	}

	snap := Snapshot{At: time.Now(), Sources: make([]Source, len(jobs))}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			c, cancel := context.WithTimeout(ctx, s.o.Timeout)
			defer cancel()
			snap.Sources[j.i] = j.read(c)
		})
	}
	wg.Wait()
	var errs []error
	for _, src := range snap.Sources {
		if src.Err != nil {
			errs = append(errs, src.Err)
		}
	}
	return snap, errors.Join(errs...)
}

// Report is what the sources cost between two snapshots.
type Report struct {
	// Seconds is the wall time between the snapshots.
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the sum over Sources.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Sources are those read in both snapshots, in the snapshots' order.
	Sources []SourceReport `json:"sources"`
	// Missing names the sources left out of the sums: failed in a snapshot
	// or present in one only.
	Missing []string `json:"missing,omitempty"`
}

// SourceReport is one source's share of a Report.
type SourceReport struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// CPUSeconds used between the snapshots (see Source.Exited for
	// process groups).
	CPUSeconds float64 `json:"cpu_seconds"`
	// RSSBytes at the last snapshot; MaxRSSBytes the largest seen in the
	// snapshots given.
	RSSBytes    uint64 `json:"rss_bytes"`
	MaxRSSBytes uint64 `json:"max_rss_bytes"`
	// Restarted says the source restarted between the snapshots; its CPU
	// was counted from its restart.
	Restarted bool `json:"restarted,omitempty"`
	// Procs is the number of processes at the last snapshot; Exited the
	// number gone since the first, of which Unaccounted left CPU time
	// uncounted (see Source.Exited).
	Procs       int `json:"procs,omitempty"`
	Exited      int `json:"exited,omitempty"`
	Unaccounted int `json:"unaccounted,omitempty"`
	// GC is for Go services (nil otherwise).
	GC *GCReport `json:"gc,omitempty"`
}

// GCReport is a Go service's collector between two snapshots. In JSON, its
// NaN and infinite values are null.
type GCReport struct {
	// CPUSeconds is the GC CPU (runtime estimate); Fraction is it divided by
	// the service's CPUSeconds — the share of the service's own CPU spent
	// collecting (NaN without CPU or without the runtime CPU classes).
	CPUSeconds, Fraction float64
	// Cycles completed between the snapshots.
	Cycles uint64
	// PauseMaxRecent is the largest go_gc_duration_seconds{quantile="1"} of
	// the snapshots after the first (see GC.PauseMaxRecent): exact, but
	// covering the last 256 cycles, so it may include cycles before the
	// first snapshot. 0 when no cycle completed in between.
	PauseMaxRecent float64
	// PauseBound bounds every single stop-the-world GC pause between the
	// snapshots: the upper bound of the highest histogram bucket whose count
	// grew (client_golang's buckets are coarse: about 64 ns, 640 ns, 7.2 µs,
	// 82 µs, then +Inf). 0 when there was no pause, +Inf when one exceeded
	// the last finite bound, NaN without the histogram.
	PauseBound float64
}

// MarshalJSON writes g with snake_case keys, and null for NaN and infinite
// values, which JSON cannot carry.
func (g GCReport) MarshalJSON() ([]byte, error) {
	num := func(f float64) *float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return &f
	}
	return json.Marshal(struct {
		CPUSeconds     *float64 `json:"cpu_seconds"`
		Fraction       *float64 `json:"fraction"`
		Cycles         uint64   `json:"cycles"`
		PauseMaxRecent *float64 `json:"pause_max_recent_seconds"`
		PauseBound     *float64 `json:"pause_bound_seconds"`
	}{num(g.CPUSeconds), num(g.Fraction), g.Cycles, num(g.PauseMaxRecent), num(g.PauseBound)})
}

// Between reports the cost of every source from a to b (b taken after a).
func Between(a, b Snapshot) Report { return Over([]Snapshot{a, b}) }

// Over reports the cost from the first to the last of snaps (in time
// order), with MaxRSSBytes and PauseMaxRecent taken over all of them. Fewer
// than two snapshots give an empty Report.
func Over(snaps []Snapshot) Report {
	if len(snaps) < 2 {
		return Report{}
	}
	a, b := snaps[0], snaps[len(snaps)-1]
	r := Report{Seconds: b.At.Sub(a.At).Seconds()}
	first := make(map[string]Source, len(a.Sources))
	for _, s := range a.Sources {
		first[s.Key] = s
	}
	seen := make(map[string]bool, len(b.Sources))
	for _, sb := range b.Sources {
		seen[sb.Key] = true
		sa, ok := first[sb.Key]
		switch {
		case !ok:
			r.Missing = append(r.Missing, sb.Name+": not in the first snapshot")
			continue
		case sa.Err != nil:
			r.Missing = append(r.Missing, sb.Name+": first snapshot: "+sa.Err.Error())
			continue
		case sb.Err != nil:
			r.Missing = append(r.Missing, sb.Name+": last snapshot: "+sb.Err.Error())
			continue
		}
		sr := between(sa, sb)
		for _, snap := range snaps {
			for _, s := range snap.Sources {
				if s.Key != sb.Key || s.Err != nil {
					continue
				}
				sr.MaxRSSBytes = max(sr.MaxRSSBytes, s.RSSBytes)
				if sr.GC != nil && sr.GC.Cycles > 0 && s.GC != nil && snap.At.After(a.At) {
					sr.GC.PauseMaxRecent = max(sr.GC.PauseMaxRecent, s.GC.PauseMaxRecent)
				}
			}
		}
		r.Sources = append(r.Sources, sr)
		r.CPUSeconds += sr.CPUSeconds
	}
	for _, sa := range a.Sources {
		if !seen[sa.Key] {
			r.Missing = append(r.Missing, sa.Name+": not in the last snapshot")
		}
	}
	return r
}

// between is one source's report from a to b, both read without error.
func between(a, b Source) SourceReport {
	r := SourceReport{Name: b.Name, Kind: b.Kind, RSSBytes: b.RSSBytes, MaxRSSBytes: max(a.RSSBytes, b.RSSBytes), Procs: b.Procs}
	if b.Kind == KindProcess {
		d := groupDelta(a.procs, b.procs)
		r.CPUSeconds, r.Exited, r.Unaccounted = d.cpu, d.exited, d.unaccounted
		return r
	}
	r.Restarted = a.Instance != b.Instance || b.CPUSeconds < a.CPUSeconds
	base := a
	if r.Restarted {
		base = Source{GC: &GC{}} // everything since the restart
		if a.GC != nil {
			base.GC.HasCPU = a.GC.HasCPU
			if a.GC.Pauses != nil {
				base.GC.Pauses = []Bucket{}
			}
		}
	}
	r.CPUSeconds = b.CPUSeconds - base.CPUSeconds
	if b.GC != nil && base.GC != nil {
		g := &GCReport{
			CPUSeconds: b.GC.CPUSeconds - base.GC.CPUSeconds,
			Fraction:   math.NaN(),
			Cycles:     b.GC.Cycles - base.GC.Cycles,
			PauseBound: pauseBound(base.GC.Pauses, b.GC.Pauses),
		}
		if b.GC.Cycles < base.GC.Cycles {
			g.Cycles = 0
		}
		if !b.GC.HasCPU || !base.GC.HasCPU {
			g.CPUSeconds = math.NaN()
		} else if r.CPUSeconds > 0 {
			g.Fraction = g.CPUSeconds / r.CPUSeconds
		}
		if g.Cycles > 0 {
			g.PauseMaxRecent = b.GC.PauseMaxRecent
		}
		r.GC = g
	}
	return r
}

// pauseBound is the upper bound of the highest bucket whose cumulative
// count grew from a to b; a nil a or b means no histogram (NaN), an empty
// a means zero counts.
func pauseBound(a, b []Bucket) float64 {
	if a == nil || b == nil {
		return math.NaN()
	}
	countAt := func(h []Bucket, ub float64) uint64 {
		for _, x := range h {
			if x.UpperBound == ub {
				return x.Count
			}
		}
		return 0
	}
	// The count of bucket i alone is cum[i] - cum[i-1]; compare it between
	// a and b from the top.
	for i := len(b) - 1; i >= 0; i-- {
		nb := b[i].Count
		na := countAt(a, b[i].UpperBound)
		if i > 0 {
			nb -= b[i-1].Count
			na -= countAt(a, b[i-1].UpperBound)
		}
		if nb > na {
			return b[i].UpperBound
		}
	}
	return 0
}

// MicrosPerMove is the Report's total CPU in microseconds divided by moves
// (NaN for no moves).
func (r Report) MicrosPerMove(moves int64) float64 {
	return perMove(r.CPUSeconds, moves)
}

// MicrosPerMove is the source's CPU in microseconds divided by moves (NaN
// for no moves).
func (s SourceReport) MicrosPerMove(moves int64) float64 {
	return perMove(s.CPUSeconds, moves)
}

// Cores is the Report's CPU divided by its wall time: how many cores the
// sources kept busy on average.
func (r Report) Cores() float64 {
	if r.Seconds <= 0 {
		return math.NaN()
	}
	return r.CPUSeconds / r.Seconds
}

func perMove(cpuSeconds float64, moves int64) float64 {
	if moves <= 0 {
		return math.NaN()
	}
	return cpuSeconds * 1e6 / float64(moves)
}
