package httplimit

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
)

func TestAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.3:5555":            "127.0.0.3",
		"[::1]:80":                  "::1",
		"[::ffff:10.0.0.1]:1":       "10.0.0.1",
		"192.0.2.7":                 "192.0.2.7",
		"@":                         "invalid IP",
		"[fe80::1%eth0]:9":          "fe80::1%eth0",
		"not an address at all:123": "invalid IP",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = in
		if got := Addr(r).String(); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestPerAddrCapsEachAddress: requests of one address beyond the cap are
// refused while the first ones are in progress, other addresses are not
// affected, and a finished request frees its place.
func TestPerAddrCapsEachAddress(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	var rejected int
	var mu sync.Mutex
	p := NewPerAddr(2, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		rejected++
		mu.Unlock()
		w.WriteHeader(http.StatusTooManyRequests)
	})
	h := p.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	serve := func(addr string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	var wg sync.WaitGroup
	for _, a := range []string{"10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1"} {
		wg.Add(1)
		go func() { defer wg.Done(); serve(a) }()
	}
	for range 3 {
		<-entered
	}
	if w := serve("10.0.0.1:3"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("third request of 10.0.0.1: %d", w.Code)
	}
	if n := p.InUse(netip.MustParseAddr("10.0.0.1")); n != 2 {
		t.Fatalf("in use %d", n)
	}
	close(release)
	wg.Wait()
	if w := serve("10.0.0.1:4"); w.Code != http.StatusOK {
		t.Fatalf("after the first ones finished: %d", w.Code)
	}
	if rejected != 1 || p.InUse(netip.MustParseAddr("10.0.0.1")) != 0 || len(p.n) != 0 {
		t.Fatalf("rejected %d, counts %v", rejected, p.n)
	}
}

func TestPerAddrOff(t *testing.T) {
	p := NewPerAddr(0, nil)
	for range 5 {
		if !p.Acquire(netip.Addr{}) {
			t.Fatal("refused without a cap")
		}
	}
	called := false
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })
	p.Wrap(h).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !called {
		t.Fatal("not served")
	}
}
