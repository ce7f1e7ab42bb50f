package platform

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestParseLogConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format, level string
		want          LogConfig
	}{
		{"", "", LogConfig{Format: "text", Level: slog.LevelInfo}},
		{"text", "warn", LogConfig{Format: "text", Level: slog.LevelWarn}},
		{"Json", "ERROR", LogConfig{Format: "json", Level: slog.LevelError}},
		{"json", "debug-4", LogConfig{Format: "json", Level: slog.LevelDebug - 4}},
	}
	for _, tt := range tests {
		got, err := ParseLogConfig(tt.format, tt.level)
		if err != nil || got != tt.want {
			t.Errorf("ParseLogConfig(%q, %q) = %+v, %v; want %+v", tt.format, tt.level, got, err, tt.want)
		}
	}
	for _, bad := range [][2]string{{"yaml", ""}, {"", "verbose"}} {
		if _, err := ParseLogConfig(bad[0], bad[1]); err == nil {
			t.Errorf("ParseLogConfig(%q, %q): want an error", bad[0], bad[1])
		}
	}
}

func TestNewLoggerWritesJSONAtLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := NewLogger(&buf, LogConfig{Format: "json", Level: slog.LevelWarn})
	log.Info("dropped")
	log.Warn("kept", "k", 1)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want exactly the warn line, got %q", buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %q: %v", lines[0], err)
	}
	if rec["msg"] != "kept" || rec["level"] != "WARN" || rec["k"] != 1.0 {
		t.Errorf("record = %v", rec)
	}
}

func TestNewLoggerWritesText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	NewLogger(&buf, LogConfig{Format: "text", Level: slog.LevelDebug}).Debug("hello", "who", "world")
	if out := buf.String(); !strings.Contains(out, "level=DEBUG msg=hello who=world") {
		t.Errorf("text line = %q", out)
	}
}
