package auth

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultTTL is the life of the tokens the demo and the load generator
// mint: short, so that a token copied out of a log line or a process
// listing is soon worthless, and renewed long before it runs out.
const DefaultTTL = 15 * time.Minute

// Minter signs tokens for many subjects with one secret and one ttl, for
// the demo's simulated players and the load generator. It hands out the
// same token for a (subject, role) until half of its life has passed and
// a fresh one after that, so that every token it returns is valid for at
// least ttl/2 more: a caller that asks for the token each time it
// connects or sends a request never uses an expired one. A WebSocket is
// authenticated when it opens (docs/protocol.md), so a socket outlives its
// token; a reconnect asks the Minter again.
//
// Safe for concurrent use. It keeps one token per subject and role asked
// for.
type Minter struct {
	secret string
	ttl    time.Duration
	now    func() time.Time

	mu    sync.Mutex
	cache map[mintKey]minted
}

type mintKey struct{ sub, role string }

type minted struct {
	tok   string
	renew time.Time // half of the token's life
}

// NewMinter returns a Minter of tokens signed with secret that live ttl
// (DefaultTTL when ttl is 0). ttl must be at least 2 s: exp has a
// resolution of one second.
func NewMinter(secret string, ttl time.Duration) (*Minter, error) {
	if secret == "" {
		return nil, errors.New("new minter: empty secret")
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < 2*time.Second {
		return nil, fmt.Errorf("new minter: ttl %v is shorter than 2s", ttl)
	}
	return &Minter{secret: secret, ttl: ttl, now: time.Now, cache: make(map[mintKey]minted)}, nil
}

// TTL returns the life of the tokens m signs.
func (m *Minter) TTL() time.Duration { return m.ttl }

// Token returns a token for sub with role ("" or "admin") that is valid
// for at least TTL()/2 more.
func (m *Minter) Token(sub, role string) (string, error) {
	k := mintKey{sub, role}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if c, ok := m.cache[k]; ok && now.Before(c.renew) {
		return c.tok, nil
	}
	tok, err := signAt(m.secret, sub, role, m.ttl, now)
	if err != nil {
		return "", err
	}
	m.cache[k] = minted{tok: tok, renew: now.Add(m.ttl / 2)}
	return tok, nil
}
