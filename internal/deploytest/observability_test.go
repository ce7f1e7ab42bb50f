package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testgraph"
)

const (
	rulesFile     = "deploy/observability/treasure.rules.yml"
	dashboardFile = "deploy/observability/treasure-dashboard.json"
)

// promQuery is one PromQL expression of the rules or the dashboard.
type promQuery struct {
	where  string // "rule TreasureX", "panel \"Title\" A"
	expr   string
	title  string // dashboard panel title
	legend string
}

// loadRules reads the rules file with Prometheus's own parser (what
// `promtool check rules` runs: YAML shape, every expression parsed, every
// template checked), failing the test on any error.
func loadRules(tb testing.TB) (*rulefmt.RuleGroups, []promQuery) {
	tb.Helper()
	groups, errs := rulefmt.ParseFile(filepath.Join(repoRoot(tb), rulesFile))
	for _, err := range errs {
		tb.Errorf("%s: %v", rulesFile, err)
	}
	if len(errs) > 0 {
		tb.FailNow()
	}
	var qs []promQuery
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert.Value
			if name == "" {
				name = r.Record.Value
			}
			qs = append(qs, promQuery{where: "rule " + name, expr: r.Expr.Value})
		}
	}
	return groups, qs
}

// grafanaPanel is the part of a Grafana panel the test reads.
type grafanaPanel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource json.RawMessage           `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID  string `json:"refId"`
		Expr   string `json:"expr"`
		Legend string `json:"legendFormat"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's
}

// loadDashboard reads the dashboard and returns its queries, with
// Grafana's $__rate_interval (four scrape intervals at least) as rate.
func loadDashboard(tb testing.TB, rate string) []promQuery {
	tb.Helper()
	var d struct {
		Title      string         `json:"title"`
		UID        string         `json:"uid"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct{ Name, Type string } `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(readRepoFile(tb, dashboardFile)))
	if err := dec.Decode(&d); err != nil {
		tb.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" {
		tb.Errorf("%s: no title or uid", dashboardFile)
	}
	if len(d.Templating.List) == 0 || d.Templating.List[0].Name != "datasource" || d.Templating.List[0].Type != "datasource" {
		tb.Errorf("%s: the first template variable must be the Prometheus datasource", dashboardFile)
	}
	var qs []promQuery
	ids := map[int]bool{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				tb.Errorf("%s: panel id %d twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 || len(p.Targets) == 0 ||
				!strings.Contains(string(p.Datasource), "${datasource}") {
				tb.Errorf("%s: panel %q needs a gridPos, targets and the ${datasource} datasource", dashboardFile, p.Title)
			}
			for _, t := range p.Targets {
				expr := strings.NewReplacer("$__rate_interval", rate, "$__interval", rate, "$__range", "1h").Replace(t.Expr)
				qs = append(qs, promQuery{where: fmt.Sprintf("panel %q %s", p.Title, t.RefID), expr: expr, title: p.Title, legend: t.Legend})
			}
		}
	}
	walk(d.Panels)
	for _, problem := range gridProblems(d.Panels) {
		tb.Errorf("%s: %s", dashboardFile, problem)
	}
	return qs
}

// gridProblems returns what is wrong with the panels' places on Grafana's
// 24-column grid: a panel (rows included) outside it, or two that overlap
// (Grafana would push one down, out of the layout the file describes). The
// panels of a collapsed row are checked among themselves.
func gridProblems(ps []grafanaPanel) []string {
	var out []string
	for i, p := range ps {
		g := p.GridPos
		if g == nil {
			continue // loadDashboard reports a panel without one
		}
		if g.X < 0 || g.Y < 0 || g.W < 1 || g.H < 1 || g.X+g.W > 24 {
			out = append(out, fmt.Sprintf("panel %d %q: gridPos %+v is not on the 24-column grid", p.ID, p.Title, *g))
		}
		for _, q := range ps[:i] {
			h := q.GridPos
			if h != nil && g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				out = append(out, fmt.Sprintf("panels %d %q %+v and %d %q %+v overlap", q.ID, q.Title, *h, p.ID, p.Title, *g))
			}
		}
		out = append(out, gridProblems(p.Panels)...)
	}
	return out
}

func TestDashboardGridProblems(t *testing.T) {
	t.Parallel()
	at := func(id, x, y, w, h int) grafanaPanel {
		return grafanaPanel{ID: id, Title: fmt.Sprint(id), GridPos: &struct{ H, W, X, Y int }{H: h, W: w, X: x, Y: y}}
	}
	for _, tc := range []struct {
		what string
		ps   []grafanaPanel
		bad  bool
	}{
		{"a row and two panels side by side", []grafanaPanel{at(1, 0, 0, 24, 1), at(2, 0, 1, 12, 8), at(3, 12, 1, 12, 8)}, false},
		{"three across, then one below", []grafanaPanel{at(1, 0, 0, 8, 8), at(2, 8, 0, 8, 8), at(3, 16, 0, 8, 8), at(4, 0, 8, 24, 8)}, false},
		{"two panels sharing a corner", []grafanaPanel{at(1, 0, 0, 12, 8), at(2, 11, 7, 12, 8)}, true},
		{"a panel under a row", []grafanaPanel{at(1, 0, 0, 24, 1), at(2, 0, 0, 12, 8)}, true},
		{"a panel past column 24", []grafanaPanel{at(1, 16, 0, 12, 8)}, true},
		{"a panel inside another", []grafanaPanel{at(1, 0, 0, 24, 16), at(2, 8, 4, 4, 4)}, true},
		{"overlapping panels of a collapsed row", []grafanaPanel{{ID: 1, Type: "row", GridPos: &struct{ H, W, X, Y int }{1, 24, 0, 0}, Panels: []grafanaPanel{at(2, 0, 1, 12, 8), at(3, 6, 1, 12, 8)}}}, true},
	} {
		if got := gridProblems(tc.ps); (len(got) > 0) != tc.bad {
			t.Errorf("%s: problems %q, want bad=%v", tc.what, got, tc.bad)
		}
	}
}

// selectors parses q and returns its vector selectors.
func selectors(tb testing.TB, q promQuery) []*parser.VectorSelector {
	tb.Helper()
	e, err := parser.ParseExpr(q.expr)
	if err != nil {
		tb.Errorf("%s: %v\n%s", q.where, err, q.expr)
		return nil
	}
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// recorded returns the names the recording rules define.
func recorded(groups *rulefmt.RuleGroups) map[string]bool {
	out := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Record.Value != "" {
				out[r.Record.Value] = true
			}
		}
	}
	return out
}

// TestObservabilityFilesParse checks the rules with Prometheus's rule
// parser and the dashboard's queries with its PromQL parser, without
// servers: every alert has a severity, a summary and a for; every metric
// named is treasure's, Go's or the process collector's, Prometheus's up, or
// a recorded name.
func TestObservabilityFilesParse(t *testing.T) {
	t.Parallel()
	groups, ruleQs := loadRules(t)
	rec := recorded(groups)
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert.Value == "" {
				if !strings.HasPrefix(r.Record.Value, "treasure:") {
					t.Errorf("recording rule %s: name it treasure:<what>", r.Record.Value)
				}
				continue
			}
			alerts++
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.For == 0 {
				t.Errorf("alert %s: needs labels.severity, annotations.summary and a for", r.Alert.Value)
			}
		}
	}
	want := []string{"TreasureBacklogGrowing", "TreasureDrainETATooLong", "TreasureMoveLatencyP99High", "TreasureLeaderboardFromFallback",
		"TreasureConsumerStalled", "TreasureServiceNotReady", "TreasureServiceDown"}
	for _, w := range want {
		if !slices.ContainsFunc(ruleQs, func(q promQuery) bool { return q.where == "rule "+w }) {
			t.Errorf("no alert %s", w)
		}
	}
	dashQs := loadDashboard(t, "1m")
	if len(dashQs) < 20 || alerts < len(want) {
		t.Fatalf("%d dashboard queries, %d alerts: files truncated?", len(dashQs), alerts)
	}
	for _, q := range append(ruleQs, dashQs...) {
		for _, vs := range selectors(t, q) {
			n := vs.Name
			ok := rec[n] || n == "up" || strings.HasPrefix(n, "treasure_") || strings.HasPrefix(n, "go_") || strings.HasPrefix(n, "process_")
			if !ok {
				t.Errorf("%s: metric %q is none of treasure's", q.where, n)
			}
		}
	}
}

// scrapedSeries is one series of a /metrics scrape, as Prometheus stores it.
type scrapedSeries struct {
	lset  labels.Labels
	value float64
}

// scrape reads url's /metrics and returns every series the way Prometheus
// would store it (histograms as _bucket{le}, _sum, _count), with the job
// and instance labels a scrape adds, and up.
func scrape(tb testing.TB, url, job, instance string) []scrapedSeries {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("%s: %v", url, err)
	}
	out := []scrapedSeries{{labels.FromStrings("__name__", "up", "job", job, "instance", instance), 1}}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			base := map[string]string{"job": job, "instance": instance}
			for _, l := range m.GetLabel() {
				base[l.GetName()] = l.GetValue()
			}
			add := func(name string, v float64, extra ...string) {
				ls := map[string]string{"__name__": name}
				for k, v := range base {
					ls[k] = v
				}
				for i := 0; i+1 < len(extra); i += 2 {
					ls[extra[i]] = extra[i+1]
				}
				out = append(out, scrapedSeries{labels.FromMap(ls), v})
			}
			switch {
			case m.Histogram != nil:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", float64(b.GetCumulativeCount()), "le", fmt.Sprint(b.GetUpperBound()))
				}
				add(name+"_bucket", float64(h.GetSampleCount()), "le", "+Inf")
				add(name+"_sum", h.GetSampleSum())
				add(name+"_count", float64(h.GetSampleCount()))
			case m.Summary != nil:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add(name, q.GetValue(), "quantile", fmt.Sprint(q.GetQuantile()))
				}
				add(name+"_sum", s.GetSampleSum())
				add(name+"_count", float64(s.GetSampleCount()))
			case m.Counter != nil:
				add(name, m.GetCounter().GetValue())
			case m.Gauge != nil:
				add(name, m.GetGauge().GetValue())
			case m.Untyped != nil:
				add(name, m.GetUntyped().GetValue())
			}
		}
	}
	return out
}

// memStore holds scraped samples for the PromQL engine: a storage.Queryable
// over a map of series. Not safe for concurrent appends.
type memStore struct {
	series map[string]*memSeries
}

type memSeries struct {
	lset    labels.Labels
	samples []chunks.Sample
}

type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                      { return s.t }
func (s fsample) F() float64                    { return s.f }
func (s fsample) H() *histogram.Histogram       { return nil }
func (s fsample) FH() *histogram.FloatHistogram { return nil }
func (s fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }

func (m *memStore) add(lset labels.Labels, t int64, v float64) {
	k := lset.String()
	s := m.series[k]
	if s == nil {
		s = &memSeries{lset: lset}
		m.series[k] = s
	}
	s.samples = append(s.samples, fsample{t, v})
}

func (m *memStore) queryable() storage.Queryable {
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out []storage.Series
			for _, s := range m.series {
				if matchAll(s.lset, ms) {
					out = append(out, storage.NewListSeries(s.lset, s.samples))
				}
			}
			sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
			return &listSeriesSet{list: out, i: -1}
		},
	}}
}

func matchAll(lset labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

type listSeriesSet struct {
	list []storage.Series
	i    int
}

func (s *listSeriesSet) Next() bool                        { s.i++; return s.i < len(s.list) }
func (s *listSeriesSet) At() storage.Series                { return s.list[s.i] }
func (s *listSeriesSet) Err() error                        { return nil }
func (s *listSeriesSet) Warnings() annotations.Annotations { return nil }

var _ storage.SeriesSet = (*listSeriesSet)(nil)

// TestObservabilityMetricsExistAndPanelsHaveData starts the four services
// in this process on the real servers, plays a few seconds of moves through
// them while scraping /metrics every half second, and then:
//
//   - checks that every selector of the rules and the dashboard (metric
//     name and label matchers, but job and instance, which the scrape adds)
//     matches a series the services export;
//   - evaluates the recording rules and every panel's query with
//     Prometheus's own PromQL engine over those scrapes, writes what each
//     panel would show (docs/observability-panels.txt is such a run, made
//     with TREASURE_PANELS_OUT=docs/observability-panels.txt), and checks
//     that the panels an operator reads first have data.
func TestObservabilityMetricsExistAndPanelsHaveData(t *testing.T) {
	t.Parallel()
	groups, ruleQs := loadRules(t)
	// Scrapes every 0.5 s: Grafana's $__rate_interval would be 2 s.
	dashQs := loadDashboard(t, "2s")
	rec := recorded(groups)

	g, err := graph.LoadDIMACS(testgraph.Path(t, "amsterdam.gr.gz"))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "observability-secret"
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: secret})
	addr := strings.TrimPrefix(sp.IngestURL, "ws://")
	metricsURL := "http://" + addr + "/metrics"
	const job = "treasure-dev"

	store := &memStore{series: map[string]*memSeries{}}
	var times []time.Time
	record := func() {
		now := time.Now()
		for _, s := range scrape(t, metricsURL, job, addr) {
			store.add(s.lset, now.UnixMilli(), s.value)
		}
		times = append(times, now)
	}
	record()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var run *loadgen.Result
	var runErr error
	wg.Go(func() {
		defer cancel()
		run, runErr = loadgen.RunOpen(context.Background(), loadgen.OpenOptions{
			Ingest: []string{sp.IngestURL}, Push: []string{sp.PushURL}, Graph: g, Secret: secret,
			PlayerPrefix: "obs-", Players: 50, Seed: 7,
			Schedule: loadgen.Schedule{Rate: 4, Duration: 4 * time.Second},
		}, nil)
	})
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-time.After(500 * time.Millisecond):
		}
		_, _ = http.Get("http://" + strings.TrimPrefix(sp.PushURL, "ws://") + "/v1/leaderboard?limit=5")
		record()
	}
	wg.Wait()
	if runErr != nil || run == nil || run.Acked == 0 || run.Answered != run.Acked {
		t.Fatalf("load: %v %+v", runErr, run)
	}
	record()

	// 1. Every selector selects something the services export.
	last := scrape(t, metricsURL, job, addr)
	for _, q := range append(ruleQs, dashQs...) {
		for _, vs := range selectors(t, q) {
			if rec[vs.Name] {
				continue
			}
			var ms []*labels.Matcher
			for _, m := range vs.LabelMatchers {
				if m.Name != "job" && m.Name != "instance" {
					ms = append(ms, m)
				}
			}
			if !slices.ContainsFunc(last, func(s scrapedSeries) bool { return matchAll(s.lset, ms) }) {
				t.Errorf("%s: %s selects no series the services export", q.where, vs)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// 2. The recording rules at every scrape, then every panel at the last.
	ev := newEvaluator(store)
	instant := ev.instant
	if err := ev.record(groups, times); err != nil {
		t.Fatal(err)
	}
	// The panels as they stood in the middle of the run (by its end the
	// players have closed their sockets).
	end := times[len(times)/2]
	var report strings.Builder
	fmt.Fprintf(&report, "The dashboard's panels (%s) evaluated with Prometheus's PromQL engine over the first %d scrapes of a live /metrics\n"+
		"(mid-run), %s of moves from %d players (in-process stack on the real servers; $__rate_interval = 2s, scrapes every 0.5 s).\n"+
		"Generated by %s (TREASURE_PANELS_OUT). Moves acked %d, answered %d.\n"+
		"The recording rules (treasure:*) use 5-minute windows and see only these seconds: their rates read low\n"+
		"(rate() divides by the whole window), so a partition with a few messages in flight may read as not\n"+
		"draining (1000 s per message) here; with minutes of history its ETA is backlog ÷ processing rate.\n",
		dashboardFile, len(times)/2+1, end.Sub(times[0]).Round(100*time.Millisecond), 50,
		"go test -run TestObservabilityMetricsExistAndPanelsHaveData ./internal/deploytest/", run.Acked, run.Answered)
	values := map[string]promql.Vector{}
	lastTitle := ""
	for _, q := range dashQs {
		v, err := instant(q.expr, end)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.where, err, q.expr)
			continue
		}
		values[q.title+"|"+q.legend] = v
		if q.title != lastTitle {
			fmt.Fprintf(&report, "\n## %s\n", q.title)
			lastTitle = q.title
		}
		fmt.Fprintf(&report, "  %s\n", strings.Join(strings.Fields(q.expr), " "))
		if len(v) == 0 {
			fmt.Fprintf(&report, "    (no data)\n")
		}
		sort.Slice(v, func(i, j int) bool { return labels.Compare(v[i].Metric, v[j].Metric) < 0 })
		for _, s := range v {
			fmt.Fprintf(&report, "    %-60s %s\n", legend(q.legend, s.Metric), fmtValue(s.F))
		}
	}
	fmt.Fprintf(&report, "\n## Alerts whose expression holds at that time (before their for:)\n")
	if h := ev.holding(t, groups, end); len(h) == 0 {
		fmt.Fprintf(&report, "    none\n")
	} else {
		fmt.Fprintf(&report, "    %s\n", strings.Join(h, ", "))
	}
	t.Log(report.String())
	if out := os.Getenv("TREASURE_PANELS_OUT"); out != "" {
		if !filepath.IsAbs(out) {
			out = filepath.Join(repoRoot(t), out)
		}
		if err := os.WriteFile(out, []byte(report.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The panels an operator reads first show the run.
	positive := func(key string) {
		t.Helper()
		v := values[key]
		if len(v) == 0 || !(v[0].F > 0) || math.IsInf(v[0].F, 0) {
			t.Errorf("panel %s: %v, want a positive value", key, v)
		}
	}
	positive("Moves accepted / rejected per second|accepted")
	positive("Move → update latency (whole pipeline)|p99")
	positive("WebSocket connections|ingest (moves)")
	positive("WebSocket connections|push (updates)")
	if v := values["Services ready|{{service}}"]; len(v) != 4 {
		t.Errorf("services ready: %v, want the four services", v)
	} else {
		for _, s := range v {
			if s.F != 1 {
				t.Errorf("services ready: %v", v)
			}
		}
	}
	if v := values["Processing rate (log messages per second)|proximity {{partition}}"]; len(v) != sp.Topology.Partitions {
		t.Errorf("processing rate: %v, want one series per partition", v)
	}
	// The stack's one proximity worker holds every partition's lease, and
	// nobody waits for one.
	for _, key := range []string{"Lease holders per partition|partition {{partition}}", "Lease held, per partition and worker|partition {{partition}} · {{instance}}"} {
		v := values[key]
		if len(v) != sp.Topology.Partitions {
			t.Errorf("panel %s: %v, want one series per partition", key, v)
		}
		for _, s := range v {
			if s.F != 1 {
				t.Errorf("panel %s: %v, want every partition held once", key, v)
				break
			}
		}
	}
	if v := values["Lease waits and losses|waiting for {{partition}}"]; len(v) != sp.Topology.Partitions || slices.ContainsFunc(v, func(s promql.Sample) bool { return s.F != 0 }) {
		t.Errorf("lease waits: %v, want 0 for each partition", v)
	}
	// The checkpoint and rebuild counters are the worker's (by instance).
	for _, key := range []string{"Checkpoints per 10 minutes|written {{instance}}", "Checkpoints per 10 minutes|failed {{instance}}",
		"Partition rebuilds per 10 minutes|rebuilds {{instance}}", "Partition rebuilds per 10 minutes|from a trimmed log {{instance}}"} {
		if v := values[key]; len(v) != 1 {
			t.Errorf("panel %s: %v, want the worker's series", key, v)
		}
	}
}

// evaluator runs PromQL over a memStore with Prometheus's engine.
type evaluator struct {
	eng   *promql.Engine
	store *memStore
}

func newEvaluator(store *memStore) *evaluator {
	return &evaluator{store: store,
		eng: promql.NewEngine(promql.EngineOpts{MaxSamples: 10_000_000, Timeout: 30 * time.Second, LookbackDelta: 5 * time.Minute})}
}

// instant evaluates expr at a time; a scalar comes back as a one-sample
// vector.
func (e *evaluator) instant(expr string, at time.Time) (promql.Vector, error) {
	qry, err := e.eng.NewInstantQuery(context.Background(), e.store.queryable(), nil, expr, at)
	if err != nil {
		return nil, err
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		return nil, res.Err
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		return v, nil
	case promql.Scalar:
		return promql.Vector{{F: v.V, T: v.T}}, nil
	}
	return nil, fmt.Errorf("result of type %s", res.Value.Type())
}

// record evaluates the recording rules at every time, in order, and stores
// their results, as Prometheus's rule manager would.
func (e *evaluator) record(groups *rulefmt.RuleGroups, times []time.Time) error {
	for _, at := range times {
		for _, gr := range groups.Groups {
			for _, r := range gr.Rules {
				if r.Record.Value == "" {
					continue
				}
				v, err := e.instant(r.Expr.Value, at)
				if err != nil {
					return fmt.Errorf("recording rule %s: %w", r.Record.Value, err)
				}
				for _, s := range v {
					b := labels.NewBuilder(s.Metric)
					b.Set("__name__", r.Record.Value)
					e.store.add(b.Labels(), at.UnixMilli(), s.F)
				}
			}
		}
	}
	return nil
}

// holding returns the alerts whose expression holds at a time (what would
// be pending or firing, their for: aside).
func (e *evaluator) holding(tb testing.TB, groups *rulefmt.RuleGroups, at time.Time) []string {
	tb.Helper()
	var out []string
	for _, gr := range groups.Groups {
		for _, r := range gr.Rules {
			if r.Alert.Value == "" {
				continue
			}
			v, err := e.instant(r.Expr.Value, at)
			if err != nil {
				tb.Errorf("alert %s: %v", r.Alert.Value, err)
			}
			if len(v) > 0 {
				out = append(out, r.Alert.Value)
			}
		}
	}
	return out
}

// TestObservabilityAlertsFireOnTheirCondition evaluates every alert, with
// Prometheus's engine, over ten minutes of made-up series: a troubled
// pipeline must raise exactly the alerts written for its troubles, a
// healthy one none (what `promtool test rules` checks, their for: aside).
func TestObservabilityAlertsFireOnTheirCondition(t *testing.T) {
	t.Parallel()
	groups, _ := loadRules(t)
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var times []time.Time
	for i := 0; i <= 40; i++ { // every 15 s
		times = append(times, t0.Add(time.Duration(i)*15*time.Second))
	}
	type series struct {
		ls map[string]string
		v  func(i int) float64
	}
	in := func(job string, kv ...string) map[string]string {
		m := map[string]string{"job": job, "instance": job + ":1"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	constant := func(x float64) func(int) float64 { return func(int) float64 { return x } }
	healthy := []series{
		{in("treasure-ingest", "__name__", "up"), constant(1)},
		{in("treasure-ingest", "__name__", "treasure_service_ready", "service", "ingest"), constant(1)},
		{in("treasure-proximity", "__name__", "treasure_proximity_backlog_messages", "partition", "0"), func(i int) float64 { return float64(i % 3) }},
		{in("treasure-proximity", "__name__", "treasure_proximity_input_messages_total", "partition", "0"), func(i int) float64 { return float64(3000 * i) }},
		{in("treasure-proximity", "__name__", "treasure_proximity_partition_lease_held", "partition", "0"), constant(1)},
		{in("treasure-proximity", "__name__", "treasure_proximity_partition_lease_lost_total", "partition", "0"), constant(0)},
		// A standby for partition 0: waits for the lease, not ready, and
		// raises nothing.
		{in("treasure-proximity", "__name__", "treasure_service_ready", "service", "proximity", "instance", "treasure-proximity:2"), constant(0)},
		{in("treasure-proximity", "__name__", "treasure_proximity_partition_lease_waiting", "partition", "0", "instance", "treasure-proximity:2"), constant(1)},
		{in("treasure-proximity", "__name__", "treasure_proximity_partition_lease_held", "partition", "0", "instance", "treasure-proximity:2"), constant(0)},
		{in("treasure-ranker", "__name__", "treasure_ranker_backlog_messages"), constant(0)},
		{in("treasure-ranker", "__name__", "treasure_ranker_input_messages_total"), func(i int) float64 { return float64(100 * i) }},
		{in("treasure-ranker", "__name__", "treasure_ranker_redis_up"), constant(1)},
		{in("treasure-push", "__name__", "treasure_push_feed_lag_messages"), constant(0)},
		{in("treasure-push", "__name__", "treasure_push_feed_events_total", "kind", "proximity"), func(i int) float64 { return float64(900 * i) }},
		{in("treasure-push", "__name__", "treasure_push_board_reads_total", "source", "redis"), func(i int) float64 { return float64(10 * i) }},
		{in("treasure-push", "__name__", "treasure_push_board_reads_total", "source", "postgres"), constant(0)},
		{in("treasure-push", "__name__", "treasure_push_board_reads_total", "source", "none"), constant(0)},
		{in("treasure-ingest", "__name__", "treasure_ingest_moves_rejected_total", "code", "unavailable"), constant(0)},
		{in("treasure-ingest", "__name__", "treasure_ingest_log_bytes"), func(i int) float64 { return float64(1000 * i) }},
		{in("treasure-ingest", "__name__", "treasure_ingest_log_max_bytes"), constant(1 << 30)},
		{in("treasure-ingest", "__name__", "treasure_ingest_log_messages"), func(i int) float64 { return float64(10 * i) }},
		{in("treasure-ingest", "__name__", "treasure_ingest_log_max_messages"), constant(8e6)},
	}
	for _, le := range []string{"0.005", "0.01", "0.05", "+Inf"} {
		healthy = append(healthy, series{in("treasure-push", "__name__", "treasure_push_hop_received_to_sent_seconds_bucket", "le", le),
			func(i int) float64 { return float64(1000 * i) }}) // all under 5 ms
	}
	troubled := []series{
		{in("treasure-ranker", "__name__", "up"), constant(0)},
		{in("treasure-push", "__name__", "treasure_service_ready", "service", "push"), constant(0)},
		// Partition 1 grows by 40 messages every 15 s and handles nothing.
		{in("treasure-proximity", "__name__", "treasure_proximity_backlog_messages", "partition", "1"), func(i int) float64 { return float64(2000 + 40*i) }},
		{in("treasure-proximity", "__name__", "treasure_proximity_input_messages_total", "partition", "1"), constant(500)},
		// Nobody holds partition 2's lease; its worker keeps losing it.
		{in("treasure-proximity", "__name__", "treasure_proximity_partition_lease_held", "partition", "2"), constant(0)},
		{in("treasure-proximity", "__name__", "treasure_proximity_partition_lease_lost_total", "partition", "2"), func(i int) float64 { return float64(i / 10) }},
		{in("treasure-push", "__name__", "treasure_push_board_reads_total", "source", "postgres", "instance", "treasure-push:2"), func(i int) float64 { return float64(5 * i) }},
		{in("treasure-ingest", "__name__", "treasure_ingest_moves_rejected_total", "code", "unavailable", "instance", "treasure-ingest:2"), func(i int) float64 { return float64(50 * i) }},
		{in("treasure-ingest", "__name__", "treasure_ingest_log_bytes", "instance", "treasure-ingest:2"), constant(0.9 * (1 << 30))},
		{in("treasure-ingest", "__name__", "treasure_ingest_log_max_bytes", "instance", "treasure-ingest:2"), constant(1 << 30)},
	}
	for _, b := range []struct {
		le string
		n  float64
	}{{"0.005", 500}, {"0.01", 900}, {"0.05", 1000}, {"+Inf", 1000}} { // 10 % over 10 ms
		troubled = append(troubled, series{in("treasure-push", "__name__", "treasure_push_hop_received_to_sent_seconds_bucket", "le", b.le, "instance", "treasure-push:2"),
			func(i int) float64 { return b.n * float64(i) }})
	}
	run := func(ss []series) []string {
		store := &memStore{series: map[string]*memSeries{}}
		for i, at := range times {
			for _, s := range ss {
				store.add(labels.FromMap(s.ls), at.UnixMilli(), s.v(i))
			}
		}
		ev := newEvaluator(store)
		if err := ev.record(groups, times); err != nil {
			t.Fatal(err)
		}
		return ev.holding(t, groups, times[len(times)-1])
	}
	if got := run(healthy); len(got) != 0 {
		t.Errorf("a healthy pipeline raises %v", got)
	}
	got := run(append(healthy, troubled...))
	want := []string{"TreasureServiceDown", "TreasureServiceNotReady", "TreasureBacklogGrowing", "TreasureDrainETATooLong",
		"TreasureLogNearlyFull", "TreasureMovesUnavailable", "TreasureMoveLatencyP99High", "TreasureLeaderboardFromFallback",
		"TreasureConsumerStalled", "TreasurePartitionUnserved", "TreasurePartitionLeaseLost"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("a troubled pipeline raises %v, want %v", got, want)
	}
}

// legend fills a Grafana legend template from a series' labels.
func legend(tmpl string, m labels.Labels) string {
	if tmpl == "" {
		return m.String()
	}
	out := tmpl
	m.Range(func(l labels.Label) {
		out = strings.ReplaceAll(out, "{{"+l.Name+"}}", l.Value)
	})
	return out
}

func fmtValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Sprint(v)
	case v != 0 && math.Abs(v) < 0.01:
		return fmt.Sprintf("%.6f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
