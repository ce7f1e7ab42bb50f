package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSampleRecordsEachProcessOnce: two URLs of one process (one pid) and
// one of another are sampled; each process appears once per sample, named
// by its services, with its figures; the summary's first, last, max and
// second-half change follow the served values; the CSV and the charts are
// written.
func TestSampleRecordsEachProcessOnce(t *testing.T) {
	var n atomic.Int64
	serve := func(pid int, services ...string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i := n.Add(1)
			fmt.Fprintf(w, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %d\n", (100+i)<<20)
			fmt.Fprintf(w, "# TYPE go_goroutines gauge\ngo_goroutines %d\n", 10*pid)
			fmt.Fprintf(w, "# TYPE process_open_fds gauge\nprocess_open_fds 7\n")
			fmt.Fprintf(w, "# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes %d\n", 1<<20)
			fmt.Fprintf(w, "# TYPE treasure_process_id gauge\ntreasure_process_id %d\n", pid)
			fmt.Fprintf(w, "# TYPE treasure_service_ready gauge\n")
			for _, s := range services {
				fmt.Fprintf(w, "treasure_service_ready{service=%q} 1\n", s)
			}
		}))
	}
	a1, a2, b := serve(1, "push", "ingest"), serve(1, "push", "ingest"), serve(2, "ranker")
	defer a1.Close()
	defer a2.Close()
	defer b.Close()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	args := []string{"--metrics", a1.URL + "/metrics," + a2.URL + "/metrics," + b.URL + "/metrics",
		"--every", "100ms", "--duration", "550ms", "--csv", filepath.Join(dir, "s.csv"), "--charts", dir, "--json"}
	if err := runSample(context.Background(), args, func(string) string { return "" }, IO{Stdout: &out, Stderr: &errb}); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var doc struct {
		Processes []SampleSummary `json:"processes"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(doc.Processes) != 2 || doc.Processes[0].Source != "ingest+push" || doc.Processes[1].Source != "ranker" {
		t.Fatalf("processes %+v, want ingest+push and ranker", doc.Processes)
	}
	p := doc.Processes[0]
	if p.Samples < 3 || p.First["goroutines"] != 10 || p.Max["rss_mb"] != p.Last["rss_mb"] || p.Last["rss_mb"] <= p.First["rss_mb"] ||
		p.SecondHalfChange["rss_mb"] <= 0 || p.Last["open_fds"] != 7 || p.Last["heap_mb"] != 1 {
		t.Fatalf("summary %+v", p)
	}
	f, err := os.Open(filepath.Join(dir, "s.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+doc.Processes[0].Samples+doc.Processes[1].Samples || strings.Join(recs[0], ",") != "time_s,process,pid,rss_bytes,goroutines,open_fds,heap_bytes" {
		t.Fatalf("csv: %v", recs)
	}
	for _, c := range []string{"rss.svg", "goroutines.svg", "fds.svg"} {
		if b, err := os.ReadFile(filepath.Join(dir, c)); err != nil || !bytes.Contains(b, []byte("<svg")) {
			t.Fatalf("%s: %v", c, err)
		}
	}
	// A URL without the figures is a failed scrape, not a zero.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "go_goroutines 3") }))
	defer bad.Close()
	out.Reset()
	err = runSample(context.Background(), []string{"--metrics", bad.URL + "/metrics", "--every", "100ms", "--duration", "250ms"},
		func(string) string { return "" }, IO{Stdout: &out, Stderr: &errb})
	if err == nil || !strings.Contains(out.String(), "failed scrapes") {
		t.Fatalf("a URL without the figures: %v\n%s", err, out.String())
	}
	if err := runSample(context.Background(), []string{"--every", "1s"}, func(string) string { return "" }, IO{Stdout: &out, Stderr: &errb}); err == nil {
		t.Fatal("no --metrics accepted")
	}
}
