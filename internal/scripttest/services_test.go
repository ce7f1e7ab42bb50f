package scripttest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// repoFile returns the path of a file at the repository's root.
func repoFile(tb testing.TB, name string) string {
	tb.Helper()
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", name)
}

// freePort returns a loopback port where nothing listens.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// machine is a fresh machine as services.sh sees it: a PATH holding the
// tools the script uses and none of the servers, stub id, sudo and
// package managers, free ports and a private state folder.
type machine struct {
	t           *testing.T
	bin, log    string
	env         []string
	redisPort   int
	realServers map[string]string // what the stub package manager "installs"
}

const stubID = `#!/bin/sh
case "$1" in
-u) echo "${STUB_UID:-0}" ;;
-un) echo "${STUB_USER:-root}" ;;
*) exec "$REAL_ID" "$@" ;;
esac
`

const stubSudo = `#!/bin/sh
[ "$STUB_SUDO" = ok ] || exit 1
echo "sudo $*" >>"$STUB_LOG"
[ "$1" = -n ] && shift
exec "$@"
`

// stubPM records its arguments; "install" fails unless STUB_INSTALL=ok,
// and then links each requested package's real binary (REAL_<pkg>) into
// the stub PATH, which is what installing means to the script.
const stubPM = `#!/bin/bash
echo "$(basename "$0") $*" >>"$STUB_LOG"
case " $* " in
*" install "*)
	[ "$STUB_INSTALL" = ok ] || exit 100
	for a in "$@"; do
		v=REAL_${a//-/_}
		if [ -n "${!v:-}" ]; then ln -sf "${!v}" "$STUB_BIN/$(basename "${!v}")"; fi
	done
	;;
esac
exit 0
`

func newMachine(t *testing.T, managers ...string) *machine {
	t.Helper()
	dir := t.TempDir()
	m := &machine{t: t, bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "pm.log"), redisPort: freePort(t)}
	if err := os.Mkdir(m.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"sed", "sort", "sleep", "awk", "tr", "mkdir", "chmod", "chown", "getent", "stat", "rm", "env", "setsid", "nohup", "cat", "basename", "ln", "true"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s not on this machine: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(m.bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	realID, err := exec.LookPath("id")
	if err != nil {
		t.Skip("no id")
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(m.bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("id", stubID)
	write("sudo", stubSudo)
	for _, pm := range managers {
		write(pm, stubPM)
	}
	m.env = []string{
		"PATH=" + m.bin, "HOME=" + dir, "STUB_LOG=" + m.log, "STUB_BIN=" + m.bin, "REAL_ID=" + realID,
		"TREASURE_SERVICES_SBIN=", "TREASURE_PG_LIB=" + filepath.Join(dir, "nopg"),
		"TREASURE_SERVICES_DIR=" + filepath.Join(dir, "state"), "TREASURE_SERVICES_WAIT=20",
		"TREASURE_NATS_URL=nats://127.0.0.1:" + strconv.Itoa(freePort(t)),
		"TREASURE_REDIS_URL=redis://127.0.0.1:" + strconv.Itoa(m.redisPort) + "/0",
		"TREASURE_DATABASE_URL=postgres://postgres@127.0.0.1:" + strconv.Itoa(freePort(t)) + "/treasure?sslmode=disable",
	}
	return m
}

// run runs services.sh with args and extra environment; it returns the
// exit status and the output.
func (m *machine) run(extra []string, args ...string) (int, string) {
	m.t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		m.t.Skip("no bash")
	}
	cmd := exec.Command(bash, append([]string{repoFile(m.t, "scripts/services.sh")}, args...)...)
	cmd.Env = append(append([]string{}, m.env...), extra...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		m.t.Fatal(err)
	}
	return code, string(out)
}

// asked returns what the stubs were asked, one call a line.
func (m *machine) asked() []string {
	b, err := os.ReadFile(m.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		m.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestServicesWithoutPrivilegePrintsTheLine(t *testing.T) {
	t.Parallel()
	m := newMachine(t, "apt-get")
	code, out := m.run([]string{"STUB_UID=1000", "STUB_USER=dev"}, "ensure")
	want := "missing nats-server redis-server postgresql: install with 'apt-get install nats-server redis-server postgresql' and run again"
	if code != 1 || !strings.Contains(out, want) {
		t.Fatalf("exit %d, output:\n%s\nwant the line %q", code, out, want)
	}
	if strings.Contains(out, "installing") || m.asked() != nil {
		t.Fatalf("installed without root or sudo: %v\n%s", m.asked(), out)
	}
}

func TestServicesAsRootInstallsWhatIsMissing(t *testing.T) {
	t.Parallel()
	m := newMachine(t, "apt-get")
	code, out := m.run([]string{"STUB_UID=0"}, "ensure")
	if code != 1 {
		t.Fatalf("exit %d with an install that fails:\n%s", code, out)
	}
	if !strings.Contains(out, "services: installing nats-server redis-server postgresql with apt-get\n") {
		t.Fatalf("does not say what it installs:\n%s", out)
	}
	if !strings.Contains(out, "install with 'apt-get install nats-server redis-server postgresql'") {
		t.Fatalf("no line after the failed install:\n%s", out)
	}
	wantCalls := []string{
		"apt-get install -y -q --no-install-recommends nats-server redis-server postgresql",
		"apt-get update -q",
		"apt-get install -y -q --no-install-recommends nats-server redis-server postgresql",
	}
	if got := m.asked(); strings.Join(got, "\n") != strings.Join(wantCalls, "\n") {
		t.Fatalf("the package manager was asked\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantCalls, "\n"))
	}
}

func TestServicesInstallOptOut(t *testing.T) {
	t.Parallel()
	m := newMachine(t, "apt-get")
	code, out := m.run([]string{"STUB_UID=0", "TREASURE_SERVICES_INSTALL=no"}, "ensure", "redis")
	if code != 1 || m.asked() != nil || !strings.Contains(out, "'apt-get install redis-server'") {
		t.Fatalf("exit %d, asked %v:\n%s", code, m.asked(), out)
	}
}

func TestServicesDnfNames(t *testing.T) {
	t.Parallel()
	m := newMachine(t, "dnf")
	code, out := m.run([]string{"STUB_UID=0"}, "ensure", "redis", "postgres")
	if code != 1 || !strings.Contains(out, "install with 'dnf install redis postgresql-server postgresql'") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if got := m.asked(); len(got) != 1 || got[0] != "dnf install -y -q redis postgresql-server postgresql" {
		t.Fatalf("dnf was asked %q", got)
	}
}

func TestServicesNoPackageManagerPrintsTheLine(t *testing.T) {
	t.Parallel()
	m := newMachine(t)
	code, out := m.run([]string{"STUB_UID=0"}, "ensure", "nats")
	if code != 1 || strings.Contains(out, "installing") || !strings.Contains(out, "install with 'apt-get install nats-server'") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestServicesInstallsThroughSudoThenStarts: through a password-less sudo,
// the stub apt-get "installs" redis-server (links the machine's real one
// into PATH); the script then starts a private Redis on its port, and
// stop stops it.
func TestServicesInstallsThroughSudoThenStarts(t *testing.T) {
	t.Parallel()
	real, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server on this machine to install")
	}
	m := newMachine(t, "apt-get")
	extra := []string{"STUB_UID=1000", "STUB_USER=" + currentUser(), "STUB_SUDO=ok", "STUB_INSTALL=ok", "REAL_redis_server=" + real}
	code, out := m.run(extra, "ensure", "redis")
	t.Cleanup(func() { m.run(extra, "stop") })
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "installing redis-server with apt-get (through sudo)") ||
		!strings.Contains(out, "Redis started at 127.0.0.1:"+strconv.Itoa(m.redisPort)) {
		t.Fatalf("output:\n%s", out)
	}
	if got := m.asked(); len(got) < 2 || got[0] != "sudo -n true" ||
		got[1] != "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server" {
		t.Fatalf("asked %q", got)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(m.redisPort))
	if err != nil {
		t.Fatalf("the started Redis does not answer: %v", err)
	}
	c.Close()
	code, out = m.run(extra, "stop")
	if code != 0 || !strings.Contains(out, "stopped redis-"+strconv.Itoa(m.redisPort)) {
		t.Fatalf("stop: exit %d:\n%s", code, out)
	}
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}
