package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Tokens are the first thing the services read from a stranger: these
// fuzzers hold Verify to an independent reading of the rules (Verify's doc
// comment), written with encoding/json and crypto/hmac alone.
//
//	go test -run '^$' -fuzz '^FuzzVerify$' -fuzztime 60s -fuzzminimizetime 50x ./internal/auth/
//	go test -run '^$' -fuzz '^FuzzVerifyClaims$' -fuzztime 60s -fuzzminimizetime 50x ./internal/auth/
//	go test -run '^$' -fuzz '^FuzzFromRequest$' -fuzztime 30s -fuzzminimizetime 50x ./internal/auth/

// refSigned reports whether token is three base64url parts whose third is
// the HMAC-SHA256 of the first two under the test secret.
func refSigned(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	return hmac.Equal(sig, mac.Sum(nil))
}

// refNumber reads a NumericDate claim as jwt does: a JSON number (float).
func refNumber(v any) (float64, bool) {
	f, ok := v.(float64)
	return f, ok
}

// refClaims is the reference reading of a token's header and payload
// (decoded JSON): whether a token with a good signature carrying them must
// be accepted (sure reports false when the answer depends on the clock's
// last seconds or on how jwt turns an absurd date into a time), and the
// claims it carries.
func refClaims(header, payload []byte, now time.Time) (accept, sure bool, c Claims) {
	var h, p map[string]any
	if json.Unmarshal(header, &h) != nil || json.Unmarshal(payload, &p) != nil {
		return false, true, Claims{}
	}
	if h["alg"] != "HS256" {
		return false, true, Claims{}
	}
	sure = true
	t := float64(now.Unix())
	// Dates within a few seconds of now, or outside ±2^40 s, are not
	// held to the reference.
	plausible := func(f float64) bool { return math.Abs(f) < 1<<40 && math.Abs(f-t) > 5 }
	exp, ok := refNumber(p["exp"])
	if !ok {
		return false, true, Claims{}
	}
	if !plausible(exp) {
		sure = false
	}
	if exp <= t {
		return false, sure, Claims{}
	}
	if v, present := p["nbf"]; present {
		nbf, ok := refNumber(v)
		if !ok {
			return false, true, Claims{}
		}
		if !plausible(nbf) {
			sure = false
		}
		if nbf > t {
			return false, sure, Claims{}
		}
	}
	// iat, iss and aud are not read (jwt checks them only when asked).
	if v, present := p["sub"]; present {
		if _, ok := v.(string); !ok {
			return false, true, Claims{}
		}
	}
	sub, _ := p["sub"].(string)
	if sub == "" || len(sub) > MaxSubject || !validSubject(sub) {
		return false, sure, Claims{}
	}
	role, _ := p["role"].(string)
	return true, sure, Claims{Subject: sub, Admin: role == "admin", Role: role}
}

// FuzzVerify feeds arbitrary strings as tokens: Verify never panics, an
// error wraps ErrInvalidToken and never quotes the token, and an accepted
// token is HMAC-SHA256-signed with the secret, says alg HS256, and carries
// what the reference reads.
func FuzzVerify(f *testing.F) {
	now := time.Now().Unix()
	hs := map[string]any{"alg": "HS256", "typ": "JWT"}
	for _, s := range []string{
		mustSign(f, "alice", "", time.Hour),
		mustSign(f, "ops", "admin", time.Hour),
		forge(f, hs, map[string]any{"sub": "bob"}, sha256.New, secret),
		forge(f, map[string]any{"alg": "none"}, map[string]any{"sub": "eve", "exp": now + 60}, nil, ""),
		forge(f, map[string]any{"alg": "RS256"}, map[string]any{"sub": "eve", "exp": now + 60}, sha256.New, secret),
		forge(f, hs, map[string]any{"sub": "eve", "exp": now - 60}, sha256.New, secret),
		"", ".", "..", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..",
	} {
		f.Add(s)
	}
	v := verifier(f)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			if c != (Claims{}) {
				t.Fatalf("claims %+v with error %v", c, err)
			}
			if len(token) > 8 && strings.Contains(err.Error(), token) {
				t.Fatalf("the error quotes the token: %v", err)
			}
			return
		}
		if !refSigned(token) {
			t.Fatalf("accepted %q, which the secret did not sign", token)
		}
		parts := strings.Split(token, ".")
		header, err1 := base64.RawURLEncoding.DecodeString(parts[0])
		payload, err2 := base64.RawURLEncoding.DecodeString(parts[1])
		if err1 != nil || err2 != nil {
			t.Fatalf("accepted %q, whose parts are not base64url: %v %v", token, err1, err2)
		}
		accept, sure, want := refClaims(header, payload, time.Now())
		if sure && (!accept || c != want) {
			t.Fatalf("accepted %q as %+v; reference: accept %v, %+v", token, c, accept, want)
		}
	})
}

// FuzzVerifyClaims signs fuzzed headers and payloads with the secret, so
// that the fuzzer reaches the claim checks: Verify accepts exactly what the
// reference accepts (outside the clock's last seconds), with the same
// claims.
func FuzzVerifyClaims(f *testing.F) {
	now := time.Now().Unix()
	enc := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	hs := enc(map[string]any{"alg": "HS256", "typ": "JWT"})
	for _, tc := range []struct {
		h []byte
		p any
	}{
		{hs, map[string]any{"sub": "alice", "exp": now + 3600}},
		{hs, map[string]any{"sub": "ops", "role": "admin", "exp": now + 3600, "nbf": now - 10, "iat": now}},
		{hs, map[string]any{"sub": "alice"}},
		{hs, map[string]any{"sub": "alice", "exp": now - 3600}},
		{hs, map[string]any{"sub": "alice", "exp": now + 3600, "nbf": now + 1800}},
		{hs, map[string]any{"sub": 7, "exp": now + 3600}},
		{hs, map[string]any{"sub": "a", "exp": "soon"}},
		{hs, map[string]any{"sub": "a", "exp": 1e300}},
		{hs, map[string]any{"sub": "a", "exp": now + 60, "aud": []any{"x", 1}}},
		{enc(map[string]any{"alg": "none"}), map[string]any{"sub": "a", "exp": now + 60}},
		{enc(map[string]any{"alg": "HS512"}), map[string]any{"sub": "a", "exp": now + 60}},
		{[]byte(`{"alg":"HS256","alg":"none"}`), map[string]any{"sub": "a", "exp": now + 60}},
		{[]byte(`{"alg":"none","alg":"HS256"}`), map[string]any{"sub": "a", "exp": now + 60}},
	} {
		f.Add(tc.h, enc(tc.p))
	}
	f.Add(hs, []byte(`{"sub":"a","exp":1e400}`))
	f.Add(hs, []byte(`{"sub":"a","sub":"b","exp":99999999999}`))
	v := verifier(f)
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(signing))
		token := signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		c, err := v.Verify(token)
		accept, sure, want := refClaims(header, payload, time.Now())
		if !sure {
			if err == nil && !accept {
				// Not sure about the clock, but never an alg other than
				// HS256 or a claim of the wrong type.
				var h map[string]any
				if json.Unmarshal(header, &h) != nil || h["alg"] != "HS256" {
					t.Fatalf("header %s payload %s: accepted", header, payload)
				}
			}
			return
		}
		if (err == nil) != accept {
			t.Fatalf("header %s payload %s: Verify says %+v, %v; reference says accept=%v", header, payload, c, err, accept)
		}
		if err == nil && c != want {
			t.Fatalf("header %s payload %s: claims %+v, reference %+v", header, payload, c, want)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), []byte(token)) {
			t.Fatalf("the error quotes the token: %v", err)
		}
	})
}

// FuzzFromRequest: any Authorization header and query give either no
// token or a non-empty one taken from the Bearer header or the token
// parameter.
func FuzzFromRequest(f *testing.F) {
	f.Add("Bearer abc", "token=x")
	f.Add("bearer   a b ", "")
	f.Add("Basic xyz", "token=%zz&token=a")
	f.Add("", "token=a%2Bb;x=1")
	f.Fuzz(func(t *testing.T, authz, rawQuery string) {
		r := httptest.NewRequest("GET", "/v1/moves/ws", nil)
		r.URL.RawQuery = rawQuery
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		tok, ok := FromRequest(r)
		if !ok {
			if tok != "" {
				t.Fatalf("token %q without ok", tok)
			}
			return
		}
		if tok == "" {
			t.Fatal("ok with an empty token")
		}
		q, _ := url.ParseQuery(rawQuery)
		if !strings.Contains(authz, tok) && q.Get("token") != tok {
			t.Fatalf("token %q from neither %q nor %q", tok, authz, rawQuery)
		}
	})
}
