package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Runner is a long-running part of a process: it works until ctx is
// cancelled or it fails, and returns only once everything it started has
// stopped.
type Runner interface {
	Run(ctx context.Context) error
}

// RunFunc adapts a function to Runner.
type RunFunc func(ctx context.Context) error

// Run calls f(ctx).
func (f RunFunc) Run(ctx context.Context) error { return f(ctx) }

// RunGroup runs every runner in its own goroutine and waits for all of them.
// The first runner to return, with or without an error, cancels the context
// of the others, so that one failed part stops the process rather than
// leaving it half alive. RunGroup returns the first error that is not the
// context.Canceled with which a runner acknowledges a cancellation; nil when
// every runner stopped cleanly because ctx was cancelled or another stopped.
func RunGroup(ctx context.Context, runners ...Runner) error {
	g, gctx := errgroup.WithContext(ctx)
	gctx, cancel := context.WithCancel(gctx)
	defer cancel()
	for _, r := range runners {
		g.Go(func() error {
			defer cancel()
			err := r.Run(gctx)
			if errors.Is(err, context.Canceled) && gctx.Err() != nil {
				return nil
			}
			return err
		})
	}
	return g.Wait()
}

// DefaultShutdownTimeout is how long HTTPServer waits for in-flight requests
// when its ShutdownTimeout is zero.
const DefaultShutdownTimeout = 10 * time.Second

// Defaults of HTTPServer's read timeouts (TREASURE_HTTP_READ_HEADER_TIMEOUT,
// TREASURE_HTTP_READ_TIMEOUT): a client has that long to send a request's
// headers, and its headers and body.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
)

// HTTPServer runs an http.Server as a Runner: it listens, logs the address
// once, serves until ctx is cancelled, then shuts down gracefully: it stops
// accepting, waits up to ShutdownTimeout for in-flight requests, and after
// that closes the remaining connections and reports the timeout.
//
// Hijacked connections (WebSockets) are not tracked by http.Server: the
// handler that hijacked one closes it, for example from an OnShutdown hook.
//
// Fill the fields, then call Run once. Addr may be read after Listen or once
// Run has logged.
type HTTPServer struct {
	// Name labels the log lines ("ingest", "ops"...).
	Name string
	// Addr is the address to listen on (host:port; port 0 picks one).
	Addr string
	// Handler serves the requests.
	Handler http.Handler
	// Log receives the "listening" line (info) and shutdown problems; nil
	// discards them.
	Log *slog.Logger
	// ShutdownTimeout bounds the graceful shutdown; DefaultShutdownTimeout
	// when zero.
	ShutdownTimeout time.Duration
	// OnShutdown, when set, is called in its own goroutine as soon as the
	// shutdown starts: the place to close hijacked connections.
	OnShutdown func()
	// ReadHeaderTimeout bounds the reading of a request's headers,
	// ReadTimeout that of its headers and body (defaults
	// DefaultReadHeaderTimeout, DefaultReadTimeout). A hijacked connection
	// (a WebSocket) leaves both behind: net/http clears its deadlines at
	// the hijack (TestWebSocketOutlivesReadTimeout holds it to that), and
	// the socket's owner sets its own.
	ReadHeaderTimeout, ReadTimeout time.Duration

	mu sync.Mutex
	ln net.Listener
}

// Listen binds the listening socket now, so that a caller learns the
// address (port 0) or a bind error before starting Run. Run listens by itself
// when Listen was not called. Calling Listen twice returns the same address.
func (s *HTTPServer) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen: %w", s.name(), err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// ListenAddr returns the bound address, or nil before Listen.
func (s *HTTPServer) ListenAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves until ctx is cancelled and returns nil after a graceful
// shutdown; an error when it cannot listen, when serving fails, or when the
// shutdown outlasts ShutdownTimeout (the connections are closed anyway).
func (s *HTTPServer) Run(ctx context.Context) error {
	addr, err := s.Listen()
	if err != nil {
		return err
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	readHeader, read := s.ReadHeaderTimeout, s.ReadTimeout
	if readHeader <= 0 {
		readHeader = DefaultReadHeaderTimeout
	}
	if read <= 0 {
		read = DefaultReadTimeout
	}
	srv := &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: readHeader,
		ReadTimeout:       read,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if s.OnShutdown != nil {
		srv.RegisterOnShutdown(s.OnShutdown)
	}
	log.Info("listening", "server", s.name(), "addr", addr.String(), "url", "http://"+addr.String())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(s.ln) }()

	select {
	case err := <-serveErr:
		// Serve failed on its own (the listener broke).
		return fmt.Errorf("%s: serve: %w", s.name(), err)
	case <-ctx.Done():
	}

	timeout := s.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if shutErr != nil {
		// In-flight requests outlasted the timeout: cut them off.
		_ = srv.Close()
	}
	<-serveErr // http.ErrServerClosed once Shutdown or Close has begun
	if shutErr != nil {
		return fmt.Errorf("%s: shutdown: %w", s.name(), shutErr)
	}
	log.Debug("stopped", "server", s.name(), "addr", addr.String())
	return nil
}

func (s *HTTPServer) name() string {
	if s.Name == "" {
		return "http"
	}
	return s.Name
}
