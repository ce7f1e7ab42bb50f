package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// built is the treasure binary of this test process, built once by
// TreasureBinary and removed by RemoveTreasureBinary.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TreasureBinary builds ./cmd/treasure (go build, from the module root)
// the first time a test of this process asks for it and returns its path;
// a build failure fails every test that asks. A package whose tests call
// it removes the binary in its TestMain with RemoveTreasureBinary.
func TreasureBinary(tb testing.TB) string {
	tb.Helper()
	built.once.Do(func() {
		// go test puts its own go first on PATH.
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			built.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		mod := strings.TrimSpace(string(gomod))
		if mod == "" || mod == os.DevNull {
			built.err = fmt.Errorf("go env GOMOD: not inside a module (%q)", mod)
			return
		}
		if built.dir, err = os.MkdirTemp("", "treasure-bin-"); err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(built.dir, "treasure")
		build := exec.Command("go", "build", "-o", built.path, "./cmd/treasure")
		build.Dir = filepath.Dir(mod)
		if out, err := build.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/treasure: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		tb.Fatal(built.err)
	}
	return built.path
}

// RemoveTreasureBinary removes what TreasureBinary built, if anything;
// for TestMain, after m.Run.
func RemoveTreasureBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}
