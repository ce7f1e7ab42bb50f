package fleet

import (
	"context"
	"io"
	"sync"
)

// pipeProc runs serveWorker in a goroutine of the test, over io.Pipe: the
// protocol without processes.
type pipeProc struct {
	inW    *io.PipeWriter
	outR   *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
}

func startPipe(run runShare) *pipeProc {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeProc{inW: inW, outR: outR, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = serveWorker(ctx, inR, outW, run)
		outW.Close()
		inR.Close() // ends serveWorker's stdin reader
	}()
	return p
}

func (p *pipeProc) stdin() io.WriteCloser { return p.inW }
func (p *pipeProc) stdout() io.Reader     { return p.outR }
func (p *pipeProc) describe() string      { return "in-process" }
func (p *pipeProc) logTail() string       { return "" }

func (p *pipeProc) wait() error {
	<-p.done
	p.once.Do(func() { p.inW.Close() })
	p.cancel()
	return p.err
}

func (p *pipeProc) kill() {
	p.cancel()
	p.outR.Close() // the worker's writes fail from now on
}
