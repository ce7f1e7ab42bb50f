//go:build !unix

package loadgen

// openFilesLimit is unknown outside Unix.
func openFilesLimit() (uint64, bool) { return 0, false }
