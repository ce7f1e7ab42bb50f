//go:build !linux

package loadgen

import "syscall"

// bindNoPort does nothing outside Linux (see dial_linux.go).
func bindNoPort(network, address string, c syscall.RawConn) error { return nil }
