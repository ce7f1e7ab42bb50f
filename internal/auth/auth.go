// Package auth verifies and signs the HS256 JWTs that identify players
// (SPEC.md, "Game semantics"): the player is the token's "sub", and a
// token whose "role" claim is "admin" may call the admin endpoints.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// MaxSubject is the longest player id (token "sub") accepted: the scores
// store keys players by it and holds at most 64 bytes (pgstore.MaxID).
const MaxSubject = 64

// ErrInvalidToken is wrapped by every error Verify returns: the caller
// answers unauthorized (HTTP 401, or the WebSocket code) whatever the
// detail.
var ErrInvalidToken = errors.New("invalid token")

// Claims is what a verified token says about its bearer.
type Claims struct {
	Subject string // the player id: the token's "sub", never empty
	Admin   bool   // the token's "role" claim is the string "admin"
	Role    string // the token's "role" claim when it is a string ("admin", "spectator"), else ""
}

// Verifier checks HS256 tokens against one secret. It is safe for
// concurrent use.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for secret, which must not be empty.
func NewVerifier(secret string) (*Verifier, error) {
	if secret == "" {
		return nil, errors.New("new verifier: empty secret")
	}
	return &Verifier{
		secret: []byte(secret),
		parser: jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired()),
	}, nil
}

// Verify checks token and returns its claims. It requires the header's
// alg to be exactly HS256 (none, HS384, HS512, RS256 and the rest are
// refused, whatever key signed them), a valid signature with the
// Verifier's secret, a non-empty string "sub", a numeric "exp" in the
// future (a token without one is refused: every token expires), and, when
// present, "nbf" in the past (no leeway). Every error wraps
// ErrInvalidToken. The error text never holds the token.
func (v *Verifier) Verify(token string) (Claims, error) {
	var mc jwt.MapClaims
	_, err := v.parser.ParseWithClaims(token, &mc, func(t *jwt.Token) (any, error) {
		// WithValidMethods has already checked alg; this is a second lock
		// on the same door, in case the options ever change.
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("alg %v not allowed", t.Header["alg"])
		}
		return v.secret, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	sub, err := mc.GetSubject()
	if err != nil {
		return Claims{}, fmt.Errorf("%w: sub: %w", ErrInvalidToken, err)
	}
	if sub == "" {
		return Claims{}, fmt.Errorf("%w: no sub", ErrInvalidToken)
	}
	if len(sub) > MaxSubject {
		return Claims{}, fmt.Errorf("%w: sub has %d bytes, at most %d", ErrInvalidToken, len(sub), MaxSubject)
	}
	if !validSubject(sub) {
		return Claims{}, fmt.Errorf("%w: sub %q is not printable UTF-8", ErrInvalidToken, sub)
	}
	role, _ := mc["role"].(string)
	return Claims{Subject: sub, Admin: role == "admin", Role: role}, nil
}

// FromRequest returns the token r carries: from an "Authorization: Bearer
// <token>" header (the scheme is case-insensitive), else from the query
// parameter "token" (browsers cannot set headers on a WebSocket). It
// reports false when r carries neither; an Authorization header of
// another scheme is ignored.
func FromRequest(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
		if tok = strings.TrimSpace(tok); ok && strings.EqualFold(scheme, "Bearer") && tok != "" {
			return tok, true
		}
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok, true
	}
	return "", false
}

// Sign returns an HS256 token for sub signed with secret, for the demo,
// tests and the load generator. role, when not empty, becomes the "role"
// claim ("admin" for admin calls). "exp" is ttl from now, rounded up to
// the second; ttl must be positive (Verify refuses a token without exp).
// "iat" is always set. For tokens that must outlive one ttl, see Minter.
func Sign(secret, sub, role string, ttl time.Duration) (string, error) {
	if secret == "" {
		return "", errors.New("sign token: empty secret")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("sign token: ttl %v: every token needs an expiry", ttl)
	}
	return signAt(secret, sub, role, ttl, time.Now())
}

// signAt is Sign as of now.
func signAt(secret, sub, role string, ttl time.Duration, now time.Time) (string, error) {
	if sub == "" || len(sub) > MaxSubject || !validSubject(sub) {
		return "", fmt.Errorf("sign token: sub must be 1 to %d bytes of printable UTF-8", MaxSubject)
	}
	claims := jwt.MapClaims{"sub": sub, "iat": now.Unix()}
	if role != "" {
		claims["role"] = role
	}
	exp := now.Add(ttl)
	secs := exp.Unix()
	if exp.Nanosecond() > 0 {
		secs++
	}
	claims["exp"] = secs
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// validSubject reports whether a player id is valid UTF-8 without control
// characters: it travels in JSON, Redis keys and PostgreSQL text.
func validSubject(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
