// Package testdata finds the real road networks in ../shared/data for tests
// and benchmarks. Tests that need them fail with a clear message when the
// folder is absent rather than passing silently.
package testdata

import (
	"os"
	"path/filepath"
	"testing"
)

// Env names a directory that overrides the search for shared/data.
const Env = "TREASURE_DATA"

// Find returns the shared data directory and whether it exists: $TREASURE_DATA
// when set, else the first shared/data found walking up from the working
// directory (the repository sits beside shared/).
func Find() (string, bool) {
	if d := os.Getenv(Env); d != "" {
		st, err := os.Stat(d)
		return d, err == nil && st.IsDir()
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		cand := filepath.Join(dir, "shared", "data")
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			return cand, true
		}
		if filepath.Dir(dir) == dir {
			return "", false
		}
	}
}

// Dir returns the shared data directory or fails the test, naming where it
// looked.
func Dir(tb testing.TB) string {
	tb.Helper()
	d, ok := Find()
	if !ok {
		tb.Fatalf("real road networks not found: set %s or put the repository beside shared/ (looked for shared/data above the working directory)", Env)
	}
	return d
}

// Path returns the path of file name in the shared data directory, failing
// the test when it is missing.
func Path(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(Dir(tb), name)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("real road network %s missing: %v", name, err)
	}
	return p
}
