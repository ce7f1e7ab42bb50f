// Package fleet runs one load-generator run over several worker processes,
// for more players than one process can hold: a process holds at most
// about 19,900 sockets (the open-files limit of 20,000 cannot be raised)
// and a player has two, and one loopback source address reaches one
// listening port through about 28,000 ephemeral ports.
//
// RunOpen is the one call a scenario makes: it runs loadgen.RunOpen in
// this process when one process holds the players, and Run otherwise.
//
// The coordinator (Run) starts as many workers as the players need (the
// same binary, os.Executable() with WorkerArgs: `treasure lg-worker`,
// whose command calls Worker), gives each a contiguous share of the
// player ids and its own source address, and drives them over their
// stdin and stdout with a small protocol of JSON lines (protocol.go):
// config → progress while connecting → ready → start with t0 →
// per-second statistics → the result. Once every worker is ready it
// calls the run's Connected hook (which posts the admin drop in the drop
// scenario) and sends every worker the same t0. It merges the workers'
// seconds by index and their results into one, as one process would have
// reported them. Worker stderr is passed through, line by line, prefixed
// with the worker's index.
//
// A worker that reports an error, exits without a result or exits
// non-zero fails the run: the others are killed and the error names the
// worker, its players and its last log lines. Closing Open.Stop ends
// every worker's schedule (they drain as at its end); cancelling the
// run's context tells every worker to stop at once (as RunOpen does on
// cancel: no drain) and send what it measured; workers that do not
// finish in time are killed. Workers run in
// their own process group, so a terminal's Ctrl-C reaches only the
// coordinator, and a worker whose stdin reaches end of file (its
// coordinator is gone) stops by itself: no worker outlives a run.
package fleet
