package cpustat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The metric families read from a Go service's /metrics.
const (
	mCPU        = "process_cpu_seconds_total"
	mRSS        = "process_resident_memory_bytes"
	mStart      = "process_start_time_seconds"
	mPID        = "treasure_process_id"
	mGCCPU      = "go_cpu_classes_gc_total_cpu_seconds_total"
	mGCDuration = "go_gc_duration_seconds"
	mPauses     = "go_sched_pauses_total_gc_seconds"
	mPausesOld  = "go_gc_pauses_seconds"
)

// maxScrape bounds the size of a /metrics answer.
const maxScrape = 16 << 20

// readMetrics scrapes one Go service's /metrics.
func (s *Sampler) readMetrics(ctx context.Context, u string) Source {
	src := Source{Key: KindMetrics + " " + u, Name: hostOf(u), Kind: KindMetrics}
	fams, err := s.scrape(ctx, u)
	if err == nil {
		err = fromFamilies(&src, fams)
	}
	if err != nil {
		src.Err = fmt.Errorf("metrics %s: %w", u, err)
	}
	return src
}

// scrape fetches u and parses it as the Prometheus text format.
func (s *Sampler) scrape(ctx context.Context, u string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxScrape))
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return parseText(io.LimitReader(resp.Body, maxScrape))
}

// PIDMark separates the start time from the process id in a metrics
// source's Instance, when the source exports treasure_process_id.
const PIDMark = " pid "

// parseText parses the Prometheus text exposition format.
func parseText(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return fams, nil
}

// fromFamilies fills src's counters from a scrape. The process metrics are
// required; the GC ones are read when present.
func fromFamilies(src *Source, fams map[string]*dto.MetricFamily) error {
	var errs []error
	need := func(name string) float64 {
		v, err := single(fams, name)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	src.CPUSeconds = need(mCPU)
	src.RSSBytes = uint64(need(mRSS))
	src.Instance = strconv.FormatFloat(need(mStart), 'f', -1, 64)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// treasure's services also export their process id: with it, the
	// instance names one process exactly (several ports may serve one).
	if fams[mPID] != nil {
		if pid, err := single(fams, mPID); err == nil {
			src.Instance += PIDMark + strconv.FormatInt(int64(pid), 10)
		}
	}
	if svc := services(fams); svc != "" {
		src.Name = svc + " " + src.Name
	}
	if f := fams[mGCDuration]; f != nil {
		if f.GetType() != dto.MetricType_SUMMARY || len(f.GetMetric()) != 1 {
			return fmt.Errorf("%s: want one summary", mGCDuration)
		}
		sum := f.GetMetric()[0].GetSummary()
		g := &GC{Cycles: sum.GetSampleCount()}
		for _, q := range sum.GetQuantile() {
			if q.GetQuantile() == 1 {
				g.PauseMaxRecent = q.GetValue()
			}
		}
		if _, ok := fams[mGCCPU]; ok {
			v, err := single(fams, mGCCPU)
			if err != nil {
				return err
			}
			g.CPUSeconds, g.HasCPU = v, true
		}
		for _, name := range []string{mPauses, mPausesOld} {
			f := fams[name]
			if f == nil {
				continue
			}
			if f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) != 1 {
				return fmt.Errorf("%s: want one histogram", name)
			}
			g.Pauses = []Bucket{}
			for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
				g.Pauses = append(g.Pauses, Bucket{UpperBound: b.GetUpperBound(), Count: b.GetCumulativeCount()})
			}
			if n := len(g.Pauses); n == 0 || !math.IsInf(g.Pauses[n-1].UpperBound, 1) {
				// The text format may omit +Inf; the count stands for it.
				g.Pauses = append(g.Pauses, Bucket{UpperBound: math.Inf(1), Count: f.GetMetric()[0].GetHistogram().GetSampleCount()})
			}
			break
		}
		src.GC = g
	}
	return nil
}

// single returns the value of the one unlabelled counter, gauge or untyped
// sample of family name.
func single(fams map[string]*dto.MetricFamily, name string) (float64, error) {
	f := fams[name]
	if f == nil {
		return 0, fmt.Errorf("%s missing", name)
	}
	if len(f.GetMetric()) != 1 {
		return 0, fmt.Errorf("%s: %d samples, want 1", name, len(f.GetMetric()))
	}
	m := f.GetMetric()[0]
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue(), nil
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue(), nil
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue(), nil
	}
	return 0, fmt.Errorf("%s: type %s, want a counter or gauge", name, f.GetType())
}

// services returns the <service> parts of the treasure_<service>_… families,
// sorted and joined by "+" ("" when there is none).
func services(fams map[string]*dto.MetricFamily) string {
	var out []string
	for name := range fams {
		rest, ok := strings.CutPrefix(name, "treasure_")
		if !ok || name == mPID {
			continue
		}
		svc, _, ok := strings.Cut(rest, "_")
		if ok && svc != "" && !slices.Contains(out, svc) {
			out = append(out, svc)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "+")
}

// hostOf is u's host:port, or u when it does not parse.
func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return u
	}
	return p.Host
}
