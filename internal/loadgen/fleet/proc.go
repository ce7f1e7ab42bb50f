package fleet

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// execProc is a worker process started from a command line.
type execProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  io.ReadCloser
	logs *prefixWriter
	once sync.Once

	mu     sync.Mutex
	exited bool // Wait returned: the pid may belong to someone else now
}

// startProcess starts command (program and arguments) with env added to
// this process's environment; its stderr goes to stderr line by line,
// each line prefixed with prefix. The worker runs in its own process
// group (where the platform has them), so that kill ends whatever it
// started and a terminal's Ctrl-C reaches only the coordinator, which
// then stops the workers itself.
func startProcess(command []string, env []string, stderr io.Writer, prefix string) (*execProc, error) {
	if len(command) == 0 {
		return nil, fmt.Errorf("no worker command")
	}
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), env...)
	setProcessGroup(cmd)
	logs := &prefixWriter{w: stderr, prefix: prefix}
	cmd.Stderr = logs
	// Wait gives up on the stderr copy this long after the process exited
	// (a grandchild holding the pipe, say).
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &execProc{cmd: cmd, in: in, out: out, logs: logs}, nil
}

func (p *execProc) stdin() io.WriteCloser { return p.in }
func (p *execProc) stdout() io.Reader     { return p.out }
func (p *execProc) describe() string      { return fmt.Sprintf("pid %d", p.cmd.Process.Pid) }
func (p *execProc) logTail() string       { return p.logs.tail() }

func (p *execProc) wait() error {
	err := p.cmd.Wait()
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	p.once.Do(func() { p.in.Close() })
	p.logs.flush()
	return err
}

func (p *execProc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		killProcessGroup(p.cmd)
	}
}

// prefixWriter copies a worker's log lines to w, each prefixed, whole
// lines at a time (so that workers' lines do not interleave), and keeps
// the last few for error messages. Writers sharing w share mu.
type prefixWriter struct {
	w      io.Writer
	prefix string

	mu   sync.Mutex
	part []byte   // an unfinished line
	last []string // the last tailLines lines
}

const tailLines = 5

var stderrMu sync.Mutex // serialises whole lines of every worker onto the shared stderr

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.part = append(p.part, b...)
			if len(p.part) > 64<<10 { // a runaway line: cut it
				p.line()
			}
			break
		}
		p.part = append(p.part, b[:i]...)
		b = b[i+1:]
		p.line()
	}
	return n, nil
}

// line emits p.part as one line; p.mu is held.
func (p *prefixWriter) line() {
	s := string(p.part)
	p.part = p.part[:0]
	p.last = append(p.last, s)
	if len(p.last) > tailLines {
		p.last = p.last[1:]
	}
	if p.w != nil {
		stderrMu.Lock()
		io.WriteString(p.w, p.prefix+s+"\n")
		stderrMu.Unlock()
	}
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.part) > 0 {
		p.line()
	}
}

func (p *prefixWriter) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.last, "\n")
}
