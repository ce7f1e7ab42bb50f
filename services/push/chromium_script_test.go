package push_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runChromiumScript runs scripts/chromium.sh with PATH set to a folder
// holding only the given stub programs (and env added).
func runChromiumScript(t *testing.T, stubs map[string]string, env ...string) (code int, stdout, stderr, dir string) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!"+bash+"\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bash, filepath.Join("..", "..", "scripts", "chromium.sh"))
	cmd.Env = append([]string{"PATH=" + dir, "HOME=" + dir, "STUBDIR=" + dir}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatal(err)
	}
	return code, out.String(), errb.String(), dir
}

// TestChromiumScript: scripts/chromium.sh finds a browser on PATH, installs
// Debian's chromium with apt-get as root (saying so, refreshing the lists
// when the first install fails), and otherwise prints the apt-get line and
// fails.
func TestChromiumScript(t *testing.T) {
	const root, user = "echo 0", "echo 1000"
	chmod, err := exec.LookPath("chmod")
	if err != nil {
		t.Fatal(err)
	}
	// aptGet installs a chromium stub beside itself on "install -y
	// chromium"; with failFirst its first install fails until "update".
	// Stubs use bash builtins and absolute paths: PATH holds only them.
	aptGet := func(failFirst bool) string {
		s := `d=$STUBDIR; echo "$*" >> "$d/apt.log"`
		if failFirst {
			s += `; if [ "$1" = update ]; then : > "$d/updated"; exit 0; fi; [ -e "$d/updated" ] || exit 100`
		}
		return s + `; if [ "$*" = "install -y chromium" ]; then printf '#!/bin/sh\nexit 0\n' > "$d/chromium"; ` + chmod + ` +x "$d/chromium"; fi`
	}
	t.Run("found on PATH", func(t *testing.T) {
		code, out, _, dir := runChromiumScript(t, map[string]string{"id": user, "chromium-browser": "exit 0"})
		if code != 0 || strings.TrimSpace(out) != filepath.Join(dir, "chromium-browser") {
			t.Fatalf("exit %d, stdout %q", code, out)
		}
	})
	t.Run("installed as root", func(t *testing.T) {
		code, out, errs, dir := runChromiumScript(t, map[string]string{"id": root, "apt-get": aptGet(false)})
		log, _ := os.ReadFile(filepath.Join(dir, "apt.log"))
		if code != 0 || strings.TrimSpace(out) != filepath.Join(dir, "chromium") || !strings.Contains(errs, "installing Debian's chromium") || string(log) != "install -y chromium\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q, apt-get calls %q", code, out, errs, log)
		}
	})
	t.Run("stale package lists are refreshed", func(t *testing.T) {
		code, _, errs, dir := runChromiumScript(t, map[string]string{"id": root, "apt-get": aptGet(true)})
		log, _ := os.ReadFile(filepath.Join(dir, "apt.log"))
		if code != 0 || string(log) != "install -y chromium\nupdate\ninstall -y chromium\n" {
			t.Fatalf("exit %d, stderr %q, apt-get calls %q", code, errs, log)
		}
	})
	for name, stubs := range map[string]map[string]string{
		"no apt-get":             {"id": root},
		"not root and no sudo":   {"id": user, "apt-get": aptGet(false)},
		"sudo asks for password": {"id": user, "apt-get": aptGet(false), "sudo": "exit 1"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs, dir := runChromiumScript(t, stubs)
			if code != 1 || out != "" || !strings.Contains(errs, "apt-get install -y chromium") {
				t.Fatalf("exit %d, stdout %q, stderr %q: want exit 1 and the apt-get line", code, out, errs)
			}
			if _, err := os.Stat(filepath.Join(dir, "apt.log")); err == nil {
				t.Fatal("apt-get ran without root")
			}
		})
	}
	t.Run("sudo without password", func(t *testing.T) {
		code, out, errs, dir := runChromiumScript(t, map[string]string{"id": user, "apt-get": aptGet(false), "sudo": `[ "$1" = -n ] && shift; "$@"`})
		if code != 0 || strings.TrimSpace(out) != filepath.Join(dir, "chromium") || !strings.Contains(errs, "sudo -n apt-get install") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})
	t.Run("TREASURE_CHROMIUM not executable", func(t *testing.T) {
		code, _, errs, _ := runChromiumScript(t, map[string]string{"id": root, "apt-get": aptGet(false)}, "TREASURE_CHROMIUM=/nonexistent/chrome")
		if code != 1 || !strings.Contains(errs, "not an executable") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
}
