package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const secret = "s3cret-for-tests"

func verifier(tb testing.TB) *Verifier {
	tb.Helper()
	v, err := NewVerifier(secret)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// forge builds a token by hand: any header, any payload, signed with
// HMAC h over key (no signature when h is nil).
func forge(tb testing.TB, header, payload map[string]any, h func() hash.Hash, key string) string {
	tb.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(header) + "." + enc(payload)
	if h == nil {
		return signing + "."
	}
	mac := hmac.New(h, []byte(key))
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func TestVerifyAccepts(t *testing.T) {
	v := verifier(t)
	now := time.Now().Unix()
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}
	tests := []struct {
		name  string
		token string
		want  Claims
	}{
		{"signed player", mustSign(t, "alice", "", time.Hour), Claims{Subject: "alice"}},
		{"signed admin", mustSign(t, "ops", "admin", time.Hour), Claims{Subject: "ops", Admin: true, Role: "admin"}},
		{"signed spectator", mustSign(t, "watcher", "spectator", time.Hour), Claims{Subject: "watcher", Role: "spectator"}},
		{"odd sub kept as is", mustSign(t, `ünï "q" \ ☃`, "", time.Minute), Claims{Subject: `ünï "q" \ ☃`}},
		{"other role is no admin", mustSign(t, "carol", "Admin", time.Hour), Claims{Subject: "carol", Role: "Admin"}},
		{"role not a string is no admin", forge(t, hs256, map[string]any{"sub": "dave", "role": []string{"admin"}, "exp": now + 60}, sha256.New, secret), Claims{Subject: "dave"}},
		{"exp as a float", forge(t, hs256, map[string]any{"sub": "fred", "exp": float64(now) + 60.5}, sha256.New, secret), Claims{Subject: "fred"}},
		{"no typ header, nbf past, exp future", forge(t, map[string]any{"alg": "HS256"}, map[string]any{"sub": "erin", "nbf": now - 10, "exp": now + 60}, sha256.New, secret), Claims{Subject: "erin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.token)
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func mustSign(tb testing.TB, sub, role string, ttl time.Duration) string {
	tb.Helper()
	tok, err := Sign(secret, sub, role, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func TestVerifyRejects(t *testing.T) {
	v := verifier(t)
	now := time.Now().Unix()
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}
	good := map[string]any{"sub": "alice", "role": "admin", "exp": now + 3600}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(good)).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(good)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, err := Sign("another-secret", "alice", "admin", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	valid := mustSign(t, "alice", "admin", time.Hour)
	parts := strings.Split(valid, ".")
	tests := []struct {
		name  string
		token string
	}{
		{"wrong secret", otherSecret},
		{"tampered payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","role":"admin"}`)) + "." + parts[2]},
		{"signature dropped", parts[0] + "." + parts[1] + "."},
		{"alg none", none},
		{"alg none forged by hand", forge(t, map[string]any{"alg": "none"}, good, nil, "")},
		{"alg None with HMAC signature", forge(t, map[string]any{"alg": "None"}, good, sha256.New, secret)},
		{"alg RS256", rs256},
		// Key confusion: RS256 in the header, the signature an HMAC keyed
		// with the secret (what a verifier that takes the key the header
		// asks for would check).
		{"alg RS256 signed with the HMAC secret as key", forge(t, map[string]any{"alg": "RS256"}, good, sha256.New, secret)},
		{"alg HS512 with the right secret", forge(t, map[string]any{"alg": "HS512"}, good, sha512.New, secret)},
		{"alg hs256 in lower case", forge(t, map[string]any{"alg": "hs256"}, good, sha256.New, secret)},
		{"no alg", forge(t, map[string]any{"typ": "JWT"}, good, sha256.New, secret)},
		{"alg HS384 with the right secret", forge(t, map[string]any{"alg": "HS384"}, good, sha512.New384, secret)},
		{"expired", forge(t, hs256, map[string]any{"sub": "alice", "exp": now - 5}, sha256.New, secret)},
		{"expired admin", forge(t, hs256, map[string]any{"sub": "alice", "role": "admin", "exp": now - 1}, sha256.New, secret)},
		{"no exp", forge(t, hs256, map[string]any{"sub": "alice"}, sha256.New, secret)},
		{"no exp, admin", forge(t, hs256, map[string]any{"sub": "ops", "role": "admin"}, sha256.New, secret)},
		{"exp null", forge(t, hs256, map[string]any{"sub": "alice", "exp": nil}, sha256.New, secret)},
		{"exp not a number", forge(t, hs256, map[string]any{"sub": "alice", "exp": "tomorrow"}, sha256.New, secret)},
		{"exp a numeric string", forge(t, hs256, map[string]any{"sub": "alice", "exp": strconv.FormatInt(now+3600, 10)}, sha256.New, secret)},
		{"not yet valid", forge(t, hs256, map[string]any{"sub": "alice", "nbf": now + 3600, "exp": now + 7200}, sha256.New, secret)},
		{"nbf not a number", forge(t, hs256, map[string]any{"sub": "alice", "nbf": "now", "exp": now + 60}, sha256.New, secret)},
		{"missing sub", forge(t, hs256, map[string]any{"role": "admin", "exp": now + 60}, sha256.New, secret)},
		{"empty sub", forge(t, hs256, map[string]any{"sub": "", "exp": now + 60}, sha256.New, secret)},
		{"sub with a NUL", forge(t, hs256, map[string]any{"sub": "a\x00b", "exp": now + 60}, sha256.New, secret)},
		{"sub over 64 bytes", forge(t, hs256, map[string]any{"sub": strings.Repeat("p", MaxSubject+1), "exp": now + 60}, sha256.New, secret)},
		{"numeric sub", forge(t, hs256, map[string]any{"sub": 42, "exp": now + 60}, sha256.New, secret)},
		{"null sub", forge(t, hs256, map[string]any{"sub": nil, "exp": now + 60}, sha256.New, secret)},
		{"empty token", ""},
		{"garbage", "not-a-token"},
		{"two parts", parts[0] + "." + parts[1]},
		{"four parts", valid + ".x"},
		{"bad base64", parts[0] + ".!!!." + parts[2]},
		{"payload not JSON", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("sub=alice")) + "." + parts[2]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.token)
			if err == nil {
				t.Fatalf("accepted as %+v", got)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			if got != (Claims{}) {
				t.Fatalf("claims %+v along with error %v", got, err)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Fatalf("the error holds the token: %v", err)
			}
		})
	}
}

func TestSignShortTTLIsNotExpired(t *testing.T) {
	// exp rounds up to the second: a 1 ns token is still valid now.
	tok := mustSign(t, "alice", "", time.Nanosecond)
	if _, err := verifier(t).Verify(tok); err != nil {
		t.Fatal(err)
	}
}

func TestSignRefusesTokensThatNeverExpire(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		if tok, err := Sign(secret, "alice", "", ttl); err == nil {
			t.Errorf("ttl %v: signed %q", ttl, tok)
		}
	}
}

func TestSignAndNewVerifierRefuseEmpty(t *testing.T) {
	if _, err := NewVerifier(""); err == nil {
		t.Error("NewVerifier accepted an empty secret")
	}
	if _, err := Sign("", "alice", "", time.Hour); err == nil {
		t.Error("Sign accepted an empty secret")
	}
	if _, err := Sign(secret, "", "", time.Hour); err == nil {
		t.Error("Sign accepted an empty sub")
	}
}

func TestFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		header string
		want   string
		ok     bool
	}{
		{"bearer header", "/v1/moves", "Bearer abc.def.ghi", "abc.def.ghi", true},
		{"scheme is case-insensitive", "/v1/moves", "bearer abc", "abc", true},
		{"spaces around", "/v1/moves", "  Bearer   abc  ", "abc", true},
		{"query token", "/v1/moves/ws?token=abc.def.ghi", "", "abc.def.ghi", true},
		{"query token escaped", "/v1/moves/ws?after=3&token=a%2Bb", "", "a+b", true},
		{"header wins over query", "/v1/moves/ws?token=fromquery", "Bearer fromheader", "fromheader", true},
		{"basic scheme ignored, query used", "/v1/moves/ws?token=q", "Basic dXNlcjpwYXNz", "q", true},
		{"basic scheme alone", "/v1/moves", "Basic dXNlcjpwYXNz", "", false},
		{"bearer without token", "/v1/moves", "Bearer ", "", false},
		{"bare token without scheme", "/v1/moves", "abc.def.ghi", "", false},
		{"nothing", "/v1/moves", "", "", false},
		{"empty query token", "/v1/moves/ws?token=", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			got, ok := FromRequest(r)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("got %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestRoundTripThroughRequest is the whole way a service uses the
// package: sign, carry in a request, extract, verify.
func TestRoundTripThroughRequest(t *testing.T) {
	tok := mustSign(t, "player-7", "", time.Minute)
	r := httptest.NewRequest("GET", "/v1/updates/ws?token="+tok, nil)
	got, ok := FromRequest(r)
	if !ok {
		t.Fatal("no token found")
	}
	c, err := verifier(t).Verify(got)
	if err != nil || c != (Claims{Subject: "player-7"}) {
		t.Fatalf("got %+v, %v", c, err)
	}
}

func BenchmarkVerify(b *testing.B) {
	v := verifier(b)
	tok := mustSign(b, "player-123456", "", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMinterRenewsAtHalfLife(t *testing.T) {
	m, err := NewMinter(secret, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	m.now = func() time.Time { return clock }
	v := verifier(t)
	first, err := m.Token("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(29 * time.Second)
	if again, _ := m.Token("alice", ""); again != first {
		t.Fatal("renewed before half of the token's life")
	}
	if admin, _ := m.Token("alice", "admin"); admin == first {
		t.Fatal("the admin token is the player's")
	}
	clock = clock.Add(2 * time.Second)
	renewed, err := m.Token("alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first {
		t.Fatal("not renewed past half of the token's life")
	}
	// The renewed token expires a whole ttl after the renewal.
	var mc jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(renewed, &mc); err != nil {
		t.Fatal(err)
	}
	exp, err := mc.GetExpirationTime()
	if err != nil || exp == nil || exp.Before(clock.Add(time.Minute-time.Second)) {
		t.Fatalf("renewed token expires %v, renewed at %v", exp, clock)
	}
	if c, err := v.Verify(renewed); err != nil || c.Subject != "alice" {
		t.Fatalf("renewed token: %+v, %v", c, err)
	}
}

func TestMinterRefuses(t *testing.T) {
	if _, err := NewMinter("", time.Minute); err == nil {
		t.Error("empty secret accepted")
	}
	if _, err := NewMinter(secret, time.Second); err == nil {
		t.Error("a 1 s ttl accepted")
	}
	m, err := NewMinter(secret, 0)
	if err != nil || m.TTL() != DefaultTTL {
		t.Fatalf("ttl 0: %v, %v", m, err)
	}
	if _, err := m.Token("", ""); err == nil {
		t.Error("empty sub signed")
	}
}

// TestMinterConcurrent: many goroutines asking for tokens get valid ones
// (run with -race).
func TestMinterConcurrent(t *testing.T) {
	m, err := NewMinter(secret, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := verifier(t)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 50 {
				sub := "p" + strconv.Itoa((g*50+i)%20)
				tok, e := m.Token(sub, "")
				if e == nil {
					var c Claims
					if c, e = v.Verify(tok); e == nil && c.Subject != sub {
						e = errors.New("token of " + c.Subject + " for " + sub)
					}
				}
				if e != nil && err == nil {
					err = e
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
