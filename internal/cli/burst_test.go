package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

// repoRoot is the module's root folder.
func repoRoot(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(gomod)))
}

func TestBurstScriptParses(t *testing.T) {
	out, err := exec.Command("bash", "-n", filepath.Join(repoRoot(t), "scripts", "burst.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("bash -n scripts/burst.sh: %v\n%s", err, out)
	}
}

// TestBurstScriptSmall runs scripts/burst.sh (what `make burst` runs) with
// 200 players on amsterdam, the services on free ports: it must exit 0, its
// last stdout line must be the load generator's JSON summary with every
// move acked and answered, and no process it started may be left. Skipped
// while `treasure loadgen drop` does not exist yet.
func TestBurstScriptSmall(t *testing.T) {
	t.Parallel()
	exe := buildTreasure(t)
	if help, _ := exec.Command(exe, "loadgen", "-h").CombinedOutput(); !bytes.Contains(help, []byte("drop")) {
		t.Skip("`treasure loadgen drop` is not there yet (`treasure loadgen -h` does not mention it)")
	}
	root := repoRoot(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "burst.sh"))
	cmd.Env = append(os.Environ(),
		"BURST_PLAYERS=200", "BURST_GRAPH="+testgraph.Path(t, "amsterdam.gr.gz"), "BURST_DIR="+dir,
		"BURST_BIN="+filepath.Join(dir, "treasure"),
		"TREASURE_REDIS_URL="+testenv.RedisURL(), "TREASURE_DATABASE_URL="+testenv.DatabaseURL(),
		"TREASURE_DEV_NATS_ADDR=127.0.0.1:0", "TREASURE_INGEST_ADDR=127.0.0.1:0", "TREASURE_PUSH_ADDR=127.0.0.1:0",
		"TREASURE_PROXIMITY_ADDR=127.0.0.1:0", "TREASURE_RANKER_ADDR=127.0.0.1:0",
		"TREASURE_STREAM_MAX_BYTES=67108864", "TREASURE_STREAM_MAX_MSGS=200000", "TREASURE_LOG_LEVEL=warn",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	devLog, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
	defer func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s\ndev.log:\n%s", stdout.String(), stderr.String(), devLog)
		}
	}()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("burst.sh: exit %d, want 0", code)
	}
	lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	var summary map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &summary); err != nil {
		t.Fatalf("last stdout line is not a JSON object: %q: %v", lines[len(lines)-1], err)
	}
	for _, k := range []string{"players", "sent", "acked", "answered", "lost", "duplicated", "errors", "window_s", "drain_s",
		"update_p50_ms", "update_p99_ms", "leaderboard_polls", "leaderboard_failures"} {
		if _, ok := summary[k]; !ok {
			t.Errorf("summary lacks %q: %v", k, summary)
		}
	}
	for k, want := range map[string]float64{"players": 200, "sent": 200, "acked": 200, "answered": 200, "lost": 0, "duplicated": 0} {
		if summary[k] != want {
			t.Errorf("summary %s = %v, want %v", k, summary[k], want)
		}
	}
	// Every process dev started ("started <name> pid <pid>") is gone, and dev too.
	pids := regexp.MustCompile(`started \S+ +pid (\d+)`).FindAllStringSubmatch(string(devLog), -1)
	if len(pids) != 7 {
		t.Fatalf("dev.log names %d started processes, want 7 (2 ingest, 2 push, proximity, ranker, archive)", len(pids))
	}
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after burst.sh ended (kill 0: %v)", pid, err)
		}
	}
}
