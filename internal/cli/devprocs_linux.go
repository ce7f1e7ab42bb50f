package cli

import (
	"os"
	"syscall"
)

// childProcAttr puts a child in its own process group (so that a terminal's
// Ctrl-C reaches dev alone, which then stops the children in order, and so
// that a kill reaches anything the child started) and asks the kernel to
// send it SIGTERM should the dev process die without stopping it (SIGKILL,
// a crash): no orphaned service keeps its port.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// terminate asks a child to shut down gracefully.
func terminate(p *os.Process) { _ = p.Signal(syscall.SIGTERM) }

// killGroup SIGKILLs a child's whole process group.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}
