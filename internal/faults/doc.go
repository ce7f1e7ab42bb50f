// Package faults holds the fault tests that need the whole pipeline and a
// server they can break (issue 9, "Faults under load"): a private Redis
// killed mid-load and left down, restarted empty, killed and restarted at
// once; a private PostgreSQL stopped under load; push sockets that read
// slowly or not at all; a private JetStream server whose store fills up.
// (Killing each service's process is internal/e2e's
// TestProcessKillEachService.) Its one helper, LogAgrees, is every fault
// test's "the final state equals a fault-free replay": the game rebuilt
// from the log (internal/history) against OUT, PostgreSQL and Redis.
// docs/operations.md ("What the system promises under faults") says what
// each test shows.
package faults
