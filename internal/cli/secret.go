package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"treasure/internal/platform"
)

// secretFlags are the flags of a command that needs the services' JWT
// secret. The secret never travels on a command line, where every user of
// the machine reads it (ps, /proc/PID/cmdline): it comes from
// --secret-file FILE (the file's first line) or from TREASURE_JWT_SECRET.
// --secret is still recognised, only to say so.
type secretFlags struct {
	file, literal *string
}

func addSecretFlags(fs *flag.FlagSet) *secretFlags {
	return &secretFlags{
		file:    fs.String("secret-file", "", "file holding the services' JWT secret (first line; default: env "+platform.EnvJWTSecret+")"),
		literal: fs.String("secret", "", "refused: a secret on the command line is visible to every user (ps); use --secret-file or "+platform.EnvJWTSecret),
	}
}

// value returns the secret: from --secret-file when given, else from the
// environment; a usage error when it is on the command line, when the file
// cannot be read or is empty, or when neither is set.
func (s *secretFlags) value(env Env) (string, error) {
	if *s.literal != "" {
		return "", &UsageError{Msg: "--secret: a secret on the command line is visible to every user of the machine (ps, /proc); put it in a file (--secret-file FILE) or in " + platform.EnvJWTSecret}
	}
	if *s.file != "" {
		return readSecretFile(*s.file)
	}
	if v := env(platform.EnvJWTSecret); v != "" {
		return v, nil
	}
	return "", &UsageError{Msg: "the services' JWT secret is required: --secret-file FILE or " + platform.EnvJWTSecret}
}

// readSecretFile returns the first line of path, without its line end.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &UsageError{Msg: fmt.Sprintf("--secret-file: %v", err)}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", &UsageError{Msg: fmt.Sprintf("--secret-file %s: the first line is empty", path)}
	}
	return line, nil
}
