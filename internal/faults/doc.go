// Package faults holds the fault tests that need the whole pipeline and a
// server they can break (issue 9, "Faults under load"): a private Redis
// killed mid-load and left down, restarted empty, killed and restarted at
// once. It has no code of its own; docs/operations.md ("What the system
// promises under faults") says what each test shows.
package faults
