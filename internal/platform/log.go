package platform

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogConfig selects the log format and the minimum level.
type LogConfig struct {
	// Format is "text" (logfmt-like, the default) or "json".
	Format string
	// Level is the minimum level written; slog.LevelInfo by default.
	Level slog.Level
}

// ParseLogConfig reads a format ("text" or "json", case-insensitive; empty
// means text) and a level (debug, info, warn, error, optionally with an
// offset such as "debug-4"; empty means info), as TREASURE_LOG_FORMAT and
// TREASURE_LOG_LEVEL give them.
func ParseLogConfig(format, level string) (LogConfig, error) {
	c := LogConfig{Format: "text", Level: slog.LevelInfo}
	var errs []error
	switch f := strings.ToLower(strings.TrimSpace(format)); f {
	case "", "text":
	case "json":
		c.Format = f
	default:
		errs = append(errs, fmt.Errorf("%s: want text or json, got %q", EnvLogFormat, format))
	}
	if level = strings.TrimSpace(level); level != "" {
		if err := c.Level.UnmarshalText([]byte(level)); err != nil {
			errs = append(errs, fmt.Errorf("%s: want debug, info, warn or error, got %q", EnvLogLevel, level))
		}
	}
	return c, errors.Join(errs...)
}

// NewLogger returns a logger writing to w in c's format at c's level or above.
// An unknown format falls back to text. The logger is safe for concurrent
// use as long as w is (an *os.File is).
func NewLogger(w io.Writer, c LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
