// Package testgraph finds road networks for tests and benchmarks: the
// repository's own data/ (amsterdam, so that a fresh clone passes the
// tests that need only it) and the larger ones in ../shared/data. Tests
// that need a network that is absent fail with a clear message rather than
// passing silently.
//
// (It was internal/testdata, which `go test ./...` and `go vet ./...` skip:
// the go tool ignores directories named testdata.)
package testgraph

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
	return up("shared", "data")
}

// RepoData returns the repository's data directory (data/ beside go.mod)
// and whether it was found above the working directory.
func RepoData() (string, bool) {
	wd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(dir, "data")
			st, err := os.Stat(d)
			return d, err == nil && st.IsDir()
		}
		if filepath.Dir(dir) == dir {
			return "", false
		}
	}
}

// up returns the first dir/elem... found walking up from the working
// directory.
func up(elem ...string) (string, bool) {
	wd, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		cand := filepath.Join(append([]string{dir}, elem...)...)
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

// Path returns the path of network file name: from the repository's data/
// when it is there (amsterdam), else from the shared data directory,
// failing the test when it is in neither.
func Path(tb testing.TB, name string) string {
	tb.Helper()
	if d, ok := RepoData(); ok {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(Dir(tb), name)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("real road network %s missing: %v", name, err)
	}
	return p
}
