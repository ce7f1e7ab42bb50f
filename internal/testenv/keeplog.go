package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// KeepLog keeps a failed test's log of something (a process's output, a
// cluster node's log) where it outlives the test — $TREASURE_ARTIFACTS,
// else a folder of the system's temporary one that is not removed — and
// returns a line naming the file with the log's last lines. The whole log
// in the test's output would push the failure itself out of sight: CI
// shows the end of the output.
func KeepLog(tb testing.TB, name string, log []byte, lines int) string {
	tb.Helper()
	dir := os.Getenv("TREASURE_ARTIFACTS")
	test := strings.NewReplacer("/", "_", " ", "_").Replace(tb.Name())
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "treasure-"+test+"-")
	} else {
		dir = filepath.Join(dir, test)
		err = os.MkdirAll(dir, 0o755)
	}
	path := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(name)+".log")
	if err == nil {
		err = os.WriteFile(path, log, 0o644)
	}
	if err != nil {
		return fmt.Sprintf("the log of %s not kept (%v); its end:\n%s", name, err, LastLines(log, lines))
	}
	return fmt.Sprintf("the log of %s: %s (%d bytes); its end:\n%s", name, path, len(log), LastLines(log, lines))
}

// LastLines returns the last n lines of b.
func LastLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if n--; n == 0 {
				return s[i+1:]
			}
		}
	}
	return s
}
