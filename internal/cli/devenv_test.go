package cli

import (
	"slices"
	"testing"

	"treasure/internal/platform"
)

// TestDevChildEnvPassesTheTuningVariables: a variable an operator sets for
// the services (checkpoint interval, ingest's batch wait) reaches the
// children of `dev --separate`, while other TREASURE_* variables of dev's
// own environment do not leak into them.
func TestDevChildEnvPassesTheTuningVariables(t *testing.T) {
	t.Setenv("TREASURE_SOMETHING_ELSE", "x")
	given := map[string]string{
		platform.EnvCheckpointEvery: "off",
		envIngestFlush:              "4ms",
		"TREASURE_SOMETHING_ELSE":   "x",
	}
	env := devChildEnv(func(k string) string { return given[k] }, map[string]string{})
	for _, want := range []string{platform.EnvCheckpointEvery + "=off", envIngestFlush + "=4ms"} {
		if !slices.Contains(env, want) {
			t.Errorf("child environment lacks %s: %v", want, env)
		}
	}
	if slices.Contains(env, "TREASURE_SOMETHING_ELSE=x") {
		t.Errorf("child environment has dev's own TREASURE_SOMETHING_ELSE: %v", env)
	}
}
