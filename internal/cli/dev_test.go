package cli

import (
	"strings"
	"testing"

	"treasure/internal/testdata"
	"treasure/internal/testenv"
)

// TestDevRunsTheDemo runs `treasure dev` as the demo does — embedded
// JetStream, the four services, simulated players over real WebSockets —
// for a few seconds on free ports, and checks the figures it prints: moves
// flowed, every move got its update, no ids skipped, and it cleaned up.
func TestDevRunsTheDemo(t *testing.T) {
	env := map[string]string{
		"TREASURE_GRAPH":          testdata.Path(t, "amsterdam.gr.gz"),
		"TREASURE_REDIS_URL":      testenv.RedisURL(),
		"TREASURE_DATABASE_URL":   testenv.DatabaseURL(),
		"TREASURE_DEV_NATS_ADDR":  "127.0.0.1:0",
		"TREASURE_INGEST_ADDR":    "127.0.0.1:0",
		"TREASURE_PUSH_ADDR":      "127.0.0.1:0",
		"TREASURE_PROXIMITY_ADDR": "127.0.0.1:0",
		"TREASURE_RANKER_ADDR":    "127.0.0.1:0",
		"TREASURE_LOG_LEVEL":      "warn",
	}
	code, out, errs := runCLI(t, "", env, "dev", "--players", "20", "--rate", "4", "--treasures", "2000", "--duration", "6s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{"TREASURE_JWT_SECRET=", "all four services ready", "moves/s", "missing 0, unmatched 0", "gaps 0, duplicates 0", "errors    none"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dev output lacks %q:\n%s\nstderr:\n%s", want, out, errs)
		}
	}
	if strings.Contains(out, "moves     0 accepted") {
		t.Fatalf("no move was accepted:\n%s", out)
	}
}
