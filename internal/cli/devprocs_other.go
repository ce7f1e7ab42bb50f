//go:build !linux

package cli

import (
	"os"
	"syscall"
)

// childProcAttr: outside Linux the children share dev's process group and
// have no parent-death signal; dev still stops them on every exit path it
// controls.
func childProcAttr() *syscall.SysProcAttr { return nil }

// terminate asks a child to shut down (SIGTERM where there are signals).
func terminate(p *os.Process) {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		_ = p.Kill()
	}
}

// killGroup kills a child.
func killGroup(p *os.Process) { _ = p.Kill() }
