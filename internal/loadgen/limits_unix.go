//go:build unix

package loadgen

import "syscall"

// openFilesLimit returns the process's open-files limit (RLIMIT_NOFILE's
// soft limit, which the Go runtime raises to the hard one at start).
func openFilesLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true
}
