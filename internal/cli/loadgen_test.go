package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"

	"treasure/internal/graph"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testgraph"
)

const loadgenSecret = "loadgen-test-secret"

var (
	lgGraphOnce sync.Once
	lgGraph     *graph.Graph
	lgGraphErr  error
)

// lgPipeline is the real pipeline (internal/stack over real JetStream,
// Redis and PostgreSQL, isolated for this test) in this process.
type lgPipeline struct {
	graphPath    string
	ingest, push string // ws://
	nats, prefix string
}

func startLoadgenPipeline(t *testing.T) lgPipeline {
	t.Helper()
	path := testgraph.Path(t, "amsterdam.gr.gz")
	lgGraphOnce.Do(func() { lgGraph, lgGraphErr = graph.LoadDIMACS(path) })
	if lgGraphErr != nil {
		t.Fatal(lgGraphErr)
	}
	g := lgGraph
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: loadgenSecret})
	return lgPipeline{graphPath: path, ingest: sp.IngestURL, push: sp.PushURL, nats: sp.NATSURL, prefix: sp.StreamPrefix}
}

// lastJSON parses the last line of out as the summary object.
func lastJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("last line of stdout is not a JSON object: %v\n%s", err, out)
	}
	return m
}

func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("summary lacks number %q: %v", key, m)
	}
	return v
}

// checkClean checks that every move sent was acked and answered, once.
func checkClean(t *testing.T, m map[string]any, out string) {
	t.Helper()
	sent := num(t, m, "sent")
	if sent == 0 || num(t, m, "acked") != sent || num(t, m, "answered") != sent {
		t.Fatalf("not every move was acked and answered: %v\n%s", m, out)
	}
	for _, k := range []string{"lost", "duplicated", "out_of_order", "unexpected", "unsent", "rejected"} {
		if num(t, m, k) != 0 {
			t.Fatalf("%s = %v: %v\n%s", k, m[k], m, out)
		}
	}
	if errs, _ := m["errors"].(map[string]any); len(errs) != 0 {
		t.Fatalf("errors: %v\n%s", errs, out)
	}
	for _, k := range []string{"moves_per_s", "ack_p50_ms", "ack_p99_ms", "update_p50_ms", "update_p99_ms", "update_p999_ms"} {
		if num(t, m, k) <= 0 {
			t.Fatalf("%s = %v: %v", k, m[k], m)
		}
	}
}

func TestLoadgenSteadyOnThePipeline(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "steady", "--ingest", p.ingest+","+p.ingest, "--push", p.push+", "+p.push,
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "60", "--rate", "4", "--duration", "2s",
		"--nats", p.nats, "--stream-prefix", p.prefix, "--json", "--broker-ref", "0")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	checkClean(t, m, out)
	if num(t, m, "players") != 60 || m["scenario"] != "steady" {
		t.Fatalf("summary: %v", m)
	}
	if num(t, m, "sent") != 60*4*2 {
		t.Fatalf("sent %v moves, the schedule has %d", m["sent"], 60*4*2)
	}
	for _, want := range []string{"t=  1s offered", "contract  lost 0, duplicated 0, out of order 0, unexpected 0: ok"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestLoadgenDropOnThePipeline(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "drop", "--ingest", p.ingest, "--push", p.push,
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "200", "--within", "1s", "--waves", "2",
		"--treasures", "50", "--nats", p.nats, "--stream-prefix", p.prefix, "--json", "--broker-ref", "0")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	checkClean(t, m, out)
	// Moves sent a little late (a busy box) leave after the window: no
	// timing assertion on sent_in_window.
	if num(t, m, "sent") != 400 || num(t, m, "sent_in_window") > 400 || num(t, m, "window_s") != 2 {
		t.Fatalf("every player must send one move per window: %v", m)
	}
	if num(t, m, "treasures_dropped") != 50 || num(t, m, "leaderboard_polls") < 1 || num(t, m, "leaderboard_failures") != 0 {
		t.Fatalf("drop or leaderboard: %v\n%s", m, out)
	}
	for _, k := range []string{"drain_s", "backlog_peak", "leaderboard_slowest_ms"} {
		num(t, m, k)
	}
	if !strings.Contains(out, "connecting: 200/200 players") {
		t.Fatalf("no connection progress:\n%s", out)
	}
}

// brokenPush is a proxy in front of push's update sockets that breaks
// its contract once: it swallows, or sends twice, the first proximity
// update that passes through it.
func brokenPush(t *testing.T, push string, duplicate bool) string {
	t.Helper()
	var done atomic.Bool
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		back, _, err := websocket.DefaultDialer.Dial(push+r.URL.Path+"?"+r.URL.RawQuery, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer back.Close()
		front, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer front.Close()
		go func() { // client → push: close frames only
			for {
				if _, _, err := front.ReadMessage(); err != nil {
					back.Close()
					return
				}
			}
		}()
		for {
			_, frame, err := back.ReadMessage()
			if err != nil {
				return
			}
			var lines []string
			for _, line := range strings.Split(string(frame), "\n") {
				if strings.Contains(line, `"type":"proximity"`) && done.CompareAndSwap(false, true) {
					if !duplicate {
						continue
					}
					lines = append(lines, line)
				}
				lines = append(lines, line)
			}
			if len(lines) == 0 {
				continue
			}
			if err := front.WriteMessage(websocket.TextMessage, []byte(strings.Join(lines, "\n"))); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestLoadgenFailsOnALostUpdate(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "steady", "--ingest", p.ingest, "--push", brokenPush(t, p.push, false),
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "20", "--rate", "4", "--duration", "1s", "--drain", "3s", "--json")
	if code != 1 {
		t.Fatalf("exit %d, want 1 for a lost update\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	if num(t, m, "lost") != 1 || num(t, m, "out_of_order") < 1 || num(t, m, "duplicated") != 0 || m["failed"] != true {
		t.Fatalf("one swallowed update must count lost 1 (and ids out of order): %v\n%s", m, out)
	}
	if num(t, m, "answered") != num(t, m, "acked")-1 {
		t.Fatalf("answered must be acked - 1: %v", m)
	}
	if !strings.Contains(errs, "accounting failed: lost 1") {
		t.Fatalf("stderr does not say why:\n%s", errs)
	}
}

func TestLoadgenFailsOnADuplicatedUpdate(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "steady", "--ingest", p.ingest, "--push", brokenPush(t, p.push, true),
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "20", "--rate", "4", "--duration", "1s", "--json")
	if code != 1 {
		t.Fatalf("exit %d, want 1 for a duplicated update\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	if num(t, m, "duplicated") != 1 || num(t, m, "lost") != 0 || num(t, m, "answered") != num(t, m, "acked") {
		t.Fatalf("one update sent twice must count duplicated 1 and nothing lost: %v\n%s", m, out)
	}
}

func TestLoadgenNeedsAScenario(t *testing.T) {
	for _, args := range [][]string{{"loadgen"}, {"loadgen", "--players", "10"}, {"loadgen", "fast"}} {
		if code, _, errs := runCLI(t, "", nil, args...); code != 2 || !strings.Contains(errs, "steady") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
	// Each scenario reads its own flags; closed is the former generator.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"loadgen", "closed", "--graph", "x", "--players", "0"}, "--players 0"},
		{[]string{"loadgen", "steady", "--graph", "x", "--rate", "0"}, "--rate 0"},
		{[]string{"loadgen", "ramp", "--graph", "x", "--every", "1500ms"}, "--every"},
		{[]string{"loadgen", "ramp", "--graph", "x", "--warmup", "500ms"}, "--warmup"},
		{[]string{"loadgen", "drop", "--graph", "x", "--waves", "0"}, "--waves"},
		{[]string{"loadgen", "drop", "--players", "10"}, "--graph"},
		{[]string{"loadgen", "drop", "--graph", "x", "--players", "35000", "--workers", "-1"}, "--workers -1"},
		{[]string{"loadgen", "steady", "--graph", "x", "--connect-timeout", "-1s"}, "--connect-timeout"},
	} {
		if code, _, errs := runCLI(t, "", secretEnv, c.args...); code != 2 || !strings.Contains(errs, c.want) {
			t.Fatalf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
}

// TestLoadgenRampOnThePipeline runs three short steps after a 1 s warm-up
// (no step of its own): every step until
// the first failing one held, held_rate is the last held step's rate, and
// the accounting is clean either way (no timing assertion: a slow box may
// fail a step).
func TestLoadgenRampOnThePipeline(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "ramp", "--ingest", p.ingest, "--push", p.push,
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "50", "--from", "50", "--step", "50",
		"--every", "1s", "--max", "150", "--p99", "5s", "--warmup", "1s", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	checkClean(t, m, out)
	steps, _ := m["steps"].([]any)
	if len(steps) == 0 || len(steps) > 3 {
		t.Fatalf("steps: %v", m["steps"])
	}
	held := 0.0
	for i, s := range steps {
		st := s.(map[string]any)
		if st["rate"] != float64(50*(i+1)) {
			t.Fatalf("step %d rate %v", i, st["rate"])
		}
		if st["held"] == true {
			if held != float64(50*i) {
				t.Fatalf("step %d held after a failed one: %v", i, steps)
			}
			held = st["rate"].(float64)
		} else if i != len(steps)-1 {
			t.Fatalf("the ramp went on after failed step %d: %v", i, steps)
		}
	}
	if len(steps) < 3 && steps[len(steps)-1].(map[string]any)["held"] == true {
		t.Fatalf("the ramp stopped at a step that held: %v", steps)
	}
	if num(t, m, "held_rate") != held {
		t.Fatalf("held_rate %v, the steps say %v", m["held_rate"], held)
	}
}
