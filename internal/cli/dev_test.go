package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

// TestDevRunsTheDemo runs `treasure dev` as the demo does — embedded
// JetStream, the four services, simulated players over real WebSockets —
// for a few seconds on free ports, and checks the figures it prints: moves
// flowed, every move got its update, no ids skipped, and it cleaned up.
func TestDevRunsTheDemo(t *testing.T) {
	env := devEnv(t)
	code, out, errs := runCLI(t, "", env, "dev", "--players", "20", "--rate", "4", "--treasures", "2000", "--duration", "6s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{"TREASURE_JWT_SECRET=", "all four services ready", "live page: http://127.0.0.1:", "/?token=", "moves/s", "missing 0, unmatched 0", "gaps 0, duplicates 0", "errors    none"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dev output lacks %q:\n%s\nstderr:\n%s", want, out, errs)
		}
	}
	if strings.Contains(out, "moves     0 accepted") {
		t.Fatalf("no move was accepted:\n%s", out)
	}
}

// TestDevInProcessEndpoints: without --separate, --endpoints describes the
// one process (one ingest, one push, one /metrics URL, since the four
// services share its registry) while dev runs, and is removed on exit.
func TestDevInProcessEndpoints(t *testing.T) {
	ep := filepath.Join(t.TempDir(), "ep.json")
	env := devEnv(t)
	env["TREASURE_JWT_SECRET"] = "in-process-secret"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"dev", "--treasures", "0", "--endpoints", ep}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
	}()
	var e devEndpoints
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if data, err := os.ReadFile(ep); err == nil {
			if err := json.Unmarshal(data, &e); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			break
		}
		select {
		case code := <-done:
			t.Fatalf("dev exited %d before writing %s:\n%s\n%s", code, ep, out.String(), errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no endpoints file")
		}
	}
	if len(e.Ingest) != 1 || len(e.Push) != 1 || len(e.Metrics) != 1 || e.Secret != "in-process-secret" ||
		!strings.HasPrefix(e.Ingest[0], "ws://127.0.0.1:") || !strings.HasPrefix(e.NATS, "nats://") || !filepath.IsAbs(e.Graph) {
		t.Fatalf("endpoints %+v", e)
	}
	resp, err := http.Get(e.Metrics[0])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"treasure_ingest_", "treasure_push_", "treasure_proximity_", "treasure_ranker_"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("%s lacks %s metrics", e.Metrics[0], want)
		}
	}
	// Retention runs beside the services (its first pass at start).
	for deadline := time.Now().Add(time.Minute); !strings.Contains(string(body), "treasure_retention_headroom_bytes{"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no retention pass", e.Metrics[0])
		}
		if resp, err = http.Get(e.Metrics[0]); err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("dev exit %d:\n%s", code, errb.String())
	}
	if _, err := os.Stat(ep); !os.IsNotExist(err) {
		t.Fatalf("endpoints file after exit: %v", err)
	}
}

// devEnv is the environment of a `treasure dev` run on amsterdam, the
// shared Redis and PostgreSQL, every listener on a free port, logging
// warnings only.
func devEnv(t *testing.T) map[string]string {
	return map[string]string{
		"TREASURE_GRAPH":          testgraph.Path(t, "amsterdam.gr.gz"),
		"TREASURE_REDIS_URL":      testenv.RedisURL(),
		"TREASURE_DATABASE_URL":   testenv.DatabaseURL(),
		"TREASURE_DEV_NATS_ADDR":  "127.0.0.1:0",
		"TREASURE_INGEST_ADDR":    "127.0.0.1:0",
		"TREASURE_PUSH_ADDR":      "127.0.0.1:0",
		"TREASURE_PROXIMITY_ADDR": "127.0.0.1:0",
		"TREASURE_RANKER_ADDR":    "127.0.0.1:0",
		"TREASURE_LOG_LEVEL":      "warn",
	}
}
