package platform

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"regexp"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry holding the process and Go
// runtime collectors, with the runtime's GC and CPU-class metrics
// (go_cpu_classes_gc_total_cpu_seconds_total and friends) so that GC CPU can
// be read off /metrics. Services register their own collectors on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		// The process's id, so that tools reading several /metrics URLs
		// (the load generator's server CPU) can tell one process serving
		// several ports from several processes that look alike.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "treasure_process_id",
			Help: "The operating system's id of this process.",
		}, func() float64 { return float64(os.Getpid()) }),
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.MetricsGC,
			collectors.MetricsMemory,
			collectors.MetricsScheduler,
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/.*`)},
		)),
	)
	return reg
}

// OpsMux returns a mux serving the operations endpoints every service has:
//
//   - GET /healthz: 200 "ok" while the process runs;
//   - GET /readyz: 200 "ready" when ready returns nil, else 503 with the
//     error's text (ready nil means always ready);
//   - GET /metrics: reg in the Prometheus text or protobuf format.
//
// Services add their own routes to the returned mux. ready is called on every
// /readyz request and must be safe for concurrent use and fast.
func OpsMux(reg *prometheus.Registry, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ready != nil {
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector that fails leaves the others served, with the error
		// counted in promhttp_metric_handler_errors_total.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	}))
	return mux
}

// ReadyGauge returns treasure_service_ready{service=<service>}: 1 when ready
// returns nil at the scrape, 0 otherwise — what /readyz answers, as a metric
// that alerts and dashboards can read (the process being down shows as
// Prometheus's own up == 0). ready must be safe for concurrent use and fast,
// as for OpsMux.
func ReadyGauge(service string, ready func() error) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "treasure_service_ready",
		Help:        "1 while the service answers /readyz with 200, else 0.",
		ConstLabels: prometheus.Labels{"service": service},
	}, func() float64 {
		if ready != nil && ready() != nil {
			return 0
		}
		return 1
	})
}

// RegisterPprof adds the runtime profiles to mux (`go tool pprof
// http://ADDR/debug/pprof/profile`). Only for ports that players never
// reach: the proximity and ranker ops ports, and `treasure dev`.
func RegisterPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
}

// Readiness is a set of named conditions a process needs before it can do
// its job ("nats", "graph", "consumer"...). It is ready when every condition
// has been marked ready. Safe for concurrent use; its Check method is meant
// as OpsMux's ready function.
type Readiness struct {
	mu      sync.Mutex
	pending map[string]error
}

// NewReadiness returns a Readiness waiting for each named condition, each
// starting as not ready ("<name>: starting").
func NewReadiness(names ...string) *Readiness {
	r := &Readiness{pending: make(map[string]error, len(names))}
	for _, n := range names {
		r.pending[n] = errors.New("starting")
	}
	return r
}

// Set records condition name as not ready for reason err, or ready when err
// is nil. A condition may flip back and forth (a lost connection).
func (r *Readiness) Set(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.pending, name)
		return
	}
	r.pending[name] = err
}

// Ready marks condition name as ready.
func (r *Readiness) Ready(name string) { r.Set(name, nil) }

// Check returns nil when every condition is ready, else an error naming each
// pending condition and its reason, in name order.
func (r *Readiness) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	names := make([]string, 0, len(r.pending))
	for n := range r.pending {
		names = append(names, n)
	}
	slices.Sort(names)
	errs := make([]error, len(names))
	for i, n := range names {
		errs[i] = fmt.Errorf("%s: %w", n, r.pending[n])
	}
	return errors.Join(errs...)
}
