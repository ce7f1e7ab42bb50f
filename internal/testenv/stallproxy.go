package testenv

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// StallProxy forwards TCP connections to a NATS server (or any TCP
// server). While paused it stops forwarding the server's bytes to the
// clients — a publisher's acks are held back while the server still
// receives and stores what the clients publish — and Resume delivers what
// was held back. It is how tests put a publish in the state "stored, ack
// not received" (services/ingest's republish tests, internal/e2e's
// unacked-move kill test).
type StallProxy struct {
	ln     net.Listener
	target string

	mu   sync.Mutex
	gate chan struct{} // nil: forwarding; else closed by Resume
}

// NewStallProxy listens on a free loopback port and forwards every
// connection to target (host:port, or a nats:// URL). On cleanup it
// resumes, closes the listener and every connection, and waits for its
// goroutines.
func NewStallProxy(tb testing.TB, target string) *StallProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &StallProxy{ln: ln, target: strings.TrimPrefix(target, "nats://")}
	var wg sync.WaitGroup
	var conns []net.Conn
	var cmu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			cmu.Lock()
			conns = append(conns, c, s)
			cmu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.copy(s, c, false) }()
			go func() { defer wg.Done(); p.copy(c, s, true) }()
		}
	}()
	tb.Cleanup(func() {
		p.Resume()
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return p
}

// URL is the proxy's address as a nats:// URL.
func (p *StallProxy) URL() string { return "nats://" + p.ln.Addr().String() }

// copy forwards src to dst until either ends; a gated copy (server to
// client) waits while the proxy is paused. A client that goes away (EOF)
// closes its server connection, so the server sees it go at once.
func (p *StallProxy) copy(dst, src net.Conn, gated bool) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if gated {
				p.mu.Lock()
				g := p.gate
				p.mu.Unlock()
				if g != nil {
					<-g
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}

// Pause holds back the server's bytes from now on (a chunk already being
// written goes through).
func (p *StallProxy) Pause() {
	p.mu.Lock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
	p.mu.Unlock()
}

// Resume delivers what was held back and forwards again.
func (p *StallProxy) Resume() {
	p.mu.Lock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
	p.mu.Unlock()
}
