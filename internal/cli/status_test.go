package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
)

func TestStatusShowsStreamsAndBacklog(t *testing.T) {
	t.Parallel()
	js, topo, env := testStreams(t, 2)
	prefix := topo.Prefix
	ctx := context.Background()
	publishIn(t, js, topo, 1, 3)
	// A durable consumer that has read nothing: all three messages wait.
	idleConsumer(t, js, topo, 1)
	code, out, errs := runCLI(t, "", env, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{prefix + "_IN", prefix + "_OUT", prefix + "-proximity-1", "backlog: 3 messages", "checkpoints: none", "leases: none"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status output lacks %q:\n%s", want, out)
		}
	}
	// Checkpoints: partition 1 has two, partition 0 none.
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{2, 3} {
		if err := store.Put(ctx, 1, seq, make([]byte, 1000+int(seq))); err != nil {
			t.Fatal(err)
		}
	}
	// Leases: partition 1's held by a worker, partition 0's free.
	leases, err := natsjs.OpenLeases(ctx, js, topo, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := leases.Lease(natsjs.PartitionLeaseKey(1), natsjs.LeaseOptions{Holder: "worker-b/42/0f"}).Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if code, out, errs = runCLI(t, "", env, "status"); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`(?m)^0 +\(none\) *$`).MatchString(out) || !regexp.MustCompile(`(?m)^1 +worker-b/42/0f +[0-9.]+s ago \(ttl 1m00s\)`).MatchString(out) {
		t.Fatalf("status output lacks the lease rows (partition 0 free, 1 held by worker-b/42/0f):\n%s", out)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	if r := rows["0"]; len(r) != 3 || r[1] != "(none)" || r[2] != "0" {
		t.Fatalf("partition 0's checkpoint row %q:\n%s", r, out)
	}
	if r := rows["1"]; len(r) != 5 || r[1] != "3" || r[3] != "1003" || r[4] != "2" {
		t.Fatalf("partition 1's checkpoint row %q (want seq 3, 1003 bytes, 2 kept):\n%s", r, out)
	}
	env["TREASURE_STREAM_PREFIX"] = "nosuch" + prefix
	if code, _, errs = runCLI(t, "", env, "status"); code != 1 || !strings.Contains(errs, "no stream of prefix") {
		t.Fatalf("absent streams: exit %d %q", code, errs)
	}
}

// TestStatusJSONHealthAndBacklog: --json reports each partition's backlog
// and a drain ETA of "never" for a backlog nobody consumes, and the health
// of a ready service (with what its /metrics says), an unready one (with
// its reason) and a down one.
func TestStatusJSONHealthAndBacklog(t *testing.T) {
	t.Parallel()
	js, topo, env := testStreams(t, 2)
	publishIn(t, js, topo, 0, 4)
	idleConsumer(t, js, topo, 0)
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			io.WriteString(w, "ready\n")
		case "/metrics":
			io.WriteString(w, "# TYPE treasure_service_ready gauge\ntreasure_service_ready{service=\"ingest\"} 1\ntreasure_service_ready{service=\"ranker\"} 0\n")
		}
	}))
	defer ready.Close()
	unready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready: push feed catching up: at sequence 3 of 9\n")
	}))
	defer unready.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	code, out, errs := runCLI(t, "", env, "status", "--json", "--sample", "50ms",
		"--services", "dev="+ready.URL+",push="+strings.TrimPrefix(unready.URL, "http://")+",ranker="+downURL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(r.Partitions) != 2 {
		t.Fatalf("partitions %+v", r.Partitions)
	}
	p0, p1 := r.Partitions[0], r.Partitions[1]
	if p0.Backlog != 4 || p0.Pending != 4 || p0.AckPending != 0 || p0.DrainETA != "never" || p0.DrainETASeconds != nil ||
		p0.ProcessedPerS == nil || *p0.ProcessedPerS != 0 || *p0.ArrivedPerS != 0 {
		t.Errorf("partition 0 = %+v, want a backlog of 4 that never drains", p0)
	}
	if !p1.Absent || p1.DrainETA != "-" {
		t.Errorf("partition 1 (no consumer) = %+v", p1)
	}
	if r.Backlog.Backlog != 4 || r.Ranker != nil || r.Checkpoints != nil {
		t.Errorf("total %+v, ranker %+v, checkpoints %+v", r.Backlog, r.Ranker, r.Checkpoints)
	}
	want := []serviceHealth{
		{Name: "dev", URL: ready.URL, State: "ready", Ready: true, Serves: map[string]bool{"ingest": true, "ranker": false}},
		{Name: "push", URL: unready.URL, State: "not_ready", Reason: "push feed catching up: at sequence 3 of 9"},
		{Name: "ranker", URL: downURL, State: "down"},
	}
	if len(r.Services) != len(want) {
		t.Fatalf("services %+v", r.Services)
	}
	for i, w := range want {
		g := r.Services[i]
		if g.State == "down" && g.Reason != "" {
			g.Reason = "" // the dial error's text is the system's
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("service %d = %+v, want %+v", i, r.Services[i], w)
		}
	}
	// The text form says the same.
	code, out, errs = runCLI(t, "", env, "status", "--sample", "50ms", "--services", "push="+unready.URL+",dev="+ready.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, re := range []string{`(?m)^\s+0\s+4\s+0\s+0\.0\s+0\.0\s+never\s*$`, `(?m)^\s+1\s+\(no consumer\)`,
		`(?m)^push\s+\S+\s+not_ready: push feed catching up`, `(?m)^dev\s+\S+\s+ready \(ingest ready, ranker NOT READY\)`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("text output lacks %s:\n%s", re, out)
		}
	}
}

// TestStatusWatchRefreshes: --watch 100ms --json prints one object per
// refresh, each with rates, until the context ends.
func TestStatusWatchRefreshes(t *testing.T) {
	t.Parallel()
	_, _, env := testStreams(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := &lineCounter{cancel: cancel, want: 3}
	var errb bytes.Buffer
	code := Run(ctx, []string{"status", "--watch", "100ms", "--json", "--services", "none", "--sample", "20ms"},
		func(k string) string { return env[k] }, strings.NewReader(""), out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 {
		t.Fatalf("%d refreshes before the end, want 3:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		var r statusReport
		if err := json.Unmarshal([]byte(l), &r); err != nil || len(r.Partitions) != 1 || r.SampleSeconds <= 0 {
			t.Fatalf("refresh %q: %v", l, err)
		}
	}
	for _, args := range [][]string{{"status", "5s"}, {"status", "--watch", "soon"}, {"status", "--watch=10ms"}, {"status", "--sample", "0s"}} {
		if code, _, _ := runCLI(t, "", env, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// lineCounter collects output and cancels once it holds want lines.
type lineCounter struct {
	mu     sync.Mutex
	b      bytes.Buffer
	want   int
	cancel func()
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	if bytes.Count(l.b.Bytes(), []byte("\n")) >= l.want {
		l.cancel()
	}
	return len(p), nil
}

func (l *lineCounter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDrainETA: backlog ÷ (processed − arrived), never when not positive;
// under a second of processing, backlog ÷ processed.
func TestDrainETA(t *testing.T) {
	for _, c := range []struct {
		backlog            uint64
		processed, arrived float64
		want               string
		wantSeconds        float64
		wantNil            bool
	}{
		{0, 0, 0, "0s", 0, false},
		{0, 10, 50, "0s", 0, false},
		{100, 50, 40, "10s", 10, false},
		{100, 50, 50, "never", 0, true},
		{100, 40, 50, "never", 0, true},
		{12000, 110, 10, "2m00s", 120, false},
		{5, 100, 0, "0.05s", 0.05, false},
		{1, 20, 23, "0.05s", 0.05, false},     // in flight: under a second of work
		{188, 437, 758, "0.43s", 0.43, false}, // in flight, though more arrives
		{500, 437, 758, "never", 0, true},     // a queue that grows
		{437, 437, 300, "3.2s", 3.19, false},
		{7_200_000, 1000, 0, "2h00m", 7200, false},
	} {
		secs, label := drainETA(c.backlog, c.processed, c.arrived)
		if label != c.want || (secs == nil) != c.wantNil || secs != nil && *secs != c.wantSeconds {
			t.Errorf("drainETA(%d, %v, %v) = %v %q, want %v %q", c.backlog, c.processed, c.arrived, secs, label, c.wantSeconds, c.want)
		}
	}
}

// TestQueueStatRates: the processing rate is the ack floor's advance, the
// arrival rate that plus the backlog's growth; a recreated consumer gives
// no rate.
func TestQueueStatRates(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	created := t0.Add(-time.Hour)
	info := func(at time.Time, floor, pending uint64, ackPending int) *jetstream.ConsumerInfo {
		return &jetstream.ConsumerInfo{Created: created, TimeStamp: at, NumPending: pending, NumAckPending: ackPending,
			AckFloor: jetstream.SequenceInfo{Consumer: floor}}
	}
	a := info(t0, 1000, 1300, 64)
	b := info(t0.Add(2*time.Second), 1400, 1100, 64) // 400 processed, backlog 1364 → 1164: 200 arrived
	q := queueStat(a, b, time.Time{}, time.Time{})
	if q.Backlog != 1164 || *q.ProcessedPerS != 200 || *q.ArrivedPerS != 100 || q.DrainETA != "12s" || *q.DrainETASeconds != 11.64 {
		t.Errorf("draining: %+v (processed %v arrived %v eta %v)", q, *q.ProcessedPerS, *q.ArrivedPerS, *q.DrainETASeconds)
	}
	c := info(t0.Add(2*time.Second), 1010, 1500, 64) // 10 processed, backlog +200: 210 arrived
	q = queueStat(a, c, time.Time{}, time.Time{})
	if q.DrainETA != "never" || *q.ProcessedPerS != 5 || *q.ArrivedPerS != 105 {
		t.Errorf("growing: %+v", q)
	}
	d := info(t0.Add(2*time.Second), 3, 10, 0)
	d.Created = t0
	if q = queueStat(a, d, time.Time{}, time.Time{}); q.ProcessedPerS != nil || q.DrainETA != "unknown" || q.Backlog != 10 {
		t.Errorf("recreated consumer: %+v", q)
	}
}
