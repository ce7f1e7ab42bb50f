package testgraph

import (
	"os"
	"path/filepath"
	"testing"
)

// TestAmsterdamComesFromTheRepository: the network the repository ships
// is found without ../shared (TREASURE_DATA pointing nowhere), so a fresh
// clone passes the tests that need only it; another network is looked for
// in the shared directory.
func TestAmsterdamComesFromTheRepository(t *testing.T) {
	t.Setenv(Env, filepath.Join(t.TempDir(), "absent"))
	p := Path(t, "amsterdam.gr.gz")
	repo, ok := RepoData()
	if !ok || filepath.Dir(p) != repo {
		t.Fatalf("amsterdam at %s, want the repository's data/ (%s, found %v)", p, repo, ok)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	if d, ok := Find(); ok {
		t.Fatalf("shared data found at %s with %s pointing nowhere", d, Env)
	}
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "elsewhere.gr.gz"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(Env, shared)
	if got := Path(t, "elsewhere.gr.gz"); got != filepath.Join(shared, "elsewhere.gr.gz") {
		t.Fatalf("shared network at %s", got)
	}
}
