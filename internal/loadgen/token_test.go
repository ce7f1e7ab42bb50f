package loadgen

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"treasure/internal/auth"
	"treasure/internal/graph"
)

// TestHTTPHeaderRenewsItsToken: the HTTP scenario's per-player header
// keeps its token until the Minter renews it (half of the ttl), then
// carries a fresh one; every token it carries verifies. Polls for the
// renewal rather than asserting when it happens.
func TestHTTPHeaderRenewsItsToken(t *testing.T) {
	const secret = "token-test-secret"
	e := &engine{o: OpenOptions{PlayerPrefix: "p-"}, players: []*oplayer{{idx: 7}}}
	var err error
	if e.minter, err = auth.NewMinter(secret, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	h := &httpRun{e: e, header: make([]atomic.Pointer[authHeader], 1)}
	v, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	tokenOf := func() string {
		hd, err := h.headerFor(0)
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimPrefix(hd.Get("Authorization"), "Bearer ")
		c, err := v.Verify(tok)
		if err != nil || c.Subject != "p-7" {
			t.Fatalf("header token: %+v, %v", c, err)
		}
		return tok
	}
	first := tokenOf()
	deadline := time.Now().Add(20 * time.Second)
	for tokenOf() == first {
		if time.Now().After(deadline) {
			t.Fatal("the header's token was never renewed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOptionsRefuseShortTokenTTL(t *testing.T) {
	g, err := graph.FromEdges(2, []graph.Edge{{U: 0, V: 1, Len: 1}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := OpenOptions{Ingest: []string{"ws://x"}, Push: []string{"ws://x"}, Graph: g, Secret: "s", Players: 1, TokenTTL: time.Second}
	if err := o.check(); err == nil || !strings.Contains(err.Error(), "token ttl") {
		t.Fatalf("check: %v", err)
	}
}
