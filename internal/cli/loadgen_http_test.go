package cli

import (
	"strings"
	"testing"
)

func TestLoadgenHTTPOnThePipeline(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "http", "--ingest", p.ingest+","+p.ingest, "--push", p.push,
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "30", "--rate", "60", "--duration", "2s",
		"--nats", p.nats, "--stream-prefix", p.prefix, "--json", "--broker-ref", "0")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	checkClean(t, m, out)
	if num(t, m, "players") != 30 || m["scenario"] != "http" || num(t, m, "rate") != 60 {
		t.Fatalf("summary: %v", m)
	}
	sent := num(t, m, "sent")
	if codes, _ := m["status_codes"].(map[string]any); len(codes) != 1 || codes["202"] != sent || num(t, m, "requests") != sent {
		t.Fatalf("every request must be one move answered 202: %v", m)
	}
	for _, k := range []string{"vegeta_p99_ms", "start_lag_p99_ms", "backlog_peak"} {
		num(t, m, k)
	}
	if !strings.Contains(out, "contract  lost 0, duplicated 0, out of order 0, unexpected 0: ok") {
		t.Fatalf("output lacks the verdict:\n%s", out)
	}
}

func TestLoadgenHTTPFailsOnALostUpdate(t *testing.T) {
	t.Parallel()
	p := startLoadgenPipeline(t)
	code, out, errs := runCLI(t, "", nil, "loadgen", "http", "--ingest", p.ingest, "--push", brokenPush(t, p.push, false),
		"--graph", p.graphPath, "--secret-file", loadgenSecretFile(t), "--players", "20", "--rate", "40", "--duration", "1s", "--drain", "3s", "--json")
	if code != 1 {
		t.Fatalf("exit %d, want 1 for a lost update\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	m := lastJSON(t, out)
	if num(t, m, "lost") != 1 || num(t, m, "duplicated") != 0 || num(t, m, "answered") != num(t, m, "acked")-1 || m["failed"] != true {
		t.Fatalf("one swallowed update must count lost 1: %v\n%s", m, out)
	}
	if !strings.Contains(errs, "accounting failed: lost 1") {
		t.Fatalf("stderr does not say why:\n%s", errs)
	}
}

func TestLoadgenHTTPRunsInOneProcess(t *testing.T) {
	for _, args := range [][]string{{"--workers", "2"}, {"--players", "20000"}} {
		args = append([]string{"loadgen", "http", "--graph", "g.gr"}, args...)
		if code, _, errs := runCLI(t, "", secretEnv, args...); code != 2 || !strings.Contains(errs, "this process") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errs)
		}
	}
}
