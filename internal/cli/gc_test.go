package cli

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"
)

func TestTuneGCSetsTheTargetUnlessGOGCIsSet(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	tuneGC(func(string) string { return "" }, log, streamingGOGC)
	if got := debug.SetGCPercent(100); got != streamingGOGC {
		t.Fatalf("GOGC %d after tuneGC, want %d", got, streamingGOGC)
	}
	tuneGC(func(k string) string {
		if k == "GOGC" {
			return "50"
		}
		return ""
	}, log, streamingGOGC)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC %d after tuneGC with GOGC set in the environment, want it left alone (100)", got)
	}
}
