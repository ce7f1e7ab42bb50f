package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secretEnv gives the commands a secret through the environment.
var secretEnv = map[string]string{"TREASURE_JWT_SECRET": "s"}

// loadgenSecretFile writes loadgenSecret to a file for --secret-file.
func loadgenSecretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(loadgenSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecretNeverFromTheCommandLine(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"loadgen", "closed", "--graph", "x", "--secret", "on-the-command-line"}, nil, "visible to every user"},
		{[]string{"loadgen", "steady", "--graph", "x", "--secret", "on-the-command-line"}, secretEnv, "visible to every user"},
		{[]string{"edge-ref", "--secret", "on-the-command-line"}, secretEnv, "visible to every user"},
		{[]string{"loadgen", "steady", "--graph", "x"}, nil, "--secret-file FILE or TREASURE_JWT_SECRET"},
		{[]string{"loadgen", "drop", "--graph", "x", "--secret-file", filepath.Join(t.TempDir(), "missing")}, nil, "--secret-file"},
		{[]string{"loadgen", "closed", "--graph", "x", "--secret-file", empty}, nil, "first line is empty"},
	} {
		code, _, errs := runCLI(t, "", c.env, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errs, c.want)
		}
		if strings.Contains(errs, "on-the-command-line") {
			t.Errorf("%v: the error repeats the secret: %q", c.args, errs)
		}
	}
}

func TestReadSecretFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(p, []byte("abc\r\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readSecretFile(p); err != nil || got != "abc" {
		t.Fatalf("got %q, %v", got, err)
	}
}
