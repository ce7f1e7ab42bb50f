package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"treasure/internal/ratelimit"
	"treasure/internal/stack/stacktest"
)

// startPipelineLimited is startPipeline with ingest's per-player rate
// limit set to limit (zero: SPEC's default).
func startPipelineLimited(t *testing.T, limit ratelimit.Limit) pipeline {
	t.Helper()
	g := amsterdam(t)
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: pipelineSecret, RateLimit: limit})
	return pipeline{g: g, ingest: sp.IngestURL, push: sp.PushURL, topo: sp.Topology}
}

func httpBurst(t *testing.T, p pipeline, players, rate int) *HTTPResult {
	t.Helper()
	r, err := RunHTTP(context.Background(), HTTPOptions{
		OpenOptions: OpenOptions{
			Ingest: []string{p.ingest}, Push: []string{p.push}, Graph: p.g, Secret: pipelineSecret,
			PlayerPrefix: "http-", Players: players, Seed: 1, Drain: 20 * time.Second,
		},
		Rate: rate, Duration: 2 * time.Second,
	}, func(s Second) {
		t.Logf("second %d: offered %d sent %d acked %d answered %d errors %d", s.Index, s.Offered, s.Sent, s.Acked, s.Answered, s.Errors)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result %+v", *r.Result)
	t.Logf("requests %d, status codes %v, extra %v", r.Requests, r.StatusCodes, r.Extra())
	return r
}

// TestRunHTTPOnThePipeline: a burst of POST /v1/moves through vegeta
// against the real pipeline: every move sent is acked (202) and answered
// on its player's push socket, once.
func TestRunHTTPOnThePipeline(t *testing.T) {
	p := startPipeline(t)
	r := httpBurst(t, p, 30, 60)
	if r.Sent < 60 || r.Acked != r.Sent || r.Answered != r.Acked || r.Failed() || len(r.Errors) != 0 ||
		r.Unsent != 0 || r.Rejected != 0 || r.Retries != 0 {
		t.Fatalf("accounting: %+v", *r.Result)
	}
	if r.Requests != r.Sent || uint64(r.StatusCodes["202"]) != r.Sent || len(r.StatusCodes) != 1 {
		t.Fatalf("requests %d, status codes %v for %d moves", r.Requests, r.StatusCodes, r.Sent)
	}
	if r.Ack.TotalCount() != int64(r.Acked) || r.Update.TotalCount() != int64(r.Answered) {
		t.Fatalf("latencies: %d acks and %d updates recorded for %d and %d", r.Ack.TotalCount(), r.Update.TotalCount(), r.Acked, r.Answered)
	}
}

// TestRunHTTPCountsRateLimitedMoves: with ingest's per-player limit under
// the players' rate, some moves are answered 429 rate_limited: they are
// counted by code and sent again after retry_after_ms until acked, and no
// move is lost or counted twice.
func TestRunHTTPCountsRateLimitedMoves(t *testing.T) {
	p := startPipelineLimited(t, ratelimit.Limit{Rate: 2, Burst: 1})
	r := httpBurst(t, p, 10, 40)
	limited := r.Errors["rate_limited"]
	if limited == 0 || r.Retries != limited || uint64(r.StatusCodes["429"]) != limited {
		t.Fatalf("rate_limited %d, retries %d, status codes %v", limited, r.Retries, r.StatusCodes)
	}
	if len(r.Errors) != 1 || r.Failed() || r.Acked != r.Sent || r.Answered != r.Acked || r.Rejected != 0 {
		t.Fatalf("accounting: %+v", *r.Result)
	}
	if r.Requests != r.Sent+r.Retries || uint64(r.StatusCodes["202"]) != r.Acked || uint64(r.Vegeta.Requests) != r.Sent {
		t.Fatalf("requests %d, status codes %v for %d moves", r.Requests, r.StatusCodes, r.Sent)
	}
}

// proxyIngest puts a proxy in front of p's ingest HTTP side that hands
// its nth request (from 1) to fn, or to ingest when fn returns false.
func proxyIngest(t *testing.T, p *pipeline, fn func(n int64, w http.ResponseWriter, r *http.Request, proxy http.Handler) bool) {
	t.Helper()
	back, err := url.Parse(HTTPBase(p.ingest))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(back)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fn(n.Add(1), w, r, proxy) {
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	p.ingest = "ws" + strings.TrimPrefix(srv.URL, "http")
}

// TestRunHTTPCountsARequestWithoutAnswer: a request that gets no HTTP
// answer (its connection closed) ends its player, counts "http", and its
// move is lost; every other move is acked and answered.
func TestRunHTTPCountsARequestWithoutAnswer(t *testing.T) {
	p := startPipeline(t)
	proxyIngest(t, &p, func(n int64, w http.ResponseWriter, _ *http.Request, _ http.Handler) bool {
		if n != 10 {
			return false
		}
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
		return true
	})
	r := httpBurst(t, p, 20, 40)
	if r.Errors[errHTTP] != 1 || len(r.Errors) != 1 || r.Lost != 1 || r.LostUnanswered != 1 || !r.Failed() {
		t.Fatalf("one request without answer must count http 1 and lost 1: %+v", *r.Result)
	}
	if r.Acked != r.Sent-1 || r.Answered != r.Acked || r.Duplicated != 0 || r.Unexpected != 0 || r.StatusCodes["0"] != 1 {
		t.Fatalf("accounting: %+v, status codes %v", *r.Result, r.StatusCodes)
	}
}

// TestRunHTTPRejectedMoveResyncs: a move the server rejects for good (here
// its path swapped for an unknown node on the way) counts Rejected and
// unknown_node, is not lost, and its player goes on from its last acked
// node: no other error follows.
func TestRunHTTPRejectedMoveResyncs(t *testing.T) {
	p := startPipeline(t)
	proxyIngest(t, &p, func(n int64, w http.ResponseWriter, r *http.Request, proxy http.Handler) bool {
		if n != 25 {
			return false
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
			return false
		}
		m, ok := parseMsg(body)
		if !ok || !m.hasSeq {
			t.Errorf("request body %q is not a move", body)
		}
		body = fmt.Appendf(nil, `{"type":"move","seq":%d,"path":[999999999]}`, m.seq)
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		proxy.ServeHTTP(w, r)
		return true
	})
	r := httpBurst(t, p, 10, 40)
	if r.Rejected != 1 || r.Errors["unknown_node"] != 1 || len(r.Errors) != 1 || r.StatusCodes["400"] != 1 {
		t.Fatalf("one move rejected for good: %+v, status codes %v", *r.Result, r.StatusCodes)
	}
	if r.Failed() || r.Acked != r.Sent-1 || r.Answered != r.Acked || r.Retries != 0 {
		t.Fatalf("accounting: %+v", *r.Result)
	}
}

func TestFragmentNamesTheMove(t *testing.T) {
	for _, c := range []struct {
		u     string
		local int
		seq   uint64
		ok    bool
	}{
		{"http://h/v1/moves#3.17", 3, 17, true},
		{"http://h/v1/moves#0.1", 0, 1, true},
		{"http://h/v1/moves#9.1", 0, 0, false}, // no such player
		{"http://h/v1/moves#3", 0, 0, false},
		{"http://h/v1/moves", 0, 0, false},
		{"http://h/v1/moves#-1.2", 0, 0, false},
		{"http://h/v1/moves#1.x", 0, 0, false},
	} {
		local, seq, ok := fragment(c.u, 5)
		if ok != c.ok || local != c.local || seq != c.seq {
			t.Errorf("fragment(%q) = %d, %d, %v; want %d, %d, %v", c.u, local, seq, ok, c.local, c.seq, c.ok)
		}
	}
}
