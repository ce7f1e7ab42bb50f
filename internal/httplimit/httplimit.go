// Package httplimit bounds what one client address may hold of a
// player-facing server: requests in progress (a WebSocket counts for as
// long as it is open, its handler being the socket's reader) and request
// rates. Refusals are answered by the caller's function, in the caller's
// wire format (SPEC's error objects differ between ingest and push).
//
// The client address is the TCP peer's IP (http.Request.RemoteAddr):
// behind a proxy every client shares the proxy's address, so a deployment
// that puts one in front raises the caps or turns them off (docs/operations.md
// "Limits and access"). IPv4-mapped IPv6 addresses count as their IPv4
// address.
package httplimit

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// DefaultMaxPerAddr is the default cap of requests in progress (open
// sockets included) per client address and server: above the 9,000
// sockets per source address the load generator opens (it spreads its
// players over 127.0.0.2, 127.0.0.3, …), below the ≈19,900 descriptors
// one process may hold (../shared/LIMITS.md), so that one address cannot
// take a whole instance.
const DefaultMaxPerAddr = 10_000

// Addr returns r's client address: the IP of RemoteAddr, unmapped. The
// zero Addr when RemoteAddr holds none (a test request, a Unix socket):
// such requests share one count.
func Addr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// PerAddr counts the requests in progress per client address and refuses
// one that would exceed the cap. Safe for concurrent use.
type PerAddr struct {
	max    int
	reject func(http.ResponseWriter, *http.Request)

	mu sync.Mutex
	n  map[netip.Addr]int
}

// NewPerAddr returns a PerAddr capping each address at max requests in
// progress (max <= 0: no cap, nothing counted). reject answers a refused
// request; it is also where the caller counts refusals.
func NewPerAddr(max int, reject func(http.ResponseWriter, *http.Request)) *PerAddr {
	return &PerAddr{max: max, reject: reject, n: make(map[netip.Addr]int)}
}

// Max returns the cap (<= 0: none).
func (p *PerAddr) Max() int { return p.max }

// Acquire counts one more request of a and reports true, or reports false
// (counting nothing) when a is at the cap. Every true must be followed by
// one Release(a).
func (p *PerAddr) Acquire(a netip.Addr) bool {
	if p.max <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[a] >= p.max {
		return false
	}
	p.n[a]++
	return true
}

// Release ends one request of a counted by Acquire.
func (p *PerAddr) Release(a netip.Addr) {
	if p.max <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[a] <= 1 {
		delete(p.n, a)
		return
	}
	p.n[a]--
}

// InUse returns the requests in progress of a.
func (p *PerAddr) InUse(a netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[a]
}

// Wrap returns h behind the cap: a request over it gets reject's answer
// and never reaches h. A nil PerAddr returns h.
func (p *PerAddr) Wrap(h http.Handler) http.Handler {
	if p == nil || p.max <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := Addr(r)
		if !p.Acquire(a) {
			p.reject(w, r)
			return
		}
		defer p.Release(a)
		h.ServeHTTP(w, r)
	})
}
